"""Secure aggregation on the Message API: the client side of the Flower adapter.

The node's :class:`~lepton_fed.secagg.SecAggClient` state is saved to the Context after
every step (restoring an older state could reuse a round key). The Ed25519 identity key
is generated once per node in simulation; on a real node it comes from provisioning
(``node_config["identity-key"]``, a PEM file) and the roster from the federation.
"""

from __future__ import annotations

import os

import numpy as np
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from lepton_fed.client.node import NodeState
from lepton_fed.secagg import SecAggClient

__all__ = ["load_client", "masked_reply", "save_client"]


def _identity(node: NodeState) -> Ed25519PrivateKey:
    path = node.context.node_config.get("identity-key")
    if path:
        key = serialization.load_pem_private_key(open(str(path), "rb").read(), password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError(f"{path}: the identity key must be an Ed25519 private key")
        return key
    raw = node.get("secagg-identity")
    if raw is None:
        raw = os.urandom(32)
        node.set("secagg-identity", raw)
    return Ed25519PrivateKey.from_private_bytes(bytes(raw))


def load_client(node: NodeState) -> SecAggClient:
    """This node's protocol client, restored from its Context (or new)."""
    key = _identity(node)
    raw = node.get("secagg-state")
    if raw:
        return SecAggClient.from_bytes(bytes(raw), identity_key=key)
    return SecAggClient(node_id=int(node.context.node_id), identity_key=key)


def save_client(node: NodeState, client: SecAggClient) -> None:
    """Persist the protocol state after every step."""
    node.set("secagg-state", client.to_bytes())


def masked_reply(node: NodeState, request: bytes, delta: np.ndarray, weight: float) -> bytes:
    """Mask this round's (already clipped) update and its weight."""
    client = load_client(node)
    reply = client.masked_input(request, delta=np.asarray(delta, np.float64),
                                weight=float(weight))
    save_client(node, client)
    return reply
