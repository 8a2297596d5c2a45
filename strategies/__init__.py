"""Aggregation strategies, reached from ``conf/strategy/*.yaml`` through ``_target_``."""

from .fedavg_family import FedAdagrad, FedAdam, FedAvg, FedProx, FedYogi
from .robust import Krum, Median, TrimmedMean

__all__ = [
    "FedAdagrad",
    "FedAdam",
    "FedAvg",
    "FedProx",
    "FedYogi",
    "Krum",
    "Median",
    "TrimmedMean",
]
