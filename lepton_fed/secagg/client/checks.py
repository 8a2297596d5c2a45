"""Checks a client runs on server requests before it reveals or computes anything.

Every function raises :class:`~lepton_fed.errors.ProtocolAbort` on the first
problem; none returns a boolean. Refusals that concern security start with a code
(``weak_parameters``, ``graph_seed_mismatch``, ``not_in_roster``, ``roster_mismatch``,
``duplicate_identity``, ``identity_changed``, ``bad_signature``) and never carry
values derived from the node's data.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

from lepton_fed.errors import ProtocolAbort
from lepton_fed.secagg import keys as K
from lepton_fed.secagg.client.state import ClientState, PendingRound
from lepton_fed.secagg.encoding import FieldEncoding
from lepton_fed.secagg.graph import check_graph_params, neighbours_of
from lepton_fed.secagg.security import exposure_log2
from lepton_fed.secagg.stages import CLIENT_TRANSITIONS, ClientPhase, check_transition
from lepton_fed.secagg.wire import (
    MAX_COHORT,
    SERVER_ID,
    MaskedInputRequest,
    UnmaskRequest,
)

__all__ = [
    "check_identities",
    "check_recipient",
    "check_round_request",
    "check_strength",
    "check_unmask_request",
    "open_round",
    "verified_peer_keys",
]


def _abort(code: str, text: str) -> ProtocolAbort:
    return ProtocolAbort(f"{code}: {text}")


def check_recipient(st: ClientState, recipient: int) -> None:
    """The request is addressed to this node."""
    if recipient != st.node_id:
        raise ProtocolAbort(f"request addressed to node {recipient}, not {st.node_id}")


def open_round(
    st: ClientState, req: MaskedInputRequest, min_cohort: int = 0
) -> tuple[ClientPhase, bytes, tuple[int, ...], FieldEncoding]:
    """Checks a masked-input request, up to its neighbour keys.

    Recipient, phase, a round after the last one used with an unused key, then
    :func:`check_round_request` (``min_cohort``: a floor for this request on top of
    the node's own), and that the request lists this node's own identity and round key.

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
    neighbours, encoding = check_round_request(req, st, min_cohort)
    mine = req.members[req.cohort.index(st.node_id)]
    if mine.identity_key != st.identity_public or mine.round_key != K.x25519_public(
        private
    ):
        raise _abort("roster_mismatch", "the request lists another key for this node")
    return next_phase, private, neighbours, encoding


def _strictly_increasing(ids: Sequence[int], name: str) -> None:
    if any(a >= b for a, b in zip(ids, ids[1:], strict=False)):
        raise ProtocolAbort(f"{name} must be strictly increasing node ids")


def check_strength(st: ClientState, cohort_size: int, k: int, t: int) -> float:
    """Refuses a (k, t) weaker than this node's minimum security level.

    The bound is :func:`~lepton_fed.secagg.security.exposure_log2` at the node's own
    colluding fraction: a larger k with the same t is weaker (2t - k falls), so the
    node compares bounds, not k and t separately.

    Returns:
        The security bits the request achieves (``inf``: exposure impossible).
    """
    bits = -exposure_log2(cohort_size, k, t, st.colluding_fraction)
    if bits < st.min_security_bits:
        raise _abort(
            "weak_parameters",
            f"k={k}, t={t} for a cohort of {cohort_size} give {bits:.1f} bits; this "
            f"node requires {st.min_security_bits:g} bits at colluding fraction "
            f"{st.colluding_fraction:g}",
        )
    return bits


def check_round_request(
    req: MaskedInputRequest, st: ClientState, min_cohort: int = 0
) -> tuple[tuple[int, ...], FieldEncoding]:
    """Validates cohort, graph parameters, security level, identities, graph seed and
    encoding of a masked-input request.

    Returns:
        This node's neighbours (recomputed from the graph seed, itself recomputed
        from the cohort's keys; never taken from the server) and the field encoding.
    """
    cohort = req.cohort
    m = len(cohort)
    _strictly_increasing(cohort, "cohort")
    if st.node_id not in cohort:
        raise ProtocolAbort("this node is not in the round's cohort")
    smallest = max(st.min_cohort, min_cohort)
    if not smallest <= m <= MAX_COHORT:
        raise ProtocolAbort(f"cohort of {m} nodes is outside [{smallest}, {MAX_COHORT}]")
    if cohort and cohort[-1] >= SERVER_ID:
        raise ProtocolAbort("cohort contains the reserved server id")
    if len(req.members) != m:
        raise ProtocolAbort("the request must list one key pair per cohort member")
    try:
        check_graph_params(m, req.neighbours, req.threshold)
        encoding = FieldEncoding(clip=req.clip, max_contributors=m, bits=req.bits)
    except ValueError as exc:
        raise ProtocolAbort(f"refusing round parameters: {exc}") from exc
    check_strength(st, m, req.neighbours, req.threshold)
    if req.dim < 1:
        raise ProtocolAbort("dim must be >= 1")
    check_identities(req, st)
    seed = K.graph_seed(
        run_id=st.run_id, round=req.round, cohort=cohort, members=req.members
    )
    if seed != req.graph_seed:
        raise _abort(
            "graph_seed_mismatch",
            "the graph seed is not the hash of the cohort's keys",
        )
    mine = neighbours_of(
        cohort, seed, st.node_id, run_id=st.run_id, round=req.round, k=req.neighbours
    )
    return mine, encoding


def check_identities(req: MaskedInputRequest, st: ClientState) -> None:
    """Every relayed identity key is trusted and no key appears twice in the cohort.

    Mapping roster: the key of node j is ``roster[j]``. Key-set roster: each key is
    in the set. Trust on first use: a node pinned before keeps its key. In every case
    the cohort's identity keys are pairwise distinct (one identity cannot stand for
    several nodes of a round).
    """
    if st.roster_kind and st.roster is None and st.allowed is None:
        # a state restored from its roster digest without the roster: never fall
        # through to trust on first use
        raise _abort("roster_required", "this node's roster was not restored")
    seen: dict[bytes, int] = {}
    pinned_by_key = {key: node for node, key in st.pinned.items()}
    for node, member in zip(req.cohort, req.members, strict=True):
        identity = member.identity_key
        if st.roster is not None:
            expected = st.roster.get(node)
            if expected is None:
                raise _abort("not_in_roster", f"node {node} is not in the roster")
            if identity != expected:
                raise _abort(
                    "roster_mismatch",
                    f"relayed identity key of node {node} differs from the roster",
                )
        elif st.allowed is not None:
            if identity not in st.allowed:
                raise _abort(
                    "not_in_roster", f"identity key of node {node} is not in the roster"
                )
        else:
            pinned = st.pinned.get(node)
            if pinned is not None and pinned != identity:
                raise _abort(
                    "identity_changed",
                    f"identity key of node {node} differs from the one pinned",
                )
            owner = pinned_by_key.get(identity, node)
            if owner != node:
                raise _abort(
                    "duplicate_identity",
                    f"node {node} uses the identity key pinned for node {owner}",
                )
        other = seen.setdefault(identity, node)
        if other != node:
            raise _abort(
                "duplicate_identity",
                f"nodes {other} and {node} use the same identity key",
            )


def verified_peer_keys(
    req: MaskedInputRequest, neighbours: tuple[int, ...], st: ClientState
) -> dict[int, bytes]:
    """Round public keys of the neighbours, each signature checked against the
    neighbour's (already trusted, :func:`check_identities`) identity key.

    Without a roster (trust on first use) the neighbours' identity keys are pinned
    once every signature verifies, with a warning for each new pin.

    Returns:
        ``{neighbour: raw X25519 public key for this round}``.
    """
    sig_ids = [j for j, _ in req.signatures]
    _strictly_increasing(sig_ids, "signatures")
    if tuple(sig_ids) != neighbours:
        raise ProtocolAbort("signatures do not match the round's neighbour graph")
    index = {n: i for i, n in enumerate(req.cohort)}
    out: dict[int, bytes] = {}
    for j, signature in req.signatures:
        member = req.members[index[j]]
        try:
            K.verify_round_key(
                member.identity_key,
                signature,
                run_id=st.run_id,
                node_id=j,
                round=req.round,
                public_key=member.round_key,
            )
        except ProtocolAbort as exc:
            raise _abort("bad_signature", str(exc)) from None
        out[j] = member.round_key
    if st.roster is None and st.allowed is None:
        new = [j for j in neighbours if j not in st.pinned]
        if new:
            warnings.warn(
                f"secagg trust on first use: pinning the identity keys of {len(new)} "
                "node(s) without a roster; a server that is malicious from the start "
                "can impersonate them",
                stacklevel=4,
            )
        for j in new:
            st.pinned[j] = req.members[index[j]].identity_key
    return out


def check_unmask_request(req: UnmaskRequest, pending: PendingRound) -> None:
    """The never-both rule and the threshold guard (README "Threat model").

    Survivors and dropped must be disjoint and partition the neighbourhood, at least
    t neighbours must be claimed to survive, and exactly the survivors must have sent
    a ciphertext (a dropped node never sent one).
    """
    survivors, dropped = req.survivors, req.dropped
    _strictly_increasing(survivors, "survivors")
    _strictly_increasing(dropped, "dropped")
    overlap = set(survivors) & set(dropped)
    if overlap:
        raise ProtocolAbort(
            f"nodes {sorted(overlap)} claimed both survived and dropped: refusing to "
            "reveal two secrets (self-mask share and pairwise seed) for one node"
        )
    if set(survivors) | set(dropped) != set(pending.neighbours):
        raise ProtocolAbort("survivors and dropped do not partition the neighbourhood")
    if len(survivors) < pending.threshold:
        raise ProtocolAbort(
            f"only {len(survivors)} neighbours claimed to survive, threshold is "
            f"{pending.threshold}"
        )
    senders = [c.peer for c in req.ciphertexts]
    if len(set(senders)) != len(senders) or set(senders) != set(survivors):
        raise ProtocolAbort(
            "ciphertexts must come from exactly the surviving neighbours"
        )
