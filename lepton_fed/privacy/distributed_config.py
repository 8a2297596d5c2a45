"""Distributed DP settings from a run config (``privacy=distributed``), the same on every
node and on the server: :func:`plan_for_config` (the :class:`DistributedPlan` of a run),
:func:`check_distributed_config` (every problem before anything runs) and
:func:`policy_problems` (a node's own limits, checked on the plan it computed itself).

Config keys (``conf/privacy/distributed.yaml``): ``privacy.epsilon`` (required: the
target over ``federation.rounds`` releases), ``privacy.delta``, ``privacy.clip`` (L2
bound of an update), ``privacy.min_contributors`` (null: ``clients_per_round``; rounds
with fewer masked inputs are abandoned before unmasking), ``privacy.wrap_bits`` (the
wrap-around bound, default 40), and from the ``secagg`` group ``enabled`` (must be true)
and ``colluding_fraction`` (colluders assumed among ``clients_per_round``: their noise
shares are not counted).
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Any

from lepton_fed.privacy.distributed import DistributedPlan, plan_distributed
from lepton_fed.utils.sections import setting

__all__ = ["FIELD_BITS", "check_distributed_config", "colluders_for", "plan_for_config",
           "policy_problems"]

#: the secure-aggregation field the integers are summed in (uploads: 4 bytes/parameter)
FIELD_BITS = 32


def colluders_for(cohort: int, fraction: float) -> int:
    """``min(m - 1, ceil(fraction * m))`` colluders among ``m`` (as secure aggregation
    assumes them)."""
    return max(0, min(cohort - 1, math.ceil(fraction * cohort - 1e-12)))


def _settings(cfg: Any) -> dict[str, Any]:
    pr, fed, sa = setting(cfg, "privacy"), setting(cfg, "federation"), setting(cfg, "secagg")
    m = setting(fed, "clients_per_round")
    nmin = setting(pr, "min_contributors")
    return {
        "epsilon": setting(pr, "epsilon"), "delta": setting(pr, "delta"),
        "rounds": setting(fed, "rounds"), "clip": setting(pr, "clip"),
        "min_contributors": m if nmin is None else nmin, "max_contributors": m,
        "fraction": float(setting(sa, "colluding_fraction", 0.05) or 0.0),
        "wrap_bits": float(setting(pr, "wrap_bits", 40.0) or 40.0),
        "secagg": bool(setting(sa, "enabled", False)),
    }


def check_distributed_config(cfg: Any) -> list[str]:
    """Every problem of a ``privacy=distributed`` config (empty: fine, or another mode)."""
    if setting(setting(cfg, "privacy"), "mode") != "distributed":
        return []
    s = _settings(cfg)
    out = []
    if not s["secagg"]:
        out.append("privacy=distributed needs secagg=on (the noise shares are only "
                   "private inside the secure sum)")
    for key in ("epsilon", "delta", "clip"):
        v = s[key]
        if not isinstance(v, int | float) or isinstance(v, bool) or not v > 0:
            out.append(f"privacy.{key} must be a positive number for privacy=distributed, "
                       f"got {v!r}")
    m, nmin = s["max_contributors"], s["min_contributors"]
    if not isinstance(nmin, int) or not isinstance(m, int) or not 2 <= nmin <= m:
        out.append(f"privacy.min_contributors ({nmin!r}) must be an integer in "
                   f"[2, federation.clients_per_round={m!r}]")
    elif colluders_for(m, s["fraction"]) >= nmin:
        out.append(f"secagg.colluding_fraction={s['fraction']} assumes "
                   f"{colluders_for(m, s['fraction'])} colluders among {m}: no honest noise "
                   f"share is left in a round of privacy.min_contributors={nmin}")
    return out


def plan_for_config(cfg: Any, dim: int) -> DistributedPlan:
    """The run's plan for a model of ``dim`` parameters (same on every party).

    Raises:
        ValueError: the problems :func:`check_distributed_config` lists, or no plan.
    """
    problems = check_distributed_config(cfg)
    if problems:
        raise ValueError("; ".join(problems))
    s = _settings(cfg)
    return _plan(float(s["epsilon"]), float(s["delta"]), int(s["rounds"]), float(s["clip"]),
                 int(dim), int(s["min_contributors"]), int(s["max_contributors"]),
                 colluders_for(int(s["max_contributors"]), s["fraction"]), s["wrap_bits"])


@lru_cache(maxsize=32)
def _plan(epsilon: float, delta: float, rounds: int, clip: float, dim: int, nmin: int,
          nmax: int, colluders: int, wrap_bits: float) -> DistributedPlan:
    return plan_distributed(epsilon=epsilon, delta=delta, rounds=rounds, clip=clip, dim=dim,
                            min_contributors=nmin, max_contributors=nmax,
                            colluders=colluders, bits=FIELD_BITS, wrap_bits=wrap_bits)


def policy_problems(plan: DistributedPlan, *, max_epsilon: float | None,
                    max_delta: float | None, min_clients: int,
                    colluding_fraction: float) -> list[str]:
    """How ``plan`` (computed by the node itself) breaks the node's own limits."""
    out = []
    if max_epsilon is not None and plan.epsilon > max_epsilon:
        out.append(f"epsilon {plan.epsilon:.3g} above the node's cap {max_epsilon:g}")
    if max_delta is not None and plan.delta > max_delta:
        out.append(f"delta {plan.delta:g} above the node's cap {max_delta:g}")
    if plan.min_contributors < min_clients:
        out.append(f"noise sized for {plan.min_contributors} contributors, below the "
                   f"node's minimum cohort {min_clients}")
    if plan.colluders < colluders_for(plan.max_contributors, colluding_fraction):
        out.append(f"noise assumes {plan.colluders} colluders; the node assumes "
                   f"{colluders_for(plan.max_contributors, colluding_fraction)}")
    return out
