"""The outcome of one secure-aggregation round."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from lepton_fed.secagg.stages import Stage

__all__ = ["SecAggResult"]


@dataclass(frozen=True, kw_only=True)
class SecAggResult:
    """Outcome of one successful secure-aggregation round.

    This is everything the server learns from the round: the sum, the total weight,
    and who took part at each stage. No individual update or weight is in it.

    Attributes:
        run_id: the run.
        round: the round number.
        sum: float64 sum of ``weight * delta`` over ``contributors``, shape (dim,).
        total_weight: sum of the contributors' weights.
        contributors: nodes whose masked input is in the sum.
        dropped: nodes lost at each stage: ``ADVERTISE`` (in the cohort but without a
            valid key for the round), ``MASKED_INPUT`` (no valid masked input),
            ``UNMASK`` (sent a masked input, no valid unmask reply; still in the sum).
        rejected: ``{node: reason}`` for replies refused as malformed or inconsistent
            (these nodes are also listed in ``dropped``).
        neighbours: graph degree k used in the round.
        threshold: Shamir threshold t used in the round.
        privacy_log2: log2 of the bound on the probability that some honest input
            of the round was exposed, at the server's security level (``-inf``:
            impossible under its colluding-fraction assumption);
            :mod:`~lepton_fed.secagg.security`.
        correctness_log2: log2 of the bound on the probability that the round
            aborts for lack of live neighbours, at the server's dropout rate.
        error_bound: strict bounds from quantization on ``|sum - exact|`` (per
            coordinate) and on ``|total_weight - exact|``.
        field_sum: the unmasked sum itself, uint32 elements of Z_M of length dim + 1,
            before decoding (what ``sum`` and ``total_weight`` are decoded from; the sum
            of the integers and the contributor count for
            :meth:`~lepton_fed.secagg.SecAggClient.masked_integers` inputs).
    """

    run_id: int
    round: int
    sum: np.ndarray
    total_weight: float
    contributors: tuple[int, ...]
    dropped: Mapping[Stage, tuple[int, ...]]
    rejected: Mapping[int, str]
    neighbours: int
    threshold: int
    privacy_log2: float
    correctness_log2: float
    error_bound: tuple[float, float]
    field_sum: np.ndarray | None = None

    @property
    def security_bits(self) -> float:
        """``-privacy_log2`` (``inf`` when exposure is impossible)."""
        return -self.privacy_log2

    def weighted_mean(self) -> np.ndarray:
        """``sum / total_weight``: the weighted average update (FedAvg).

        Raises:
            ValueError: the total weight is not positive.
        """
        if not self.total_weight > 0:
            raise ValueError("the total weight is not positive; cannot average")
        return self.sum / self.total_weight
