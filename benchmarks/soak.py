"""Soak: 200 rounds with 100 clients (10 per round), in-process: memory and round time.

Run: ``python benchmarks/soak.py [--rounds 200] [--clients 100] [--per-round 10]``
(writes ``benchmarks/results/soak.json``; in-process grid, no Ray; a minute or two).

Task: sklearn digits, IID over ``--clients`` clients, MLP, FedAvg, seed 0, checkpoint
after every round (as every run does), server evaluation every round. Per round the
observer records the process's resident set (``/proc/self/statm``), its peak
(``ru_maxrss``), the round's seconds and the checkpoint's size. The in-process grid keeps
every reply it delivered (``InProcessGrid.seen``, an audit aid of the TEST transport);
the soak empties it each round so that the figures are the server's and the clients',
and ``--keep-replies`` shows what keeping them costs.

Headline: peak RSS at round 20 vs round ``--rounds`` (target: growth <= 10 %) and failed
rounds (target: none).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import print_table, write_result  # noqa: E402


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class Probe:
    """RoundObserver: memory and timing per round."""

    def __init__(self, grid: Any, run_dir: Path, keep: bool) -> None:
        self.grid, self.dir, self.keep = grid, run_dir, keep
        self.rows: list[dict[str, Any]] = []
        self.t = time.perf_counter()

    def on_round(self, row: dict[str, Any]) -> None:
        if not self.keep:
            self.grid.seen.clear()
        now = time.perf_counter()
        ck = self.dir / "checkpoint" / "checkpoint.safetensors"
        self.rows.append({
            "round": row["round"], "rss_mb": _rss_mb(),
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "round_s": row["seconds"], "wall_s": now - self.t, "clients": row["clients"],
            "failed": row["failed"], "checkpoint_bytes": ck.stat().st_size})
        self.t = now

    def on_finish(self, summary: dict[str, Any]) -> None:
        pass


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=200)
    ap.add_argument("--clients", type=int, default=100)
    ap.add_argument("--per-round", type=int, default=10)
    ap.add_argument("--keep-replies", action="store_true")
    args = ap.parse_args()
    from lepton_fed.client import app as client_module
    from lepton_fed.config import compose
    from lepton_fed.inprocess import InProcessGrid
    from lepton_fed.server.outputs import RunWriter
    from lepton_fed.server.rounds import run_federation

    cfg = compose(["data=digits", "model=mlp", f"federation.num_clients={args.clients}",
                   f"federation.clients_per_round={args.per_round}",
                   f"federation.rounds={args.rounds}"])
    logging.getLogger("flwr").setLevel(logging.ERROR)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as d:
        grid = InProcessGrid(client_module.app, args.clients)
        probe = Probe(grid, Path(d), args.keep_replies)
        with contextlib.redirect_stdout(io.StringIO()):
            summary = run_federation(grid, cfg, RunWriter(d), [probe])
    rows = probe.rows
    at = {r["round"]: r for r in rows}
    early, last = at[min(20, args.rounds)], at[args.rounds]

    def window(a: int, b: int) -> float:
        return statistics.median(r["wall_s"] for r in rows if a <= r["round"] <= b)

    result = {
        "rounds": args.rounds, "clients": args.clients, "per_round": args.per_round,
        "keep_replies": args.keep_replies, "wall_s": time.perf_counter() - t0,
        "rounds_completed": summary["rounds_completed"], "failures": summary["failures"],
        "failed_rounds": [r["round"] for r in rows if r["clients"] == 0],
        "final_accuracy": summary["final"]["accuracy"],
        "peak_rss_mb_round_20": early["peak_rss_mb"], "peak_rss_mb_last": last["peak_rss_mb"],
        "peak_rss_growth": last["peak_rss_mb"] / early["peak_rss_mb"] - 1,
        "rss_mb_round_20": early["rss_mb"], "rss_mb_last": last["rss_mb"],
        "round_wall_s_median_11_30": window(11, 30),
        "round_wall_s_median_last_20": window(args.rounds - 19, args.rounds),
        "checkpoint_bytes_last": last["checkpoint_bytes"], "rows": rows,
    }
    print_table(["measure", "value"], [
        ["rounds completed / failed client replies", f"{summary['rounds_completed']} / "
                                                     f"{summary['failures']}"],
        ["peak RSS round 20 -> last (MB)", f"{early['peak_rss_mb']:.1f} -> "
                                           f"{last['peak_rss_mb']:.1f} "
                                           f"({100 * result['peak_rss_growth']:+.1f} %)"],
        ["RSS round 20 -> last (MB)", f"{early['rss_mb']:.1f} -> {last['rss_mb']:.1f}"],
        ["round wall s, rounds 11-30 -> last 20", f"{result['round_wall_s_median_11_30']:.3f}"
                                                   f" -> {result['round_wall_s_median_last_20']:.3f}"],
        ["checkpoint bytes at the end", last["checkpoint_bytes"]],
        ["final accuracy", f"{summary['final']['accuracy']:.4f}"],
    ], title=f"soak: {args.rounds} rounds, {args.clients} clients ({args.per_round} per round)")
    name = "soak_keep_replies" if args.keep_replies else "soak"
    print(f"wrote {write_result(name, result)}")


if __name__ == "__main__":
    main()
