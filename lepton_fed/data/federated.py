"""The federated view of a dataset for one run: test split and each client's rows.

Server and clients call the same deterministic function (same config, same seed), so
each simulated client finds its own rows without anything being sent; in a real
federation a node loads only its own file instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from omegaconf import DictConfig, OmegaConf

from lepton_fed.data.datasets import load_dataset
from lepton_fed.data.partition import partition, train_test_indices
from lepton_fed.data.schema import TabularData

__all__ = ["FederatedSplit", "federated_split"]


@dataclass
class FederatedSplit:
    """A run's data: the full encoded dataset, test rows, and each client's train rows."""

    data: TabularData
    test_idx: np.ndarray
    client_idx: list[np.ndarray]

    def client(self, pid: int) -> TabularData:
        """Client ``pid``'s training rows (``pid`` is the 0-based partition id)."""
        return self.data.subset(self.client_idx[pid])

    def test(self) -> TabularData:
        """The run's test rows (disjoint from every client's training rows)."""
        return self.data.subset(self.test_idx)


def _data_options(d: DictConfig) -> dict[str, object]:
    opts = OmegaConf.to_container(d, resolve=True)
    assert isinstance(opts, dict)
    return {str(k): v for k, v in opts.items()
            if k not in ("name", "test_fraction", "schema") and v is not None}


@lru_cache(maxsize=4)
def _split(yaml_key: str) -> FederatedSplit:
    cfg = OmegaConf.create(yaml_key)
    data = load_dataset(cfg.data.name, **_data_options(cfg.data))
    tr, te = train_test_indices(data.y, data.split, cfg.data.test_fraction, cfg.seed)
    parts = partition(
        cfg.partition.name,
        y=data.y[tr],
        silo=None if data.silo is None else data.silo[tr],
        num_clients=cfg.federation.num_clients,
        seed=cfg.seed,
        alpha=cfg.partition.alpha,
    )
    return FederatedSplit(data, te, [tr[p] for p in parts])


_LAST: list[tuple[DictConfig, FederatedSplit]] = []


def federated_split(cfg: DictConfig) -> FederatedSplit:
    """Split for this config (cached per process on the keys that matter)."""
    for c, sp in _LAST:
        if c is cfg:
            return sp
    key = OmegaConf.to_yaml(
        OmegaConf.create(
            {
                "data": OmegaConf.to_container(cfg.data, resolve=True),
                "partition": OmegaConf.to_container(cfg.partition, resolve=True),
                "federation": {"num_clients": cfg.federation.num_clients},
                "seed": cfg.seed,
            }
        )
    )
    sp = _split(key)
    _LAST[:] = [(cfg, sp)] + _LAST[:3]
    return sp
