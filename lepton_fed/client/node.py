"""A node's persistent state (kept in the Flower Context between messages)."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np
from flwr.app import ConfigRecord, Context
from omegaconf import DictConfig, OmegaConf

from lepton_fed.data.preprocess import Scaler

__all__ = ["NodeState", "parse_config"]

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

    def get(self, key: str, default: Any = None) -> Any:
        """The stored value of ``key``, or ``default``."""
        return self.rec[key] if key in self.rec else default

    def set(self, key: str, value: Any) -> None:
        """Store ``value`` under ``key`` (kept across rounds on this node)."""
        self.rec[key] = value

    @property
    def cfg(self) -> DictConfig:
        """The run config sent by the server at setup."""
        y = self.get("config-yaml")
        if y is None:
            raise RuntimeError("this node has not received the run config (setup message)")
        return parse_config(str(y))

    @property
    def scaler(self) -> Scaler | None:
        """The federated scaler the server sent, or ``None`` before it arrived."""
        if "scaler-mean" not in self.rec:
            return None
        return Scaler(
            np.asarray(self.rec["scaler-mean"], np.float32),
            np.asarray(self.rec["scaler-scale"], np.float32),
        )

    @property
    def partition_id(self) -> int:
        """The ``partition-id`` of the node config (simulation), else the Flower node id."""
        nc = self.context.node_config
        return int(nc.get("partition-id", self.context.node_id))


#: top-level sections every run config must have
_SECTIONS = ("data", "model", "privacy", "secagg", "federation", "client", "compression")


@lru_cache(maxsize=8)
def parse_config(yaml_text: str) -> DictConfig:
    """Parse a run config the server sent (untrusted) once per process, read-only.

    Raises:
        ValueError: not a mapping, or a section missing.
    """
    try:
        cfg = OmegaConf.create(yaml_text)
    except Exception as exc:  # noqa: BLE001 - malformed input from the server
        raise ValueError("the run config is not valid YAML") from exc
    if not isinstance(cfg, DictConfig):
        raise ValueError("the run config must be a mapping")
    missing = [k for k in _SECTIONS if not isinstance(cfg.get(k), DictConfig)]
    if missing:
        raise ValueError(f"the run config lacks section(s) {missing}")
    OmegaConf.set_readonly(cfg, True)
    return cfg
