"""Rebuilding self-mask seeds from the share blocks of unmask replies.

Replies are kept as raw record blocks: owner ids are checked with one cached
``struct`` per block, values range-checked on their first byte, and a share is
converted to an integer only when it is used. Lagrange coefficients are computed once
per *set of share holders* (owners consecutive on the neighbour ring share a set, see
:func:`_pick_holder_sets`), with one modular inversion per round
(:func:`~lepton_fed.secagg.shamir.lagrange_at_zero`).
"""

from __future__ import annotations

import operator
import struct
from collections.abc import Callable, Mapping, Sequence
from functools import lru_cache, partial

from lepton_fed.errors import ProtocolAbort
from lepton_fed.secagg.shamir import (
    FIELD_PRIME,
    SECRET_BYTES,
    SHARE_BYTES,
    lagrange_at_zero,
    recover_secret,
)
from lepton_fed.secagg.wire import SHARE_DTYPE

__all__ = ["RawShares", "ids_struct", "read_share_block", "reconstruct"]

_SECRET_LIMIT = 1 << (8 * SECRET_BYTES)
_SHARE_RECORD = SHARE_DTYPE.itemsize  # 8-byte owner + 33-byte value


@lru_cache(maxsize=64)
def ids_struct(count: int, skip: int) -> struct.Struct:
    """Unpacks the u64 id at the head of each of ``count`` records of 8 + skip bytes."""
    return struct.Struct("<" + f"Q{skip}x" * count)


class RawShares:
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
        total: int = sum(map(operator.mul, coeffs, ys))  # operator.mul is typed Any
        return total % FIELD_PRIME

    def points(self, owner: int, holders: Sequence[int]) -> list[tuple[int, int]]:
        """(x, y) shares of ``owner`` (x = holder + 1)."""
        return [(h + 1, self._value(owner, h)) for h in holders]


def read_share_block(
    block: bytes, count: int, expected: Sequence[int], mismatch: str
) -> None:
    """Owners of a 41-byte-record block are ``expected``; every value is below p."""
    if count != len(expected) or (
        count and list(ids_struct(count, SHARE_BYTES).unpack(block)) != expected
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


def reconstruct(
    shares: RawShares,
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
        zip(
            distinct,
            lagrange_at_zero([[h + 1 for h in s] for s in distinct]),
            strict=True,
        )
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
