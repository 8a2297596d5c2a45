"""Fed-Heart-Disease (FLamby): lepton-fed FedAvg / FedAdam vs FLamby's published accuracy.

Run: ``python benchmarks/heart_disease.py [DATA_DIR]`` (DATA_DIR defaults to
``../shared/data/fed_heart_disease`` relative to the repository; writes
``benchmarks/results/heart_disease.json``; about 1-2 minutes on 2 cores).

Natural 4-hospital split (Cleveland, Hungary, Switzerland, VA), FLamby's preprocessing and
fixed train/test split, logistic regression, each configuration over seeds 42..46, on
lepton-fed's in-process grid (the real ServerApp loop and ClientApp handlers, no Ray).

Two metrics of the final global model, both read back from the run directory
(``model.safetensors`` + the model spec in ``preprocess.json``, ``heldout.npz``):

* client-avg: the mean over the 4 hospitals of per-hospital test accuracy -- FLamby's
  metric (FedAvg 0.685, FedAdam 0.726, pooled training 0.735);
* pooled: accuracy on the 254 concatenated test rows -- what lepton-fed's summary reports.

Differences from FLamby that remain: FLamby standardises each client with its own
train-set mean/std; lepton-fed uses ONE federated scaler (pooled train mean/std from
aggregated sums). FLamby does 100 local steps per round for every client; lepton-fed
does ``client.epochs`` local epochs (so a bigger hospital takes more steps).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    ROOT,
    hospital_correct,
    mean_std,
    print_table,
    write_result,
)

FLAMBY = {"FedAvg": 0.685, "FedAdam": 0.726, "Pooled training": 0.735}
FLAMBY_POOLED_TEST = {"FedAvg": 0.748, "FedAdam": 0.779, "Pooled training": 0.795}
TARGET = 0.735  # FedAdam client-avg >= FLamby's pooled training
PRESET = "experiment=heart_disease_4_hospitals"

# name -> (FLamby row it compares with, overrides on top of the preset)
CONFIGS: dict[str, tuple[str, list[str]]] = {
    # the preset with strategy=fedavg (the preset's strategy.eta has to go, FedAvg has none)
    "fedavg (preset)": ("FedAvg", ["strategy=fedavg", "~strategy.eta"]),
    "fedadam (preset)": ("FedAdam", []),
    # a 5-seed sweep (eta 0.01-0.1, client lr 0.005-0.02, epochs 1/2/5, 30 rounds, batch 16,
    # FLamby's beta_2/tau) found nothing clearly better than the preset (all within ~1 std,
    # 0.765-0.786); 1 local epoch matches it with a fifth of the client work:
    "fedadam (preset, 1 epoch)": ("FedAdam", ["client.epochs=1"]),
}


def per_hospital_accuracy(run_dir: Path, cfg: Any) -> dict[str, Any]:
    """Client-avg and pooled test accuracy of the final model in ``run_dir``."""
    per, correct = hospital_correct(run_dir, cfg)
    return {
        "client_avg": float(np.mean(list(per.values()))),
        "pooled": float(correct.mean()),
        "per_hospital": per,
    }


def run_one(overrides: list[str]) -> dict[str, Any]:
    """One in-process federation; returns both accuracies and the summary's."""
    from lepton_fed.client.app import app
    from lepton_fed.config import compose
    from lepton_fed.config.validate import raise_if, validate
    from lepton_fed.inprocess import InProcessGrid
    from lepton_fed.server.outputs import RunWriter
    from lepton_fed.server.rounds import run_federation

    cfg = compose(overrides)
    raise_if(validate(cfg))
    with tempfile.TemporaryDirectory() as d:
        t0 = time.monotonic()
        summary = run_federation(
            InProcessGrid(app, int(cfg.federation.num_clients)), cfg, RunWriter(d)
        )
        wall = time.monotonic() - t0
        acc = per_hospital_accuracy(Path(d), cfg)
    if abs(acc["pooled"] - summary["final"]["accuracy"]) > 1e-9:
        raise SystemExit(
            f"pooled accuracy from the run dir {acc['pooled']} != summary "
            f"{summary['final']['accuracy']}"
        )
    return acc | {"wall_s": wall}


