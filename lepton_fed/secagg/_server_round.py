"""Per-round server bookkeeping and the collection steps, as pure functions.

:class:`~lepton_fed.secagg.server.SecAggServer` owns the phases; these functions do
the work of one step on a :class:`RoundState` and raise
:class:`~lepton_fed.errors.ProtocolAbort` when the round cannot complete.

Fast mode: :func:`collect_masked` then :func:`finish_round`. Robust mode
(``share_keys_first``): :func:`collect_shares`, :func:`collect_masked_robust`, then
:func:`finish_round` (which dispatches on ``RoundState.robust``).

Performance (the server's own cost per contributor should be close to one vector
addition and one mask expansion):

* masked-input and share-keys replies are read with the messages'
  ``records_from_bytes`` (one ``struct`` call for the header, the vector and the
  ciphertext block as zero-copy numpy arrays; the vector is 4-byte aligned on the
  wire, so it is summed in place without numpy's unaligned copy);
* ciphertexts are routed to their receivers with one concatenation and one stable
  sort per round, and each request is written from the sorted records;
* unmask replies are read as raw record blocks (``raw_records``): owner ids checked
  with one cached ``struct`` per block, values range-checked on their first byte, and
  a share is converted to an integer only when it is used;
* secrets are rebuilt with Lagrange coefficients computed once per *set of share
  holders* (owners consecutive on the neighbour ring share a set, see
  :func:`_pick_holder_sets`), with one modular inversion per round
  (:func:`~lepton_fed.secagg.shamir.lagrange_at_zero`); salts and label prefixes of
  the per-contributor derivations are built once per round (``RoundDerivations``);
* masks are expanded into one reused buffer (``MaskBuffer``).
"""

from __future__ import annotations

import operator
import struct
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache, partial

import numpy as np

from lepton_fed.errors import ProtocolAbort
from lepton_fed.secagg import keys as K
from lepton_fed.secagg.encoding import FieldEncoding
from lepton_fed.secagg.keys import KEY_BYTES
from lepton_fed.secagg.masking import apply_masks, pairwise_sign
from lepton_fed.secagg.messages import (
    CT_DTYPE,
    ROBUST_CT_DTYPE,
    SERVER_ID,
    SHARE_DTYPE,
    MaskedInputReply,
    RobustMaskedInputReply,
    RobustMaskedInputRequest,
    RobustUnmaskReply,
    RobustUnmaskRequest,
    RoundKey,
    ShareKeysReply,
    UnmaskReply,
    UnmaskRequest,
)
from lepton_fed.secagg.result import SecAggResult
from lepton_fed.secagg.shamir import (
    FIELD_PRIME,
    SECRET_BYTES,
    SHARE_BYTES,
    lagrange_at_zero,
    recover_secret,
)
from lepton_fed.secagg.stages import Stage

__all__ = [
    "Advert",
    "RoundState",
    "collect_masked",
    "collect_masked_robust",
    "collect_shares",
    "finish_round",
]

_SECRET_LIMIT = 1 << (8 * SECRET_BYTES)
_SHARE_RECORD = SHARE_DTYPE.itemsize  # 8-byte owner + 33-byte value


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
    """What the server holds during one round (the sum, never the vectors).

    ``ring`` is the cohort in neighbour-ring order (graph neighbours are close in it);
    it only steers which share holders are used together, never the result.
    In robust mode, ``sharers`` (U1) are the nodes whose shares were relayed and
    ``masked_with[u]`` the neighbours u was told to mask with (its U1 neighbours).
    """

    run_id: int
    round: int
    cohort: tuple[int, ...]
    graph: dict[int, tuple[int, ...]]
    k: int
    t: int
    dim: int
    encoding: FieldEncoding
    dropped_advertise: tuple[int, ...]
    ring: tuple[int, ...] = ()
    robust: bool = False
    rejected: dict[int, str] = field(default_factory=dict)
    total: np.ndarray | None = None
    commitments: dict[int, bytes] = field(default_factory=dict)
    survivors: tuple[int, ...] = ()
    dropped_input: tuple[int, ...] = ()
    # per contributor u: its neighbours that survived / dropped (unmask request lists)
    alive_nbrs: dict[int, list[int]] = field(default_factory=dict)
    dead_nbrs: dict[int, list[int]] = field(default_factory=dict)
    # robust mode
    sharers: tuple[int, ...] = ()
    dropped_shares: tuple[int, ...] = ()
    masked_with: dict[int, tuple[int, ...]] = field(default_factory=dict)
    mask_keys: dict[int, bytes] = field(default_factory=dict)
    needs_key: tuple[int, ...] = ()


