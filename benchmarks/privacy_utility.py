"""Privacy-utility curve: accuracy vs DP-SGD epsilon on four datasets.

Run: ``python benchmarks/privacy_utility.py [--heart-path DIR] [--mnist-path DIR]
[--datasets a,b] [--quick]`` (writes ``benchmarks/results/privacy_utility.{json,png}``;
``--quick`` is a ~2-minute smoke run -- first candidate, one seed -- that writes
``privacy_utility_quick.{json,png}`` instead). Full run: ~6-10 minutes on 2 cores.

Each point is an in-process federation (:class:`lepton_fed.inprocess.InProcessGrid`:
the real ServerApp round loop and ClientApp handlers, no Ray), ``privacy=dpsgd`` with
``privacy.epsilon`` in {0.5, 1, 3, 8} or ``privacy=none``. The epsilon is each client's
sample-level (epsilon, delta) for the WHOLE run (sigma calibrated once per run for
rounds x local steps); the reported ``epsilon_spent`` is the max over clients.

Datasets (test accuracy of the final global model on the held-out split):

* ``breast_cancer``: 5 clients IID (91 train rows each), delta 1e-5.
* ``digits``: 10 clients IID (~144 rows each), delta 1e-5.
* ``heart_disease``: FLamby Fed-Heart-Disease, natural 4-hospital split (199/172/30/85
  train rows), **delta 1e-3** (FLamby swept delta 1e-4..1e-1; delta must be < 1/n and
  the Swiss client holds 30 rows). Two metrics: pooled test accuracy (254 rows) and
  FLamby's ``client_avg`` = mean over the 4 hospitals of per-hospital test accuracy
  (FLamby DP-FedAvg: 0.68-0.71 for epsilon >= 1). Target: client_avg >= 0.70 at eps=1.
* ``mnist``: train on the 5k-image subset over 10 clients IID (500 each), test on the
  official 10k, delta 1e-5. Target: >= 0.90 at eps=3.

Tuning: every dataset has a few candidate settings (``CANDIDATES``), each run at every
epsilon (and without DP) over the dataset's seeds. Reported: the ``shared`` candidate
(best mean over the four DP epsilons: ONE setting for the whole curve; the table, the
plot) and the best candidate per epsilon. Candidates are picked on the test split
itself (there is no separate validation split here), so the best-per-epsilon numbers
are mildly optimistic; the shared setting is less so.

``grad_sample_mode=ghost`` is used wherever it is set below: it computes the same
clipped per-sample gradients as ``ew`` (same seeds -> same accuracy, checked on MNIST)
but without materialising them, 3-5x faster for MNIST's 784-wide inputs at batch >= 100.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import (  # noqa: E402
    RESULTS_DIR,
    ROOT,
    hospital_correct,
    mean_std,
    print_table,
    write_result,
)

EPSILONS: tuple[float | None, ...] = (0.5, 1.0, 3.0, 8.0, None)
DP_EPS = [e for e in EPSILONS if e is not None]

# dataset -> settings. ``base``: overrides common to every run; ``dp``: extra overrides
# used only with privacy=dpsgd (clip norm, grad-sample mode); ``candidates``: name ->
# training overrides (the first one is the preferred setting, the one --quick runs).
DATASETS: dict[str, dict[str, Any]] = {
    "breast_cancer": {
        "base": ["data=breast_cancer", "partition=iid", "federation.num_clients=5",
                 "federation.clients_per_round=5", "strategy=fedavg"],
        "delta": 1e-5,
        "seeds": [0, 1, 2],
        "dp": ["privacy.max_grad_norm=1.0"],
        "candidates": {
            "logreg b16 lr0.05 m0.9 r10": ["model=logreg", "federation.rounds=10",
                                           "client.epochs=1", "client.batch_size=16",
                                           "client.lr=0.05", "client.momentum=0.9"],
            "logreg b32 lr0.1 m0.9 r10": ["model=logreg", "federation.rounds=10",
                                          "client.epochs=1", "client.batch_size=32",
                                          "client.lr=0.1", "client.momentum=0.9"],
            "mlp[64,64] b16 lr0.05 m0.9 r10": ["model=mlp", "model.hidden=[64,64]",
                                               "federation.rounds=10", "client.epochs=1",
                                               "client.batch_size=16", "client.lr=0.05",
                                               "client.momentum=0.9"],
        },
        "metric": "accuracy",
    },
    "digits": {
        "base": ["data=digits", "partition=iid", "federation.num_clients=10",
                 "federation.clients_per_round=10", "strategy=fedavg"],
        "delta": 1e-5,
        "seeds": [0, 1, 2],
        "dp": ["privacy.max_grad_norm=1.0", "privacy.grad_sample_mode=ghost"],
        "candidates": {
            "logreg b16 lr0.2 m0.5 r10": ["model=logreg", "federation.rounds=10",
                                          "client.epochs=1", "client.batch_size=16",
                                          "client.lr=0.2", "client.momentum=0.5"],
            "logreg b16 lr0.05 m0.9 r10": ["model=logreg", "federation.rounds=10",
                                           "client.epochs=1", "client.batch_size=16",
                                           "client.lr=0.05", "client.momentum=0.9"],
            "logreg b32 lr0.2 m0.5 r10": ["model=logreg", "federation.rounds=10",
                                          "client.epochs=1", "client.batch_size=32",
                                          "client.lr=0.2", "client.momentum=0.5"],
        },
        "metric": "accuracy",
    },
    "heart_disease": {
        "base": ["+experiment=heart_disease_4_hospitals"],  # + data.path=...
        "path": "heart",
        "delta": 1e-3,
        "seeds": [0, 1, 2],
        "dp": ["privacy.max_grad_norm=1.0"],
        # explicit values, so a change to the preset does not silently change the curve
        "candidates": {
            "fedadam(eta0.05) b4 lr0.01 e1 r15": [
                "strategy=fedadam", "strategy.eta=0.05", "federation.rounds=15",
                "client.epochs=1", "client.batch_size=4", "client.lr=0.01",
                "client.momentum=0.0"],
            "fedadam(eta0.05) b16 lr0.05 e1 r15": [
                "strategy=fedadam", "strategy.eta=0.05", "federation.rounds=15",
                "client.epochs=1", "client.batch_size=16", "client.lr=0.05",
                "client.momentum=0.0"],
            "fedavg b16 lr0.1 m0.5 e1 r15": [
                "strategy=fedavg", "~strategy.eta", "federation.rounds=15",
                "client.epochs=1", "client.batch_size=16", "client.lr=0.1",
                "client.momentum=0.5"],
        },
        "metric": "client_avg",
        "target": {"epsilon": 1.0, "metric": "client_avg", "min": 0.70},
    },
    "mnist": {
        "base": ["data=mnist", "partition=iid", "federation.num_clients=10",
                 "federation.clients_per_round=10", "strategy=fedavg"],  # + data.path=...
        "path": "mnist",
        "delta": 1e-5,
        "seeds": [0, 1],
        "dp": ["privacy.max_grad_norm=1.0", "privacy.grad_sample_mode=ghost"],
        "candidates": {
            # full batch (batch = the client's 500 rows: Poisson rate q = 1), one step
            # per round: sigma grows only with the number of rounds
            "logreg full-batch lr2 r20": ["model=logreg", "federation.rounds=20",
                                          "client.epochs=1", "client.batch_size=500",
                                          "client.lr=2.0", "client.momentum=0.0"],
            "logreg full-batch lr1 r60": ["model=logreg", "federation.rounds=60",
                                          "client.epochs=1", "client.batch_size=500",
                                          "client.lr=1.0", "client.momentum=0.0"],
            "mlp[128] b50 lr0.05 m0.9 r10": ["model=mlp", "model.hidden=[128]",
                                             "federation.rounds=10", "client.epochs=1",
                                             "client.batch_size=50", "client.lr=0.05",
                                             "client.momentum=0.9"],
        },
        "metric": "accuracy",
        "target": {"epsilon": 3.0, "metric": "accuracy", "min": 0.90},
    },
}


def eps_key(eps: float | None) -> str:
    return "none" if eps is None else f"{eps:g}"


def hospital_accuracy(run_dir: Path, cfg: Any) -> dict[str, Any]:
    """FLamby's metric from the run dir: mean over hospitals of per-hospital accuracy."""
    per, correct = hospital_correct(run_dir, cfg)
    return {"client_avg": float(np.mean(list(per.values()))),
            "pooled_check": float(correct.mean()), "per_hospital": per}


