"""Bytes on the wire and accuracy for update compression none / int8 / topk.

digits, MLP, 20 clients all sampled, FedAvg; the real server loop and client handlers
delivered in-process (transport does not change bytes or accuracy). Mean over seeds.

    python benchmarks/wire.py [--rounds 20] [--seeds 0 1 2] [--topk 0.05]

Targets (issue 5): int8 <= 26 % of fp32 upload bytes with <= 0.5 point accuracy loss;
top-k with error feedback <= 10 % with <= 1 point loss.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_result  # noqa: E402


def run(codec: str, seed: int, rounds: int, topk: float) -> dict[str, float]:
    from lepton_fed.client.app import app
    from lepton_fed.config import compose
    from lepton_fed.inprocess import InProcessGrid
    from lepton_fed.server.outputs import RunWriter
    from lepton_fed.server.rounds import run_federation

    cfg = compose(
        [
            f"compression={codec}",
            f"compression.topk_fraction={topk}",
            "data=digits",
            "model.hidden=[128,128]",
            "federation.num_clients=20",
            "federation.clients_per_round=20",
            f"federation.rounds={rounds}",
            "client.lr=0.1",
            f"seed={seed}",
        ]
    )
    with tempfile.TemporaryDirectory() as d:
        s = run_federation(InProcessGrid(app, 20), cfg, RunWriter(d))
    return {
        "accuracy": s["final"]["accuracy"],
        "bytes_up": s["bytes"]["up"],
        "bytes_up_per_round": s["bytes"]["up"] / rounds,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--topk", type=float, default=0.05)
    args = ap.parse_args()
    logging.getLogger("flwr").setLevel(logging.WARNING)
    res: dict[str, dict[str, float]] = {}
    for codec in ("none", "int8", "topk"):
        runs = [run(codec, s, args.rounds, args.topk) for s in args.seeds]
        res[codec] = {
            "accuracy_mean": float(np.mean([r["accuracy"] for r in runs])),
            "accuracy_std": float(np.std([r["accuracy"] for r in runs])),
            "bytes_up_per_round": float(
                np.mean([r["bytes_up_per_round"] for r in runs])
            ),
        }
    base = res["none"]
    print(
        f"\n{'codec':6} {'bytes up/round':>15} {'ratio':>7} {'accuracy':>16} {'delta (pt)':>10}"
    )
    for codec, r in res.items():
        r["bytes_ratio"] = r["bytes_up_per_round"] / base["bytes_up_per_round"]
        r["accuracy_loss_points"] = 100 * (base["accuracy_mean"] - r["accuracy_mean"])
        print(
            f"{codec:6} {r['bytes_up_per_round']:>15,.0f} {r['bytes_ratio']:>7.3f} "
            f"{r['accuracy_mean']:.4f}±{r['accuracy_std']:.4f} {r['accuracy_loss_points']:>10.2f}"
        )
    targets = {
        "int8_bytes_ratio<=0.26": res["int8"]["bytes_ratio"] <= 0.26,
        "int8_loss<=0.5pt": res["int8"]["accuracy_loss_points"] <= 0.5,
        "topk_bytes_ratio<=0.10": res["topk"]["bytes_ratio"] <= 0.10,
        "topk_loss<=1pt": res["topk"]["accuracy_loss_points"] <= 1.0,
    }
    print("targets:", targets)
    write_result(
        "wire", {"settings": vars(args), "results": res, "targets_met": targets}
    )


if __name__ == "__main__":
    main()
