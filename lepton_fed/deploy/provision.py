"""``federation init`` and node changes: every key and certificate a federation needs.

Who holds what (see docs/deploy.md for the full trust model):

* the consortium, offline: the CA key and the federation signing key (``DIR/offline``).
  Neither is needed while training runs: the SuperLink only needs its TLS key and the
  nodes' public keys; nodes verify the roster with ``federation.pub``.
* the SuperLink host: ``DIR/coordinator`` (its TLS key, the CA certificate, public keys).
* each node: ``DIR/nodes/<name>`` (its own node-auth and secure-aggregation keys, the
  CA certificate, the signed roster, the federation public key). A bundle holds no
  other node's private key and no coordinator private key.

Functions here are pure file writers (no network, no processes); they never print keys.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from lepton_fed.deploy import pki
from lepton_fed.deploy.layout import DeployError, FederationDir, NodeFiles, check_name
from lepton_fed.secagg.roster import RosterMember, sign_roster
from lepton_fed.serving.signing import (
    key_fingerprint,
    load_or_create_signing_key,
    public_key_pem,
)

__all__ = [
    "DEFAULT_PORT",
    "LOOPBACK_HOSTS",
    "add_node",
    "init_federation",
    "load_federation",
    "remove_node",
    "rotate_node",
]

DEFAULT_PORT = 9092
LOOPBACK_HOSTS = ("127.0.0.1", "localhost")
_FORMAT = 1


def init_federation(
    directory: str | os.PathLike[str],
    *,
    name: str,
    superlink_hosts: Sequence[str],
    nodes: Sequence[str],
    port: int = DEFAULT_PORT,
) -> FederationDir:
    """Create a new federation under ``directory`` (which must be absent or empty).

    Args:
        directory: where to write (see :mod:`lepton_fed.deploy.layout`).
        name: the federation's name (a-z, 0-9, ``-_.``).
        superlink_hosts: DNS names / IPs nodes use to reach the SuperLink; the first one
            goes into each node's ``federation.json``. ``127.0.0.1`` and ``localhost``
            are always added to the certificate: the SuperLink host itself talks to the
            SuperLink over loopback (the public port serves the Fleet API only).
        nodes: node names, one bundle each.
        port: the SuperLink's public (Fleet) port.

    Raises:
        DeployError: bad names/hosts/port, duplicate nodes, or a non-empty directory.
    """
    fed = FederationDir(Path(directory).expanduser().resolve())
    check_name("federation", name)
    if not superlink_hosts:
        raise DeployError("give at least one --superlink-host (the name nodes dial)")
    for h in superlink_hosts:
        pki.check_host(h)
    if not 1 <= int(port) <= 65535:
        raise DeployError(f"port {port} is not in 1..65535")
    names = [check_name("node", n) for n in nodes]
    if not names:
        raise DeployError("give at least one --node")
    if len(set(names)) != len(names):
        raise DeployError(f"node names repeat: {sorted(names)}")
    if fed.root.exists() and any(fed.root.iterdir()):
        raise DeployError(f"{fed.root} is not empty; choose a new directory")
    fed.root.mkdir(parents=True, exist_ok=True)
    fed.offline.mkdir(mode=0o700, exist_ok=True)

    ca_key, ca_cert = pki.make_ca(f"{name} federation CA")
    pki.write_private(fed.ca_key, ca_key)
    signing_key = pki.new_ed25519_key()
    pki.write_private(fed.signing_key, signing_key)
    co = fed.coordinator
    co.root.mkdir(mode=0o700, parents=True, exist_ok=True)
    pki.write_public(co.ca_cert, pki.cert_pem(ca_cert))
    hosts = [*superlink_hosts, *(h for h in LOOPBACK_HOSTS if h not in superlink_hosts)]
    sl_key, sl_cert = pki.make_server_cert(ca_key, ca_cert, hosts)
    pki.write_private(co.superlink_key, sl_key)
    pki.write_public(co.superlink_cert, pki.cert_pem(sl_cert))
    pki.write_public(co.federation_public_key, public_key_pem(signing_key.public_key()))

    info: dict[str, Any] = {
        "format": _FORMAT,
        "name": name,
        "superlink": {"hosts": list(superlink_hosts), "port": int(port),
                      "address": _address(superlink_hosts[0], int(port))},
        "nodes": [],
        "roster_version": 0,
        "ca_sha256": hashlib.sha256(ca_cert.public_bytes(serialization.Encoding.DER)).hexdigest(),
        "federation_key": key_fingerprint(signing_key.public_key()),
    }
    for n in names:
        _new_node_keys(fed, n)
    info["nodes"] = names
    _publish(fed, info, signing_key)
    return fed


def load_federation(directory: str | os.PathLike[str]) -> tuple[FederationDir, dict[str, Any]]:
    """The federation directory and its ``federation.json``."""
    fed = FederationDir(Path(directory).expanduser().resolve())
    for p in (fed.federation_json, fed.coordinator.federation_json):
        if p.is_file():
            return fed, _read_json(p)
    raise DeployError(
        f"{fed.root} is not a federation directory (no federation.json): "
        "create one with `lepton-fed federation init`"
    )


def add_node(directory: str | os.PathLike[str], name: str) -> NodeFiles:
    """A new node's keys and bundle; re-signs the roster (needs ``offline/``)."""
    fed, info = load_federation(directory)
    check_name("node", name)
    if name in info["nodes"]:
        raise DeployError(f"node {name!r} already exists; use rotate-node to re-key it")
    signing_key = _signing_key(fed)
    _new_node_keys(fed, name)
    info["nodes"] = sorted([*info["nodes"], name])
    _publish(fed, info, signing_key)
    return fed.node(name)


