"""Secure aggregation on the Message API: the client side of the Flower adapter.

The node's :class:`~lepton_fed.secagg.SecAggClient` state is saved to the Context after
every step (restoring an older state could reuse a round key). A node keeps one state
per SLOT: ``train`` (model updates) and ``eval`` (federated evaluation sums, a separate
protocol run with its own run id, round numbers and round keys), so evaluating never
consumes or resets a training round key. Requests name their slot
(``secagg.slot``, default ``train``); an unknown slot is refused.

Where the node's keys and roster come from:

* a real node: ``node_config["identity-key"]`` (PEM Ed25519 private key),
  ``node_config["roster"]`` (signed roster JSON) and
  ``node_config["federation-public-key"]`` (PEM Ed25519 public key that signed it);
* a simulated node: the launcher's bundle directory (``node_config["sim-bundle"]`` or
  ``$LEPTON_FED_SIM_BUNDLE``, made by
  :func:`lepton_fed.secagg.provisioning.make_sim_bundle`): ``federation.pub``,
  ``roster.json`` and ``nodes/<partition-id>/secagg_identity.pem``; node_config keys,
  when present, take precedence.

The roster is verified against the federation key and used as a set of allowed
identity keys (node ids are assigned by Flower after the roster is signed). The
node's minimum security level, colluding fraction and trust-on-first-use allowance
come from its policy (:func:`lepton_fed.client.node_policy.node_policy`:
``min_security_bits``, ``colluding_fraction``, ``allow_tofu_keys``), never from the
run config. With no roster the node takes part only if its policy allows trust on
first use (identities pinned on first use, with a warning); otherwise every
secure-aggregation request is refused with a
:class:`~lepton_fed.errors.ProtocolAbort` that says what is missing.
"""

from __future__ import annotations

import logging
import os
from functools import lru_cache
from typing import cast

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from flwr.app import ArrayRecord, ConfigRecord

from lepton_fed.client.node import NodeState
from lepton_fed.client.node_policy import node_policy, sim_bundle
from lepton_fed.errors import ProtocolAbort
from lepton_fed.policy import NodePolicy
from lepton_fed.privacy.secure_rng import CryptoRandom
from lepton_fed.secagg import SecAggClient
from lepton_fed.secagg.provisioning import (
    load_federation_public_key,
    load_identity_key,
    sim_bundle_paths,
)
from lepton_fed.secagg.roster import RosterError, load_roster
from lepton_fed.secagg.trust import TrustedRoster, trusted_roster

__all__ = ["SLOTS", "distributed_reply", "load_client", "masked_eval_reply", "masked_reply",
           "request_bytes", "save_client", "secure_eval_reply", "setup_advertisement", "slot_of"]

log = logging.getLogger("lepton_fed.node")

#: Context key of each slot's saved protocol state
SLOTS = {"train": "secagg-state", "eval": "secagg-state-eval"}


def slot_of(value: object) -> str:
    """The slot a request names (``None``/absent: ``train``).

    Raises:
        ProtocolAbort: an unknown slot.
    """
    slot = "train" if value is None else str(value)
    if slot not in SLOTS:
        raise ProtocolAbort("secagg_bad_slot: unknown secure-aggregation slot")
    return slot


def _stamp(path: str | os.PathLike[str]) -> tuple[str, int, int]:
    """(path, mtime, size): a cache key that changes when the file is replaced."""
    st = os.stat(path)
    return str(path), st.st_mtime_ns, st.st_size


@lru_cache(maxsize=16384)  # a Ray worker serves every virtual node of a simulation
def _cached_identity(stamp: tuple[str, int, int]) -> Ed25519PrivateKey:
    return load_identity_key(stamp[0])


@lru_cache(maxsize=8)
def _cached_roster(roster: tuple[str, int, int], fed: tuple[str, int, int]) -> TrustedRoster:
    """The roster file verified against the federation key ONCE per process (and per
    version of either file), prepared for the node's clients (a 10,000-node roster
    takes ~80 ms to verify and is then shared by every virtual node of the process)."""
    return trusted_roster(load_roster(roster[0], load_federation_public_key(fed[0])).identity_keys)


