"""Same config and seed, same model: two real Ray simulations with partial participation.

Flower gives the virtual nodes random ids in every run and Ray returns the replies in
whatever order the actors finish; lepton-fed samples by node NAME and aggregates the
replies in name order, so the two runs must agree bit for bit.
"""

import json
import os
import subprocess
import sys

import pytest
from safetensors.numpy import load_file

CLI = [sys.executable, "-m", "lepton_fed.cli.main"]


def _simulate(run_dir, *overrides):
    env = dict(os.environ, FLWR_TELEMETRY_ENABLED="0", PYTHONUNBUFFERED="1")
    out = subprocess.run([*CLI, "simulate", *overrides, f"hydra.run.dir={run_dir}"],
                         cwd=run_dir.parent, env=env, capture_output=True, text=True,
                         timeout=400)
    assert out.returncode == 0, out.stderr[-3000:]
    return load_file(run_dir / "model.safetensors"), [
        json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.integration
def test_two_ray_runs_with_partial_participation_are_bit_identical(tmp_path):
    ov = ("federation.num_clients=10", "federation.clients_per_round=5", "federation.rounds=3",
          "seed=0")
    wa, rows_a = _simulate(tmp_path / "a", *ov)
    wb, rows_b = _simulate(tmp_path / "b", *ov)
    assert set(wa) == set(wb)
    for k in wa:
        assert wa[k].tobytes() == wb[k].tobytes(), k
    assert [r["accuracy"] for r in rows_a] == [r["accuracy"] for r in rows_b]
    assert [r["clients"] for r in rows_a] == [5, 5, 5]
