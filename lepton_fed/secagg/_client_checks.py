"""Checks a client runs on server requests before it reveals or computes anything.

Every function raises :class:`~lepton_fed.errors.ProtocolAbort` on the first
problem; none returns a boolean.
"""

from __future__ import annotations

from collections.abc import Sequence

from lepton_fed.errors import ProtocolAbort
from lepton_fed.secagg import keys as K
from lepton_fed.secagg._client_state import ClientState, PendingRound, SharedRound
from lepton_fed.secagg.encoding import FieldEncoding
from lepton_fed.secagg.graph import check_graph_params, neighbour_graph
from lepton_fed.secagg.messages import (
    MAX_COHORT,
    SERVER_ID,
    MaskedInputRequest,
    RobustMaskedInputRequest,
    RobustUnmaskRequest,
    UnmaskRequest,
)
from lepton_fed.secagg.stages import CLIENT_TRANSITIONS, ClientPhase, check_transition

__all__ = [
    "check_recipient",
    "check_robust_masked_request",
    "check_robust_unmask_request",
    "check_round_request",
    "check_unmask_request",
    "open_round",
    "verified_peer_keys",
]


def check_recipient(st: ClientState, recipient: int) -> None:
    """The request is addressed to this node."""
    if recipient != st.node_id:
        raise ProtocolAbort(f"request addressed to node {recipient}, not {st.node_id}")


def open_round(
    st: ClientState, req: MaskedInputRequest
) -> tuple[ClientPhase, bytes, tuple[int, ...], FieldEncoding]:
    """Checks a masked-input or share-keys request, up to its neighbour keys.

    Recipient, phase, a round after the last one used with an unused key, then
    :func:`check_round_request`.

    Returns:
        The phase after the reply, the round key, this node's neighbours and the
        round's field encoding.
    """
    check_recipient(st, req.recipient)
    next_phase = check_transition(CLIENT_TRANSITIONS, st.phase, req.STAGE)
    r = req.round
    if r <= st.last_round:
        raise ProtocolAbort(f"round {r} already used (last round {st.last_round})")
    private = st.round_keys.get(r)
    if private is None:
        raise ProtocolAbort(f"no unused key for round {r}; advertise first")
    neighbours, encoding = check_round_request(req, st)
    return next_phase, private, neighbours, encoding


def _strictly_increasing(ids: Sequence[int], name: str) -> None:
    if any(a >= b for a, b in zip(ids, ids[1:], strict=False)):
        raise ProtocolAbort(f"{name} must be strictly increasing node ids")


def check_round_request(
    req: MaskedInputRequest, st: ClientState
) -> tuple[tuple[int, ...], FieldEncoding]:
    """Validates cohort, graph parameters and encoding of a masked-input request.

    Returns:
        This node's neighbours (recomputed from the public graph seed, never taken
        from the server) and the round's field encoding.
    """
    cohort = req.cohort
    m = len(cohort)
    _strictly_increasing(cohort, "cohort")
    if st.node_id not in cohort:
        raise ProtocolAbort("this node is not in the round's cohort")
    if not st.min_cohort <= m <= MAX_COHORT:
        raise ProtocolAbort(
            f"cohort of {m} nodes is outside [{st.min_cohort}, {MAX_COHORT}]"
        )
    if cohort and cohort[-1] >= SERVER_ID:
        raise ProtocolAbort("cohort contains the reserved server id")
    try:
        check_graph_params(m, req.neighbours, req.threshold)
        encoding = FieldEncoding(clip=req.clip, max_contributors=m, bits=req.bits)
    except ValueError as exc:
        raise ProtocolAbort(f"refusing round parameters: {exc}") from exc
    if req.neighbours < min(st.min_neighbours, m - 1):
        raise ProtocolAbort(f"graph degree {req.neighbours} below {st.min_neighbours}")
    if req.dim < 1:
        raise ProtocolAbort("dim must be >= 1")
    graph = neighbour_graph(
        cohort, req.graph_seed, run_id=st.run_id, round=req.round, k=req.neighbours
    )
    return graph[st.node_id], encoding


