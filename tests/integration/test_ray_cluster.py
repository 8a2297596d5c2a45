"""A Ray cluster on loopback: a head node (``ray start --head``, no CPUs: it only
coordinates, so no client can run there) and one worker node (``ray start
--address=...``), each in its own process group. A lepton-fed simulation with DP-SGD and
secure aggregation joins the cluster through ``federation.ray_address``: every client
runs on the worker node, which gets the simulation bundle's path through Ray's runtime
environment. Both nodes are then stopped by process group (never ``ray stop``, which
stops every Ray process of the machine, other users' included)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

RAY = Path(sys.executable).with_name("ray")
CLI = [sys.executable, "-m", "lepton_fed.cli.main"]


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _node_args(ports: list[int]) -> list[str]:
    """Ports of one node's services, all free, so nothing collides with other Ray
    instances of the machine."""
    return [f"--node-manager-port={ports[0]}", f"--object-manager-port={ports[1]}",
            f"--dashboard-agent-listen-port={ports[2]}",
            f"--dashboard-agent-grpc-port={ports[3]}", f"--metrics-export-port={ports[4]}",
            f"--runtime-env-agent-port={ports[5]}", "--node-ip-address=127.0.0.1",
            "--disable-usage-stats", "--block"]


def _start(args: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:  # the child keeps its own handle
        return subprocess.Popen([str(RAY), "start", *args], stdout=out,
                                stderr=subprocess.STDOUT, env=env, start_new_session=True)


def _wait_started(proc: subprocess.Popen[bytes], log: Path, timeout: float = 90.0) -> None:
    t0 = time.monotonic()
    while "Ray runtime started" not in log.read_text(errors="replace"):
        if proc.poll() is not None or time.monotonic() - t0 > timeout:
            raise AssertionError(f"ray start did not come up:\n{log.read_text()[-3000:]}")
        time.sleep(0.5)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Stop one node: its whole process group (raylet, GCS, workers it started)."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        except ProcessLookupError:
            pass
    try:  # anything left in the group (Ray's own children) goes too
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _plus(key: str) -> str:
    """``+`` for a federation key conf/federation/default.yaml does not list yet."""
    from lepton_fed.config import compose

    return "" if key in compose([]).federation else "+"


@pytest.mark.integration
def test_simulation_runs_on_a_head_and_a_worker_node_joined_by_address(tmp_path):
    # Prepare: a head without CPUs and a worker with one, on loopback
    ray_tmp = Path(tempfile.mkdtemp(prefix="lfray", dir="/tmp"))  # short: Ray's socket paths
    head_port, client_port, *ports = _free_ports(14)
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env |= {"RAY_USAGE_STATS_ENABLED": "0", "FLWR_TELEMETRY_ENABLED": "0"}
    head = _start(["--head", f"--port={head_port}", f"--ray-client-server-port={client_port}",
                   "--num-cpus=0", "--include-dashboard=false", f"--temp-dir={ray_tmp}",
                   *_node_args(ports[:6])], tmp_path / "head.log", env)
    worker = None
    try:
        _wait_started(head, tmp_path / "head.log")
        worker = _start([f"--address=127.0.0.1:{head_port}", "--num-cpus=1",
                         *_node_args(ports[6:12])], tmp_path / "worker.log", env)
        _wait_started(worker, tmp_path / "worker.log")
        run_dir = tmp_path / "run"
        # Execute: the driver joins the cluster; DP-SGD and secure aggregation on 4 nodes
        t0 = time.monotonic()
        out = subprocess.run(
            [*CLI, "simulate", "federation.num_clients=4", "federation.clients_per_round=4",
             "federation.rounds=2", "privacy=dpsgd", "secagg=on",
             f"{_plus('ray_address')}federation.ray_address=127.0.0.1:{head_port}",
             f"{_plus('sim_bundle_dir')}federation.sim_bundle_dir={ray_tmp / 'bundles'}",
             f"hydra.run.dir={run_dir}"],
            cwd=tmp_path, env={**env, "PYTHONUNBUFFERED": "1"}, capture_output=True,
            text=True, timeout=300)
        wall = time.monotonic() - t0
        # Assert: every round aggregated all 4 masked inputs, computed on the worker node
        assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-4000:]
        assert "connecting to the Ray cluster at 127.0.0.1" in out.stdout
        rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
        assert [r["clients"] for r in rows] == [4, 4]
        assert all(r["secagg"]["contributors"] == 4 for r in rows)
        summary = json.loads((run_dir / "summary.json").read_text())
        assert summary["rounds_completed"] == 2 and summary["privacy"]["mode"] == "dpsgd"
        assert not list((ray_tmp / "bundles").iterdir())  # the run removed its bundle
        print(f"cluster simulation: {wall:.1f} s")
    finally:
        # Cleanup: only our own nodes, by process group
        if worker is not None:
            _stop(worker)
        _stop(head)
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert head.poll() is not None and (worker is None or worker.poll() is not None)
