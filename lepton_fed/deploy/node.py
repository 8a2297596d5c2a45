"""``lepton-fed node join``: a hospital's SuperNode with pinned code, in the foreground.

Runs two children (stopped by PID on exit):

* ``flower-supernode`` with the bundle's CA (``--root-certificates``) and node-auth key,
  ``--isolation process`` (it runs no app code itself), runtime dependency installation
  off (Flower's node default), and ``--node-config`` from a TOML file holding the
  node's absolute paths (:data:`NODE_CONFIG_KEYS`);
* the runner (:mod:`lepton_fed.deploy.runner`), which alone can take the SuperNode's
  tasks and runs only the installed lepton-fed ClientApp (or an allowlisted FAB).

Every input is checked first (:mod:`lepton_fed.deploy.preflight`). The node needs no
inbound port: the SuperNode dials out to the SuperLink; its Runtime API and the
runner talk over 127.0.0.1 only.
"""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from lepton_fed.deploy.layout import DeployError, NodeFiles
from lepton_fed.deploy.procs import (
    Child,
    free_port,
    spawn,
    stop_all,
    tail,
    tool,
    tool_env,
)

__all__ = ["NODE_CONFIG_KEYS", "OFFLINE_WAIT_S", "auth_key_fingerprint", "join",
           "write_node_config"]

#: How long a restarted node retries activation after a session that did not leave:
#: Flower's SuperLink keeps a node online for 2 heartbeats of 30 s after the last one.
OFFLINE_WAIT_S = 75.0

NODE_CONFIG_KEYS = ("data-path", "data-label", "policy", "ledger-dir", "identity-key", "roster",
                    "federation-public-key", "node-name", "test-fraction", "metrics-port",
                    "metrics-addr")


def auth_key_fingerprint(pub_file: Path) -> str:
    """``SHA256:...`` as ``ssh-keygen -l`` prints it."""
    blob = base64.b64decode(pub_file.read_text(encoding="ascii").split()[1])
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def write_node_config(path: Path, values: dict[str, str | int | float]) -> Path:
    """A TOML ``--node-config`` file (quoting-safe for any path)."""
    import tomli_w

    unknown = set(values) - set(NODE_CONFIG_KEYS)
    if unknown:
        raise ValueError(f"unknown node_config keys {sorted(unknown)}")
    path.write_text(tomli_w.dumps(values), encoding="utf-8")
    return path


def _inputs(bundle: NodeFiles, data: Path, label: str, policy: Path | None,
            ledger: Path | None, test_fraction: float | None = None,
            metrics_port: int | None = None,
            ) -> tuple[dict[str, Any], dict[str, str | int | float]]:
    from lepton_fed.deploy import preflight

    problems = []
    if test_fraction is not None and not 0.0 < test_fraction < 1.0:
        problems.append(f"--test-fraction must lie strictly between 0 and 1 (got {test_fraction})")
    if metrics_port is not None and not 0 < metrics_port < 65536:
        problems.append(f"--metrics-port must be a TCP port 1-65535 (got {metrics_port})")
    if problems:
        raise DeployError("; ".join(problems))
    info = preflight.check_bundle(bundle)
    values: dict[str, str | int | float] = {
        "data-path": str(preflight.check_data(data, label)), "data-label": label}
    if test_fraction is not None:
        values["test-fraction"] = float(test_fraction)
    if metrics_port is not None:
        values["metrics-port"] = int(metrics_port)
    if policy is not None:
        p = policy.expanduser().resolve()
        if not p.is_file():
            raise DeployError(f"policy file {p} does not exist")
        try:
            from lepton_fed.policy import load_policy
        except ImportError:  # pragma: no cover - policy module absent
            pass
        else:
            load_policy(p)  # ConfigError naming every problem
        values["policy"] = str(p)
    if ledger is not None:
        values["ledger-dir"] = str(preflight.check_dir(ledger, "ledger directory"))
    else:
        d = bundle.state / "ledger"
        d.mkdir(mode=0o700, parents=True, exist_ok=True)
        values["ledger-dir"] = str(d)
    values.update({"identity-key": str(bundle.secagg_identity), "roster": str(bundle.roster),
                   "federation-public-key": str(bundle.federation_public_key),
                   "node-name": str(info["node"])})
    return info, values


