"""A node's persistent state (kept in the Flower Context between messages) and data."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np
from flwr.app import ConfigRecord, Context
from omegaconf import DictConfig, OmegaConf

from lepton_fed.data.preprocess import Scaler
from lepton_fed.data.schema import TabularData

__all__ = ["NodeState", "node_train_data"]

STATE_KEY = "lepton"


class NodeState:
    """Typed view over ``context.state["lepton"]`` (a ConfigRecord).

    Holds the run config (YAML), the federated scaler, the calibrated DP noise
    multiplier and the privacy ledger; it survives across rounds on the node.
    """

    def __init__(self, context: Context) -> None:
        if STATE_KEY not in context.state:
            context.state[STATE_KEY] = ConfigRecord()
        self.rec: ConfigRecord = context.state[STATE_KEY]  # type: ignore[assignment]
        self.context = context

    def get(self, key: str, default: Any = None) -> Any:  # noqa: D102
        return self.rec[key] if key in self.rec else default

    def set(self, key: str, value: Any) -> None:  # noqa: D102
        self.rec[key] = value

    @property
    def cfg(self) -> DictConfig:
        """The run config sent by the server at setup."""
        y = self.get("config-yaml")
        if y is None:
            raise RuntimeError("this node has not received the run config (setup message)")
        return _parse(str(y))

    @property
    def scaler(self) -> Scaler | None:  # noqa: D102
        if "scaler-mean" not in self.rec:
            return None
        return Scaler(
            np.asarray(self.rec["scaler-mean"], np.float32),
            np.asarray(self.rec["scaler-scale"], np.float32),
        )

    @property
    def partition_id(self) -> int:  # noqa: D102
        nc = self.context.node_config
        return int(nc.get("partition-id", self.context.node_id))


@lru_cache(maxsize=8)
def _parse(yaml_text: str) -> DictConfig:
    """Parse a run config once per process (it is read on every message)."""
    cfg = OmegaConf.create(yaml_text)
    assert isinstance(cfg, DictConfig)
    OmegaConf.set_readonly(cfg, True)
    return cfg


def node_train_data(cfg: DictConfig, context: Context) -> TabularData:
    """This node's training rows.

    In simulation: the partition ``node_config["partition-id"]`` of the run's dataset.
    On a real node: the file/directory ``node_config["data-path"]`` (every row of it).
    """
    nc = context.node_config
    if "partition-id" in nc:
        from lepton_fed.data.federated import federated_split

        return federated_split(cfg).client(int(nc["partition-id"]))
    if "data-path" in nc:
        from lepton_fed.data.datasets import load_dataset

        opts = {str(k): v for k, v in OmegaConf.to_container(cfg.data, resolve=True).items()  # type: ignore[union-attr]
                if k not in ("name", "test_fraction", "path") and v is not None}
        return load_dataset(cfg.data.name, path=str(nc["data-path"]), **opts)
    raise RuntimeError("node_config has neither 'partition-id' (simulation) nor 'data-path'")