# ----------------------------------------------------------------------- helpers
def _peers_match(peers: np.ndarray, expected: Sequence[int]) -> bool:
    """``peers`` (uint64) hold exactly the ids in ``expected`` (sorted, distinct)."""
    got = peers.tolist()
    return got == list(expected) or sorted(got) == list(expected)


def _route(
    senders: Sequence[int], blocks: Sequence[np.ndarray], dtype: np.dtype
) -> tuple[np.ndarray, np.ndarray]:
    """Re-addresses ciphertext records from their senders to their receivers.

    ``blocks[i]`` holds the records sender ``senders[i]`` addressed to its neighbours
    (``peer`` = receiver). Returns all records with ``peer`` = sender, sorted by
    (receiver, sender), and the matching receiver ids; one join and one stable sort
    for the whole round.
    """
    if not blocks:
        return np.empty(0, dtype=dtype), np.empty(0, dtype=np.uint64)
    # one writable copy of all records (much faster than np.concatenate on records)
    joined = b"".join(blocks)  # type: ignore[arg-type]  # arrays are buffers
    records = np.frombuffer(bytearray(joined), dtype=dtype)
    receivers = records["peer"].copy()
    sender_col = np.repeat(np.asarray(senders, dtype=np.uint64), [len(b) for b in blocks])
    records["peer"] = sender_col
    if any(a >= b for a, b in zip(senders, senders[1:], strict=False)):
        order = np.lexsort((sender_col, receivers))
    else:  # senders ascending: a stable sort by receiver keeps them ascending
        order = np.argsort(receivers, kind="stable")
    return records[order], receivers[order]


def _slices(sorted_ids: np.ndarray, wanted: Sequence[int]) -> tuple[list[int], list[int]]:
    """Start and end index of each id of ``wanted`` in the sorted array."""
    keys = np.asarray(wanted, dtype=np.uint64)
    lo = np.searchsorted(sorted_ids, keys, side="left").tolist()
    hi = np.searchsorted(sorted_ids, keys, side="right").tolist()
    return lo, hi


@lru_cache(maxsize=64)
def _ids_struct(count: int, skip: int) -> struct.Struct:
    """Unpacks the u64 id at the head of each of ``count`` records of 8 + skip bytes."""
    return struct.Struct("<" + f"Q{skip}x" * count)


class _RawShares:
    """Shares of one kind received at unmask, straight from the reply bytes.

    ``blocks[h]`` is holder h's block of 41-byte records (owner u64, value 33 bytes)
    whose owners were checked to be ``order[h]``; a value is read only when used.
    """

    def __init__(self, blocks: dict[int, bytes], order: Mapping[int, Sequence[int]]):
        self.blocks = blocks
        self._pos = {h: {o: i for i, o in enumerate(order[h])} for h in blocks}

    def holders_of(self, candidates: Sequence[int]) -> list[int]:
        """The candidates (in order) whose reply was accepted.

        Callers pass exactly the nodes whose expected share lists name the owner
        (the relation is symmetric), so an accepted reply holds its share.
        """
        blocks = self.blocks
        return [h for h in candidates if h in blocks]

    def _value(self, owner: int, holder: int) -> int:
        off = self._pos[holder][owner] * _SHARE_RECORD + 8
        return int.from_bytes(self.blocks[holder][off : off + SHARE_BYTES], "big")

    def combine(self, owner: int, holders: Sequence[int], coeffs: Sequence[int]) -> int:
        """``sum(c * y) mod p`` over the shares of ``owner`` held by ``holders``."""
        pos, blocks = self._pos, self.blocks
        ys = []
        for h in holders:
            off = pos[h][owner] * _SHARE_RECORD + 8
            ys.append(int.from_bytes(blocks[h][off : off + SHARE_BYTES], "big"))
        return sum(map(operator.mul, coeffs, ys)) % FIELD_PRIME

    def points(self, owner: int, holders: Sequence[int]) -> list[tuple[int, int]]:
        """(x, y) shares of ``owner`` (x = holder + 1)."""
        return [(h + 1, self._value(owner, h)) for h in holders]


def _read_share_block(
    block: bytes, count: int, expected: Sequence[int], mismatch: str
) -> None:
    """Owners of a 41-byte-record block are ``expected``; every value is below p."""
    if count != len(expected) or (
        count and list(_ids_struct(count, SHARE_BYTES).unpack(block)) != expected
    ):
        raise ProtocolAbort(mismatch)
    first = block[8::_SHARE_RECORD]  # first byte of each value: 0 means < 2^256 < p
    if first.count(0) != count:
        for i in range(count):
            off = i * _SHARE_RECORD + 8
            if int.from_bytes(block[off : off + SHARE_BYTES], "big") >= FIELD_PRIME:
                raise ProtocolAbort("share value out of field range")


