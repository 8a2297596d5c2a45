"""Kill -9 and resume: a real server process (the round loop with the ClientApp
in-process) killed by its PID, then resumed from its run directory, against an
uninterrupted run of the same config."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

RUNNER = r'''
import sys, time
from pathlib import Path
from flwr.clientapp import ClientApp
from lepton_fed.client import app as client_module
from lepton_fed.config import compose
from lepton_fed.inprocess import InProcessGrid
from lepton_fed.server.outputs import RunWriter
from lepton_fed.server.rounds import run_federation

run_dir, resume, pause_at, ledger_dir, *overrides = sys.argv[1:]
cfg = compose(overrides)
n = int(cfg.federation.num_clients)
app = client_module.app
if int(pause_at):
    app = ClientApp()
    app.query("setup")(client_module.setup)
    app.evaluate()(client_module.evaluate)

    @app.train()
    def train(msg, ctx):  # the round the process dies in: every node is still untouched
        if int(msg.content["config"]["server-round"]) == int(pause_at):
            Path(run_dir, "paused").write_text("")
            time.sleep(3600)
        return client_module.train(msg, ctx)

nodes = [{"partition-id": i, "num-partitions": n} | ({"ledger-dir": ledger_dir} if ledger_dir else {})
         for i in range(n)]
run_federation(InProcessGrid(app, n, node_configs=nodes), cfg, RunWriter(run_dir),
               resume=run_dir if resume == "1" else None)
'''

BASE = ("model=logreg", "federation.num_clients=4", "federation.clients_per_round=3",
        "federation.rounds=5")
DPSGD = ("privacy=dpsgd", "privacy.reproducible=true", "privacy.epsilon=8.0")


def _start(tmp_path, run_dir, overrides, *, resume=False, pause_at=0, ledgers=""):
    script = tmp_path / "runner.py"
    script.write_text(RUNNER)
    env = dict(os.environ, FLWR_TELEMETRY_ENABLED="0", PYTHONUNBUFFERED="1")
    return subprocess.Popen(
        [sys.executable, str(script), str(run_dir), "1" if resume else "0", str(pause_at),
         str(ledgers), *overrides],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _finish(proc, timeout=300):
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out[-3000:]


def _wait_for(pred, proc, timeout=300):
    t0 = time.monotonic()
    while not pred():
        assert proc.poll() is None, "the run ended before it could be killed"
        assert time.monotonic() - t0 < timeout
        time.sleep(0.02)


def _kill(proc):
    os.kill(proc.pid, signal.SIGKILL)  # our own child, by its PID
    proc.wait(timeout=30)


def _rows(d):
    return [json.loads(x) for x in (d / "metrics.jsonl").read_text().splitlines()]


def _summary(d):
    return json.loads((d / "summary.json").read_text())


def _max_diff(a, b):
    wa, wb = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    return max(float(np.max(np.abs(wa[k] - wb[k]))) for k in wa)


def _killed_and_resumed(tmp_path, name, overrides, *, after=None, pause_at=0, ledgers=""):
    """Kill -9 once ``after`` rounds are in metrics.jsonl (anywhere in the next one),
    or while round ``pause_at`` waits at its start; then resume to the end."""
    d = tmp_path / name
    d.mkdir()
    proc = _start(tmp_path, d, overrides, pause_at=pause_at, ledgers=ledgers)
    if pause_at:
        _wait_for(lambda: (d / "paused").exists(), proc)
    else:
        _wait_for(lambda: (d / "metrics.jsonl").exists() and len(_rows(d)) >= after, proc)
    _kill(proc)
    assert not (d / "summary.json").exists()
    _finish(_start(tmp_path, d, overrides, resume=True, ledgers=ledgers))
    return d


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """Uninterrupted runs, computed once per config."""
    cache = {}

    def get(overrides, ledgers=False):
        key = (overrides, ledgers)
        if key not in cache:
            tmp = tmp_path_factory.mktemp("reference")
            d = tmp / "run"
            d.mkdir()
            _finish(_start(tmp, d, overrides, ledgers=tmp / "ledgers" if ledgers else ""))
            cache[key] = d
        return cache[key]

    return get


@pytest.mark.parametrize("after", [1, 3])
def test_killed_anywhere_after_round_k_resumes_to_the_same_model(tmp_path, reference, after):
    ref = reference(BASE)
    d = _killed_and_resumed(tmp_path, "run", BASE, after=after)
    assert _max_diff(ref, d) <= 1e-6
    assert [r["round"] for r in _rows(d)] == [1, 2, 3, 4, 5]
    assert [r["accuracy"] for r in _rows(d)] == [r["accuracy"] for r in _rows(ref)]
    assert _summary(d)["rounds_completed"] == 5


def test_dpsgd_killed_between_rounds_spends_exactly_what_an_uninterrupted_run_spends(
        tmp_path, reference):
    ref = reference(DPSGD + BASE, ledgers=True)
    d = _killed_and_resumed(tmp_path, "run", DPSGD + BASE, pause_at=3,
                            ledgers=tmp_path / "ledgers")
    assert _max_diff(ref, d) <= 1e-6
    a, b = _summary(ref)["privacy"], _summary(d)["privacy"]
    assert b["per_client"] == a["per_client"] and len(a["per_client"]) == 4
    assert b["epsilon"] == a["epsilon"] > 0


def test_dpsgd_killed_mid_round_never_forgets_spend(tmp_path, reference):
    """A node that spent a round the server never checkpointed keeps that spend."""
    ref = reference(DPSGD + BASE, ledgers=True)
    d = _killed_and_resumed(tmp_path, "run", DPSGD + BASE, after=2, ledgers=tmp_path / "ledgers")
    a, b = _summary(ref)["privacy"]["per_client"], _summary(d)["privacy"]["per_client"]
    assert set(a) == set(b)
    assert all(b[n] >= a[n] - 1e-12 for n in a), (a, b)


def _kill_after_two_rounds(tmp_path: Path, d: Path, *overrides: str
                           ) -> tuple[dict[str, str], list[str]]:
    """``lepton-fed simulate OVERRIDES`` into ``d``, SIGKILLed (its whole process group:
    the Ray processes it started) once two rounds are on disk. Returns the environment
    and the command prefix, for the resume."""
    env = dict(os.environ, FLWR_TELEMETRY_ENABLED="0", PYTHONUNBUFFERED="1")
    cli = [sys.executable, "-m", "lepton_fed.cli.main", "simulate"]
    proc = subprocess.Popen([*cli, *overrides, f"hydra.run.dir={d}"], cwd=tmp_path, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        _wait_for(lambda: (d / "metrics.jsonl").exists() and len(_rows(d)) >= 2, proc, 400)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the group our child leads
        proc.wait(timeout=30)
    return env, cli


@pytest.mark.integration
def test_cli_simulation_on_ray_killed_then_resumed_with_resume_run_dir(tmp_path, reference):
    """``lepton-fed simulate ... `` killed with SIGKILL after round 2 (its whole process
    group: the Ray processes it started), then ``lepton-fed simulate resume=RUN_DIR``
    with nothing else: the run's own config, same directory, same model as an
    uninterrupted run."""
    d = tmp_path / "run"
    env, cli = _kill_after_two_rounds(tmp_path, d, *BASE)
    assert not (d / "summary.json").exists()
    out = subprocess.run([*cli, f"resume={d}"], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=400, start_new_session=True)
    assert out.returncode == 0, out.stderr[-3000:]
    assert f"resumed {d} after round" in out.stdout
    assert [r["round"] for r in _rows(d)] == [1, 2, 3, 4, 5]
    assert _max_diff(reference(BASE), d) <= 1e-6
    bad = subprocess.run([*cli, f"resume={d}", "client.lr=0.5"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=200)
    assert bad.returncode == 2 and "client.lr: the run has None, now 0.5" in bad.stderr


@pytest.mark.integration
def test_cli_dpsgd_simulation_on_ray_resumes_with_every_nodes_spend(tmp_path, reference):
    """DP-SGD on Ray: the virtual nodes keep their ledgers in RUN_DIR/node_ledgers, so
    ``resume=RUN_DIR`` is allowed and no node's spend restarts from zero (killed in or
    after round 2: each node ends at least at an uninterrupted run's epsilon)."""
    d = tmp_path / "run"
    env, cli = _kill_after_two_rounds(tmp_path, d, *DPSGD, *BASE)
    spent = {p.name: len(list(p.iterdir())) for p in (d / "node_ledgers").iterdir()}
    assert spent and all(spent.values())  # ledgers on disk before the kill
    out = subprocess.run([*cli, f"resume={d}"], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=400, start_new_session=True)
    assert out.returncode == 0, out.stderr[-3000:]
    assert [r["round"] for r in _rows(d)] == [1, 2, 3, 4, 5]
    want = _summary(reference(DPSGD + BASE, ledgers=True))["privacy"]["per_client"]
    got = _summary(d)["privacy"]["per_client"]
    assert set(got) == set(want) and all(got[n] >= want[n] - 1e-9 for n in want), (got, want)
