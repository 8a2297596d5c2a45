"""Robust-mode collection steps (``share_keys_first``): relay the shared keys, sum the
masked inputs, and rebuild the mask keys of nodes that dropped before their masked
input. :func:`~lepton_fed.secagg._server_round.finish_round` completes the round.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from lepton_fed.errors import ProtocolAbort
from lepton_fed.secagg import keys as K
from lepton_fed.secagg._server_shares import RawShares, reconstruct
from lepton_fed.secagg._server_state import (
    RoundState,
    accepted,
    check_one_per_neighbour,
    check_vector,
    route,
    slices,
    split_neighbourhoods,
)
from lepton_fed.secagg.masking import pairwise_sign
from lepton_fed.secagg.messages import (
    ROBUST_CT_DTYPE,
    SERVER_ID,
    RobustMaskedInputReply,
    RobustMaskedInputRequest,
    RobustUnmaskRequest,
    ShareKeysReply,
)

__all__ = ["collect_masked_robust", "collect_shares", "robust_pairwise_jobs"]


def _parse_share_keys(
    rs: RoundState, n: int, data: bytes
) -> tuple[bytes, bytes, np.ndarray]:
    mask_key, commitment, cts = ShareKeysReply.records_from_bytes(
        data, run_id=rs.run_id, round=rs.round, sender=n
    )
    check_one_per_neighbour(rs, n, cts)
    return mask_key, commitment, cts


def collect_shares(rs: RoundState, replies: Mapping[int, bytes]) -> dict[int, bytes]:
    """Robust mode: keeps the share-keys replies and relays the ciphertexts.

    A node whose neighbours that shared keys number fewer than t is left out of the
    round (its shares could never be used; this repeats until every remaining node
    has t), and listed in ``rejected``. The remaining nodes (U1) get a
    masked-input request carrying the ciphertexts their U1 neighbours addressed to
    them; each will mask with exactly those neighbours.

    Raises:
        ProtocolAbort: no node is left.
    """
    got = dict(accepted(rs, replies, rs.cohort, _parse_share_keys))
    sharers = set(got)
    changed = True
    while changed:
        changed = False
        for u in sorted(sharers):
            have = sum(1 for v in rs.graph[u] if v in sharers)
            if have < rs.t:
                sharers.discard(u)
                rs.rejected[u] = (
                    f"only {have} neighbours shared keys, threshold is {rs.t}"
                )
                changed = True
    if not sharers:
        raise ProtocolAbort(
            f"round {rs.round}: no node shared keys with at least {rs.t} neighbours"
        )
    u1 = tuple(n for n in rs.cohort if n in sharers)
    rs.sharers = u1
    rs.dropped_shares = tuple(n for n in rs.cohort if n not in sharers)
    rs.masked_with = {u: tuple(v for v in rs.graph[u] if v in sharers) for u in u1}
    rs.mask_keys = {u: got[u][0] for u in u1}
    rs.commitments = {u: got[u][1] for u in u1}
    blocks = []
    for u in u1:
        cts = got[u][2]
        if len(rs.masked_with[u]) != len(cts):  # some neighbours did not share
            keep = np.isin(cts["peer"], np.asarray(rs.masked_with[u], dtype=np.uint64))
            cts = cts[keep]
        blocks.append(cts)
    records, receivers = route(u1, blocks, ROBUST_CT_DTYPE)
    lo, hi = slices(receivers, u1)
    return {
        u: RobustMaskedInputRequest.encode_records(
            run_id=rs.run_id, round=rs.round, recipient=u, records=records[a:b]
        )
        for u, a, b in zip(u1, lo, hi, strict=True)
    }


def _parse_masked(rs: RoundState, n: int, data: bytes) -> np.ndarray:
    vec = RobustMaskedInputReply.records_from_bytes(
        data, run_id=rs.run_id, round=rs.round, sender=n
    )
    check_vector(rs, vec)
    return vec


def collect_masked_robust(
    rs: RoundState, replies: Mapping[int, bytes]
) -> dict[int, bytes]:
    """Robust mode: adds up the masked inputs and builds the unmask requests.

    Raises:
        ProtocolAbort: no valid masked input; a contributor with fewer than t
            contributing neighbours among those it masked with; or a node that
            dropped before its masked input, with contributors among its neighbours,
            but fewer than t of them (its mask key could not be rebuilt).
    """
    total = np.zeros(rs.dim + 1, dtype=np.uint32)
    accepted_ids: list[int] = []
    for n, vec in accepted(rs, replies, rs.sharers, _parse_masked):
        np.add(total, vec, out=total)
        accepted_ids.append(n)
    survivors = tuple(accepted_ids)
    if not survivors:
        raise ProtocolAbort(f"round {rs.round}: no masked input received")
    split_neighbourhoods(rs, survivors, rs.masked_with)
    alive = set(survivors)
    dropped = tuple(n for n in rs.sharers if n not in alive)
    needs_key = []
    for j in dropped:
        holders = sum(1 for v in rs.masked_with[j] if v in alive)
        if holders == 0:
            continue  # no mask with j is in the sum
        if holders < rs.t:
            raise ProtocolAbort(
                f"round {rs.round}: node {j} dropped before its masked input and only "
                f"{holders} of its neighbours hold its mask-key shares, threshold is "
                f"{rs.t}"
            )
        needs_key.append(j)
    rs.total = total
    rs.survivors = survivors
    rs.dropped_input = dropped
    rs.needs_key = tuple(needs_key)
    return {
        u: RobustUnmaskRequest(
            run_id=rs.run_id,
            round=rs.round,
            sender=SERVER_ID,
            recipient=u,
            survivors=tuple(rs.alive_nbrs[u]),
            dropped=tuple(rs.dead_nbrs[u]),
        ).to_bytes()
        for u in survivors
    }


def robust_pairwise_jobs(rs: RoundState, shares: RawShares) -> list[tuple[bytes, int]]:
    """Robust mode: rebuilds dropped nodes' mask keys; their masks with contributors."""
    if not rs.needs_key:
        return []

    def key_ok(j: int, private: bytes) -> bool:
        try:
            return K.x25519_public(private) == rs.mask_keys[j]
        except ProtocolAbort:
            return False

    alive = set(rs.survivors)
    holders = {j: [v for v in rs.masked_with[j] if v in alive] for j in rs.needs_key}
    keys = reconstruct(
        shares,
        rs.needs_key,
        holders,
        rs.t,
        rs.ring,
        key_ok,
        "mask-key",
        rs.round,
        mismatch="its mask public key",
    )
    jobs = []
    for j in rs.needs_key:
        for v in holders[j]:
            shared = K.agree(keys[j], rs.mask_keys[v])
            seed = K.pairwise_seed(shared, run_id=rs.run_id, round=rs.round, a=j, b=v)
            jobs.append((seed, -pairwise_sign(owner=v, peer=j)))
    return jobs