def _pick_holder_sets(
    owners: Sequence[int], available: Mapping[int, list[int]], t: int
) -> dict[int, tuple[int, ...]]:
    """Chooses, per owner, t holders whose shares to interpolate.

    Owners are visited in ring order; consecutive owners join one group while the
    holders that answered for all of them still number at least t, and the group
    uses the t smallest of those. With no dropouts a group spans
    ``(k - t) // 2 + 1`` ring neighbours (4 for k=18, t=12), so the Lagrange
    coefficients (the expensive part) are computed once per group, not per owner.
    Any t shares give the same secret, so this choice never changes the result.
    """
    chosen: dict[int, tuple[int, ...]] = {}
    group: list[int] = []
    common: set[int] = set()
    for o in owners:
        have = available[o]
        if group:
            both = common.intersection(have)
            if len(both) >= t:
                group.append(o)
                common = both
                continue
            _close(group, common, t, chosen)
        group, common = [o], set(have)
    if group:
        _close(group, common, t, chosen)
    return chosen


def _close(
    group: list[int], common: set[int], t: int, chosen: dict[int, tuple[int, ...]]
) -> None:
    pick = tuple(sorted(common)[:t])
    for o in group:
        chosen[o] = pick


def _reconstruct(
    shares: _RawShares,
    owners: Sequence[int],
    candidates: Mapping[int, Sequence[int]],
    t: int,
    ring_order: Sequence[int],
    check: Callable[[int, bytes], bool],
    what: str,
    round: int,
    mismatch: str = "its commitment",
) -> dict[int, bytes]:
    """Rebuilds each owner's 32-byte secret from t of its shares and checks it.

    ``candidates[o]`` are the nodes that may hold a share of o. A candidate secret that
    fails ``check`` (a holder sent a wrong share) is retried from all the owner's
    shares leaving one out at a time, so one bad share is tolerated when a spare
    exists.

    Raises:
        ProtocolAbort: an owner with fewer than t shares, or no candidate passes.
    """
    available: dict[int, list[int]] = {}
    for o in owners:
        have = shares.holders_of(candidates[o])
        if len(have) < t:
            raise ProtocolAbort(
                f"round {round}: {len(have)} shares of node {o}'s {what}, "
                f"threshold is {t}"
            )
        available[o] = have
    position = {o: i for i, o in enumerate(ring_order)}
    visit = sorted(owners, key=lambda o: position.get(o, len(position)))
    chosen = _pick_holder_sets(visit, available, t)
    distinct = list(dict.fromkeys(chosen.values()))
    coeffs = dict(
        zip(distinct, lagrange_at_zero([[h + 1 for h in s] for s in distinct]), strict=True)
    )
    out: dict[int, bytes] = {}
    for o in owners:
        pick = chosen[o]
        value = shares.combine(o, pick, coeffs[pick])
        secret = value.to_bytes(SECRET_BYTES, "big") if value < _SECRET_LIMIT else None
        if secret is None or not check(o, secret):
            secret = _retry(shares.points(o, available[o]), t, partial(check, o))
            if secret is None:
                raise ProtocolAbort(f"node {o}'s {what} shares do not match {mismatch}")
        out[o] = secret
    return out


def _retry(
    shares: list[tuple[int, int]], t: int, check: Callable[[bytes], bool]
) -> bytes | None:
    """Reconstructs from all shares, then leaving out one share at a time."""
    candidates = [shares] + [shares[:i] + shares[i + 1 :] for i in range(len(shares))]
    for subset in candidates:
        if len(subset) < t:
            continue
        try:
            secret = recover_secret(subset, threshold=t)
        except ValueError:
            continue
        if check(secret):
            return secret
    return None


def _reject(rs: RoundState, n: int, exc: Exception) -> None:
    rs.rejected[n] = str(exc)