def run_one(overrides: list[str], *, hospitals: bool) -> dict[str, Any]:
    """One in-process federation; final pooled accuracy, epsilon spent, wall time."""
    from lepton_fed.client.app import app
    from lepton_fed.config import compose
    from lepton_fed.config.validate import raise_if, validate
    from lepton_fed.inprocess import InProcessGrid
    from lepton_fed.server.outputs import RunWriter
    from lepton_fed.server.rounds import run_federation

    cfg = compose(overrides)
    raise_if(validate(cfg))
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):  # one print per round
            summary = run_federation(
                InProcessGrid(app, int(cfg.federation.num_clients)), cfg, RunWriter(d)
            )
        wall = time.perf_counter() - t0
        out: dict[str, Any] = {
            "accuracy": float(summary["final"]["accuracy"]),
            "epsilon_spent": (summary.get("privacy") or {}).get("epsilon"),
            "rounds_completed": int(summary["rounds_completed"]),
            "wall_s": wall,
        }
        if hospitals:
            h = hospital_accuracy(Path(d), cfg)
            if abs(h.pop("pooled_check") - out["accuracy"]) > 1e-9:
                raise SystemExit("pooled accuracy from the run dir != summary.json")
            out |= h
    return out


def aggregate(runs: list[dict[str, Any]], metric: str) -> dict[str, Any]:
    acc_m, acc_s = mean_std([r["accuracy"] for r in runs])
    out: dict[str, Any] = {
        "accuracy_mean": acc_m, "accuracy_std": acc_s,
        "metric_mean": mean_std([r[metric] for r in runs])[0],
        "metric_std": mean_std([r[metric] for r in runs])[1],
        "epsilon_spent_max": max((r["epsilon_spent"] or 0.0) for r in runs)
        if runs[0]["epsilon_spent"] is not None else None,
        "rounds_completed_min": min(r["rounds_completed"] for r in runs),
        "wall_s_mean": mean_std([r["wall_s"] for r in runs])[0],
        "runs": runs,
    }
    if "client_avg" in runs[0]:
        out["client_avg_mean"], out["client_avg_std"] = mean_std(
            [r["client_avg"] for r in runs])
        out["per_hospital_mean"] = {
            h: float(np.mean([r["per_hospital"][h] for r in runs]))
            for h in runs[0]["per_hospital"]
        }
    return out


