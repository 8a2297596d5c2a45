"""Per-round server bookkeeping and the two collection steps, as pure functions.

:class:`~lepton_fed.secagg.server.SecAggServer` owns the phases; these functions do
the work of one step on a :class:`RoundState` and raise
:class:`~lepton_fed.errors.ProtocolAbort` when the round cannot complete.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from lepton_fed.errors import ProtocolAbort
from lepton_fed.secagg import keys as K
from lepton_fed.secagg.encoding import FieldEncoding
from lepton_fed.secagg.masking import apply_masks, pairwise_sign
from lepton_fed.secagg.messages import (
    SERVER_ID,
    MaskedInputReply,
    RoundKey,
    ShareCiphertext,
    UnmaskReply,
    UnmaskRequest,
)
from lepton_fed.secagg.result import SecAggResult
from lepton_fed.secagg.shamir import decode_share_value, recover_secret
from lepton_fed.secagg.stages import Stage

__all__ = ["Advert", "RoundState", "collect_masked", "finish_round"]


@dataclass(kw_only=True)
class Advert:
    """A node's cached advertisement: identity key and consecutive round keys."""

    identity_key: bytes
    first_round: int
    round_keys: tuple[RoundKey, ...]

    def key_for(self, round: int) -> RoundKey | None:
        """The key advertised for ``round``, or ``None``."""
        idx = round - self.first_round
        return self.round_keys[idx] if 0 <= idx < len(self.round_keys) else None


@dataclass(kw_only=True)
class RoundState:
    """What the server holds during one round (the sum, never the vectors)."""

    run_id: int
    round: int
    cohort: tuple[int, ...]
    graph: dict[int, tuple[int, ...]]
    k: int
    t: int
    dim: int
    encoding: FieldEncoding
    dropped_advertise: tuple[int, ...]
    rejected: dict[int, str] = field(default_factory=dict)
    total: np.ndarray | None = None
    commitments: dict[int, bytes] = field(default_factory=dict)
    survivors: tuple[int, ...] = ()
    dropped_input: tuple[int, ...] = ()


def _check_masked_reply(rs: RoundState, n: int, data: bytes) -> MaskedInputReply:
    rep = MaskedInputReply.from_bytes(data, run_id=rs.run_id, round=rs.round, sender=n)
    vec = rep.vector()
    if vec.size != rs.dim + 1:
        raise ProtocolAbort(f"masked vector has {vec.size} entries, not {rs.dim + 1}")
    if rs.encoding.bits < 32 and int(vec.max()) >= rs.encoding.modulus:
        raise ProtocolAbort("masked vector has entries outside Z_M")
    peers = [c.peer for c in rep.ciphertexts]
    if len(set(peers)) != len(peers) or set(peers) != set(rs.graph[n]):
        raise ProtocolAbort("ciphertexts are not one per neighbour")
    return rep


def collect_masked(rs: RoundState, replies: Mapping[int, bytes]) -> dict[int, bytes]:
    """Adds up the valid masked inputs (mod 2^32) and builds the unmask requests.

    Invalid replies are recorded in ``rs.rejected`` and count as dropped.

    Raises:
        ProtocolAbort: no valid masked input, or a contributor with fewer than t
            neighbours among the contributors (its self mask would be unrecoverable,
            and every such neighbour refuses to unmask anyway).
    """
    total = np.zeros(rs.dim + 1, dtype=np.uint32)
    accepted: dict[int, MaskedInputReply] = {}
    for n in rs.cohort:
        if n not in replies:
            continue
        try:
            rep = _check_masked_reply(rs, n, replies[n])
        except ProtocolAbort as exc:
            rs.rejected[n] = str(exc)
            continue
        np.add(total, rep.vector(), out=total)
        accepted[n] = rep
    survivors = tuple(sorted(accepted))
    if not survivors:
        raise ProtocolAbort(f"round {rs.round}: no masked input received")
    alive = set(survivors)
    for u in survivors:
        have = sum(1 for v in rs.graph[u] if v in alive)
        if have < rs.t:
            raise ProtocolAbort(
                f"round {rs.round}: node {u} has {have} surviving neighbours, "
                f"threshold is {rs.t}"
            )
    rs.total = total
    rs.survivors = survivors
    rs.dropped_input = tuple(n for n in rs.cohort if n not in alive)
    rs.commitments = {n: accepted[n].commitment for n in survivors}
    inbox: dict[int, list[ShareCiphertext]] = {u: [] for u in survivors}
    for sender in survivors:
        for c in accepted[sender].ciphertexts:
            if c.peer in alive:
                inbox[c.peer].append(ShareCiphertext(sender, c.nonce, c.data))
    return {
        u: UnmaskRequest(
            run_id=rs.run_id,
            round=rs.round,
            sender=SERVER_ID,
            recipient=u,
            survivors=tuple(v for v in rs.graph[u] if v in alive),
            dropped=tuple(v for v in rs.graph[u] if v not in alive),
            ciphertexts=tuple(sorted(inbox[u], key=lambda c: c.peer)),
        ).to_bytes()
        for u in survivors
    }


