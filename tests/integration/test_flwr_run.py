"""The same apps under Flower's own runtime: `flwr run` against a simulation SuperLink.

The test starts its own ``flower-superlink --simulation`` on a free port (in a session of
its own) and points a private ``FLWR_HOME`` at it, so ``flwr run`` never starts or reuses a
shared local SuperLink. It stops exactly what it started: the SuperLink's process group
and every descendant PID of it (Flower's SuperExec detaches into a session of its own).
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
_HERE = Path(sys.executable).parent / "flwr"
FLWR = str(_HERE) if _HERE.is_file() else shutil.which("flwr")


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _started(pid: int) -> str | None:
    """The start time of ``pid`` (field 22 of /proc/PID/stat), or None if it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _descendants(pid: int) -> dict[int, str]:
    """Every live descendant of ``pid`` with its start time (Linux /proc; no name lookups)."""
    out: dict[int, str] = {}
    todo = [pid]
    while todo:
        p = todo.pop()
        for task in Path(f"/proc/{p}/task").glob("*"):
            try:
                kids = [int(k) for k in (task / "children").read_text().split()]
            except OSError:
                continue
            for k in kids:
                if (t := _started(k)) is not None:
                    out[k] = t
            todo += kids
    return out


def _stop(proc: subprocess.Popen, recorded: dict[int, str]) -> None:
    """SIGTERM the group we created and every recorded descendant that is still the same
    process (same start time); SIGKILL whatever is left after 10 s."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
        for pid, t in recorded.items():
            if _started(pid) == t:
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            proc.poll()
            alive = [p for p, t in recorded.items() if _started(p) == t
                     and "zombie" not in Path(f"/proc/{p}/status").read_text(errors="ignore")]
            if proc.returncode is not None and not alive:
                return
            time.sleep(0.2)


@pytest.mark.integration
@pytest.mark.skipif(FLWR is None, reason="flwr CLI not installed")
def test_flwr_run_with_local_superlink(tmp_path):
    run_dir = tmp_path / "run"
    home = tmp_path / "flwr_home"
    home.mkdir()
    port = _free_port()
    (home / "config.toml").write_text(
        f'[superlink]\ndefault = "test"\n\n[superlink.test]\naddress = "127.0.0.1:{port}"\n'
        "insecure = true\n")
    env = dict(os.environ, FLWR_HOME=str(home),
               FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION="1", FLWR_TELEMETRY_ENABLED="0",
               FLWR_DISABLE_UPDATE_CHECK="1", RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO="0")
    bindir = Path(FLWR).parent
    env["PATH"] = f"{bindir}{os.pathsep}{env.get('PATH', '')}"
    with open(tmp_path / "superlink.log", "wb") as log:
        link = subprocess.Popen(
            [str(bindir / "flower-superlink"), "--insecure", "--simulation", "--host", "127.0.0.1",
             "--port", str(port), "--database", str(tmp_path / "state.db")],
            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    overrides = "federation.rounds=2 federation.num_clients=2 federation.clients_per_round=2"
    seen: dict[int, str] = {}
    try:
        out = subprocess.Popen(
            [FLWR, "run", ".", "test", "--stream", "--run-config",
             f'config-overrides="{overrides}" run-dir="{run_dir}"',
             "--federation-config", "num-supernodes=2"],
            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + 300
        while out.poll() is None and time.monotonic() < deadline:
            seen.update(_descendants(link.pid))  # SuperExec and its children, while alive
            time.sleep(0.5)
        if out.poll() is None:
            out.kill()
        text = out.communicate()[0]
    finally:
        seen.update(_descendants(link.pid))
        _stop(link, seen)
    assert out.returncode == 0, text[-3000:] + (tmp_path / "superlink.log").read_text()[-2000:]
    assert "[lepton-fed] round 2/2" in text
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["rounds_completed"] == 2 and summary["final"]["accuracy"] > 0.8
