"""Hold a server's request to the node's policy: :func:`check_request` and friends.

Pure functions over the composed run config (the DictConfig the server sends, or any
nested mapping). Every broken limit yields one :class:`~lepton_fed.policy.codes.Decline`;
an empty list means the request may proceed. Details name config keys and policy
limits, never anything derived from the node's data.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from lepton_fed.errors import ConfigError
from lepton_fed.policy.codes import (
    COHORT_SIZE,
    DELTA,
    EPSILON_CAP,
    MALFORMED_REQUEST,
    MODEL,
    PRIVACY_MODE,
    REPRODUCIBLE_NOISE,
    ROUNDS,
    SECAGG_REQUIRED,
    SECURITY_LEVEL,
    TOFU_KEYS,
    Decline,
)
from lepton_fed.policy.model import ALWAYS_CLEAR, ANY_METRIC, NodePolicy

__all__ = [
    "COLLUDING_FRACTION_KEY",
    "SECURITY_BITS_KEY",
    "TOFU_KEY",
    "SecurityLevelFn",
    "allowed_clear_metrics",
    "check_policy_config",
    "check_request",
    "check_train_message",
    "filter_metrics",
]

#: Config key with the secure-aggregation security level (bits) the server claims.
SECURITY_BITS_KEY = "secagg.security_bits"
#: Config key with the colluding fraction that claim assumes (optional).
COLLUDING_FRACTION_KEY = "secagg.colluding_fraction"
#: Config key that turns on trust-on-first-use of secure-aggregation keys.
TOFU_KEY = "secagg.trust_on_first_use"
_DP_MODES = ("dpsgd", "central", "distributed")

#: ``(cfg, colluding_fraction) -> bits or None``: the node's own computation of the
#: secure-aggregation security level of a config (None = cannot tell).
SecurityLevelFn = Callable[[Mapping[str, Any], float], float | None]

_ABSENT = object()
V = TypeVar("V")


def _get(cfg: Mapping[str, Any], dotted: str) -> Any:
    cur: Any = cfg
    for part in dotted.split("."):
        try:
            if not isinstance(cur, Mapping) or part not in cur:
                return _ABSENT
            cur = cur[part]
        except Exception:  # noqa: BLE001 - omegaconf's missing/interpolation errors
            return _ABSENT
    return cur


def _num(v: Any) -> float | None:
    ok = isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
    return float(v) if ok else None


def _malformed(key: str, v: Any, want: str) -> Decline:
    shown = "missing" if v is _ABSENT else f"{v!r}"
    return Decline(MALFORMED_REQUEST, f"{key} is {shown}; expected {want}")


def check_request(
    policy: NodePolicy, cfg: Mapping[str, Any], *, security_level: SecurityLevelFn | None = None
) -> list[Decline]:
    """Every way the run config ``cfg`` breaks ``policy`` (empty: accept).

    Args:
        policy: the node's policy.
        cfg: the composed run config as the server sent it.
        security_level: the node's own computation of the secure-aggregation level.
            Without it the node relies on the level the server states in
            ``secagg.security_bits`` (and, if given, the colluding fraction in
            ``secagg.colluding_fraction``, which must be at least the policy's).

    Returns:
        One :class:`Decline` per broken limit, in a fixed order.
    """
    out: list[Decline] = []
    mode = _get(cfg, "privacy.mode")
    if not isinstance(mode, str):
        out.append(_malformed("privacy.mode", mode, "a string"))
    elif mode not in policy.privacy_modes:
        out.append(Decline(PRIVACY_MODE, f"privacy.mode={mode!r} is not one of the "
                           f"modes this node allows {sorted(policy.privacy_modes)}"))
    if mode in _DP_MODES:
        out += _check_dp(policy, cfg)
    out += _check_secagg(policy, cfg, security_level)
    if policy.min_clients_per_round > 1:
        k = _get(cfg, "federation.clients_per_round")
        if not isinstance(k, int) or isinstance(k, bool):
            out.append(_malformed("federation.clients_per_round", k, "an integer"))
        elif k < policy.min_clients_per_round:
            out.append(Decline(COHORT_SIZE, f"federation.clients_per_round={k} is below "
                               f"this node's minimum {policy.min_clients_per_round}"))
    if policy.models is not None:
        name = _get(cfg, "model.name")
        if name not in policy.models:
            out.append(Decline(MODEL, f"model.name={_shown(name)} is not one of the "
                               f"models this node accepts {sorted(policy.models)}"))
    if policy.max_rounds is not None:
        r = _get(cfg, "federation.rounds")
        if not isinstance(r, int) or isinstance(r, bool):
            out.append(_malformed("federation.rounds", r, "an integer"))
        elif r > policy.max_rounds:
            out.append(Decline(ROUNDS, f"federation.rounds={r} is above this node's "
                               f"limit {policy.max_rounds}"))
    return out


def _shown(v: Any) -> str:
    return "missing" if v is _ABSENT else repr(v)


def _check_dp(policy: NodePolicy, cfg: Mapping[str, Any]) -> list[Decline]:
    out: list[Decline] = []
    if policy.max_epsilon is not None:
        raw = _get(cfg, "privacy.epsilon")
        eps = _num(raw)
        if raw is None or raw is _ABSENT:
            out.append(Decline(EPSILON_CAP, "privacy.epsilon is not set (no budget); "
                               f"this node requires epsilon <= {policy.max_epsilon}"))
        elif eps is None or eps <= 0:
            out.append(_malformed("privacy.epsilon", raw, "a positive number"))
        elif eps > policy.max_epsilon:
            out.append(Decline(EPSILON_CAP, f"privacy.epsilon={eps} is above this node's "
                               f"cap {policy.max_epsilon}"))
    raw = _get(cfg, "privacy.delta")
    delta = _num(raw)
    if raw is None or raw is _ABSENT or delta is None or not 0 < delta < 1:
        out.append(Decline(DELTA, f"privacy.delta={_shown(raw)} is not a number in (0, 1)"))
    elif policy.max_delta is not None and delta > policy.max_delta:
        out.append(Decline(DELTA, f"privacy.delta={delta} is above this node's "
                           f"limit {policy.max_delta}"))
    repro = _get(cfg, "privacy.reproducible")
    if repro not in (_ABSENT, None, False) and not policy.allow_reproducible_noise:
        out.append(Decline(REPRODUCIBLE_NOISE, f"privacy.reproducible={repro!r} asks for "
                           "seeded DP noise; this node's policy forbids it"))
    return out


def _check_secagg(
    policy: NodePolicy, cfg: Mapping[str, Any], security_level: SecurityLevelFn | None
) -> list[Decline]:
    out: list[Decline] = []
    enabled = _get(cfg, "secagg.enabled")
    if enabled not in (True, False, None, _ABSENT):
        return [_malformed("secagg.enabled", enabled, "true or false")]
    on = enabled is True
    if policy.require_secagg and not on:
        out.append(Decline(SECAGG_REQUIRED, "secagg.enabled is not true; this node "
                           "requires secure aggregation"))
    if not on:
        return out
    tofu = _get(cfg, TOFU_KEY)
    if tofu not in (_ABSENT, None, False) and not policy.allow_tofu_keys:
        out.append(Decline(TOFU_KEYS, f"{TOFU_KEY}={tofu!r}; this node's policy forbids "
                           "trusting secure-aggregation keys on first use"))
    k, t = _get(cfg, "secagg.neighbours"), _get(cfg, "secagg.threshold")
    if isinstance(k, int) and isinstance(t, int) and 2 * t <= k:
        out.append(Decline(SECURITY_LEVEL, f"secagg.threshold={t} is not above half of "
                           f"secagg.neighbours={k}: the masks can be removed"))
    if policy.min_security_bits is None:
        return out
    need, gamma = policy.min_security_bits, policy.colluding_fraction
    if security_level is not None:
        bits = security_level(cfg, gamma)
        source = "computed by this node"
    else:
        bits = _num(_get(cfg, SECURITY_BITS_KEY))
        source = f"stated in {SECURITY_BITS_KEY}"
        claimed = _get(cfg, COLLUDING_FRACTION_KEY)
        if claimed is not _ABSENT and claimed is not None:
            c = _num(claimed)
            if c is None or c < gamma:
                out.append(Decline(SECURITY_LEVEL, f"{COLLUDING_FRACTION_KEY}={claimed!r} "
                                   f"assumes fewer colluders than this node's {gamma:.4g}"))
                return out
    if bits is None:
        out.append(Decline(SECURITY_LEVEL, f"the secure-aggregation security level is "
                           f"unknown ({source}); this node requires >= {need:g} bits"))
    elif bits < need:
        out.append(Decline(SECURITY_LEVEL, f"secure-aggregation security level {bits:g} "
                           f"bits ({source}) is below this node's minimum {need:g} bits "
                           f"at colluding fraction {gamma:.4g}"))
    return out


def check_train_message(
    policy: NodePolicy, cfg: Mapping[str, Any], *, has_secagg_request: bool
) -> list[Decline]:
    """Whether one train message may be answered.

    A node that requires secure aggregation (by policy, or because the run config
    turned it on) must never answer a train message without a secure-aggregation
    request: it would send its plain update.
    """
    expected = policy.require_secagg or _get(cfg, "secagg.enabled") is True
    if expected and not has_secagg_request:
        return [Decline(SECAGG_REQUIRED, "the train message carries no secure-aggregation "
                        "request; this node sends no plain update when secure "
                        "aggregation is required")]
    return []


def allowed_clear_metrics(policy: NodePolicy) -> frozenset[str]:
    """Metric names the node may send in the clear (``"*"`` in it = any)."""
    return policy.clear_metrics | ALWAYS_CLEAR


def filter_metrics(policy: NodePolicy, metrics: Mapping[str, V]) -> dict[str, V]:
    """``metrics`` without the entries the policy does not allow in the clear."""
    allowed = allowed_clear_metrics(policy)
    if ANY_METRIC in allowed:
        return dict(metrics)
    return {k: v for k, v in metrics.items() if k in allowed}


def check_policy_config(cfg: Mapping[str, Any]) -> list[str]:
    """Problems with ``cfg.node_policy`` (simulation), for the config validator.

    Returns:
        Every problem as a sentence naming the key; [] when absent or valid.
    """
    raw = _get(cfg, "node_policy")
    if raw is _ABSENT or raw is None:
        return []
    try:
        NodePolicy.from_mapping(raw)
    except ConfigError as e:
        return list(e.problems)
    return []
