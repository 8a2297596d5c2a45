"""Key files of a node and of a federation, and the simulation bundle.

A real node is provisioned with three files (paths in its Flower ``node_config``):
its secure-aggregation identity key (``identity-key``, PEM PKCS#8 Ed25519 private
key), the federation's public key (``federation-public-key``, PEM SubjectPublicKeyInfo)
and the signed roster (``roster``, :mod:`~lepton_fed.secagg.roster`).

A simulation gets the same material for N virtual nodes from one directory
(:func:`make_sim_bundle`; the launcher exports its path as ``LEPTON_FED_SIM_BUNDLE``)::

    <dir>/federation.pub                          PEM Ed25519 public key
    <dir>/roster.json                             signed roster, members node-0..node-N-1
    <dir>/nodes/<partition-id>/secagg_identity.pem  PEM Ed25519 private key

The federation's private key is used once to sign the roster and never written.
Private keys are written unencrypted with mode 0600 (simulation material only).
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from lepton_fed.secagg.roster import sign_roster

__all__ = [
    "BUNDLE_ENV",
    "SimBundlePaths",
    "load_federation_public_key",
    "load_identity_key",
    "make_sim_bundle",
    "sim_bundle_paths",
    "write_identity_key",
]

#: Environment variable naming the simulation bundle directory.
BUNDLE_ENV = "LEPTON_FED_SIM_BUNDLE"


def load_identity_key(path: str | os.PathLike[str]) -> Ed25519PrivateKey:
    """A PEM Ed25519 private key (unencrypted).

    Raises:
        ValueError: not a PEM private key, or not Ed25519.
    """
    key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{path}: the identity key must be an Ed25519 private key")
    return key


def load_federation_public_key(path: str | os.PathLike[str]) -> Ed25519PublicKey:
    """A PEM Ed25519 public key.

    Raises:
        ValueError: not a PEM public key, or not Ed25519.
    """
    key = serialization.load_pem_public_key(Path(path).read_bytes())
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError(f"{path}: the federation key must be an Ed25519 public key")
    return key


def write_identity_key(path: str | os.PathLike[str], key: Ed25519PrivateKey) -> None:
    """Writes ``key`` as unencrypted PEM PKCS#8, mode 0600 (parents created)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)


class SimBundlePaths:
    """Where a simulation bundle keeps each file."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.dir = Path(directory)
        self.federation_public_key = self.dir / "federation.pub"
        self.roster = self.dir / "roster.json"

    def identity_key(self, partition_id: int) -> Path:
        """``nodes/<partition-id>/secagg_identity.pem``."""
        return self.dir / "nodes" / str(int(partition_id)) / "secagg_identity.pem"


def sim_bundle_paths(directory: str | os.PathLike[str]) -> SimBundlePaths:
    """The paths of the bundle in ``directory``."""
    return SimBundlePaths(directory)


def make_sim_bundle(
    directory: str | os.PathLike[str],
    num_nodes: int,
    *,
    federation: str = "simulation",
) -> None:
    """Creates a simulation bundle for ``num_nodes`` virtual nodes (partition ids
    0..num_nodes-1): a fresh federation key, one identity key per node, the roster
    of their public keys signed with the federation key (members ``node-<id>``).
    The launcher adds the nodes' policy (``node_policy.yaml``) to the same directory.

    Raises:
        ValueError: ``num_nodes < 1``.
        FileExistsError: ``directory`` already holds a bundle (``roster.json``).
    """
    if num_nodes < 1:
        raise ValueError(f"num_nodes must be >= 1, got {num_nodes}")
    paths = SimBundlePaths(directory)
    if paths.roster.exists():
        raise FileExistsError(f"{paths.roster} exists; use a fresh directory")
    paths.dir.mkdir(parents=True, exist_ok=True)
    federation_key = Ed25519PrivateKey.generate()
    members = {}
    for pid in range(num_nodes):
        key = Ed25519PrivateKey.generate()
        write_identity_key(paths.identity_key(pid), key)
        members[f"node-{pid}"] = key.public_key().public_bytes_raw()
    paths.federation_public_key.write_bytes(
        federation_key.public_key().public_bytes(
            serialization.Encoding.PEM,
            serialization.PublicFormat.SubjectPublicKeyInfo,
        )
    )
    paths.roster.write_bytes(
        sign_roster(members, federation_key, federation=federation)
    )

