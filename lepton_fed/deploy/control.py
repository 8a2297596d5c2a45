"""Talking to the SuperLink's Control API (loopback, TLS): readiness, node keys, run status.

These are the calls ``flwr supernode register/unregister/ls`` and ``flwr ls`` make
(``flwr.supercore.control.ControlHttpClient``), used from Python so that the node list
can be compared key by key with ``coordinator/node_keys/``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization

from lepton_fed.deploy.layout import DeployError

__all__ = ["RunState", "connect", "run_state", "sync_nodes", "wait_ready"]


def connect(address: str, ca_file: Path) -> Any:
    """A Control API client for ``address`` verified with the federation CA."""
    from flwr.supercore.control import ControlHttpClient
    from flwr.supercore.interceptors import RuntimeVersionHttpInterceptor

    return ControlHttpClient.from_server_address(
        address, False, ca_file.read_bytes(),
        [RuntimeVersionHttpInterceptor(component_name="flwr CLI")])


def wait_ready(client: Any, *, timeout: float, alive: Callable[[], bool]) -> None:
    """Poll until the Control API answers; DeployError on timeout or if ``alive()`` is False."""
    import httpx
    from flwr.proto.control_pb2 import ListNodesRequest

    deadline = time.monotonic() + timeout
    while True:
        try:
            client.ListNodes(ListNodesRequest())
            return
        except httpx.HTTPError as e:
            if not alive():
                raise DeployError("flower-superlink exited during start-up") from None
            if time.monotonic() > deadline:
                raise DeployError(f"the SuperLink did not answer within {timeout:.0f}s: {e}") from None
            time.sleep(0.3)


def _raw(pem_or_ssh: bytes) -> bytes:
    """A public key's uncompressed point (compares OpenSSH and PEM encodings)."""
    key: Any
    if pem_or_ssh.lstrip().startswith(b"-----BEGIN"):
        key = serialization.load_pem_public_key(pem_or_ssh)
    else:
        key = serialization.load_ssh_public_key(pem_or_ssh)
    return bytes(key.public_bytes(serialization.Encoding.X962,
                                  serialization.PublicFormat.UncompressedPoint))


def sync_nodes(client: Any, node_keys: Path) -> list[str]:
    """Make the SuperLink's registered keys equal the ``*.pub`` files of ``node_keys``.

    Registers every key not yet known (named after its file), unregisters every key
    that has no file any more (a removed or re-keyed node). Returns one line per node.
    """
    from flwr.proto.control_pb2 import (
        ListNodesRequest,
        RegisterNodeRequest,
        UnregisterNodeRequest,
    )
    from flwr.supercore.primitives.asymmetric import public_key_to_bytes

    wanted: dict[bytes, tuple[str, bytes]] = {}
    for p in sorted(node_keys.glob("*.pub")):
        try:
            key = serialization.load_ssh_public_key(p.read_bytes())
        except (ValueError, TypeError) as e:
            raise DeployError(f"{p} is not an OpenSSH public key: {e}") from None
        wanted[_raw(p.read_bytes())] = (p.stem, public_key_to_bytes(key))  # type: ignore[arg-type]
    known: dict[bytes, Any] = {}
    for n in client.ListNodes(ListNodesRequest()).nodes_info:
        if n.status != "unregistered" and n.public_key:
            known[_raw(bytes(n.public_key))] = n
    lines = []
    for raw, (name, pem) in wanted.items():
        if raw in known:
            lines.append(f"  {name:<24} registered (node id {known[raw].node_id}, {known[raw].status})")
        else:
            res = client.RegisterNode(RegisterNodeRequest(public_key=pem, name=name))
            lines.append(f"  {name:<24} registered now (node id {res.node_id})")
    for raw, n in known.items():
        if raw not in wanted:
            client.UnregisterNode(UnregisterNodeRequest(node_id=n.node_id))
            lines.append(f"  {n.name or n.node_id!s:<24} UNREGISTERED (its key is no longer in {node_keys})")
    return lines


@dataclass(frozen=True)
class RunState:
    """A run's status as the SuperLink records it."""

    run_id: int
    status: str  # pending | starting | running | finished
    sub_status: str  # completed | failed | stopped | ''
    details: str

    @property
    def ok(self) -> bool:
        """True only for a run that finished with sub-status ``completed``."""
        return self.status == "finished" and self.sub_status == "completed"


def run_state(client: Any, run_id: int) -> RunState:
    """The status of ``run_id``."""
    from flwr.proto.control_pb2 import ListRunsRequest

    runs = client.ListRuns(ListRunsRequest(run_id=run_id)).run_dict
    if run_id not in runs:
        raise DeployError(f"the SuperLink has no run {run_id}")
    st = runs[run_id].status
    return RunState(run_id, st.status, st.sub_status, st.details)
