"""What the server holds per node and per round, and the helpers every collection step
shares: reading replies, checking vectors, routing ciphertexts to their receivers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np

from lepton_fed.errors import ProtocolAbort
from lepton_fed.secagg.encoding import FieldEncoding
from lepton_fed.secagg.wire import RoundKey

__all__ = [
    "Advert",
    "RoundState",
    "accepted",
    "check_one_per_neighbour",
    "check_vector",
    "route",
    "slices",
    "split_neighbourhoods",
]

_T = TypeVar("_T")


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
    privacy_log2: float
    correctness_log2: float
    ring: tuple[int, ...] = ()
    rejected: dict[int, str] = field(default_factory=dict)
    total: np.ndarray | None = None
    commitments: dict[int, bytes] = field(default_factory=dict)
    survivors: tuple[int, ...] = ()
    dropped_input: tuple[int, ...] = ()
    # per contributor u: its neighbours that survived / dropped (unmask request lists)
    alive_nbrs: dict[int, list[int]] = field(default_factory=dict)
    dead_nbrs: dict[int, list[int]] = field(default_factory=dict)


def accepted(
    rs: RoundState,
    replies: Mapping[int, bytes],
    nodes: Iterable[int],
    parse: Callable[[RoundState, int, bytes], _T],
) -> Iterator[tuple[int, _T]]:
    """``(node, parse(rs, node, reply))`` for each of ``nodes`` (in order) that replied.

    A node without a reply is skipped; one whose reply ``parse`` refuses
    (``ProtocolAbort``) is recorded in ``rs.rejected`` and skipped: it counts as
    dropped, and never aborts the round by itself.
    """
    for n in nodes:
        data = replies.get(n)
        if data is None:
            continue
        try:
            parsed = parse(rs, n, data)
        except ProtocolAbort as exc:
            rs.rejected[n] = str(exc)
            continue
        yield n, parsed


def check_one_per_neighbour(rs: RoundState, node: int, cts: np.ndarray) -> None:
    """The ciphertext records ``node`` sent address exactly its graph neighbours.

    Raises:
        ProtocolAbort: a missing, extra or repeated receiver.
    """
    got = cts["peer"].tolist()
    expected = list(rs.graph[node])  # sorted, distinct
    if got != expected and sorted(got) != expected:
        raise ProtocolAbort("ciphertexts are not one per neighbour")


def check_vector(rs: RoundState, vec: np.ndarray) -> None:
    """A masked vector has ``dim + 1`` entries, all in Z_M.

    Raises:
        ProtocolAbort: another length, or an entry of M or more.
    """
    if vec.size != rs.dim + 1:
        raise ProtocolAbort(f"masked vector has {vec.size} entries, not {rs.dim + 1}")
    if rs.encoding.bits < 32 and int(vec.max()) >= rs.encoding.modulus:
        raise ProtocolAbort("masked vector has entries outside Z_M")


def split_neighbourhoods(
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


def route(
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
    sender_col = np.repeat(
        np.asarray(senders, dtype=np.uint64), [len(b) for b in blocks]
    )
    records["peer"] = sender_col
    if any(a >= b for a, b in zip(senders, senders[1:], strict=False)):
        order = np.lexsort((sender_col, receivers))
    else:  # senders ascending: a stable sort by receiver keeps them ascending
        order = np.argsort(receivers, kind="stable")
    return records[order], receivers[order]


def slices(
    sorted_ids: np.ndarray, wanted: Sequence[int]
) -> tuple[list[int], list[int]]:
    """Start and end index of each id of ``wanted`` in the sorted array."""
    keys = np.asarray(wanted, dtype=np.uint64)
    lo = np.searchsorted(sorted_ids, keys, side="left").tolist()
    hi = np.searchsorted(sorted_ids, keys, side="right").tolist()
    return lo, hi