def rotate_node(directory: str | os.PathLike[str], name: str) -> NodeFiles:
    """Replace a node's auth and secure-aggregation keys (e.g. after a leak).

    The old bundle is moved to ``nodes/<name>.retired-<n>``; the SuperLink drops the
    old auth key at its next start (``lepton-fed superlink`` syncs registrations).
    """
    fed, info = load_federation(directory)
    if name not in info["nodes"]:
        raise DeployError(f"node {name!r} is not in federation {info['name']!r}")
    signing_key = _signing_key(fed)
    _retire(fed, name)
    _new_node_keys(fed, name)
    _publish(fed, info, signing_key)
    return fed.node(name)


def remove_node(directory: str | os.PathLike[str], name: str) -> None:
    """Take a node out: its key leaves ``node_keys/`` and the roster is re-signed."""
    fed, info = load_federation(directory)
    if name not in info["nodes"]:
        raise DeployError(f"node {name!r} is not in federation {info['name']!r}")
    if info["nodes"] == [name]:
        raise DeployError(f"{name!r} is the last node; a federation needs at least one")
    signing_key = _signing_key(fed)
    _retire(fed, name)
    info["nodes"] = [n for n in info["nodes"] if n != name]
    _publish(fed, info, signing_key)


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _signing_key(fed: FederationDir) -> Ed25519PrivateKey:
    if not fed.signing_key.is_file():
        raise DeployError(
            f"{fed.signing_key} is missing: changing members needs the offline federation "
            "signing key (run this where DIR/offline is kept)"
        )
    key: Ed25519PrivateKey = load_or_create_signing_key(fed.signing_key)
    return key


def _new_node_keys(fed: FederationDir, name: str) -> None:
    node = fed.node(name)
    node.root.mkdir(mode=0o700, parents=True, exist_ok=False)
    auth = pki.new_auth_key()
    pki.write_private(node.auth_key, auth, openssh=True)
    pub = pki.openssh_public(auth, f"lepton-fed:{name}")
    pki.write_public(node.auth_public_key, pub)
    pki.write_public(fed.coordinator.node_keys / f"{name}.pub", pub)
    pki.write_private(node.secagg_identity, pki.new_ed25519_key())


def _retire(fed: FederationDir, name: str) -> None:
    node = fed.node(name)
    i = 1
    while (dest := node.root.with_name(f"{name}.retired-{i}")).exists():
        i += 1
    if node.root.exists():
        shutil.move(str(node.root), dest)
    (fed.coordinator.node_keys / f"{name}.pub").unlink(missing_ok=True)


def _member(fed: FederationDir, name: str) -> RosterMember:
    node = fed.node(name)
    ident = serialization.load_pem_private_key(node.secagg_identity.read_bytes(), None)
    if not isinstance(ident, Ed25519PrivateKey):
        raise DeployError(f"{node.secagg_identity} is not an Ed25519 private key")
    auth_line = node.auth_public_key.read_text(encoding="ascii").split()
    return RosterMember(name, pki.ed25519_raw_public(ident),
                        (("auth_public_key", " ".join(auth_line[:2])),))


def _publish(fed: FederationDir, info: dict[str, Any], signing_key: Ed25519PrivateKey) -> None:
    """Re-sign the roster and rewrite every public file (coordinator + each bundle)."""
    info["roster_version"] = int(info.get("roster_version", 0)) + 1
    roster_bytes = sign_roster([_member(fed, n) for n in info["nodes"]], signing_key,
                               federation=info["name"], version=info["roster_version"])
    info_bytes = (json.dumps(info, indent=2, sort_keys=True) + "\n").encode("utf-8")
    co = fed.coordinator
    pki.write_public(fed.federation_json, info_bytes)
    pki.write_public(co.federation_json, info_bytes)
    pki.write_public(co.roster, roster_bytes)
    ca = co.ca_cert.read_bytes()
    fed_pub = co.federation_public_key.read_bytes()
    x509.load_pem_x509_certificate(ca)  # fail early on a damaged coordinator dir
    for n in info["nodes"]:
        node = fed.node(n)
        pki.write_public(node.ca_cert, ca)
        pki.write_public(node.roster, roster_bytes)
        pki.write_public(node.federation_public_key, fed_pub)
        node_info = {
            "format": _FORMAT,
            "name": info["name"],
            "node": n,
            "superlink_address": info["superlink"]["address"],
            "ca_sha256": info["ca_sha256"],
            "federation_key": info["federation_key"],
            "roster_version": info["roster_version"],
        }
        pki.write_public(node.federation_json,
                         (json.dumps(node_info, indent=2, sort_keys=True) + "\n").encode("utf-8"))


def _read_json(path: Path) -> dict[str, Any]:
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise DeployError(f"cannot read {path}: {e}") from None
    if not isinstance(obj, dict):
        raise DeployError(f"{path} is not a JSON object")
    return obj
