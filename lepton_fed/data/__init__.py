"""Datasets, partitioners and federated preprocessing."""

from lepton_fed.data.datasets import DATASETS, check_source, load_dataset
from lepton_fed.data.partition import PARTITIONERS, partition, train_test_indices
from lepton_fed.data.preprocess import FeatureStats, Preprocessor, RowError, Scaler
from lepton_fed.data.schema import FeatureSpec, TabularData

__all__ = [
    "DATASETS",
    "PARTITIONERS",
    "FeatureSpec",
    "FeatureStats",
    "Preprocessor",
    "RowError",
    "Scaler",
    "TabularData",
    "check_source",
    "load_dataset",
    "partition",
    "train_test_indices",
]
