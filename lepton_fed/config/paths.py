"""Where the Hydra config tree lives."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["GROUPS", "SLOTS", "conf_dir", "group_options"]

GROUPS = (
    "data", "partition", "model", "strategy", "privacy", "secagg", "compression",
    "federation", "client", "node_policy", "attack", "experiment", "debug",
)

#: groups with a ``null`` slot in config.yaml's defaults: ``experiment=NAME`` selects a
#: preset; the older ``+experiment=NAME`` means the same (see compose.plain_slots).
SLOTS = ("experiment", "debug")


def conf_dir() -> Path:
    """The ``conf/`` tree Hydra composes from.

    In order: ``$LEPTON_FED_CONF`` if set; the copy installed inside the package
    (``lepton_fed/conf``, which is where a wheel puts the repository's ``conf/``); the
    ``conf/`` beside the ``lepton_fed/`` folder (a source checkout, an editable install,
    a ``flwr run .`` app bundle). When none exists, the installed location is returned,
    so Hydra's "config directory not found" error names where the tree was expected.
    """
    env = os.environ.get("LEPTON_FED_CONF")
    if env:
        return Path(env)
    package = Path(__file__).resolve().parents[1]
    installed = package / "conf"
    if installed.is_dir():
        return installed
    source = package.parent / "conf"
    return source if source.is_dir() else installed


def group_options(group: str) -> list[str]:
    """Sorted option names of a config group (its YAML file stems)."""
    d = conf_dir() / group
    return sorted(p.stem for p in d.glob("*.yaml")) if d.is_dir() else []
