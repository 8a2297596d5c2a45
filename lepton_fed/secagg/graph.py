"""SecAgg+ neighbour graph: a ring over the shuffled cohort, k/2 neighbours each side.

The shuffle is a Fisher-Yates permutation of the sorted cohort driven by a ChaCha20
keystream keyed by HKDF(graph seed, run, round), so the server and every client
compute the same graph from public data. When ``k >= len(cohort) - 1`` the graph is
complete (plain SecAgg).

The graph is undirected: ``j in N(i)`` iff ``i in N(j)``; every node has exactly k
neighbours (Bell et al. 2020, "Harary graph" construction).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

from lepton_fed.secagg.keys import graph_key
from lepton_fed.secagg.prg import chacha20_keystream

__all__ = ["check_graph_params", "neighbour_graph", "neighbours_of", "ring_graph",
           "shuffled_cohort"]


def check_graph_params(cohort_size: int, k: int, t: int) -> None:
    """Validates (k, t) for a cohort.

    Raises:
        ValueError: k not in [1, m-1], k odd while the graph is not complete, or t not
            in (k/2, k].
    """
    if cohort_size < 2:
        raise ValueError(f"cohort must have at least 2 nodes, got {cohort_size}")
    if not 1 <= k <= cohort_size - 1:
        raise ValueError(f"k must be in [1, {cohort_size - 1}], got {k}")
    if k < cohort_size - 1 and k % 2:
        raise ValueError(f"k must be even unless the graph is complete, got {k}")
    if not (2 * t > k and t <= k):
        raise ValueError(f"threshold t must satisfy k/2 < t <= k (k={k}), got {t}")


def shuffled_cohort(
    cohort: Sequence[int], seed: bytes, *, run_id: int, round: int
) -> list[int]:
    """Deterministic uniform permutation of ``sorted(cohort)``."""
    order = sorted(cohort)
    key = graph_key(seed, run_id=run_id, round=round)
    m = len(order)
    stream = chacha20_keystream(key, 4 * (2 * m + 16))
    words = list(struct.unpack(f"<{len(stream) // 4}I", stream))
    pos = 0
    refills = 1
    for i in range(m - 1, 0, -1):
        bound = i + 1
        limit = (2**32 // bound) * bound
        while True:
            if pos == len(words):  # astronomically rare; extend deterministically
                more = chacha20_keystream(
                    key,
                    4 * (2 * m + 16),
                    nonce16=struct.pack("<I", 0)
                    + struct.pack("<Q", refills)
                    + bytes(4),
                )
                refills += 1
                words = list(struct.unpack(f"<{len(more) // 4}I", more))
                pos = 0
            w = words[pos]
            pos += 1
            if w < limit:
                break
        j = w % bound
        order[i], order[j] = order[j], order[i]
    return order


def neighbour_graph(
    cohort: Sequence[int], seed: bytes, *, run_id: int, round: int, k: int
) -> dict[int, tuple[int, ...]]:
    """Neighbour sets of every node of the round's cohort.

    Args:
        cohort: distinct node ids of the round.
        seed: 32-byte public graph seed chosen by the server.
        run_id: run identifier.
        round: round number.
        k: degree; ``k >= len(cohort) - 1`` gives the complete graph.

    Returns:
        ``{node: sorted tuple of its k neighbours}``.

    Raises:
        ValueError: duplicate ids or an odd k below ``len(cohort) - 1``.
    """
    m = len(cohort)
    if len(set(cohort)) != m:
        raise ValueError("cohort has duplicate node ids")
    if k >= m - 1:
        everyone = sorted(cohort)
        return {v: tuple(u for u in everyone if u != v) for v in everyone}
    if k % 2:
        raise ValueError(f"k must be even for a ring graph, got {k}")
    return ring_graph(shuffled_cohort(cohort, seed, run_id=run_id, round=round), k)


def neighbours_of(
    cohort: Sequence[int], seed: bytes, node: int, *, run_id: int, round: int, k: int
) -> tuple[int, ...]:
    """``neighbour_graph(cohort, seed, ...)[node]`` without building the other nodes'
    neighbourhoods (a client needs only its own: O(m) for the shuffle instead of
    O(m k) set work, 26 ms of a 1,000-node round before).

    Raises:
        ValueError: as :func:`neighbour_graph`, or ``node`` not in the cohort.
    """
    m = len(cohort)
    if len(set(cohort)) != m:
        raise ValueError("cohort has duplicate node ids")
    if node not in cohort:
        raise ValueError("node is not in the cohort")
    if k >= m - 1:
        return tuple(u for u in sorted(cohort) if u != node)
    if k % 2:
        raise ValueError(f"k must be even for a ring graph, got {k}")
    ring = shuffled_cohort(cohort, seed, run_id=run_id, round=round)
    p, half = ring.index(node), k // 2
    nb = {ring[(p + d) % m] for d in range(1, half + 1)}
    nb |= {ring[(p - d) % m] for d in range(1, half + 1)}
    return tuple(sorted(nb))


def ring_graph(ring: Sequence[int], k: int) -> dict[int, tuple[int, ...]]:
    """Neighbour sets of the ring graph: k/2 neighbours on each side (k even, k < m-1).

    ``neighbour_graph(cohort, seed, ...) == ring_graph(shuffled_cohort(cohort, seed,
    ...), k)`` for a sparse graph; the server uses the two parts to keep the ring order.
    """
    m = len(ring)
    half = k // 2
    graph: dict[int, tuple[int, ...]] = {}
    for p, v in enumerate(ring):
        nb = {ring[(p + d) % m] for d in range(1, half + 1)}
        nb |= {ring[(p - d) % m] for d in range(1, half + 1)}
        graph[v] = tuple(sorted(nb))
    return graph
