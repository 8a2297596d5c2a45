"""Distributed DP (privacy=distributed) vs central DP vs no DP on Fed-Heart-Disease.

Run: ``python benchmarks/distributed_dp_heart.py [DATA_DIR] [--seeds 42 43 44]``
(DATA_DIR defaults to ``../shared/data/fed_heart_disease``; writes
``benchmarks/results/distributed_dp_heart.json``; exits with a clear message, writing
nothing, when the data is absent).

The preset ``experiment=heart_disease_4_hospitals`` (FLamby's natural 4-hospital split,
logistic regression, FedAdam, 15 rounds, all 4 hospitals every round) on the in-process
grid (the real ServerApp loop and ClientApp handlers, no Ray). Modes:

* ``none`` / ``none+secagg``: no DP, without / with secure aggregation.
* ``central``: user-level DP, hospitals clip to ``privacy.clip``, the server adds Gaussian
  noise to the sum (``accountant=rdp``, the accounting family of distributed).
* ``distributed``: hospitals clip, rotate, round and add discrete Gaussian shares inside
  secure aggregation (32-bit field). The noise is sized for the minimum cohort, which
  here is the whole federation (``privacy.min_contributors`` = 4), with the colluders
  secure aggregation assumes (``secagg.colluding_fraction=0.05`` -> 1 of 4), so only 3
  honest shares count: its noise is sqrt(4/3) = 1.15x central's at the same epsilon.

Both DP modes: (epsilon, 1e-3) user-level (one hospital = one user) over the 15 rounds, no
sampling amplification (every hospital takes part in every round). With 4 users, user-level
DP needs noise of order clip / epsilon on a mean of 4 updates. ``--clip`` defaults to 0.2:
clip 1.0 left every DP mode near chance (``distributed_dp_heart_clip1.0.json``); the clip
was picked from {1.0, 0.2} on these results, the same for both modes.

Reported per mode: FLamby's client-avg accuracy and pooled test accuracy (mean, std over
seeds), the noise multiplier, mean round seconds and bytes uploaded per client per round.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
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
    ROOT,
    hospital_correct,
    print_table,
    run_figures,
    write_result,
)

PRESET = "experiment=heart_disease_4_hospitals"
EPSILONS = (1.0, 3.0, 8.0)
DELTA = 1e-3  # the hospitals hold 30-199 rows; the DP presets of this dataset use 1e-3


def _modes(clip: float) -> dict[str, list[str]]:
    out = {"none": ["privacy=none"], "none+secagg": ["privacy=none", "secagg=on"]}
    for e in EPSILONS:
        common = [f"privacy.epsilon={e}", f"privacy.clip={clip}", f"privacy.delta={DELTA}"]
        out[f"central eps={e:g}"] = ["privacy=central", "privacy.accountant=rdp", *common]
        out[f"distributed eps={e:g}"] = ["privacy=distributed", "secagg=on", *common]
    return out


def run_one(overrides: list[str]) -> dict[str, Any]:
    """One in-process federation: accuracies from the run directory, timings, noise."""
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
        s = run_federation(InProcessGrid(app, int(cfg.federation.num_clients)), cfg,
                           RunWriter(Path(d)))
        wall = time.perf_counter() - t0
        rows = [json.loads(x) for x in (Path(d) / "metrics.jsonl").read_text().splitlines()]
        per, correct = hospital_correct(Path(d), cfg)
    return {
        "client_avg": float(np.mean(list(per.values()))),
        "pooled": float(correct.mean()),
        **run_figures(s, rows, wall),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data", nargs="?",
                    default=str(ROOT.parent / "shared" / "data" / "fed_heart_disease"))
    ap.add_argument("--seeds", type=int, nargs="+", default=[42, 43, 44, 45, 46])
    ap.add_argument("--clip", type=float, default=0.2)
    ap.add_argument("--modes", nargs="*", default=None, help="subset of the mode names")
    ap.add_argument("--out", default="distributed_dp_heart", help="results/<out>.json")
    a = ap.parse_args()

    from lepton_fed.data.datasets import HEART_FILES

    data = Path(a.data).resolve()
    missing = [f for _, f in HEART_FILES if not (data / f).is_file()]
    if missing:
        raise SystemExit(f"Fed-Heart-Disease data not found: {data} lacks "
                         f"{', '.join(missing)}; nothing measured.")
    import torch

    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    results: dict[str, Any] = {}
    for name, ov in _modes(a.clip).items():
        if a.modes and name not in a.modes:
            continue
        runs = [run_one([PRESET, f"data.path={data}", *ov, f"seed={s}"]) | {"seed": s}
                for s in a.seeds]
        ca, po = [r["client_avg"] for r in runs], [r["pooled"] for r in runs]
        results[name] = {
            "client_avg_mean": statistics.mean(ca), "client_avg_std": statistics.pstdev(ca),
            "pooled_mean": statistics.mean(po), "pooled_std": statistics.pstdev(po),
            "runs": runs,
            **{k: statistics.mean(r[k] for r in runs)
               for k in ("round_seconds", "upload_per_client")},
            "noise_multiplier": runs[0]["noise_multiplier"],
            "epsilon": runs[0]["epsilon"], "wrap_log2": runs[0]["wrap_log2"],
        }
        v = results[name]
        print(f"{name}: client-avg {v['client_avg_mean']:.4f} +- {v['client_avg_std']:.4f} "
              f"pooled {v['pooled_mean']:.4f} +- {v['pooled_std']:.4f}", flush=True)
    table = [[k, f"{v['client_avg_mean']:.4f} +- {v['client_avg_std']:.4f}",
              f"{v['pooled_mean']:.4f} +- {v['pooled_std']:.4f}",
              "" if v["noise_multiplier"] is None else f"{v['noise_multiplier']:.3f}",
              f"{v['round_seconds']:.3f}", f"{v['upload_per_client']:.0f}"]
             for k, v in results.items()]
    print_table(["mode", "client-avg", "pooled", "noise mult.", "round s", "bytes up/client"],
                table)
    write_result(a.out, {
        "setup": {"preset": PRESET, "seeds": a.seeds, "clip": a.clip, "delta": DELTA,
                  "field_bits": 32},
        "results": results,
    })


if __name__ == "__main__":
    main()
