"""The secagg config group: parameters, every problem listed, a node's own view."""

from __future__ import annotations

import math
import re

import pytest
from omegaconf import OmegaConf

from lepton_fed.secagg.security import SecurityLevel
from lepton_fed.secagg.settings import (
    check_secagg_config,
    config_security_bits,
    params_from_config,
)


def _cfg(m: int = 1000, **secagg):
    base = {
        "enabled": True,
        "security_bits": 40,
        "colluding_fraction": 0.05,
        "dropout_rate": 0.05,
        "correctness_bits": 20,
        "neighbours": None,
        "threshold": None,
    }
    return OmegaConf.create(
        {"secagg": {**base, **secagg}, "federation": {"clients_per_round": m}}
    )


def test_defaults_are_fine_and_give_the_level() -> None:
    cfg = _cfg()
    assert check_secagg_config(cfg) == []
    p = params_from_config(cfg.secagg, rounds=5, clip=2.0)
    assert p.security == SecurityLevel() and p.clip == 2.0 and p.rounds == 5
    assert p.for_cohort(1000) == (54, 38)
    assert config_security_bits(cfg, 0.05) == pytest.approx(44.55, abs=0.01)
    assert config_security_bits(_cfg(10), 0.05) == math.inf


@pytest.mark.parametrize(
    ("cfg", "match"),
    [
        (_cfg(mode="robust"), "secagg.mode was removed"),
        (_cfg(security_bits=-1), "security_bits"),
        (_cfg(colluding_fraction=1.5), "colluding_fraction"),
        (_cfg(neighbours=0), "secagg.neighbours must be a positive integer"),
        (_cfg(2), "no graph reaches"),
        (_cfg(neighbours=30, threshold=20), r"10\.9 bits, below secagg.security_bits=40"),
        (_cfg(neighbours=10, threshold=4), "neighbours/2 < threshold"),
    ],
)
def test_every_problem_is_named(cfg, match: str) -> None:
    problems = check_secagg_config(cfg)
    assert any(re.search(match, p) for p in problems), problems


def test_disabled_group_is_not_checked() -> None:
    assert check_secagg_config(_cfg(enabled=False, security_bits=-1)) == []
    assert config_security_bits(_cfg(enabled=False), 0.05) is None


def test_node_view_uses_the_nodes_own_colluding_fraction() -> None:
    # the server derives k, t for 5 %; a node assuming 10 % sees fewer bits
    cfg = _cfg(1000)
    assert config_security_bits(cfg, 0.10) < config_security_bits(cfg, 0.05)
