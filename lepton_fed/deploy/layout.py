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
    def ca_cert(self) -> Path:  # noqa: D102
        return self.root / "ca.crt"

    @property
    def auth_key(self) -> Path:  # noqa: D102
        return self.root / "auth_key"

    @property
    def auth_public_key(self) -> Path:  # noqa: D102
        return self.root / "auth_key.pub"

    @property
    def secagg_identity(self) -> Path:  # noqa: D102
        return self.root / "secagg_identity.pem"

    @property
    def roster(self) -> Path:  # noqa: D102
        return self.root / "roster.json"

    @property
    def federation_public_key(self) -> Path:  # noqa: D102
        return self.root / "federation.pub"

    @property
    def federation_json(self) -> Path:  # noqa: D102
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
    def ca_cert(self) -> Path:  # noqa: D102
        return self.root / "ca.crt"

    @property
    def superlink_cert(self) -> Path:  # noqa: D102
        return self.root / "superlink.crt"

    @property
    def superlink_key(self) -> Path:  # noqa: D102
        return self.root / "superlink.key"

    @property
    def federation_public_key(self) -> Path:  # noqa: D102
        return self.root / "federation.pub"

    @property
    def roster(self) -> Path:  # noqa: D102
        return self.root / "roster.json"

    @property
    def federation_json(self) -> Path:  # noqa: D102
        return self.root / FEDERATION_JSON

    @property
    def node_keys(self) -> Path:  # noqa: D102
        return self.root / "node_keys"

    @property
    def state(self) -> Path:  # noqa: D102
        return self.root / "state"


@dataclass(frozen=True)
class FederationDir:
    """The whole provisioning directory (as written by ``federation init``)."""

    root: Path

    @property
    def federation_json(self) -> Path:  # noqa: D102
        return self.root / FEDERATION_JSON

    @property
    def offline(self) -> Path:  # noqa: D102
        return self.root / "offline"

    @property
    def ca_key(self) -> Path:  # noqa: D102
        return self.offline / "ca.key"

    @property
    def signing_key(self) -> Path:  # noqa: D102
        return self.offline / "federation_signing_key.pem"

    @property
    def coordinator(self) -> CoordinatorFiles:  # noqa: D102
        return CoordinatorFiles(self.root / "coordinator")

    def node(self, name: str) -> NodeFiles:  # noqa: D102
        return NodeFiles(self.root / "nodes" / check_name("node", name))
