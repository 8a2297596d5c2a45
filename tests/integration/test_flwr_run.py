"""The same apps under Flower's own runtime: `flwr run` with a local SuperLink."""

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _superlinks() -> set[int]:
    out = subprocess.run(["pgrep", "-f", "flower-super"], capture_output=True, text=True)
    return {int(p) for p in out.stdout.split()}


@pytest.mark.integration
@pytest.mark.skipif(shutil.which("flwr") is None, reason="flwr CLI not on PATH")
def test_flwr_run_with_local_superlink(tmp_path):
    run_dir = tmp_path / "run"
    env = dict(os.environ, FLWR_HOME=str(tmp_path / "flwr_home"),
               FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION="1", FLWR_TELEMETRY_ENABLED="0",
               FLWR_DISABLE_UPDATE_CHECK="1", RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO="0")
    before = _superlinks()
    overrides = "federation.rounds=2 federation.num_clients=2 federation.clients_per_round=2"
    try:
        out = subprocess.run(
            ["flwr", "run", ".", "--stream", "--run-config",
             f'config-overrides="{overrides}" run-dir="{run_dir}"',
             "--federation-config", "num-supernodes=2"],
            cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    finally:
        time.sleep(0.5)
        for pid in _superlinks() - before:  # flwr run leaves its SuperLink daemon running
            try:
                os.kill(pid, 15)
            except ProcessLookupError:
                pass
    text = out.stdout + out.stderr
    assert out.returncode == 0, text[-3000:]
    assert "[lepton-fed] round 2/2" in text
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["rounds_completed"] == 2 and summary["final"]["accuracy"] > 0.8
