"""Child processes of ``lepton-fed superlink`` / ``node join``: start, watch, stop by PID.

Children stay in the caller's process group (no new session), so whoever stops the
``lepton-fed`` process group stops them too; the supervisors also stop them explicitly,
by PID, newest first, with SIGTERM then SIGKILL. Nothing here looks processes up by name.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from lepton_fed.deploy.layout import DeployError

__all__ = [
    "Child",
    "check_port_free",
    "free_port",
    "spawn",
    "stop_all",
    "tail",
    "tool",
    "tool_env",
]


@dataclass
class Child:
    """A started child process and the file its output goes to."""

    name: str
    proc: subprocess.Popen[bytes]
    log: Path
    offset: int = 0  # where this start's output begins in ``log``

    @property
    def pid(self) -> int:
        """The child's process id."""
        return self.proc.pid

    def alive(self) -> bool:
        """True while the child process has not exited."""
        return self.proc.poll() is None

    def output(self) -> str:
        """What this child has written so far (this start only)."""
        try:
            with open(self.log, "rb") as f:
                f.seek(self.offset)
                return f.read().decode("utf-8", errors="replace")
        except OSError:
            return ""


def tool(name: str) -> str:
    """The Flower executable next to this Python (the same venv), else from PATH."""
    here = Path(sys.executable).parent / name
    if here.is_file():
        return str(here)
    found = shutil.which(name)
    if not found:
        raise DeployError(f"{name} is not installed (pip install 'flwr==1.42.0' in this environment)")
    return found


def tool_env(**extra: str) -> dict[str, str]:
    """The environment for Flower tools: this venv first on PATH, no telemetry, no installs."""
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env.update(FLWR_TELEMETRY_ENABLED="0", FLWR_DISABLE_UPDATE_CHECK="1",
               FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION="1", PYTHONUNBUFFERED="1")
    env.update(extra)
    return env


def spawn(name: str, argv: Sequence[str], *, log: Path, env: dict[str, str],
          cwd: Path | None = None) -> Child:
    """Start ``argv`` with stdout+stderr appended to ``log``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as f:
        f.write(f"\n==== {time.strftime('%Y-%m-%d %H:%M:%S')} {name}: {' '.join(argv)}\n".encode())
        f.flush()
        offset = f.tell()
        proc = subprocess.Popen(list(argv), stdout=f, stderr=subprocess.STDOUT, env=env,
                                cwd=cwd, stdin=subprocess.DEVNULL)
    return Child(name, proc, log, offset)


def stop_all(children: Sequence[Child], *, timeout: float = 10.0, grace: float = 0.0) -> None:
    """SIGTERM each live child (newest first), wait up to ``timeout``, then SIGKILL.

    The children share the caller's process group, so a signal sent to the group
    (Ctrl-C in a terminal, ``kill -- -PGID``, systemd's default stop) may have reached
    them already: after a signal, pass ``grace`` seconds for them to exit on their own
    before they are signalled. A second signal would hit ``flower-supernode`` after
    Flower restored the default handler and kill it before it leaves the SuperLink,
    which then keeps the node online for two heartbeats (60 s) and refuses its restart.
    """
    live = [c for c in reversed(children) if c.alive()]
    deadline = time.monotonic() + grace
    for c in live:
        try:
            c.proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
    live = [c for c in live if c.alive()]
    for c in live:
        try:
            c.proc.send_signal(signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + timeout
    for c in live:
        try:
            c.proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            c.proc.kill()
            c.proc.wait(5)


def tail(path: Path, lines: int = 15) -> str:
    """The last ``lines`` lines of a log file ('' if absent)."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.rstrip().splitlines()[-lines:])


def check_port_free(host: str, port: int, what: str) -> None:
    """DeployError naming ``what`` if ``host:port`` cannot be bound now."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does
        try:
            s.bind((host, port))
        except OSError as e:
            raise DeployError(
                f"{what}: port {port} on {host} is not free ({e.strerror}); is another "
                "SuperLink or SuperNode running? Stop it or choose another port"
            ) from None


def free_port(host: str = "127.0.0.1") -> int:
    """A port the OS says is free right now."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])
