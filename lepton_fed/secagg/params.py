"""Secure-aggregation parameters: security level, graph degree k, threshold t, field
size, clip.

By default k and t are derived for every round from the round's cohort size and a
:class:`~lepton_fed.secagg.security.SecurityLevel` (SecAgg+, Bell et al. 2020; see
:mod:`lepton_fed.secagg.security` for the bounds). Explicit ``neighbours`` /
``threshold`` overrides are still accepted; every node checks the (k, t) it is sent
against its own minimum security level and refuses weaker ones.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, replace
from typing import Any

from lepton_fed.secagg.security import (
    DEFAULT_LEVEL,
    GraphChoice,
    SecurityLevel,
    abort_log2,
    assumed_colluders,
    choose_graph,
    exposure_log2,
)

__all__ = ["SecAggParams", "default_params"]

_LEVEL_FIELDS = tuple(f.name for f in fields(SecurityLevel))


@dataclass(frozen=True, kw_only=True)
class SecAggParams:
    """Parameters of one secure-aggregation run.

    Attributes:
        rounds: how many per-round key pairs each node advertises at once.
        security: the level k and t are derived from (per round, for the round's
            cohort size: :func:`~lepton_fed.secagg.security.choose_graph`).
        neighbours: explicit graph degree k for a full-size cohort (``None``:
            derived). A round uses ``min(k, m - 1)``, lowered to even below m - 1.
        threshold: explicit Shamir threshold t (``None``: the smallest t that reaches
            ``security`` for the round's k; when ``neighbours`` is also given it is
            scaled with k in smaller cohorts).
        clip: bound on every coordinate of a client's delta (the caller L2-clips to
            this norm, which bounds every coordinate too).
        bits: field size exponent, M = 2^bits, 8 <= bits <= 32 (uploads are uint32).

    Waiting is not a protocol parameter: the Flower adapter waits ``secagg.timeout`` for
    each exchange (``federation.round_deadline`` for the masked inputs when set).
    """

    rounds: int
    security: SecurityLevel = field(default=DEFAULT_LEVEL)
    neighbours: int | None = None
    threshold: int | None = None
    clip: float = 1.0
    bits: int = 32

    def __post_init__(self) -> None:
        k, t = self.neighbours, self.threshold
        if k is not None and k < 1:
            raise ValueError(f"neighbours must be >= 1, got {k}")
        if t is not None and t < 1:
            raise ValueError(f"threshold must be >= 1, got {t}")
        if k is not None and t is not None and not (2 * t > k and t <= k):
            raise ValueError(
                f"threshold must satisfy neighbours/2 < threshold <= neighbours "
                f"(neighbours={k}), got {t}"
            )
        if self.rounds < 1:
            raise ValueError(f"rounds must be >= 1, got {self.rounds}")
        if not (math.isfinite(self.clip) and self.clip > 0):
            raise ValueError(f"clip must be a positive finite number, got {self.clip}")
        if not 8 <= self.bits <= 32:
            raise ValueError(f"bits must be in [8, 32], got {self.bits}")

    def for_cohort(self, cohort_size: int) -> tuple[int, int]:
        """(k, t) used for a round whose cohort has ``cohort_size`` nodes.

        Raises:
            ValueError: fewer than 2 nodes, or (derived parameters) no (k, t) reaches
                the security level for this cohort size.
        """
        m = cohort_size
        if m < 2:
            raise ValueError(f"a round needs at least 2 nodes, got {m}")
        if self.neighbours is None:
            chosen = choose_graph(m, self.security)
            if self.threshold is None:
                return chosen.neighbours, chosen.threshold
            k = chosen.neighbours
            return k, min(k, max(k // 2 + 1, self.threshold))
        k = m - 1 if self.neighbours >= m - 1 else self.neighbours - self.neighbours % 2
        if self.threshold is None:
            return k, _smallest_private_t(m, k, self.security)
        if k == self.neighbours:
            return k, self.threshold
        t = math.ceil(self.threshold * k / self.neighbours)
        return k, min(k, max(k // 2 + 1, t))

    def graph_choice(self, cohort_size: int) -> GraphChoice:
        """:meth:`for_cohort` with the bounds its (k, t) achieves at ``security``."""
        k, t = self.for_cohort(cohort_size)
        return GraphChoice(
            neighbours=k,
            threshold=t,
            colluders=assumed_colluders(cohort_size, self.security.colluding_fraction),
            privacy_log2=exposure_log2(
                cohort_size, k, t, self.security.colluding_fraction
            ),
            correctness_log2=abort_log2(cohort_size, k, t, self.security.dropout_rate),
        )



def _smallest_private_t(m: int, k: int, level: SecurityLevel) -> int:
    for t in range(k // 2 + 1, k + 1):
        if exposure_log2(m, k, t, level.colluding_fraction) <= -level.security_bits:
            return t
    return k


def default_params(*, num_clients: int, rounds: int, **overrides: Any) -> SecAggParams:
    """Parameters for cohorts of up to ``num_clients`` nodes over ``rounds`` rounds.

    k and t are derived per round from the security level (``security_bits``,
    ``colluding_fraction``, ``dropout_rate``, ``correctness_bits``, given as keywords
    or as ``security=SecurityLevel(...)``). Any other field of :class:`SecAggParams`
    can be overridden by keyword, ``neighbours`` and ``threshold`` included.

    Raises:
        ValueError: ``num_clients < 2``, an invalid override, or derived parameters
            that cannot reach the security level for a cohort of ``num_clients``.
        TypeError: an unknown override name.
    """
    if num_clients < 2:
        raise ValueError(f"num_clients must be >= 2, got {num_clients}")
    level_kw = {name: overrides.pop(name) for name in _LEVEL_FIELDS if name in overrides}
    level = overrides.pop("security", DEFAULT_LEVEL)
    if level_kw:
        level = replace(level, **level_kw)
    params = replace(SecAggParams(rounds=rounds, security=level), **overrides)
    params.for_cohort(num_clients)  # fail now, not at the first round
    return params