# ------------------------------------------------------------------ fast mode
def collect_masked(rs: RoundState, replies: Mapping[int, bytes]) -> dict[int, bytes]:
    """Adds up the valid masked inputs (mod 2^32) and builds the unmask requests.

    Invalid replies are recorded in ``rs.rejected`` and count as dropped.

    Raises:
        ProtocolAbort: no valid masked input, or a contributor with fewer than t
            neighbours among the contributors (its self mask would be unrecoverable,
            and every such neighbour refuses to unmask anyway).
    """
    total = np.zeros(rs.dim + 1, dtype=np.uint32)
    senders: list[int] = []
    blocks: list[np.ndarray] = []
    commitments: dict[int, bytes] = {}
    for n in rs.cohort:
        data = replies.get(n)
        if data is None:
            continue
        try:
            commitment, vec, cts = MaskedInputReply.records_from_bytes(
                data, run_id=rs.run_id, round=rs.round, sender=n
            )
            _check_vector(rs, vec)
            if not _peers_match(cts["peer"], rs.graph[n]):
                raise ProtocolAbort("ciphertexts are not one per neighbour")
        except ProtocolAbort as exc:
            _reject(rs, n, exc)
            continue
        np.add(total, vec, out=total)
        senders.append(n)
        blocks.append(cts)
        commitments[n] = commitment
    survivors = tuple(senders)  # cohort order = sorted
    if not survivors:
        raise ProtocolAbort(f"round {rs.round}: no masked input received")
    _split_neighbourhoods(rs, survivors, rs.graph)
    records, receivers = _route(senders, blocks, CT_DTYPE)
    lo, hi = _slices(receivers, survivors)
    rs.total = total
    rs.survivors = survivors
    rs.dropped_input = tuple(n for n in rs.cohort if n not in commitments)
    rs.commitments = commitments
    return {
        u: UnmaskRequest.encode_records(
            run_id=rs.run_id,
            round=rs.round,
            recipient=u,
            survivors=rs.alive_nbrs[u],
            dropped=rs.dead_nbrs[u],
            records=records[a:b],
        )
        for u, a, b in zip(survivors, lo, hi, strict=True)
    }


def _check_vector(rs: RoundState, vec: np.ndarray) -> None:
    if vec.size != rs.dim + 1:
        raise ProtocolAbort(f"masked vector has {vec.size} entries, not {rs.dim + 1}")
    if rs.encoding.bits < 32 and int(vec.max()) >= rs.encoding.modulus:
        raise ProtocolAbort("masked vector has entries outside Z_M")


def _split_neighbourhoods(
    rs: RoundState, survivors: Sequence[int], nbrs: Mapping[int, Sequence[int]]
) -> None:
    """Fills ``alive_nbrs``/``dead_nbrs``; aborts if a survivor has < t live ones."""
    alive = set(survivors)
    for u in survivors:
        live = [v for v in nbrs[u] if v in alive]
        if len(live) < rs.t:
            raise ProtocolAbort(
                f"round {rs.round}: node {u} has {len(live)} surviving neighbours, "
                f"threshold is {rs.t}"
            )
        rs.alive_nbrs[u] = live
        rs.dead_nbrs[u] = [v for v in nbrs[u] if v not in alive]


def _read_unmask_replies(
    rs: RoundState, replies: Mapping[int, bytes]
) -> tuple[dict[int, bytes], dict[int, bytes]]:
    """Parses and checks unmask replies; returns both blocks of every valid one.

    Fast mode: b-shares and (peer, seed) records; robust mode: b-shares and
    mask-key shares. Owners must be exactly the expected neighbours, in order.
    """
    first: dict[int, bytes] = {}
    second: dict[int, bytes] = {}
    cls = RobustUnmaskReply if rs.robust else UnmaskReply
    for u in rs.survivors:
        data = replies.get(u)
        if data is None:
            continue
        try:
            a, na, b, nb = cls.raw_records(
                data, run_id=rs.run_id, round=rs.round, sender=u
            )
            _read_share_block(
                a, na, rs.alive_nbrs[u], "self-mask shares do not match the survivors"
            )
            dead = rs.dead_nbrs[u]
            if rs.robust:
                _read_share_block(
                    b, nb, dead, "mask-key shares do not match the dropped nodes"
                )
            elif nb != len(dead) or (
                nb and list(_ids_struct(nb, KEY_BYTES).unpack(b)) != dead
            ):
                raise ProtocolAbort("pairwise seeds do not match the dropped nodes")
        except ProtocolAbort as exc:
            _reject(rs, u, exc)
            continue
        first[u] = a
        second[u] = b
    return first, second