def verified_peer_keys(
    req: MaskedInputRequest, neighbours: tuple[int, ...], st: ClientState
) -> dict[int, bytes]:
    """Round public keys of the neighbours, each checked against its identity key.

    With a provisioned roster the relayed identity key must equal the roster's; without
    one, the first identity key seen for a node in the run is pinned (pins are only
    committed to ``st`` when every key verifies).

    Returns:
        ``{neighbour: raw X25519 public key for this round}``.
    """
    relayed = {nk.node_id: nk for nk in req.neighbour_keys}
    if len(relayed) != len(req.neighbour_keys) or set(relayed) != set(neighbours):
        raise ProtocolAbort("neighbour keys do not match the round's neighbour graph")
    pins = dict(st.pinned)
    out: dict[int, bytes] = {}
    for j in neighbours:
        nk = relayed[j]
        if st.roster is not None:
            identity = st.roster.get(j)
            if identity is None:
                raise ProtocolAbort(f"neighbour {j} is not in the provisioned roster")
            if nk.identity_key != identity:
                raise ProtocolAbort(
                    f"relayed identity key of node {j} differs from roster"
                )
        else:
            identity = pins.setdefault(j, nk.identity_key)
            if nk.identity_key != identity:
                raise ProtocolAbort(f"identity key of node {j} changed within the run")
        K.verify_round_key(
            identity,
            nk.signature,
            run_id=st.run_id,
            node_id=j,
            round=req.round,
            public_key=nk.public_key,
        )
        out[j] = nk.public_key
    st.pinned = pins
    return out


def check_unmask_request(req: UnmaskRequest, pending: PendingRound) -> None:
    """The never-both rule and the threshold guard (README "Threat model").

    Survivors and dropped must be disjoint and partition the neighbourhood, at least
    t neighbours must be claimed to survive, and exactly the survivors must have sent
    a ciphertext (a dropped node never sent one).
    """
    _check_partition(req.survivors, req.dropped, pending)
    survivors = req.survivors
    senders = [c.peer for c in req.ciphertexts]
    if len(set(senders)) != len(senders) or set(senders) != set(survivors):
        raise ProtocolAbort(
            "ciphertexts must come from exactly the surviving neighbours"
        )


def check_robust_unmask_request(req: RobustUnmaskRequest, pending: PendingRound) -> None:
    """Robust mode: the never-both rule and the threshold guard.

    Survivors and dropped must be disjoint and partition the neighbours this node
    masked with (those that shared keys), and at least t of them must be claimed to
    survive. For every one of them the node then reveals exactly one share: the
    b-share of a survivor or the mask-key share of a dropped node.
    """
    _check_partition(req.survivors, req.dropped, pending)


def check_robust_masked_request(
    req: RobustMaskedInputRequest, shared: SharedRound
) -> tuple[int, ...]:
    """Robust mode: the ciphertexts come from distinct neighbours, at least t of them.

    Returns:
        The neighbours that shared keys (the node masks with exactly these).
    """
    senders = tuple(c.peer for c in req.ciphertexts)
    _strictly_increasing(senders, "ciphertext senders")
    stray = set(senders) - set(shared.neighbours)
    if stray:
        raise ProtocolAbort(f"ciphertexts from non-neighbours {sorted(stray)}")
    if len(senders) < shared.threshold:
        raise ProtocolAbort(
            f"only {len(senders)} neighbours shared keys, threshold is "
            f"{shared.threshold}"
        )
    return senders


def _check_partition(
    survivors: Sequence[int], dropped: Sequence[int], pending: PendingRound
) -> None:
    _strictly_increasing(survivors, "survivors")
    _strictly_increasing(dropped, "dropped")
    overlap = set(survivors) & set(dropped)
    if overlap:
        raise ProtocolAbort(
            f"nodes {sorted(overlap)} claimed both survived and dropped: refusing to "
            "reveal two secrets (self-mask share and pairwise seed or mask-key share) "
            "for one node"
        )
    if set(survivors) | set(dropped) != set(pending.neighbours):
        raise ProtocolAbort("survivors and dropped do not partition the neighbourhood")
    if len(survivors) < pending.threshold:
        raise ProtocolAbort(
            f"only {len(survivors)} neighbours claimed to survive, threshold is "
            f"{pending.threshold}"
        )
