"""``lepton-fed superlink DIR``: Flower's SuperLink for a provisioned federation, in the foreground.

What runs (all children of this process, stopped by PID on exit):

* ``flower-superlink`` on ``127.0.0.1:<control port>`` with the federation's TLS
  certificate, ``--enable-supernode-auth``, ``--isolation process``, runtime dependency
  installation disabled and a SQLite database under ``coordinator/state`` (a restart
  keeps registered nodes and past runs);
* ``flower-superexec`` (Flower's own) that starts the ServerApp of each run; the FAB
  carries no code, so the ServerApp is the lepton-fed installed here;
* the Fleet gate (:mod:`lepton_fed.deploy.gate`) on ``<bind>:<port>``, the one port to
  open to the nodes.

At start every ``coordinator/node_keys/*.pub`` is registered (and keys that were
removed are unregistered), and ``state/flwr_home/config.toml`` is written so that
``flwr ls lepton`` etc. work with ``FLWR_HOME=coordinator/state/flwr_home``.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lepton_fed.deploy.layout import CoordinatorFiles, DeployError
from lepton_fed.deploy.procs import (
    Child,
    check_port_free,
    spawn,
    stop_all,
    tail,
    tool,
    tool_env,
)

__all__ = ["CONNECTION", "coordinator_files", "flwr_home", "run_superlink", "superlink_info"]

CONNECTION = "lepton"


def coordinator_files(directory: str | os.PathLike[str]) -> CoordinatorFiles:
    """The coordinator files of a federation dir (``DIR/coordinator``) or of a copied one."""
    d = Path(directory).expanduser().resolve()
    co = CoordinatorFiles(d / "coordinator") if (d / "coordinator").is_dir() else CoordinatorFiles(d)
    missing = [p for p in (co.federation_json, co.ca_cert, co.superlink_cert, co.superlink_key)
               if not p.is_file()]
    if missing:
        raise DeployError(
            f"{d} is not a federation (or coordinator) directory: missing "
            + ", ".join(str(p) for p in missing) + " -- create it with `lepton-fed federation init`")
    return co


def flwr_home(co: CoordinatorFiles) -> Path:
    """``FLWR_HOME`` of this coordinator (holds ``config.toml`` with the ``lepton`` connection)."""
    return co.state / "flwr_home"


def superlink_info(co: CoordinatorFiles) -> dict[str, Any]:
    """``state/superlink.json`` written at start (control address, ports, PIDs)."""
    p = co.state / "superlink.json"
    if not p.is_file():
        raise DeployError(f"{p} is missing: start the SuperLink first (`lepton-fed superlink DIR`)")
    info: dict[str, Any] = json.loads(p.read_text(encoding="utf-8"))
    return info


def _write_flwr_config(co: CoordinatorFiles, address: str) -> Path:
    home = flwr_home(co)
    home.mkdir(parents=True, exist_ok=True)
    cfg = home / "config.toml"
    cfg.write_text(
        f'[superlink]\ndefault = "{CONNECTION}"\n\n[superlink.{CONNECTION}]\n'
        f'address = "{address}"\nroot-certificates = "{co.ca_cert}"\n', encoding="utf-8")
    return cfg


def run_superlink(
    directory: str | os.PathLike[str],
    *,
    port: int | None = None,
    control_port: int | None = None,
    bind: str = "0.0.0.0",
    ready_timeout: float = 60.0,
    out: Callable[[str], None] = print,
    stop: threading.Event | None = None,
) -> int:
    """Run until Ctrl-C/SIGTERM (or ``stop``); returns the exit code (0 after a clean stop)."""
    from lepton_fed.deploy import control
    from lepton_fed.deploy.gate import Gate

    co = coordinator_files(directory)
    fed = json.loads(co.federation_json.read_text(encoding="utf-8"))
    port = int(port or fed["superlink"]["port"])
    control_port = int(control_port or port + 1)
    if not any(co.node_keys.glob("*.pub")):
        raise DeployError(f"no node keys in {co.node_keys}: add nodes with `lepton-fed federation add-node`")
    check_port_free(bind, port, "public Fleet port")
    check_port_free("127.0.0.1", control_port, "loopback SuperLink port")
    co.state.mkdir(mode=0o700, parents=True, exist_ok=True)
    logs = co.state / "logs"
    secret_file = co.state / "superexec.secret"
    secret_file.unlink(missing_ok=True)
    fd = os.open(secret_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(secrets.token_bytes(32))
    internal = f"127.0.0.1:{control_port}"
    _write_flwr_config(co, internal)
    env = tool_env(FLWR_HOME=str(flwr_home(co)))
    stop = stop or threading.Event()
    children: list[Child] = []
    gate: Gate | None = None
    previous = {}
    if threading.current_thread() is threading.main_thread():
        previous = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        link = spawn("flower-superlink", [
            tool("flower-superlink"), "--ssl-certfile", str(co.superlink_cert),
            "--ssl-keyfile", str(co.superlink_key), "--ssl-ca-certfile", str(co.ca_cert),
            "--enable-supernode-auth", "--isolation", "process",
            "--disable-runtime-dependency-installation", "--host", "127.0.0.1",
            "--port", str(control_port), "--database", str(co.state / "superlink.db"),
            "--superexec-auth-secret-file", str(secret_file)], log=logs / "superlink.log", env=env)
        children.append(link)
        client = control.connect(internal, co.ca_cert)
        try:
            control.wait_ready(client, timeout=ready_timeout, alive=link.alive)
        except DeployError as e:
            raise DeployError(f"{e}\n{tail(link.log)}") from None
        children.append(spawn("flower-superexec", [
            tool("flower-superexec"), "--runtime-api-address", internal,
            "--root-certificates", str(co.ca_cert), "--parent-pid", str(link.pid),
            "--superexec-auth-secret-file", str(secret_file)], log=logs / "superexec.log", env=env))
        lines = control.sync_nodes(client, co.node_keys)
        client.close()
        gate = Gate(host=bind, port=port, upstream=f"https://{internal}", cert=co.superlink_cert,
                    key=co.superlink_key, ca=co.ca_cert)
        gate.start()
        (co.state / "superlink.json").write_text(json.dumps({
            "federation": fed["name"], "public": f"{bind}:{port}", "control": internal,
            "pids": {c.name: c.pid for c in children} | {"lepton-fed": os.getpid()},
        }, indent=2) + "\n", encoding="utf-8")
        out(f"SuperLink of federation {fed['name']!r} is up.\n"
            f"  nodes connect to : {fed['superlink']['address']} (this host, {bind}:{port}, TLS, "
            "Fleet API only)\n"
            f"  control (local)  : {internal} -- submit runs here with "
            f"`lepton-fed run --federation {co.root} [overrides]`\n"
            f"  database         : {co.state / 'superlink.db'}\n"
            f"  logs             : {logs}/\n  registered nodes :\n" + "\n".join(lines)
            + "\nCtrl-C stops the SuperLink.")
        while not stop.wait(0.5):
            dead = [c for c in children if not c.alive()]
            if dead or not gate.alive():
                what = dead[0].name if dead else "Fleet gate"
                out(f"lepton-fed superlink: {what} stopped unexpectedly"
                    + (f" (exit {dead[0].proc.returncode}); last log lines:\n{tail(dead[0].log)}" if dead else ""))
                return 1
        out("stopping the SuperLink ...")
        return 0
    finally:
        if gate is not None:
            gate.stop()
        stop_all(children)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