def _identity(node: NodeState, policy: NodePolicy) -> Ed25519PrivateKey:
    nc = node.context.node_config
    path = nc.get("identity-key")
    if path:
        return _cached_identity(_stamp(str(path)))
    bundle = sim_bundle(node.context)
    if bundle is not None:
        return _cached_identity(_stamp(sim_bundle_paths(bundle).identity_key(node.partition_id)))
    if not policy.allow_tofu_keys:
        raise ProtocolAbort(
            "secagg_unprovisioned: this node has no secure-aggregation identity key "
            "(node_config 'identity-key', or the simulation bundle)"
        )
    raw = node.get("secagg-identity")  # trust on first use: an ephemeral identity
    if raw is None:
        raw = os.urandom(32)
        node.set("secagg-identity", raw)
    return Ed25519PrivateKey.from_private_bytes(bytes(raw))


def _roster(node: NodeState) -> TrustedRoster | None:
    nc = node.context.node_config
    roster_path: object = nc.get("roster")
    fed_path: object = nc.get("federation-public-key")
    if not roster_path:
        bundle = sim_bundle(node.context)
        if bundle is None:
            return None
        paths = sim_bundle_paths(bundle)
        roster_path, fed_path = paths.roster, paths.federation_public_key
    if not fed_path:
        raise ProtocolAbort(
            "secagg_unprovisioned: node_config 'roster' needs "
            "'federation-public-key' to verify it"
        )
    try:
        return _cached_roster(_stamp(str(roster_path)), _stamp(str(fed_path)))
    except (RosterError, OSError, ValueError) as exc:
        raise ProtocolAbort(f"secagg_bad_roster: {exc}") from None


def load_client(node: NodeState, slot: str = "train") -> SecAggClient:
    """This node's protocol client for ``slot``, restored from its Context (or new).

    A new client refuses cohorts smaller than the policy's ``min_clients_per_round``
    (at least 2) and (k, t) weaker than its ``min_security_bits``.

    Raises:
        ProtocolAbort: no roster and no explicit trust-on-first-use allowance, no
            identity key, a roster whose signature does not verify, or an identity
            key that is not in the roster.
    """
    policy = node_policy(node.context)
    key = _identity(node, policy)
    raw = node.get(SLOTS[slot_of(slot)])
    roster = _roster(node)
    if raw:  # saved without its roster (a digest): the node's own roster goes back in
        return SecAggClient.from_bytes(bytes(raw), identity_key=key, roster=roster)
    if roster is None and not policy.allow_tofu_keys:
        raise ProtocolAbort(
            "secagg_no_roster: this node has no roster (node_config 'roster' and "
            "'federation-public-key', or the simulation bundle) and its policy does "
            "not allow trusting keys on first use; refusing secure aggregation"
        )
    bits = policy.min_security_bits
    try:
        return SecAggClient(
            node_id=int(node.context.node_id),
            identity_key=key,
            roster=roster,
            allow_tofu=policy.allow_tofu_keys and roster is None,
            min_security_bits=0.0 if bits is None else bits,  # None: no requirement
            colluding_fraction=policy.colluding_fraction,
            min_cohort=max(2, policy.min_clients_per_round),
        )
    except ValueError as exc:
        raise ProtocolAbort(f"secagg_unprovisioned: {exc}") from None


def save_client(node: NodeState, client: SecAggClient, slot: str = "train") -> None:
    """Persist ``slot``'s protocol state after every step (the roster as its digest:
    the node's roster file stays the source, so the state is a few KB per node)."""
    node.set(SLOTS[slot_of(slot)], client.to_bytes(with_roster=False))


def setup_advertisement(node: NodeState, record: object, name: str = "") -> bytes | None:
    """Answer the advertisement request a setup message carries (``train`` slot): this
    node's signed round keys, as :meth:`~lepton_fed.secagg.SecAggClient.advertise` gives
    them, saved in its state. Call only once the node has accepted the run.

    Returns None when the request is refused (malformed, no roster or identity key,
    rounds already used): the reply then carries no keys, the server asks again in
    the node's first round and that refusal is reported with its code; the reason is
    in the node's log.
    """
    try:
        client = load_client(node)
        reply = client.advertise(request_bytes(record))
    except ProtocolAbort as exc:
        log.warning("node %s: no round keys in the setup reply: %s", name, exc)
        return None
    save_client(node, client)
    return reply


