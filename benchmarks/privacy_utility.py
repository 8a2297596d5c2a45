"""Privacy-utility with the DP defaults: accuracy a new user gets from ``privacy=dpsgd``
and only a target epsilon, before and after issue 13, and the curve over epsilon.

Run: ``python benchmarks/privacy_utility.py [--reps 5] [--datasets a,b] [--quick]
[--conf DIR]`` (writes ``benchmarks/results/privacy_utility.{json,png}``; ``--quick``:
2 repetitions, no curve, ``privacy_utility_quick.*``). ~10 minutes on 2 shared cores
(MNIST adds ~10 more; skipped when ``../shared/data`` lacks it).

Every point is an in-process federation (:class:`lepton_fed.inprocess.InProcessGrid`:
the real ServerApp round loop and ClientApp handlers, no Ray). DP noise comes from OS
entropy, so repetitions differ in the noise (and ``seed`` = repetition index sets the
split and the initial model): reported as mean ± std over ``--reps``.

Rows (``SETUPS``: what the user types; nothing else is set):

* ``new defaults``: the setup + ``privacy=dpsgd privacy.epsilon=E`` [``privacy.delta``];
  the config's defaults then give logistic regression, the PLD accountant and each
  node's DP rule (``lepton_fed/privacy/auto.py``);
* ``old defaults``: the same with the pre-issue-13 values spelled out (MLP [64, 64],
  batch 16, 1 epoch, lr 0.05, momentum 0.9, clip 1, RDP);
* ``non-private``: the setup + ``privacy=none`` (the config's default model, MLP).

Curve: the new defaults at epsilon 0.5, 1, 3, 8 for each setup.

``--conf DIR`` composes from another config directory (e.g. a candidate ``conf/``);
the default is the package's. The script refuses a config whose DP defaults are not
the rule's (``client.batch_size`` etc. not null under ``privacy=dpsgd``).
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

from _common import RESULTS_DIR, ROOT, mean_std, print_table, write_result  # noqa: E402

CURVE = (0.5, 1.0, 3.0, 8.0)
OLD_DEFAULTS = ["model=mlp", "model.hidden=[64,64]", "client.batch_size=16",
                "client.epochs=1", "client.lr=0.05", "client.momentum=0.9",
                "privacy.max_grad_norm=1.0", "privacy.accountant=rdp"]
# name -> what the user types, the target epsilon, delta, the target (or None),
# and the shared-data folder it needs (or None)
SETUPS: dict[str, dict[str, Any]] = {
    "digits 20 clients, 8 rounds": {
        "user": ["data=digits", "federation.num_clients=20",
                 "federation.clients_per_round=20", "federation.rounds=8"],
        "epsilon": 3.0, "delta": None, "target": 0.85, "data": None},
    "breast cancer 10 clients (5/round), 5 rounds": {
        "user": ["data=breast_cancer", "federation.num_clients=10",
                 "federation.clients_per_round=5", "federation.rounds=5"],
        "epsilon": 1.0, "delta": 1e-5, "target": 0.92, "data": None},
    "Fed-Heart-Disease 4 hospitals": {
        "user": ["data=heart_disease", "partition=natural", "federation.num_clients=4",
                 "federation.clients_per_round=4"],
        "epsilon": 1.0, "delta": None, "target": 0.78, "data": "fed_heart_disease"},
    "Fed-Heart-Disease preset": {
        "user": ["+experiment=dp_heart_disease_4_hospitals"],
        "epsilon": 1.0, "delta": 1e-3, "target": 0.78, "data": "fed_heart_disease",
        "preset": True},
    "MNIST 5k 10 clients": {
        "user": ["data=mnist", "federation.num_clients=10",
                 "federation.clients_per_round=10"],
        "epsilon": 3.0, "delta": None, "target": 0.90, "data": "mnist"},
}


def compose(overrides: list[str], conf: str | None) -> Any:
    if conf is None:
        from lepton_fed.config import compose as repo_compose

        return repo_compose(overrides)
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from lepton_fed.config.schema import register

    register()  # the typed schema (base_config) another conf/ tree lists first
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(Path(conf).resolve()), version_base="1.3"):
        cfg = hydra_compose(config_name="config", overrides=list(overrides))
    GlobalHydra.instance().clear()
    return cfg


def run_one(overrides: list[str], conf: str | None) -> dict[str, Any]:
    from lepton_fed.client.app import app
    from lepton_fed.inprocess import InProcessGrid
    from lepton_fed.server.outputs import RunWriter
    from lepton_fed.server.rounds import run_federation

    cfg = compose(overrides, conf)
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):
            s = run_federation(InProcessGrid(app, int(cfg.federation.num_clients)), cfg,
                               RunWriter(d))
        pr = s.get("privacy") or {}
        return {"accuracy": float(s["final"]["accuracy"]), "epsilon": pr.get("epsilon"),
                "epsilons": pr.get("epsilons"), "model": str(cfg.model.name),
                "wall_s": time.perf_counter() - t0}


def cell(overrides: list[str], reps: int, conf: str | None) -> dict[str, Any]:
    runs = [run_one([*overrides, f"seed={i}"], conf) for i in range(reps)]
    m, s = mean_std([r["accuracy"] for r in runs])
    eps = [r["epsilon"] for r in runs if r["epsilon"] is not None]
    return {"overrides": overrides, "accuracy_mean": m, "accuracy_std": s,
            "epsilon_max": max(eps) if eps else None, "model": runs[0]["model"],
            "wall_s_mean": float(np.mean([r["wall_s"] for r in runs])), "runs": runs}


def dp(setup: dict[str, Any], eps: float) -> list[str]:
    out = [*setup["user"]]
    if not setup.get("preset"):
        out.append("privacy=dpsgd")
    out.append(f"privacy.epsilon={eps}")
    if setup["delta"] is not None:
        out.append(f"privacy.delta={setup['delta']}")
    return out


def check_conf(conf: str | None) -> None:
    cfg = compose(["privacy=dpsgd"], conf)
    unset = [k for k in ("batch_size", "epochs", "lr") if cfg.client.get(k) is not None]
    if unset or cfg.privacy.max_grad_norm is not None:
        raise SystemExit(f"this config's privacy=dpsgd defaults set client.{unset} / "
                         "privacy.max_grad_norm: the DP rule would not run. Use a conf/ "
                         "with them null (see lepton_fed/privacy/auto.py), or --conf DIR")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--datasets", default="", help="substrings of setup names to run")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--conf", default=None, help="config directory (default: package)")
    ap.add_argument("--shared-data", default=str(ROOT.parent / "shared" / "data"))
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    import torch

    torch.set_num_threads(1)
    check_conf(args.conf)
    reps = 2 if args.quick else args.reps
    wanted = [w.strip() for w in args.datasets.split(",") if w.strip()]
    t0, load0 = time.perf_counter(), os.getloadavg()
    results: dict[str, Any] = {}
    for name, setup in SETUPS.items():
        if wanted and not any(w in name for w in wanted):
            continue
        setup = dict(setup)
        if setup["data"]:
            path = Path(args.shared_data) / setup["data"]
            if not path.exists():
                results[name] = {"skipped": f"{path} is absent"}
                print(f"[{name}] skipped: {path} is absent", flush=True)
                continue
            setup["user"] = [*setup["user"], f"data.path={path}"]
        eps = setup["epsilon"]
        row: dict[str, Any] = {"user_overrides": setup["user"], "epsilon": eps,
                               "target": setup["target"]}
        row["new_defaults"] = cell(dp(setup, eps), reps, args.conf)
        if not setup.get("preset"):
            row["old_defaults"] = cell([*dp(setup, eps), *OLD_DEFAULTS], reps, args.conf)
            row["non_private"] = cell([*setup["user"], "privacy=none"], 1, args.conf)
            if not args.quick:
                row["curve"] = {f"{e:g}": cell(dp(setup, e), reps, args.conf)
                                for e in CURVE}
        row["target_met"] = (setup["target"] is None
                             or row["new_defaults"]["accuracy_mean"] >= setup["target"])
        results[name] = row
        print(f"[{name}] eps {eps:g}: new {row['new_defaults']['accuracy_mean']:.3f}"
              + (f", old {row['old_defaults']['accuracy_mean']:.3f}, non-private "
                 f"{row['non_private']['accuracy_mean']:.3f}" if "old_defaults" in row
                 else ""), flush=True)
    done = {k: v for k, v in results.items() if "new_defaults" in v}

    def f(c: dict[str, Any] | None) -> str:
        return "-" if c is None else f"{c['accuracy_mean']:.3f}±{c['accuracy_std']:.3f}"

    print_table(["setup (defaults + epsilon)", "eps", "non-private", "old DP defaults",
                 "new DP defaults", "target", "met"],
                [[n, f"{r['epsilon']:g}", f(r.get("non_private")), f(r.get("old_defaults")),
                  f(r["new_defaults"]), r["target"], "yes" if r["target_met"] else "NO"]
                 for n, r in done.items()],
                title=f"\nAccuracy, mean±std over {reps} repetitions (DP noise from the OS)")
    curves = {n: r["curve"] for n, r in done.items() if "curve" in r}
    if curves:
        print_table(["setup (new defaults)", *[f"eps={e:g}" for e in CURVE]],
                    [[n, *[f(c[f"{e:g}"]) for e in CURVE]] for n, c in curves.items()],
                    title="\nCurve")
    stem = "privacy_utility_quick" if args.quick else "privacy_utility"
    png = RESULTS_DIR / f"{stem}.png"
    if curves:
        plot(done, png)
    path = write_result(stem, {
        "reps": reps, "results": results, "old_defaults": OLD_DEFAULTS,
        "conf": args.conf or "package", "plot": str(png.relative_to(ROOT)) if curves else None,
        "wall_s": time.perf_counter() - t0, "loadavg": [load0, os.getloadavg()],
    })
    print(f"wrote {path}")
    return 0


def plot(done: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (name, r) in enumerate((n, r) for n, r in done.items() if "curve" in r):
        col = colors[i % len(colors)]
        m = [r["curve"][f"{e:g}"]["accuracy_mean"] for e in CURVE]
        s = [r["curve"][f"{e:g}"]["accuracy_std"] for e in CURVE]
        ax.errorbar(CURVE, m, yerr=s, marker="o", color=col, capsize=3, label=name)
        ax.axhline(r["non_private"]["accuracy_mean"], color=col, ls="--", lw=1)
        if r["target"] is not None:
            ax.plot([r["epsilon"]], [r["target"]], marker="*", ms=11, color=col, ls="none")
    ax.set_xscale("log")
    ax.set_xticks(CURVE, [f"{e:g}" for e in CURVE])
    ax.set_xlabel("epsilon per client (whole run); dashed: non-private; star: target")
    ax.set_ylabel("test accuracy of the final global model")
    ax.set_title("lepton-fed DP-SGD with its DP defaults (only epsilon set)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