def fmt(cell: dict[str, Any] | None, key: str = "metric") -> str:
    if cell is None:
        return "-"
    m, s = cell[f"{key}_mean"], cell[f"{key}_std"]
    return f"{m:.3f}±{s:.3f}" if len(cell["runs"]) > 1 else f"{m:.3f}"


def run_dataset(name: str, spec: dict[str, Any], data_path: str | None,
                quick: bool) -> dict[str, Any]:
    seeds = spec["seeds"][:1] if quick else spec["seeds"]
    cands = dict(list(spec["candidates"].items())[:1]) if quick else spec["candidates"]
    base = list(spec["base"]) + ([f"data.path={data_path}"] if data_path else [])
    metric = spec["metric"]
    hospitals = metric == "client_avg"
    cells: dict[str, dict[str, Any]] = {}
    t_ds = time.perf_counter()
    for cname, train_ov in cands.items():
        cells[cname] = {}
        for eps in EPSILONS:
            if eps is None:
                priv = ["privacy=none"]
            else:
                priv = ["privacy=dpsgd", f"privacy.epsilon={eps}",
                        f"privacy.delta={spec['delta']}", *spec["dp"]]
            runs = []
            for seed in seeds:
                ov = base + train_ov + priv + [f"seed={seed}"]
                r = run_one(ov, hospitals=hospitals) | {"seed": seed}
                if eps is not None and r["epsilon_spent"] > eps * (1 + 1e-6):
                    raise SystemExit(f"{name}: spent {r['epsilon_spent']} > target {eps}")
                runs.append(r)
            cell = aggregate(runs, metric) | {"overrides": base + train_ov + priv}
            cells[cname][eps_key(eps)] = cell
            extra = (f" pooled {cell['accuracy_mean']:.3f}" if hospitals else "")
            print(f"  {name:13s} {cname:36s} eps={eps_key(eps):4s} "
                  f"{metric} {fmt(cell)}{extra}  ({sum(r['wall_s'] for r in runs):.1f}s)",
                  flush=True)

    def score(c: str) -> float:
        return float(np.mean([cells[c][eps_key(e)]["metric_mean"] for e in DP_EPS]))

    shared = max(cells, key=score)
    best = {}
    for eps in EPSILONS:
        k = eps_key(eps)
        c = max(cells, key=lambda c, k=k: cells[c][k]["metric_mean"])
        best[k] = {"candidate": c, "overrides": cells[c][k]["overrides"],
                   **{f: cells[c][k][f] for f in cells[c][k] if f.endswith(("_mean", "_std"))}}
    out: dict[str, Any] = {
        "delta": spec["delta"], "seeds": seeds, "metric": metric,
        "base_overrides": base, "dp_overrides": spec["dp"],
        "candidates": {c: spec["candidates"][c] for c in cands},
        "shared_candidate": shared,
        "shared_mean_dp_metric": score(shared),
        "cells": cells, "best_per_epsilon": best,
        "wall_s": time.perf_counter() - t_ds,
    }
    tgt = spec.get("target")
    if tgt:
        k = eps_key(tgt["epsilon"])
        got_shared = cells[shared][k][f"{tgt['metric']}_mean"]
        got_best = best[k][f"{tgt['metric']}_mean"]
        out["target"] = tgt | {"shared": got_shared, "best": got_best,
                               "met_shared": got_shared >= tgt["min"],
                               "met_best": got_best >= tgt["min"]}
    return out


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    i = 0
    for name, res in results.items():
        if "cells" not in res:
            continue
        cells = res["cells"][res["shared_candidate"]]
        lines = [("accuracy", name + ("  (pooled test)" if res["metric"] == "client_avg" else ""))]
        if res["metric"] == "client_avg":
            lines.append(("client_avg", name + "  (FLamby client-avg)"))
        for key, label in lines:
            col = colors[i % len(colors)]
            i += 1
            m = [cells[eps_key(e)][f"{key}_mean"] for e in DP_EPS]
            s = [cells[eps_key(e)][f"{key}_std"] for e in DP_EPS]
            ax.errorbar(DP_EPS, m, yerr=s, marker="o", color=col, capsize=3, label=label)
            ax.axhline(cells["none"][f"{key}_mean"], color=col, ls="--", lw=1)
    for name, res in results.items():
        tgt = res.get("target") if isinstance(res, dict) else None
        if tgt:
            ax.plot([tgt["epsilon"]], [tgt["min"]], marker="*", ms=12, color="k",
                    ls="none")
            ax.annotate(f"target {name}", (tgt["epsilon"], tgt["min"]),
                        textcoords="offset points", xytext=(6, -12), fontsize=7)
    ax.set_xscale("log")
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xticks(DP_EPS, [f"{e:g}" for e in DP_EPS])
    ax.set_xlim(0.4, 10)
    ax.set_xlabel("epsilon per client (whole run); dashed = no DP, same settings")
    ax.set_ylabel("test accuracy of the final global model")
    ax.set_title("lepton-fed DP-SGD privacy-utility (in-process federation)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--heart-path", default=str(ROOT.parent / "shared/data/fed_heart_disease"))
    ap.add_argument("--mnist-path", default=str(ROOT.parent / "shared/data/mnist"))
    ap.add_argument("--datasets", default=",".join(DATASETS),
                    help="comma-separated subset of " + ",".join(DATASETS))
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: first candidate, one seed (~2 min)")
    args = ap.parse_args()

    warnings.filterwarnings("ignore")  # Opacus/torch chatter (e.g. benign hook warnings)
    logging.getLogger("lepton_fed").setLevel(logging.ERROR)
    import flwr.common.logger  # noqa: F401  (configures the "flwr" logger on import)
    import torch

    flwr_log = logging.getLogger("flwr")  # one INFO line per exchange, a WARNING per run
    flwr_log.setLevel(logging.ERROR)
    flwr_log.propagate = False

    torch.set_num_threads(1)
    from lepton_fed.data.datasets import check_source

    paths = {"heart": args.heart_path, "mnist": args.mnist_path}
    load0 = os.getloadavg()
    t0 = time.perf_counter()
    results: dict[str, Any] = {}
    for name in [d.strip() for d in args.datasets.split(",") if d.strip()]:
        if name not in DATASETS:
            raise SystemExit(f"unknown dataset {name!r}; choose from {list(DATASETS)}")
        spec = DATASETS[name]
        data_path = None
        if "path" in spec:
            data_path = str(Path(paths[spec["path"]]).resolve())
            problems = check_source(name, data_path)
            if problems:
                msg = f"skipped: {'; '.join(problems)}"
                print(f"[{name}] {msg}", flush=True)
                results[name] = {"skipped": msg}
                continue
        print(f"[{name}] delta={spec['delta']:g} seeds={spec['seeds'][:1] if args.quick else spec['seeds']}",
              flush=True)
        results[name] = run_dataset(name, spec, data_path, args.quick)

    done = {k: v for k, v in results.items() if "cells" in v}
    if not done:
        print("no dataset ran")
    headers = ["dataset", "metric", *[f"eps={eps_key(e)}" for e in EPSILONS], "settings (shared)"]
    rows = []
    for name, res in done.items():
        cells = res["cells"][res["shared_candidate"]]
        metrics = [("accuracy", "pooled acc")]
        if res["metric"] == "client_avg":
            metrics = [("client_avg", "client-avg"), ("accuracy", "pooled acc")]
        for key, label in metrics:
            rows.append([name, label, *[fmt(cells[eps_key(e)], key) for e in EPSILONS],
                         res["shared_candidate"]])
    if done:
        print_table(headers, rows, title="\nSame settings at every epsilon (mean±std over seeds; "
                "heart disease delta=1e-3, others 1e-5)")
    rows = []
    for name, res in done.items():
        rows.append([name, res["metric"],
                     *[f"{res['best_per_epsilon'][eps_key(e)]['metric_mean']:.3f} "
                       f"[{list(res['candidates']).index(res['best_per_epsilon'][eps_key(e)]['candidate']) + 1}]"
                       for e in EPSILONS]])
    if done:
        print_table(headers[:-1], rows,
                    title="\nBest candidate per epsilon ([n] = candidate n below)")
    for name, res in done.items():
        for i, (c, ov) in enumerate(res["candidates"].items(), 1):
            print(f"  {name} [{i}] {c}: {' '.join(ov)}")
        print(f"  {name} DP overrides: {' '.join(res['dp_overrides'])} "
              f"privacy.delta={res['delta']:g}")
    for name, res in done.items():
        if "target" in res:
            t = res["target"]
            print(f"TARGET {name} {t['metric']} at eps={t['epsilon']:g} >= {t['min']}: "
                  f"shared {t['shared']:.3f} ({'met' if t['met_shared'] else 'MISSED'}), "
                  f"best {t['best']:.3f} ({'met' if t['met_best'] else 'MISSED'})")
    for name, res in results.items():
        if "skipped" in res:
            print(f"{name}: {res['skipped']}")

    stem = "privacy_utility_quick" if args.quick else "privacy_utility"
    png = RESULTS_DIR / f"{stem}.png"
    if done:
        plot(done, png)
    wall = time.perf_counter() - t0
    import opacus

    path = write_result(stem, {
        "epsilons": [eps_key(e) for e in EPSILONS],
        "quick": args.quick,
        "note": ("epsilon is per client for the whole run (sample-level DP-SGD); "
                 "candidates are selected on the test split (no validation split); "
                 "heart_disease uses delta=1e-3 (clients hold 30-199 rows, FLamby "
                 "used delta up to 1e-1), the others 1e-5"),
        "results": results,
        "plot": str(png.relative_to(ROOT)) if done else None,
        "wall_s": wall,
        "loadavg_start": load0, "loadavg_end": os.getloadavg(),
        "torch": torch.__version__, "opacus": opacus.__version__,
    })
    print(f"wrote {path}{f' and {png}' if done else ''} in {wall:.0f} s "
          f"(load {load0[0]:.2f} -> {os.getloadavg()[0]:.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
