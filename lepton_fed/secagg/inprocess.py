"""Runs clients and server of one SecAgg+ round in one process, without a network.

This is the reference call order that the Flower adapter and the benchmarks follow,
2 exchanges per round::

    reqs = server.advertise(node_ids)                  # once per run
    server.collect_advertisements({n: clients[n].advertise(reqs[n]) for n in reqs})
    for r in rounds:
        reqs = server.start_round(round=r, cohort=cohort, dim=d)           # exchange 1
        reps = {n: clients[n].masked_input(reqs[n], delta=..., weight=...) for n in reqs}
        reqs = server.collect_masked_inputs(reps)                          # exchange 2
        reps = {n: clients[n].unmask(reqs[n]) for n in reqs}
        result = server.collect_unmask(reps)

``client.handle(request, delta=..., weight=...)`` routes any of these requests by its
header.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Collection, Iterable, Mapping, MutableMapping
from typing import Any

import numpy as np
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

from lepton_fed.secagg.client import SecAggClient
from lepton_fed.secagg.keys import identity_public_bytes
from lepton_fed.secagg.result import SecAggResult
from lepton_fed.secagg.server import SecAggServer

__all__ = ["DeterministicRng", "advertise_all", "make_clients", "simulate_round"]


class DeterministicRng:
    """A replayable byte stream for known-answer tests and benchmarks. NOT for production.

    The stream is the ChaCha20 keystream under SHA-256(label); each call returns the
    next ``n`` bytes. Injected as ``rng_bytes``, it makes every key, mask and share of
    a run reproducible, which is exactly what must never happen in deployment: there
    ``rng_bytes`` is ``os.urandom``.
    """

    def __init__(self, label: bytes) -> None:
        digest = hashes.Hash(hashes.SHA256())
        digest.update(b"lepton-fed/secagg/test-rng/" + label)
        key = digest.finalize()
        self._stream = Cipher(
            algorithms.ChaCha20(key, bytes(16)), mode=None
        ).encryptor()

    def __call__(self, n: int) -> bytes:
        """The next ``n`` bytes of the keystream."""
        return self._stream.update(bytes(n))


def make_clients(
    node_ids: Iterable[int],
    *,
    provisioned: bool = True,
    roster_as_keys: bool = False,
    rng_bytes: Callable[[int], bytes] = os.urandom,
    **policy: Any,
) -> tuple[dict[int, SecAggClient], dict[int, bytes]]:
    """Creates one client per node with a fresh Ed25519 identity key.

    Args:
        node_ids: node ids.
        provisioned: give every client the roster (as provisioning would); if False,
            clients trust the identity keys the server relays (``allow_tofu``).
        roster_as_keys: give the clients the roster as a set of keys (node ids
            unknown at provisioning) instead of ``{node id: key}``.
        rng_bytes: randomness for the clients' protocol secrets.
        policy: further :class:`SecAggClient` arguments (``min_security_bits``,
            ``colluding_fraction``, ``min_cohort``).

    Returns:
        ``(clients, roster)`` where roster maps node id -> raw Ed25519 public key.
    """
    ids = list(node_ids)
    identities = {n: Ed25519PrivateKey.from_private_bytes(rng_bytes(32)) for n in ids}
    roster = {n: identity_public_bytes(k) for n, k in identities.items()}
    given: dict[int, bytes] | frozenset[bytes] | None = None
    if provisioned:
        given = frozenset(roster.values()) if roster_as_keys else roster
    clients = {
        n: SecAggClient(
            node_id=n,
            identity_key=identities[n],
            roster=given,
            allow_tofu=not provisioned,
            rng_bytes=rng_bytes,
            **policy,
        )
        for n in ids
    }
    return clients, roster


def _reload(client: SecAggClient) -> SecAggClient:
    return SecAggClient.from_bytes(
        client.to_bytes(), identity_key=client.identity_key, rng_bytes=client.rng_bytes
    )


def advertise_all(
    server: SecAggServer,
    clients: MutableMapping[int, SecAggClient],
    *,
    node_ids: Iterable[int] | None = None,
    first_round: int | None = None,
    unavailable: Collection[int] = (),
) -> tuple[int, ...]:
    """Runs the advertisement exchange; returns the accepted nodes."""
    ids = list(clients) if node_ids is None else list(node_ids)
    reqs = server.advertise(ids, first_round=first_round)
    replies = {
        n: clients[n].advertise(req) for n, req in reqs.items() if n not in unavailable
    }
    return server.collect_advertisements(replies)


def simulate_round(
    server: SecAggServer,
    clients: MutableMapping[int, SecAggClient],
    inputs: Mapping[int, tuple[np.ndarray, float] | np.ndarray],
    *,
    round: int,
    cohort: Iterable[int] | None = None,
    drop_before_input: Collection[int] = (),
    drop_before_unmask: Collection[int] = (),
    reload_state: bool = False,
    timings: dict[str, float] | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> SecAggResult:
    """Runs one round end to end in process.

    Args:
        server: a server that has collected advertisements.
        clients: node id -> client; replaced in place when ``reload_state``.
        inputs: node id -> (clipped delta, weight in [0, 1]), or an integer vector
            masked as it is (:meth:`SecAggClient.masked_integers`).
        round: round number.
        cohort: nodes of the round (default: the keys of ``inputs``).
        drop_before_input: nodes that get the masked-input request but never answer.
        drop_before_unmask: nodes that answer with a masked input, then vanish.
        reload_state: serialize and restore every client between steps, as the
            Flower adapter does with the node's Context.
        timings: if given, filled with seconds measured by ``clock``: ``client_masked_input``
            (sum over clients), ``client_unmask`` (sum), ``server_start_round``,
            ``server_collect_masked``, ``server_collect_unmask``.
        clock: the clock used for ``timings`` (``time.process_time`` gives CPU
            time, steadier than wall time on a shared machine).

    Returns:
        The server's :class:`SecAggResult`.

    Raises:
        ProtocolAbort: the round could not complete (see the server's steps).
    """
    tm: dict[str, float] = {} if timings is None else timings
    members = list(inputs) if cohort is None else list(cohort)
    first = next(iter(inputs.values()))
    dim = len(first) if isinstance(first, np.ndarray) else len(first[0])

    t0 = clock()
    reqs = server.start_round(round=round, cohort=members, dim=dim)
    tm["server_start_round"] = clock() - t0

    replies = {}
    tm["client_masked_input"] = 0.0
    for n, req in reqs.items():
        if n in drop_before_input:
            continue
        if reload_state:
            clients[n] = _reload(clients[n])
        given = inputs[n]
        t0 = clock()
        if isinstance(given, np.ndarray):
            replies[n] = clients[n].masked_integers(req, values=given)
        else:
            replies[n] = clients[n].masked_input(req, delta=given[0], weight=given[1])
        tm["client_masked_input"] += clock() - t0

    t0 = clock()
    reqs = server.collect_masked_inputs(replies)
    tm["server_collect_masked"] = clock() - t0

    replies = {}
    tm["client_unmask"] = 0.0
    for n, req in reqs.items():
        if n in drop_before_unmask:
            continue
        if reload_state:
            clients[n] = _reload(clients[n])
        t0 = clock()
        replies[n] = clients[n].unmask(req)
        tm["client_unmask"] += clock() - t0

    t0 = clock()
    result = server.collect_unmask(replies)
    tm["server_collect_unmask"] = clock() - t0
    return result
