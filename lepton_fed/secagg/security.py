"""Graph degree k and threshold t from a security level (SecAgg+, Bell et al. 2020).

Model (README "Parameters from a security level"):

* a cohort of m nodes, of which ``C = min(m - 1, ceil(gamma * m))`` collude with the
  server (``gamma`` = ``colluding_fraction``; the colluders are fixed before the graph
  is drawn, and the graph seed is a hash the server cannot choose freely, see
  :func:`~lepton_fed.secagg.keys.graph_seed`);
* the neighbour graph is a ring over a uniformly random permutation of the cohort with
  k/2 neighbours on each side (complete when ``k = m - 1``), so the neighbourhood of a
  given node is a uniformly random k-subset of the other m - 1 nodes and its number
  of colluding neighbours ``c_u`` is hypergeometric: ``Hypergeom(m - 1, C, k)``;
* a server that lies about dropouts recovers an honest input ``x_u`` exactly when
  ``c_u >= 2t - k`` (README "Threat model": it needs ``t - c_u`` honest b-shares whose
  pairwise seeds can only come from u, which reveals at most ``k - t``);
* every node drops out of a round independently with probability ``delta``
  (``dropout_rate``); a round aborts when some node keeps fewer than t live
  neighbours.

Bounds (exact tails, integer arithmetic for the hypergeometric, log-space sums for the
binomial; cross-checked against ``scipy.stats`` in the tests):

* privacy: ``P[some honest input is exposed] <= (m - C) * P[Hypergeom(m - 1, C, k)
  >= 2t - k]`` (union bound over the honest nodes);
* correctness: ``P[some node keeps fewer than t live neighbours] <= m * P[Bin(k,
  delta) >= k - t + 1]`` (union bound over the nodes; colluders that withhold shares
  are not counted: a malicious server can abort any round anyway).

:func:`choose_graph` picks the smallest k (then the smallest t) whose privacy bound is
at most ``2^-security_bits`` and whose correctness bound is at most
``2^-correctness_bits``; when no k reaches the correctness target it takes the
privacy-safe (k, t) with the best correctness, and when no (k, t) is private it raises.
A node checks a requested (k, t) with :func:`exposure_log2` against its own minimum.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

__all__ = [
    "DEFAULT_LEVEL",
    "GraphChoice",
    "SecurityLevel",
    "abort_log2",
    "assumed_colluders",
    "choose_graph",
    "exposure_log2",
]

#: The largest sparse degree :func:`choose_graph` tries before the complete graph.
MAX_SPARSE_DEGREE = 2048


@dataclass(frozen=True, kw_only=True)
class SecurityLevel:
    """What the parameters must achieve, and under which assumptions.

    Attributes:
        security_bits: privacy: the probability that any honest node's input is
            exposed in a round is at most ``2^-security_bits`` (default 40).
        colluding_fraction: fraction of any cohort assumed to collude with the
            server (default 0.05).
        dropout_rate: probability that a node drops out of a round (default 0.05).
        correctness_bits: target for the probability that a round aborts because a
            neighbourhood falls below t (default 20: one round in a million).
    """

    security_bits: float = 40.0
    colluding_fraction: float = 0.05
    dropout_rate: float = 0.05
    correctness_bits: float = 20.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.security_bits) and self.security_bits >= 0):
            raise ValueError("security_bits must be a finite number >= 0")
        if not 0 <= self.colluding_fraction < 1:
            raise ValueError("colluding_fraction must be in [0, 1)")
        if not 0 <= self.dropout_rate < 1:
            raise ValueError("dropout_rate must be in [0, 1)")
        if not (math.isfinite(self.correctness_bits) and self.correctness_bits >= 0):
            raise ValueError("correctness_bits must be a finite number >= 0")


DEFAULT_LEVEL = SecurityLevel()


@dataclass(frozen=True, kw_only=True)
class GraphChoice:
    """A (k, t) for one cohort size, with the bounds it achieves.

    Attributes:
        neighbours: graph degree k (``cohort_size - 1``: complete graph).
        threshold: Shamir threshold t.
        colluders: colluders assumed in the cohort.
        privacy_log2: log2 of the bound on P[some honest input exposed]
            (``-inf``: impossible under the assumption).
        correctness_log2: log2 of the bound on P[the round aborts for lack of live
            neighbours].
    """

    neighbours: int
    threshold: int
    colluders: int
    privacy_log2: float
    correctness_log2: float

    @property
    def security_bits(self) -> float:
        """``-privacy_log2`` (``inf`` when exposure is impossible)."""
        return -self.privacy_log2


def assumed_colluders(cohort_size: int, colluding_fraction: float) -> int:
    """``min(m - 1, ceil(gamma * m))`` (rounded up: at least one when gamma > 0)."""
    if cohort_size < 1:
        raise ValueError("cohort_size must be >= 1")
    c = math.ceil(colluding_fraction * cohort_size - 1e-12)
    return max(0, min(cohort_size - 1, c))


def _log2(num: int, den: int) -> float:
    return -math.inf if num == 0 else math.log2(num) - math.log2(den)


def _hypergeom_tails(pop: int, good: int, draws: int) -> list[int]:
    """``tails[x] = sum_{i >= x} C(good, i) C(pop - good, draws - i)`` for x = 0..draws+1
    (numerators over ``C(pop, draws)``; exact integers)."""
    tails = [0] * (draws + 2)
    for i in range(min(good, draws), -1, -1):  # math.comb is 0 when i is impossible
        tails[i] = tails[i + 1] + math.comb(good, i) * math.comb(pop - good, draws - i)
    return tails


def exposure_log2(
    cohort_size: int, neighbours: int, threshold: int, colluding_fraction: float
) -> float:
    """log2 of the bound on P[some honest input is exposed] for (m, k, t, gamma).

    ``(m - C) * P[Hypergeom(m - 1, C, k) >= 2t - k]`` (module docstring), capped at
    0 (probability 1); ``-inf`` when it cannot happen.

    Raises:
        ValueError: k outside [1, m - 1] or t outside (k/2, k].
    """
    m, k, t = cohort_size, neighbours, threshold
    if not 1 <= k <= m - 1 or not (2 * t > k and t <= k):
        raise ValueError("need 1 <= k <= m - 1 and k/2 < t <= k")
    c = assumed_colluders(m, colluding_fraction)
    x = 2 * t - k
    tails = _hypergeom_tails(m - 1, c, k)
    p = _log2(tails[x] if x <= k else 0, math.comb(m - 1, k))
    return min(0.0, p + math.log2(m - c))


def _binom_tail_log2(n: int, p: float, y: int) -> float:
    """log2 P[Bin(n, p) >= y], summed in log space (no underflow)."""
    if y <= 0:
        return 0.0
    if y > n or p == 0:
        return -math.inf
    lp, lq = math.log(p), math.log1p(-p)
    logs = [
        math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1)
        + i * lp + (n - i) * lq
        for i in range(y, n + 1)
    ]
    top = max(logs)
    total = math.fsum(math.exp(v - top) for v in logs)
    return min(0.0, (top + math.log(total)) / math.log(2))


def abort_log2(
    cohort_size: int, neighbours: int, threshold: int, dropout_rate: float
) -> float:
    """log2 of the bound on P[some node keeps fewer than t live neighbours]:
    ``m * P[Bin(k, delta) >= k - t + 1]``, capped at 0."""
    m, k, t = cohort_size, neighbours, threshold
    return min(0.0, _binom_tail_log2(k, dropout_rate, k - t + 1) + math.log2(m))


def _candidate_degrees(m: int) -> list[int]:
    sparse = list(range(2, min(m - 2, MAX_SPARSE_DEGREE) + 1, 2))
    return sparse + [m - 1]


@lru_cache(maxsize=256)
def choose_graph(cohort_size: int, level: SecurityLevel = DEFAULT_LEVEL) -> GraphChoice:
    """The cheapest (k, t) for a cohort of ``cohort_size`` nodes at ``level``.

    Smallest k (even below ``m - 1``, or ``m - 1`` for the complete graph), then the
    smallest t, with ``exposure_log2 <= -security_bits`` and ``abort_log2 <=
    -correctness_bits``. If no k meets the correctness target, the private (k, t)
    with the lowest abort bound (smallest k on ties).

    Raises:
        ValueError: fewer than 2 nodes, or no (k, t) meets the privacy target (e.g. a
            2-node cohort with a colluder assumed: the sum reveals the other input).
    """
    m = cohort_size
    if m < 2:
        raise ValueError("a round needs at least 2 nodes")
    c = assumed_colluders(m, level.colluding_fraction)
    best: GraphChoice | None = None
    for k in _candidate_degrees(m):
        tails = _hypergeom_tails(m - 1, c, k)
        den = math.comb(m - 1, k)
        honest = math.log2(m - c)
        for t in range(k // 2 + 1, k + 1):
            priv = min(0.0, _log2(tails[2 * t - k], den) + honest)
            if priv <= -level.security_bits:
                corr = abort_log2(m, k, t, level.dropout_rate)
                choice = GraphChoice(
                    neighbours=k,
                    threshold=t,
                    colluders=c,
                    privacy_log2=priv,
                    correctness_log2=corr,
                )
                if corr <= -level.correctness_bits:
                    return choice
                if best is None or corr < best.correctness_log2:
                    best = choice
                break  # a larger t only lowers correctness
    if best is None:
        raise ValueError(
            f"no graph reaches 2^-{level.security_bits:g} for a cohort of {m} with "
            f"{c} colluder(s) assumed"
        )
    return best
