"""Byzantine-robust strategies. They need every INDIVIDUAL update, so they cannot be
combined with secure aggregation (the server only learns the sum) -- config validation
refuses ``secagg=on`` with them -- and their output is not a mean, so central DP's
sensitivity analysis does not apply to them either.
"""

from __future__ import annotations

from flwr.serverapp.strategy import FedMedian as _FedMedian
from flwr.serverapp.strategy import FedTrimmedAvg as _FedTrimmedAvg
from flwr.serverapp.strategy import Krum as _Krum

__all__ = ["Krum", "Median", "TrimmedMean"]


class Krum(_Krum):
    """Krum (Blanchard et al. 2017): picks the update closest to its neighbours."""

    secagg_compatible = False


class TrimmedMean(_FedTrimmedAvg):
    """Coordinate-wise trimmed mean (Yin et al. 2018)."""

    secagg_compatible = False


class Median(_FedMedian):
    """Coordinate-wise median (Yin et al. 2018)."""

    secagg_compatible = False
