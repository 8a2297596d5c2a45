"""Values derived from a composed config that several subsystems must agree on."""

from __future__ import annotations

from omegaconf import DictConfig

__all__ = ["secagg_weight", "update_clip"]


def update_clip(cfg: DictConfig) -> float | None:
    """L2 bound each client clips its update ``w_local - w_global`` to, or None.

    Central DP clips to ``privacy.clip`` (its sensitivity); secure aggregation needs a
    bound for its field encoding (``secagg.clip``, default 10, or ``privacy.clip`` when
    central DP is on too).
    """
    if cfg.privacy.mode in ("central", "distributed"):
        return float(cfg.privacy.clip)
    if cfg.secagg.enabled:
        return float(cfg.secagg.clip if cfg.secagg.clip is not None else 10.0)
    return None


def secagg_weight(cfg: DictConfig, num_examples: int) -> float:
    """The weight in [0, 1] a client puts inside its masked vector.

    Central DP needs equal weights (1). Otherwise ``num_examples / secagg.max_weight``
    (capped at 1), so the example-weighted mean is recovered from masked sums only.
    """
    if cfg.privacy.mode in ("central", "distributed"):
        return 1.0
    return min(1.0, num_examples / float(cfg.secagg.max_weight))