def request_bytes(record: object) -> bytes:
    """The secure-aggregation request bytes of a message's ``secagg`` record (untrusted:
    anything but bytes, e.g. an integer that would become a zero-filled buffer of that
    size, is refused)."""
    value = record.get("request") if isinstance(record, ConfigRecord) else None
    if not isinstance(value, bytes):
        raise ProtocolAbort("secagg_bad_request: the request is not bytes")
    return value


def masked_reply(node: NodeState, request: bytes, delta: np.ndarray, weight: float) -> bytes:
    """Mask this round's (already clipped) update and its weight."""
    client = load_client(node)
    reply = client.masked_input(request, delta=np.asarray(delta, np.float64),
                                weight=float(weight))
    save_client(node, client)
    return reply


def masked_eval_reply(node: NodeState, request: bytes, vector: np.ndarray, weight: float) -> bytes:
    """Mask an evaluation vector (:func:`lepton_fed.models.predict.eval_vector`, every
    entry in [0, clip]) and its weight with the ``eval`` slot's state."""
    client = load_client(node, "eval")
    reply = client.masked_input(request, delta=np.asarray(vector, np.float64),
                                weight=float(weight))
    save_client(node, client, "eval")
    return reply


def secure_eval_reply(node: NodeState, request: bytes, arrays: ArrayRecord) -> bytes:
    """Evaluate the global model ``arrays`` on this node's held-out rows and return the
    masked evaluation vector -- the node's sums leave it only inside the mask.

    Raises:
        ProtocolAbort: a request whose dimension is not the evaluation vector's, or any
            other refusal of the eval slot's protocol client.
        ValueError: a request whose clip is below an entry of the vector (the server
            must send clip = ``EVAL_CLIP``).
    """
    from lepton_fed.client.round import evaluation_sums
    from lepton_fed.models.predict import eval_vector
    from lepton_fed.secagg.evaluation import EVAL_CLIP, eval_weight

    sums, classes = evaluation_sums(node, arrays)
    vec = eval_vector(sums, scale=EVAL_CLIP, binary=classes == 2)
    weight = eval_weight(float(cast(float, sums["eval-n"])), float(node.cfg.secagg.max_weight))
    return masked_eval_reply(node, request, vec, weight)


_RNG: list[CryptoRandom] = []  # one CSPRNG per process (it re-keys itself after a fork)


def _rng() -> CryptoRandom:
    if not _RNG:
        _RNG.append(CryptoRandom())
    return _RNG[0]


def distributed_reply(node: NodeState, request: bytes, delta: np.ndarray,
                      rotation_seed: int) -> bytes:
    """Distributed DP (``privacy=distributed``): this node's integer vector -- clipped,
    rotated, rounded, plus its discrete Gaussian noise share from the CSPRNG
    (:func:`lepton_fed.privacy.distributed.encode_update`) -- masked in the field.

    The node computes the run's plan itself from the run config and checks it against
    its own policy (epsilon and delta caps, minimum cohort, colluders assumed).

    Raises:
        ProtocolAbort: the plan breaks the node's policy (``distributed_policy``), or a
            refusal of the protocol client.
    """
    from lepton_fed.privacy.distributed import encode_update
    from lepton_fed.privacy.distributed_config import plan_for_config, policy_problems

    x = np.asarray(delta, np.float64)
    plan = plan_for_config(node.cfg, x.size)
    pol = node_policy(node.context)
    bad = policy_problems(plan, max_epsilon=pol.max_epsilon, max_delta=pol.max_delta,
                          min_clients=pol.min_clients_per_round,
                          colluding_fraction=pol.colluding_fraction)
    if bad:
        raise ProtocolAbort("distributed_policy: " + "; ".join(bad))
    values = encode_update(x, plan, int(rotation_seed), _rng())
    client = load_client(node)
    # the noise share is sized for min_contributors: a smaller cohort would release a
    # sum with less than the designed noise, whatever the server promises
    reply = client.masked_integers(request, values=values, min_cohort=plan.min_contributors)
    save_client(node, client)
    return reply
