"""Secure-aggregation settings from a run config (``secagg`` group).

The run config is the server's: :func:`params_from_config` turns it into
:class:`~lepton_fed.secagg.params.SecAggParams`, :func:`check_secagg_config` lists
every problem before anything runs, and :func:`config_security_bits` is a node's own
computation of the level a config gives (for its policy check; the node checks every
round's actual (k, t) again in :class:`~lepton_fed.secagg.SecAggClient`). Works with
an OmegaConf ``DictConfig`` or plain mappings; nothing here imports Flower or OmegaConf.
"""

from __future__ import annotations

from typing import Any

from lepton_fed.secagg.params import SecAggParams
from lepton_fed.secagg.security import SecurityLevel, exposure_log2
from lepton_fed.utils.sections import setting

__all__ = [
    "check_secagg_config",
    "config_security_bits",
    "level_from_config",
    "params_from_config",
]


def level_from_config(sa: Any) -> SecurityLevel:
    """The :class:`SecurityLevel` of a ``secagg`` config section (missing keys take
    the defaults).

    Raises:
        ValueError: a value out of range.
    """
    base = SecurityLevel()
    return SecurityLevel(
        security_bits=float(setting(sa, "security_bits", base.security_bits)),
        colluding_fraction=float(setting(sa, "colluding_fraction", base.colluding_fraction)),
        dropout_rate=float(setting(sa, "dropout_rate", base.dropout_rate)),
        correctness_bits=float(setting(sa, "correctness_bits", base.correctness_bits)),
    )


def params_from_config(sa: Any, *, rounds: int, clip: float) -> SecAggParams:
    """:class:`SecAggParams` for a ``secagg`` config section.

    Raises:
        ValueError: an invalid value (:func:`check_secagg_config` reports them all).
    """
    k, t = setting(sa, "neighbours"), setting(sa, "threshold")
    return SecAggParams(
        rounds=rounds,
        security=level_from_config(sa),
        neighbours=None if k is None else int(k),
        threshold=None if t is None else int(t),
        clip=clip,
    )


def check_secagg_config(cfg: Any) -> list[str]:
    """Every problem of the ``secagg`` group of a composed run config (empty: fine).

    Checks the security level's ranges, explicit ``neighbours``/``threshold``, that
    derived parameters exist for ``federation.clients_per_round`` nodes, and that
    explicit ones are not weaker than ``secagg.security_bits`` (nodes holding that
    level would refuse every round). Refers to the removed ``secagg.mode``.
    """
    sa = setting(cfg, "secagg")
    if sa is None or not setting(sa, "enabled", False):
        return []
    problems: list[str] = []
    if setting(sa, "mode") is not None:
        problems.append(
            "secagg.mode was removed (the 3-exchange robust mode was private only "
            "against a server that reports dropouts honestly); delete the key"
        )
    try:
        level = level_from_config(sa)
    except (TypeError, ValueError) as exc:
        problems.append(f"secagg security level: {exc}")
        return problems
    k, t = setting(sa, "neighbours"), setting(sa, "threshold")
    for name, value in (("neighbours", k), ("threshold", t)):
        if value is not None and (not isinstance(value, int) or value < 1):
            problems.append(f"secagg.{name} must be a positive integer or null")
    if problems:
        return problems
    m = setting(setting(cfg, "federation"), "clients_per_round")
    try:
        params = params_from_config(sa, rounds=1, clip=1.0)
    except ValueError as exc:
        return [f"secagg.neighbours/threshold: {exc}"]
    if not isinstance(m, int) or m < 2:
        return problems
    try:
        kk, tt = params.for_cohort(m)
    except ValueError as exc:
        return [
            f"secagg: {exc} (federation.clients_per_round={m}); lower "
            "secagg.security_bits or secagg.colluding_fraction, or sample more clients"
        ]
    bits = -exposure_log2(m, kk, tt, level.colluding_fraction)
    if bits < level.security_bits:
        problems.append(
            f"secagg.neighbours={k}/threshold={t} give k={kk}, t={tt} for "
            f"{m} clients per round: {bits:.1f} bits, below secagg.security_bits="
            f"{level.security_bits:g}; nodes at that level would refuse every round "
            "(use null to derive them)"
        )
    return problems


def config_security_bits(cfg: Any, colluding_fraction: float) -> float | None:
    """Security bits the run config's (k, t) give for ``federation.clients_per_round``
    nodes when ``colluding_fraction`` of them collude (the node's own assumption, not
    the server's); ``inf`` when exposure is impossible; None when the config does not
    say (secure aggregation off, no cohort size, invalid values).

    Fits ``lepton_fed.policy.check.SecurityLevelFn``. Cohorts that turn out smaller
    are checked again, per round, by the node's SecAggClient.
    """
    sa = setting(cfg, "secagg")
    m = setting(setting(cfg, "federation"), "clients_per_round")
    if sa is None or not setting(sa, "enabled", False) or not isinstance(m, int):
        return None
    try:
        k, t = params_from_config(sa, rounds=1, clip=1.0).for_cohort(m)
        return -exposure_log2(m, k, t, colluding_fraction)
    except (TypeError, ValueError):
        return None
