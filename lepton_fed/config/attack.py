"""The ``attack`` config group's schema of names and parameters, and its checks.

Config-level knowledge only (which attacks exist, which parameter each takes and its
bound); what an attacker does to its update lives in :mod:`lepton_fed.client.attack`.
"""

from __future__ import annotations

import math
from typing import Any

from omegaconf import DictConfig

__all__ = ["ATTACKS", "attack_problems"]

#: attack name -> its numeric parameter and that parameter's lower bound (exclusive)
ATTACKS: dict[str, tuple[str, float] | None] = {
    "none": None, "sign_flip": ("scale", 0.0), "scaling": ("factor", 0.0),
    "label_flip": None, "gaussian": ("std", 0.0),
}


def _attack(cfg: DictConfig) -> Any:
    """The ``attack`` section, or None."""
    return cfg.get("attack")


def attack_problems(cfg: DictConfig) -> list[str]:
    """Every problem with ``cfg.attack`` (empty when valid or absent)."""
    a = _attack(cfg)
    if a is None:
        return []
    name = a.get("name")
    if name not in ATTACKS:
        return [f"attack.name={name!r}: choose one of {sorted(ATTACKS)}"]
    p: list[str] = []
    frac = a.get("fraction")
    if isinstance(frac, bool) or not isinstance(frac, int | float) or not 0 <= frac <= 1:
        p.append(f"attack.fraction must be a number in [0, 1], got {frac!r}")
    param = ATTACKS[name]
    if param is not None:
        v = a.get(param[0])
        if isinstance(v, bool) or not isinstance(v, int | float) or not (
                math.isfinite(v) and v > param[1]):
            p.append(f"attack.{param[0]} must be a finite number > {param[1]:g}, got {v!r}")
    return p


