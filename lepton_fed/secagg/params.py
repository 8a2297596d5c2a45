"""Secure-aggregation parameters: graph degree k, threshold t, field size, clip, timeouts.

``default_params`` follows SecAgg+ (Bell et al. 2020): a complete graph for small
cohorts, otherwise k = O(log n) neighbours with a threshold above k/2 (2/3 of k by
default, so a neighbourhood tolerates k - t dropouts and fewer than 2t - k corrupted
neighbours of any node; see README "Threat model").
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

from lepton_fed.secagg.stages import Stage

__all__ = ["FULL_GRAPH_MAX_CLIENTS", "SecAggParams", "default_params"]

#: Cohorts up to this size use the complete graph (every node is everyone's neighbour).
FULL_GRAPH_MAX_CLIENTS = 8


@dataclass(frozen=True, kw_only=True)
class SecAggParams:
    """Parameters of one secure-aggregation run.

    Attributes:
        neighbours: graph degree k for a full-size cohort. Each round uses
            ``for_cohort(m)``: the complete graph when ``m - 1 <= neighbours``, else a
            ring with k/2 neighbours each side (an odd k is lowered by one).
        threshold: Shamir threshold t, ``neighbours/2 < t <= neighbours``. Scaled in
            proportion when a round's k is smaller.
        rounds: how many per-round key pairs each node advertises at once.
        clip: bound on every coordinate of a client's delta (the caller L2-clips to
            this norm, which bounds every coordinate too).
        bits: field size exponent, M = 2^bits, 8 <= bits <= 32 (uploads are uint32).
        advertise_timeout_s: how long the adapter waits for advertisement replies.
        masked_input_timeout_s: wait for masked inputs (includes local training).
        unmask_timeout_s: wait for unmask replies.
        share_keys_first: robust mode (3 exchanges per round instead of 2). Each node
            first sends, through the server, AEAD-encrypted Shamir shares of its
            self-mask seed and of a fresh per-round mask key to its neighbours
            (SHARE_KEYS), and only then its masked input. A node that drops before its
            masked input then has its pairwise masks removed by rebuilding its mask
            key from t neighbours' shares, so any dropout pattern that keeps every
            neighbourhood's threshold completes. Off (default): the fast 2-exchange
            mode, which aborts when a neighbour of a node that dropped before its
            masked input also vanishes before unmask (README "Modes").
        share_keys_timeout_s: robust mode: wait for share-keys replies (no training
            happens in that exchange).
    """

    neighbours: int
    threshold: int
    rounds: int
    clip: float = 1.0
    bits: int = 32
    advertise_timeout_s: float = 60.0
    masked_input_timeout_s: float = 600.0
    unmask_timeout_s: float = 60.0
    share_keys_first: bool = False
    share_keys_timeout_s: float = 60.0

    def __post_init__(self) -> None:
        if self.neighbours < 1:
            raise ValueError(f"neighbours must be >= 1, got {self.neighbours}")
        if not (
            2 * self.threshold > self.neighbours and self.threshold <= self.neighbours
        ):
            raise ValueError(
                f"threshold must satisfy neighbours/2 < threshold <= neighbours "
                f"(neighbours={self.neighbours}), got {self.threshold}"
            )
        if self.rounds < 1:
            raise ValueError(f"rounds must be >= 1, got {self.rounds}")
        if not (math.isfinite(self.clip) and self.clip > 0):
            raise ValueError(f"clip must be a positive finite number, got {self.clip}")
        if not 8 <= self.bits <= 32:
            raise ValueError(f"bits must be in [8, 32], got {self.bits}")
        for name in (
            "advertise_timeout_s",
            "masked_input_timeout_s",
            "unmask_timeout_s",
            "share_keys_timeout_s",
        ):
            value = getattr(self, name)
            if not value > 0:
                raise ValueError(f"{name} must be > 0, got {value}")

    def for_cohort(self, cohort_size: int) -> tuple[int, int]:
        """(k, t) used for a round whose cohort has ``cohort_size`` nodes.

        Raises:
            ValueError: fewer than 2 nodes.
        """
        if cohort_size < 2:
            raise ValueError(f"a round needs at least 2 nodes, got {cohort_size}")
        if self.neighbours >= cohort_size - 1:
            k = cohort_size - 1
        else:
            k = self.neighbours - (self.neighbours % 2)
        if k == self.neighbours:
            return k, self.threshold
        t = math.ceil(self.threshold * k / self.neighbours)
        return k, min(k, max(k // 2 + 1, t))

    def timeout_for(self, stage: Stage) -> float:
        """Per-stage timeout in seconds (used by the Flower adapter)."""
        return {
            Stage.ADVERTISE: self.advertise_timeout_s,
            Stage.SHARE_KEYS: self.share_keys_timeout_s,
            Stage.MASKED_INPUT: self.masked_input_timeout_s,
            Stage.UNMASK: self.unmask_timeout_s,
        }[Stage(stage).canonical]

    @property
    def exchanges_per_round(self) -> int:
        """2 in the fast mode, 3 with ``share_keys_first``."""
        return 3 if self.share_keys_first else 2


def _default_neighbours(num_clients: int) -> int:
    if num_clients <= FULL_GRAPH_MAX_CLIENTS:
        return max(1, num_clients - 1)
    k = math.ceil(3 * math.log2(num_clients))
    k += k % 2
    return min(num_clients - 1, k)


def _default_threshold(k: int) -> int:
    return min(k, max(k // 2 + 1, math.ceil(2 * k / 3)))


def default_params(*, num_clients: int, rounds: int, **overrides: Any) -> SecAggParams:
    """Parameters for cohorts of up to ``num_clients`` nodes over ``rounds`` rounds.

    k = n - 1 (complete graph) for n <= 8, else k = 3*ceil(log2 n) rounded up to even
    (n=50 -> 18, n=100 -> 20, n=1000 -> 30); t = max(k//2 + 1, ceil(2k/3)). Any field
    of :class:`SecAggParams` can be overridden by keyword; overriding ``neighbours``
    alone re-derives ``threshold`` from it.

    Raises:
        ValueError: ``num_clients < 2`` or an invalid override.
        TypeError: an unknown override name.
    """
    if num_clients < 2:
        raise ValueError(f"num_clients must be >= 2, got {num_clients}")
    k = int(overrides.pop("neighbours", _default_neighbours(num_clients)))
    t = int(overrides.pop("threshold", _default_threshold(k)))
    base = SecAggParams(neighbours=k, threshold=t, rounds=rounds)
    return replace(base, **overrides)
