"""Where each file of a provisioned federation lives, and the deployment error type.

``lepton-fed federation init DIR`` writes three trees with different owners::

    DIR/federation.json            public summary (name, SuperLink address, node names)
    DIR/offline/                   the consortium's secrets; keep OFF the SuperLink host
        ca.key                     CA private key (only needed to re-issue the TLS certificate)
        federation_signing_key.pem Ed25519 key that signs the roster and serving artifacts
    DIR/coordinator/               copy to the SuperLink host
        ca.crt superlink.crt superlink.key federation.pub roster.json federation.json
        node_keys/<name>.pub       node-auth public keys the SuperLink registers
        state/                     created by ``lepton-fed superlink`` (database, logs, flwr home)
    DIR/nodes/<name>/              hand to hospital <name>; nothing in it is useful to another node
        ca.crt auth_key auth_key.pub secagg_identity.pem roster.json federation.pub federation.json

Private keys are written with mode 0600 and their directories 0700.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from lepton_fed.errors import DeployError  # re-exported: its home was here

__all__ = [
    "FEDERATION_JSON",
    "NAME_RE",
    "CoordinatorFiles",
    "DeployError",
    "FederationDir",
    "NodeFiles",
    "check_name",
]

FEDERATION_JSON = "federation.json"
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")


def check_name(kind: str, name: str) -> str:
    """``name`` if it is a valid federation/node name, else :class:`DeployError`."""
    if not NAME_RE.match(name):
        raise DeployError(
            f"{kind} name {name!r} is not valid: use 1-63 characters from a-z, 0-9, "
            "'-', '_' and '.', starting with a letter or digit"
        )
    return name


@dataclass(frozen=True)
class NodeFiles:
    """The bundle handed to one node."""

    root: Path

    @property
    def ca_cert(self) -> Path:
        """``ca.crt``: the federation CA certificate; it verifies the SuperLink's TLS."""
        return self.root / "ca.crt"

    @property
    def auth_key(self) -> Path:
        """``auth_key``: the node-authentication private key (ECDSA P-384, OpenSSH format)."""
        return self.root / "auth_key"

    @property
    def auth_public_key(self) -> Path:
        """``auth_key.pub``: its OpenSSH public key, the one the SuperLink registers."""
        return self.root / "auth_key.pub"

    @property
    def secagg_identity(self) -> Path:
        """``secagg_identity.pem``: the node's private Ed25519 secure-aggregation identity."""
        return self.root / "secagg_identity.pem"

    @property
    def roster(self) -> Path:
        """``roster.json``: the members and their public keys, signed with the federation key."""
        return self.root / "roster.json"

    @property
    def federation_public_key(self) -> Path:
        """``federation.pub``: the Ed25519 key that verifies the roster and serving artifacts."""
        return self.root / "federation.pub"

    @property
    def federation_json(self) -> Path:
        """``federation.json``: the public summary (name, SuperLink address, node names)."""
        return self.root / FEDERATION_JSON

    @property
    def state(self) -> Path:
        """Runtime files of ``lepton-fed node join`` (logs, node config, secrets)."""
        return self.root / "state"


@dataclass(frozen=True)
class CoordinatorFiles:
    """What the SuperLink host needs."""

    root: Path

    @property
    def ca_cert(self) -> Path:
        """``ca.crt``: the federation CA certificate (it issued ``superlink.crt``)."""
        return self.root / "ca.crt"

    @property
    def superlink_cert(self) -> Path:
        """``superlink.crt``: the SuperLink's TLS certificate, issued by the federation CA."""
        return self.root / "superlink.crt"

    @property
    def superlink_key(self) -> Path:
        """``superlink.key``: the SuperLink's TLS private key."""
        return self.root / "superlink.key"

    @property
    def federation_public_key(self) -> Path:
        """``federation.pub``: the Ed25519 key that verifies the roster and serving artifacts."""
        return self.root / "federation.pub"

    @property
    def roster(self) -> Path:
        """``roster.json``: the signed roster (the same file every node holds)."""
        return self.root / "roster.json"

    @property
    def federation_json(self) -> Path:
        """``federation.json``: the public summary (name, SuperLink address, node names)."""
        return self.root / FEDERATION_JSON

    @property
    def node_keys(self) -> Path:
        """``node_keys/``: one node-auth public key ``<name>.pub`` per member (registered at start)."""
        return self.root / "node_keys"

    @property
    def state(self) -> Path:
        """``state/``: runtime files of ``lepton-fed superlink`` (database, logs, flwr home)."""
        return self.root / "state"


@dataclass(frozen=True)
class FederationDir:
    """The whole provisioning directory (as written by ``federation init``)."""

    root: Path

    @property
    def federation_json(self) -> Path:
        """``federation.json``: the public summary (name, SuperLink address, node names)."""
        return self.root / FEDERATION_JSON

    @property
    def offline(self) -> Path:
        """``offline/``: the consortium's secrets; keep it OFF the SuperLink host."""
        return self.root / "offline"

    @property
    def ca_key(self) -> Path:
        """``offline/ca.key``: the CA private key (only needed to re-issue the TLS certificate)."""
        return self.offline / "ca.key"

    @property
    def signing_key(self) -> Path:
        """``offline/federation_signing_key.pem``: Ed25519, signs roster and artifacts."""
        return self.offline / "federation_signing_key.pem"

    @property
    def coordinator(self) -> CoordinatorFiles:
        """``coordinator/``: the files to copy to the SuperLink host."""
        return CoordinatorFiles(self.root / "coordinator")

    def node(self, name: str) -> NodeFiles:
        """``nodes/<name>/``: node ``name``'s bundle; :class:`DeployError` for an invalid name."""
        return NodeFiles(self.root / "nodes" / check_name("node", name))
