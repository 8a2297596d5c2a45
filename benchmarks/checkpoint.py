"""Checkpoint cost per round as a fraction of the round's time.

Run: ``python benchmarks/checkpoint.py [--rounds 10]`` (writes
``benchmarks/results/checkpoint.json``; in-process grid, no Ray; about a minute).

For each model (breast-cancer MLP with FedAvg, digits MLP and digits CNN with FedAdam,
whose moments are saved too) the real round loop runs ``--rounds`` rounds with every
client; :func:`lepton_fed.server.checkpoint.save` (temp file, fsync, rename, directory
fsync) is timed around each call. Round time is the ``seconds`` of the metrics row
(sampling, exchange, aggregation, evaluation) plus the save. In-process rounds have no
transport cost, so their fraction is an UPPER bound; ``--ray`` (default on) also times
one real Ray simulation (breast-cancer MLP, 5 clients), whose ServerApp runs in this
process.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import print_table, write_result  # noqa: E402

CASES: dict[str, list[str]] = {
    "breast_cancer-mlp-fedavg": ["data=breast_cancer", "model=mlp", "strategy=fedavg"],
    "digits-mlp-fedadam": ["data=digits", "model=mlp", "strategy=fedadam"],
    "digits-cnn-fedadam": ["data=digits", "model=cnn", "strategy=fedadam"],
}


def run_case(overrides: list[str], rounds: int, ray: bool = False) -> dict[str, Any]:
    """One run; per-round save seconds, round seconds and checkpoint bytes."""
    from lepton_fed.client import app as client_module
    from lepton_fed.config import compose
    from lepton_fed.inprocess import InProcessGrid
    from lepton_fed.server import checkpoint
    from lepton_fed.server.outputs import RunWriter
    from lepton_fed.server.rounds import run_federation

    n = 5 if ray else 10
    cfg = compose([*overrides, f"federation.num_clients={n}",
                   f"federation.clients_per_round={n}", f"federation.rounds={rounds}"])
    saves: list[float] = []
    real_save = checkpoint.save

    def timed(run: Any, rnd: int) -> Any:
        t0 = time.perf_counter()
        out = real_save(run, rnd)
        saves.append(time.perf_counter() - t0)
        return out

    logging.getLogger("flwr").setLevel(logging.ERROR)
    checkpoint.save = timed  # type: ignore[assignment]
    try:
        with tempfile.TemporaryDirectory() as d, contextlib.redirect_stdout(io.StringIO()):
            if ray:
                from lepton_fed.simulation import simulate

                simulate(cfg, d)
            else:
                run_federation(InProcessGrid(client_module.app, n), cfg, RunWriter(d))
            rows = [r for r in (Path(d) / "metrics.jsonl").read_text().splitlines()]
            size = sum(p.stat().st_size for p in (Path(d) / "checkpoint").iterdir())
    finally:
        checkpoint.save = real_save  # type: ignore[assignment]
    import json

    secs = [json.loads(r)["seconds"] for r in rows]
    fractions = [s / (s + r) for s, r in zip(saves[1:], secs[1:], strict=True)]  # no warm-up
    return {"save_s_median": statistics.median(saves[1:]),
            "round_s_median": statistics.median(secs[1:]),
            "fraction_median": statistics.median(fractions),
            "fraction_max": max(fractions), "checkpoint_bytes": size,
            "save_s": saves, "round_s": secs}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--ray", action=argparse.BooleanOptionalAction, default=True)
    args = ap.parse_args()
    out = {name: run_case(ov, args.rounds) for name, ov in CASES.items()}
    if args.ray:
        out["ray: breast_cancer-mlp-fedavg"] = run_case(CASES["breast_cancer-mlp-fedavg"],
                                                        args.rounds, ray=True)
    print_table(["case", "checkpoint bytes", "save ms", "round ms", "fraction", "max"],
                [[n, r["checkpoint_bytes"], f"{1e3 * r['save_s_median']:.1f}",
                  f"{1e3 * r['round_s_median']:.1f}", f"{100 * r['fraction_median']:.2f} %",
                  f"{100 * r['fraction_max']:.2f} %"] for n, r in out.items()],
                title="checkpoint cost per round (median over rounds 2..N; in-process)")
    print(f"wrote {write_result('checkpoint', {'rounds': args.rounds, 'cases': out})}")


if __name__ == "__main__":
    main()