def pooled_baseline(data_path: str, seed: int) -> dict[str, Any]:
    """FLamby's pooled baseline in lepton-fed terms: logreg on all 486 train rows
    (pooled standardisation = the federated scaler), Adam lr 1e-3, batch 4, 50 epochs."""
    import torch

    from lepton_fed.client.train import train_local
    from lepton_fed.config import compose
    from lepton_fed.data.federated import federated_split
    from lepton_fed.data.preprocess import FeatureStats, Scaler
    from lepton_fed.models import build_model
    from lepton_fed.utils.seed import seed_everything

    cfg = compose([PRESET, f"data.path={data_path}", f"seed={seed}"])
    split = federated_split(cfg)
    tr = np.concatenate(split.client_idx)
    d = split.data
    scaler = Scaler.from_stats([FeatureStats.of(d.X[tr])])
    seed_everything(seed)
    model = build_model(
        {"name": "logreg", "num_features": d.num_features, "num_classes": 2}
    )
    train_local(
        model,
        scaler.transform(d.X[tr]),
        d.y[tr],
        epochs=50,
        batch_size=4,
        lr=1e-3,
        optimizer="adam",
        seed=seed,
    )
    with torch.no_grad():
        pred = (
            model(torch.as_tensor(scaler.transform(d.X[split.test_idx])))
            .argmax(1)
            .numpy()
        )
    correct = pred == d.y[split.test_idx]
    silo = d.silo[split.test_idx]
    per = [float(correct[silo == s].mean()) for s in np.unique(silo)]
    return {"client_avg": float(np.mean(per)), "pooled": float(correct.mean())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "data",
        nargs="?",
        default=str(ROOT.parent / "shared" / "data" / "fed_heart_disease"),
        help="directory with the four UCI processed.*.data files "
        "(default: ../shared/data/fed_heart_disease)",
    )
    ap.add_argument("--seeds", type=int, nargs="+", default=[42, 43, 44, 45, 46])
    ap.add_argument(
        "--configs", nargs="+", choices=list(CONFIGS), default=list(CONFIGS)
    )
    ap.add_argument(
        "--extra",
        nargs="*",
        default=[],
        metavar="OVERRIDE",
        help="extra Hydra overrides applied to every configuration",
    )
    ap.add_argument(
        "--no-pooled", action="store_true", help="skip the centralized pooled baseline"
    )
    ap.add_argument("--out", default="heart_disease", help="results/<out>.json")
    a = ap.parse_args()

    from lepton_fed.data.datasets import HEART_FILES

    data = Path(a.data).resolve()
    missing = [f for _, f in HEART_FILES if not (data / f).is_file()]
    if missing:
        raise SystemExit(
            f"Fed-Heart-Disease data not found: {data} lacks {', '.join(missing)}.\n"
            "Pass the directory holding the four UCI processed.*.data files "
            "(see ../shared/data/fed_heart_disease/README.md)."
        )
    import logging

    import torch

    # tiny model: extra threads only oversubscribe a shared 2-core box
    torch.set_num_threads(1)
    logging.getLogger("flwr").setLevel(logging.WARNING)
    logging.getLogger("lepton_fed").setLevel(logging.WARNING)

    results: dict[str, Any] = {}
    t_all = time.monotonic()
    for name in a.configs:
        flamby, extra = CONFIGS[name]
        ov = [PRESET, f"data.path={data}", *extra, *a.extra]
        runs = []
        for seed in a.seeds:
            r = run_one([*ov, f"seed={seed}"])
            runs.append({"seed": seed, **r})
            print(
                f"{name} seed {seed}: client-avg {r['client_avg']:.3f} pooled {r['pooled']:.3f} "
                f"({r['wall_s']:.1f}s)",
                flush=True,
            )
        ca, po = (
            mean_std([r["client_avg"] for r in runs]),
            mean_std([r["pooled"] for r in runs]),
        )
        per_h = {
            h: mean_std([r["per_hospital"][h] for r in runs])[0]
            for h in runs[0]["per_hospital"]
        }
        results[name] = {
            "overrides": [o for o in ov if not o.startswith("data.path")],
            "flamby_row": flamby,
            "client_avg_mean": ca[0],
            "client_avg_std": ca[1],
            "pooled_mean": po[0],
            "pooled_std": po[1],
            "per_hospital_mean": per_h,
            "runs": runs,
        }
    if not a.no_pooled:
        runs = [{"seed": s, **pooled_baseline(str(data), s)} for s in a.seeds]
        ca, po = (
            mean_std([r["client_avg"] for r in runs]),
            mean_std([r["pooled"] for r in runs]),
        )
        results["pooled training (centralized)"] = {
            "overrides": ["logreg on all train rows, Adam lr 1e-3, batch 4, 50 epochs"],
            "flamby_row": "Pooled training",
            "client_avg_mean": ca[0],
            "client_avg_std": ca[1],
            "pooled_mean": po[0],
            "pooled_std": po[1],
            "runs": runs,
        }

    rows = []
    for name, r in results.items():
        rows.append(
            [
                name,
                f"{r['client_avg_mean']:.3f} ± {r['client_avg_std']:.3f}",
                f"{FLAMBY[r['flamby_row']]:.3f}",
                f"{r['pooled_mean']:.3f} ± {r['pooled_std']:.3f}",
                f"{FLAMBY_POOLED_TEST[r['flamby_row']]:.3f}",
            ]
        )
    print_table(
        [
            "configuration",
            "client-avg acc",
            "FLamby client-avg",
            "pooled-test acc",
            "FLamby pooled-test",
        ],
        rows,
        title=f"\nFed-Heart-Disease, seeds {a.seeds[0]}..{a.seeds[-1]} (mean ± std), "
        f"in-process grid; target FedAdam client-avg >= {TARGET}",
    )
    hosp = [
        [name, *(f"{v:.3f}" for v in r["per_hospital_mean"].values())]
        for name, r in results.items()
        if "per_hospital_mean" in r
    ]
    if hosp:
        print_table(
            ["configuration", *next(iter(results.values()))["per_hospital_mean"]],
            hosp,
            title="per-hospital test accuracy (mean over seeds)",
        )
    best = max(
        (
            r["client_avg_mean"]
            for n, r in results.items()
            if r["flamby_row"] == "FedAdam"
        ),
        default=float("nan"),
    )
    print(
        f"best FedAdam client-avg {best:.3f} (target >= {TARGET}: "
        f"{'met' if best >= TARGET else 'NOT met'}); total {time.monotonic() - t_all:.0f}s"
    )
    path = write_result(
        a.out,
        {
            "data": str(data),
            "seeds": a.seeds,
            "target_fedadam_client_avg": TARGET,
            "flamby_client_avg": FLAMBY,
            "flamby_pooled_test": FLAMBY_POOLED_TEST,
            "target_met": bool(best >= TARGET),
            "results": results,
        },
    )
    print(f"wrote {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
