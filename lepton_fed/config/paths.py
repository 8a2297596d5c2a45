"""Where the Hydra config tree lives."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["conf_dir", "group_options"]

GROUPS = (
    "data", "partition", "model", "strategy", "privacy", "secagg", "compression",
    "federation", "client",
)


def conf_dir() -> Path:
    """The ``conf/`` tree: ``$LEPTON_FED_CONF`` if set, else the repository's ``conf/``."""
    env = os.environ.get("LEPTON_FED_CONF")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "conf"


def group_options(group: str) -> list[str]:
    """Sorted option names of a config group (its YAML file stems)."""
    d = conf_dir() / group
    return sorted(p.stem for p in d.glob("*.yaml")) if d.is_dir() else []