def join(
    *,
    bundle_dir: str | os.PathLike[str],
    data: Path,
    label: str,
    policy: Path | None = None,
    ledger: Path | None = None,
    test_fraction: float | None = None,
    metrics_port: int | None = None,
    superlink: str | None = None,
    allow_fab_hashes: Sequence[str] = (),
    connect_wait: float = 60.0,
    out: Callable[[str], None] = print,
    stop: threading.Event | None = None,
) -> int:
    """Join the federation; run until Ctrl-C/SIGTERM (or ``stop``). Returns the exit code."""
    from lepton_fed.deploy import preflight
    from lepton_fed.deploy.fab_check import normalize_hash

    try:
        allow = [normalize_hash(h) for h in allow_fab_hashes]
    except ValueError as e:
        raise DeployError(f"--allow-fab-hash: {e}") from None
    bundle = NodeFiles(Path(bundle_dir).expanduser().resolve())
    info, values = _inputs(bundle, data, label, policy, ledger, test_fraction, metrics_port)
    address = superlink or str(info["superlink_address"])
    host, port = preflight.parse_address(address)
    preflight.check_superlink(host, port, bundle.ca_cert, wait=connect_wait, say=out)
    state = bundle.state
    state.mkdir(mode=0o700, exist_ok=True)
    node_config = write_node_config(state / "node-config.toml", values)
    secret = state / "superexec.secret"
    secret.unlink(missing_ok=True)
    fd = os.open(secret, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(secrets.token_bytes(32))
    runtime = f"127.0.0.1:{free_port()}"
    env = tool_env(FLWR_HOME=str(state / "flwr_home"))
    stop = stop or threading.Event()
    children: list[Child] = []
    previous = {}
    if threading.current_thread() is threading.main_thread():
        previous = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGINT, signal.SIGTERM)}
    session = state / "session"  # present while connected: left behind by a crash
    crashed = session.is_file()
    sn_argv = [
        tool("flower-supernode"), "--superlink", address, "--root-certificates",
        str(bundle.ca_cert), "--auth-supernode-private-key", str(bundle.auth_key),
        "--node-config", str(node_config), "--isolation", "process", "--host", "127.0.0.1",
        "--port", runtime.rsplit(":", 1)[1], "--superexec-auth-secret-file", str(secret)]
    try:
        children.append(spawn("flower-supernode", sn_argv, log=state / "logs" / "supernode.log",
                              env=env))
        runner_argv = [sys.executable, "-m", "lepton_fed.deploy.runner", "--runtime-api-address",
                       runtime, "--superexec-auth-secret-file", str(secret), "--work-dir",
                       str(state / "runner"), "--parent-pid", str(os.getpid())]
        for h in allow:
            runner_argv += ["--allow-fab-hash", h]
        children.append(spawn("runner", runner_argv, log=state / "logs" / "runner.log", env=env))
        retry_until = time.monotonic() + OFFLINE_WAIT_S if crashed else 0.0
        told = False
        while True:
            try:
                node_id = _wait_connected(children[0], bundle, address, stop)
                break
            except _ActivationRefused as e:
                if time.monotonic() > retry_until:
                    raise DeployError(str(e)) from None
                if not told:
                    out(f"lepton-fed node: the SuperLink still lists {info['node']!r} online: "
                        "its last session ended without leaving (killed?). The SuperLink "
                        "marks it offline within 60 s; retrying until then.")
                    told = True
                if stop.wait(5.0):
                    return 0
                children[0] = spawn("flower-supernode", sn_argv,
                                    log=state / "logs" / "supernode.log", env=env)
        if node_id is None:
            return 0
        session.write_text(f"{node_id}\n", encoding="ascii")
        out(f"node {info['node']!r} joined federation {info['name']!r} at {address} "
            f"(SuperNode ID {node_id}).\n"
            f"  code    : only the installed lepton_fed.client.app:app"
            + (f" or FABs {', '.join(h[:12] for h in allow)}" if allow else "") + "\n"
            f"  data    : {values['data-path']} (label {label!r}); ledger {values['ledger-dir']}\n"
            f"  policy  : {values.get('policy', 'strict default (no --policy given)')}\n"
            f"  logs    : {state / 'logs'}/\nCtrl-C leaves the federation.")
        while not stop.wait(0.5):
            dead = [c for c in children if not c.alive()]
            if dead:
                out(f"lepton-fed node: {dead[0].name} stopped (exit {dead[0].proc.returncode}); "
                    f"last log lines:\n{tail(dead[0].log)}")
                return 1
        return 0
    finally:
        # after Ctrl-C or SIGTERM to the group the children got the signal too: a second
        # one would kill the SuperNode before it leaves the SuperLink (procs.stop_all)
        stop_all(children, grace=3.0 if stop.is_set() else 0.0)
        if children and children[0].proc.returncode == 0:  # it left the SuperLink
            session.unlink(missing_ok=True)
        for sig, handler in previous.items():
            signal.signal(sig, handler)


class _ActivationRefused(Exception):
    """The SuperLink refused to activate this node's key (Flower code 2004)."""


def _wait_connected(sn: Child, bundle: NodeFiles, address: str, stop: threading.Event,
                    timeout: float = 90.0) -> str | None:
    """The SuperNode ID once connected; DeployError naming the cause if it gave up."""
    deadline = time.monotonic() + timeout
    while not stop.is_set():
        text = sn.output()
        for line in text.splitlines():
            if "SuperNode ID:" in line:
                return line.rsplit("SuperNode ID:", 1)[1].strip()
        if not sn.alive() or time.monotonic() > deadline:
            if "Failed to activate SuperNode" in text or "[code: 2004]" in text:
                raise _ActivationRefused(
                    f"the SuperLink at {address} does not accept this node's key "
                    f"({bundle.auth_public_key}, {auth_key_fingerprint(bundle.auth_public_key)}): "
                    "it is not registered (ask the coordinator to put it in "
                    "coordinator/node_keys/ and restart `lepton-fed superlink`), or the "
                    "SuperLink still lists this node online from a session that did not "
                    "leave (it marks it offline within 60 s: join again then)")
            last = "\n".join(text.rstrip().splitlines()[-15:])
            raise DeployError(f"the SuperNode could not connect to {address}:\n{last}")
        time.sleep(0.2)
    return None