def _recover_self_mask(
    shares: list[tuple[int, int]], t: int, commitment: bytes, ctx: dict[str, int]
) -> bytes | None:
    """Reconstructs b from t shares and checks it against the commitment.

    If the first t shares fail (a holder sent a wrong share), retries leaving out one
    share at a time, so one faulty or malicious holder cannot abort the round when more
    than t shares are available. Returns ``None`` if no candidate matches.
    """
    candidates = [shares] + [shares[:i] + shares[i + 1 :] for i in range(len(shares))]
    for subset in candidates:
        if len(subset) < t:
            continue
        try:
            b = recover_secret(subset, threshold=t)
        except ValueError:
            continue
        if K.self_mask_commitment(b, **ctx) == commitment:
            return b
    return None


def finish_round(
    rs: RoundState, replies: Mapping[int, bytes], *, workers: int = 1
) -> SecAggResult:
    """Removes every self mask and every orphaned pairwise mask, then decodes.

    ``workers`` > 1 expands the masks on that many threads (OpenSSL and numpy release
    the GIL); the result is identical since addition mod 2^32 commutes.

    Raises:
        ProtocolAbort: a contributor's self mask has fewer than t shares, or its
            reconstruction fails the commitment; or a pairwise seed between an
            early dropout and a contributor is missing because the contributor did
            not answer the unmask request (README "Dropouts").
    """
    alive = set(rs.survivors)
    shares: dict[int, list[tuple[int, int]]] = {u: [] for u in rs.survivors}
    seeds: dict[tuple[int, int], bytes] = {}  # (dropped i, contributor u) -> s_iu
    answered = set()
    for u in rs.survivors:
        if u not in replies:
            continue
        try:
            rep = UnmaskReply.from_bytes(
                replies[u], run_id=rs.run_id, round=rs.round, sender=u
            )
            if [o for o, _ in rep.self_mask_shares] != [
                v for v in rs.graph[u] if v in alive
            ]:
                raise ProtocolAbort("self-mask shares do not match the survivors")
            if [p for p, _ in rep.pairwise_seeds] != [
                v for v in rs.graph[u] if v not in alive
            ]:
                raise ProtocolAbort("pairwise seeds do not match the dropped nodes")
            values = [(o, decode_share_value(v)) for o, v in rep.self_mask_shares]
        except (ProtocolAbort, ValueError) as exc:
            rs.rejected[u] = str(exc)
            continue
        answered.add(u)
        for owner, y in values:
            shares[owner].append((u + 1, y))
        for i, s in rep.pairwise_seeds:
            seeds[(i, u)] = s

    total = rs.total
    if total is None:
        raise ProtocolAbort("no masked inputs collected")
    bits = rs.encoding.bits
    # Check everything and collect the masks to remove before any expansion.
    jobs: list[tuple[bytes, int]] = []  # (PRG seed, +1 add / -1 subtract)
    for u in rs.survivors:
        if len(shares[u]) < rs.t:
            raise ProtocolAbort(
                f"round {rs.round}: {len(shares[u])} shares of node {u}'s self mask, "
                f"threshold is {rs.t}"
            )
        ctx = {"run_id": rs.run_id, "round": rs.round, "node_id": u}
        b = _recover_self_mask(shares[u], rs.t, rs.commitments[u], ctx)
        if b is None:
            raise ProtocolAbort(
                f"node {u}'s self-mask shares do not match its commitment"
            )
        jobs.append((K.self_mask_seed(b, **ctx), -1))
    for i in rs.dropped_input:
        for u in rs.graph[i]:
            if u not in alive:
                continue
            pair_seed = seeds.get((i, u))
            if pair_seed is None:
                raise ProtocolAbort(
                    f"round {rs.round}: node {u} dropped before revealing its pairwise "
                    f"seed with node {i}, which dropped before its masked input"
                )
            jobs.append((pair_seed, pairwise_sign(owner=u, peer=i) * -1))
    apply_masks(total, jobs, bits=bits, workers=workers)
    if bits < 32:
        total &= np.uint32(rs.encoding.modulus - 1)
    summed, weight = rs.encoding.decode(total)
    return SecAggResult(
        run_id=rs.run_id,
        round=rs.round,
        sum=summed,
        total_weight=weight,
        contributors=rs.survivors,
        dropped={
            Stage.ADVERTISE: rs.dropped_advertise,
            Stage.MASKED_INPUT: rs.dropped_input,
            Stage.UNMASK: tuple(u for u in rs.survivors if u not in answered),
        },
        rejected=dict(rs.rejected),
        neighbours=rs.k,
        threshold=rs.t,
        error_bound=rs.encoding.error_bound(len(rs.survivors)),
    )