def finish_round(
    rs: RoundState, replies: Mapping[int, bytes], *, workers: int = 1
) -> SecAggResult:
    """Removes every self mask and every orphaned pairwise mask, then decodes.

    ``workers`` > 1 expands the masks on that many threads (OpenSSL and numpy release
    the GIL); the result is identical since addition mod 2^32 commutes.

    Raises:
        ProtocolAbort: a contributor's self mask has fewer than t shares, or its
            reconstruction fails the commitment. Fast mode: a pairwise seed between an
            early dropout and a contributor is missing because the contributor did
            not answer the unmask request (README "Dropouts"). Robust mode: a dropped
            node's mask key has fewer than t shares or does not match its public key.
    """
    total = rs.total
    if total is None:
        raise ProtocolAbort("no masked inputs collected")
    b_blocks, other_blocks = _read_unmask_replies(rs, replies)
    derive = K.RoundDerivations(run_id=rs.run_id, round=rs.round)
    commitments = rs.commitments

    def commitment_ok(u: int, b: bytes) -> bool:
        return derive.commitment(b, u) == commitments[u]

    b_shares = _RawShares(b_blocks, rs.alive_nbrs)
    secrets = _reconstruct(
        b_shares,
        rs.survivors,
        rs.alive_nbrs,
        rs.t,
        rs.ring,
        commitment_ok,
        "self-mask",
        rs.round,
    )
    jobs: list[tuple[bytes, int]] = [
        (derive.self_mask_seed(secrets[u], u), -1) for u in rs.survivors
    ]
    if rs.robust:
        jobs += _robust_pairwise_jobs(rs, _RawShares(other_blocks, rs.dead_nbrs))
    else:
        jobs += _fast_pairwise_jobs(rs, other_blocks)
    bits = rs.encoding.bits
    apply_masks(total, jobs, bits=bits, workers=workers)
    if bits < 32:
        total &= np.uint32(rs.encoding.modulus - 1)
    summed, weight = rs.encoding.decode(total)
    dropped = {Stage.ADVERTISE: rs.dropped_advertise}
    if rs.robust:
        dropped[Stage.SHARE_KEYS] = rs.dropped_shares
    dropped[Stage.MASKED_INPUT] = rs.dropped_input
    dropped[Stage.UNMASK] = tuple(u for u in rs.survivors if u not in b_blocks)
    return SecAggResult(
        run_id=rs.run_id,
        round=rs.round,
        sum=summed,
        total_weight=weight,
        contributors=rs.survivors,
        dropped=dropped,
        rejected=dict(rs.rejected),
        neighbours=rs.k,
        threshold=rs.t,
        error_bound=rs.encoding.error_bound(len(rs.survivors)),
    )


def _fast_pairwise_jobs(
    rs: RoundState, seed_blocks: Mapping[int, bytes]
) -> list[tuple[bytes, int]]:
    """Fast mode: masks between early dropouts and contributors, from revealed seeds."""
    if not rs.dropped_input:
        return []
    seeds: dict[tuple[int, int], bytes] = {}  # (dropped i, contributor u) -> s_iu
    record = 8 + KEY_BYTES
    for u, block in seed_blocks.items():
        for idx, peer in enumerate(rs.dead_nbrs[u]):
            off = idx * record + 8
            seeds[(peer, u)] = block[off : off + KEY_BYTES]
    alive = set(rs.survivors)
    jobs = []
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
            jobs.append((pair_seed, -pairwise_sign(owner=u, peer=i)))
    return jobs


# ----------------------------------------------------------------- robust mode
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
    got: dict[int, tuple[bytes, bytes, np.ndarray]] = {}
    for n in rs.cohort:
        data = replies.get(n)
        if data is None:
            continue
        try:
            mask_key, commitment, cts = ShareKeysReply.records_from_bytes(
                data, run_id=rs.run_id, round=rs.round, sender=n
            )
            if not _peers_match(cts["peer"], rs.graph[n]):
                raise ProtocolAbort("ciphertexts are not one per neighbour")
        except ProtocolAbort as exc:
            _reject(rs, n, exc)
            continue
        got[n] = (mask_key, commitment, cts)
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
    records, receivers = _route(u1, blocks, ROBUST_CT_DTYPE)
    lo, hi = _slices(receivers, u1)
    return {
        u: RobustMaskedInputRequest.encode_records(
            run_id=rs.run_id, round=rs.round, recipient=u, records=records[a:b]
        )
        for u, a, b in zip(u1, lo, hi, strict=True)
    }


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
    accepted: list[int] = []
    for n in rs.sharers:
        data = replies.get(n)
        if data is None:
            continue
        try:
            vec = RobustMaskedInputReply.records_from_bytes(
                data, run_id=rs.run_id, round=rs.round, sender=n
            )
            _check_vector(rs, vec)
        except ProtocolAbort as exc:
            _reject(rs, n, exc)
            continue
        np.add(total, vec, out=total)
        accepted.append(n)
    survivors = tuple(accepted)
    if not survivors:
        raise ProtocolAbort(f"round {rs.round}: no masked input received")
    _split_neighbourhoods(rs, survivors, rs.masked_with)
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


def _robust_pairwise_jobs(rs: RoundState, shares: _RawShares) -> list[tuple[bytes, int]]:
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
    keys = _reconstruct(
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
