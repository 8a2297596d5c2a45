"""How fast a run that cannot work is refused: before Ray, with every problem named.

Run: ``python benchmarks/refusal_time.py`` (writes ``benchmarks/results/refusal_time.json``;
under a minute).

1. ``lepton-fed simulate`` with three config problems (an unknown model, 0 rounds, Krum
   with secure aggregation), as a user types it: a fresh process, from start to exit
   code 2. Target: < 30 s.
2. ``lepton_fed.simulation.simulate`` with DP-SGD on a model Opacus cannot handle (a
   PReLU layer, ``grad_sample_mode=ew``), in this process: from the call to the
   ``IncompatibleModelError`` naming the layer. Target: < 20 s.

The tests check *that* both are refused before Ray starts
(``tests/integration/test_cli_simulation.py``, ``test_dp_model_check.py``); this script
measures how long it takes, on this machine, at this load.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, loadavg, median, print_table, quiet_env, write_result  # noqa: E402

BAD_CONFIG = ["model=transformer", "federation.rounds=0", "strategy=krum", "secagg=on"]
TARGETS = {"cli_bad_config_s": 30.0, "dp_unfixable_model_s": 20.0}


def cli_bad_config() -> float:
    """Seconds from starting ``lepton-fed simulate`` to its exit (code 2 expected)."""
    with tempfile.TemporaryDirectory() as d:
        t0 = time.monotonic()
        out = subprocess.run(
            [sys.executable, "-m", "lepton_fed.cli.main", "simulate", *BAD_CONFIG],
            cwd=d, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        wall = time.monotonic() - t0
    if out.returncode != 2 or "3 configuration problem(s)" not in out.stderr:
        raise SystemExit(
            f"unexpected CLI result {out.returncode}: {out.stderr[-2000:]}"
        )
    return wall


def dp_unfixable_model() -> float:
    """Seconds from ``simulate(cfg)`` to the IncompatibleModelError (in-process)."""
    from torch import nn

    from lepton_fed.config import compose
    from lepton_fed.errors import IncompatibleModelError
    from lepton_fed.models import registry
    from lepton_fed.simulation import simulate

    def prelu_mlp(*, num_features: int, num_classes: int, **_: Any) -> nn.Module:
        return nn.Sequential(
            nn.Linear(num_features, 16), nn.PReLU(), nn.Linear(16, num_classes)
        )

    registry._REGISTRY["prelu_mlp"] = prelu_mlp  # a user's model, registered
    cfg = compose(["privacy=dpsgd", "privacy.epsilon=3", "federation.rounds=2",
                   "federation.num_clients=3", "federation.clients_per_round=3",
                   "model.name=prelu_mlp", "privacy.grad_sample_mode=ew"])  # fmt: skip
    with tempfile.TemporaryDirectory() as d:
        t0 = time.monotonic()
        try:
            simulate(cfg, d)
        except IncompatibleModelError as e:
            if "PReLU" not in str(e):
                raise
            return time.monotonic() - t0
    raise SystemExit("the unfixable model was not refused")


def main() -> None:
    """Measure both refusals ``--repeats`` times; write JSON and print a table."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    quiet_env()
    load0 = loadavg()
    runs: dict[str, list[float]] = {k: [] for k in TARGETS}
    for _ in range(a.repeats):
        runs["cli_bad_config_s"].append(cli_bad_config())
        runs["dp_unfixable_model_s"].append(dp_unfixable_model())
    summary = {
        k: {"median_s": median(v), "max_s": max(v), "target_s": TARGETS[k],
            "met": max(v) < TARGETS[k]}
        for k, v in runs.items()
    }  # fmt: skip
    print_table(
        ["refusal", "median s", "max s", "target s", "met"],
        [
            [k, v["median_s"], v["max_s"], v["target_s"], v["met"]]
            for k, v in summary.items()
        ],
    )
    path = write_result("refusal_time", {"summary": summary, "runs": runs,
                                         "loadavg_1min": [load0, loadavg()]})  # fmt: skip
    print(f"wrote {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
