"""Aggregation strategies, reached from ``conf/strategy/*.yaml`` through ``_target_``."""

from strategies.fedavg_family import FedAdagrad, FedAdam, FedAvg, FedProx, FedYogi
from strategies.robust import Krum, Median, TrimmedMean

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
