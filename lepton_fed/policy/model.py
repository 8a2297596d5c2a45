"""What a node accepts, fixed by its operator: :class:`NodePolicy` and its loaders.

The server's run config can only make a run *stricter* than the node's policy: every
request is checked against it (:func:`lepton_fed.policy.check.check_request`) and
declined when any limit is broken. A real node takes its policy from its own file
(:func:`load_policy`) or, without one, :func:`strict_default`; it never reads a policy
from the server's config. Simulations take the Hydra group ``node_policy`` (default
``open``), written for the virtual nodes by the launcher
(:meth:`NodePolicy.from_mapping`).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from lepton_fed.errors import ConfigError

__all__ = [
    "ALWAYS_CLEAR",
    "ANY_METRIC",
    "PRIVACY_MODES",
    "NodePolicy",
    "load_policy",
    "open_policy",
    "strict_default",
]

#: Privacy modes a run config can ask for (``conf/privacy/*.yaml``).
PRIVACY_MODES = frozenset({"none", "dpsgd", "central", "distributed"})
#: In ``clear_metrics``: every metric may be sent in the clear.
ANY_METRIC = "*"
#: Metrics every node may send whatever its policy: the protocol needs them and they
#: carry no data (``declined`` is 0/1).
ALWAYS_CLEAR = frozenset({"declined"})

_METRIC_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _bool(v: Any) -> bool:
    if not isinstance(v, bool):
        raise ValueError(f"must be true or false; got {v!r}")
    return v


def _opt_positive(v: Any) -> float | None:
    if v is None:
        return None
    if isinstance(v, str):
        raise ValueError(
            f"must be a number or null; got the string {v!r} (YAML reads 1e-5 as a "
            "string: write 1.0e-5)"
        )
    if not _is_number(v) or not math.isfinite(v) or v <= 0:
        raise ValueError(f"must be a positive finite number or null; got {v!r}")
    return float(v)


def _opt_delta(v: Any) -> float | None:
    out = _opt_positive(v)
    if out is not None and out >= 1:
        raise ValueError(f"must be in (0, 1) or null; got {v!r}")
    return out


def _fraction(v: Any) -> float:
    if not _is_number(v) or not 0 <= v < 1:
        raise ValueError(f"must be a number in [0, 1); got {v!r}")
    return float(v)


def _int_at_least_1(v: Any) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or v < 1:
        raise ValueError(f"must be an integer >= 1; got {v!r}")
    return v


def _opt_int_at_least_1(v: Any) -> int | None:
    return None if v is None else _int_at_least_1(v)


def _names(v: Any, *, what: str, valid: Callable[[str], bool]) -> frozenset[str]:
    if isinstance(v, str | bytes) or not isinstance(v, Iterable):
        raise ValueError(f"must be a list of {what}; got {v!r}")
    items = list(v)
    bad = [x for x in items if not isinstance(x, str) or not valid(x)]
    if bad:
        raise ValueError(f"must be a list of {what}; invalid entries {bad!r}")
    return frozenset(items)


def _modes(v: Any) -> frozenset[str]:
    out = _names(v, what=f"privacy modes from {sorted(PRIVACY_MODES)}",
                 valid=lambda x: x in PRIVACY_MODES)
    if not out:
        raise ValueError("must list at least one privacy mode")
    return out


def _opt_models(v: Any) -> frozenset[str] | None:
    if v is None:
        return None
    return _names(v, what="model names", valid=lambda x: bool(x.strip()))


def _metrics(v: Any) -> frozenset[str]:
    return _names(v, what=f"metric names (or {ANY_METRIC!r} for any)",
                  valid=lambda x: x == ANY_METRIC or bool(_METRIC_RE.match(x)))


_CONVERTERS: dict[str, Callable[[Any], Any]] = {
    "privacy_modes": _modes,
    "max_epsilon": _opt_positive,
    "max_delta": _opt_delta,
    "require_secagg": _bool,
    "min_clients_per_round": _int_at_least_1,
    "min_security_bits": _opt_positive,
    "colluding_fraction": _fraction,
    "models": _opt_models,
    "max_rounds": _opt_int_at_least_1,
    "clear_metrics": _metrics,
    "allow_tofu_keys": _bool,
    "allow_reproducible_noise": _bool,
}


@dataclass(frozen=True)
class NodePolicy:
    """The limits a node holds every request to. Defaults are :func:`strict_default`.

    Guarantee: a node that checks each request with
    :func:`~lepton_fed.policy.check.check_request` (and each train message with
    :func:`~lepton_fed.policy.check.check_train_message`) before touching its data
    never trains under weaker settings than these, whatever the server sends.

    Attributes:
        privacy_modes: allowed ``privacy.mode`` values.
        max_epsilon: cap on ``privacy.epsilon`` (a run without an epsilon is refused
            when a cap is set); None = no cap. The ledger then holds the node's total
            spend on its data, over all runs, to the run's epsilon.
        max_delta: largest ``privacy.delta``; None = any.
        require_secagg: ``secagg.enabled`` must be true, and every train message
            must carry a secure-aggregation request.
        min_clients_per_round: smallest ``federation.clients_per_round``.
        min_security_bits: smallest secure-aggregation security level, in bits,
            against ``colluding_fraction`` of the cohort colluding with the server;
            None = no requirement. Checked whenever secure aggregation is on; an
            unknown level is refused.
        colluding_fraction: fraction of the cohort assumed to collude with the server
            when the level is computed.
        models: accepted ``model.name`` values; None = any.
        max_rounds: largest ``federation.rounds``; None = any.
        clear_metrics: metric names the node may send in the clear (``"*"`` = any);
            :data:`ALWAYS_CLEAR` is always allowed.
        allow_tofu_keys: whether secure-aggregation keys may be trusted on first use.
        allow_reproducible_noise: whether seeded (reproducible) DP noise is allowed.
    """

    privacy_modes: frozenset[str] = frozenset({"dpsgd"})
    max_epsilon: float | None = 8.0
    max_delta: float | None = 1e-5
    require_secagg: bool = True
    min_clients_per_round: int = 3
    min_security_bits: float | None = 40.0
    colluding_fraction: float = 0.05
    models: frozenset[str] | None = frozenset({"logreg", "mlp", "cnn"})
    max_rounds: int | None = None
    clear_metrics: frozenset[str] = frozenset({"epsilon", "unit-weight"})
    allow_tofu_keys: bool = False
    allow_reproducible_noise: bool = False

    def __post_init__(self) -> None:
        problems: list[str] = []
        for f in fields(self):
            try:
                object.__setattr__(self, f.name, _CONVERTERS[f.name](getattr(self, f.name)))
            except ValueError as e:
                problems.append(f"node policy: {f.name} {e}")
        if problems:
            raise ConfigError(problems)

    @classmethod
    def from_mapping(cls, d: Mapping[Any, Any], *, source: str = "node_policy") -> NodePolicy:
        """Build a policy from a mapping (YAML, ``cfg.node_policy``); missing keys keep
        the strict defaults.

        Raises:
            ConfigError: every problem at once: unknown keys, wrong types, bad ranges,
                each naming ``source.key``.
        """
        from omegaconf import DictConfig, OmegaConf

        if isinstance(d, DictConfig):
            d = OmegaConf.to_container(d, resolve=True)  # type: ignore[assignment]
        if not isinstance(d, Mapping):
            raise ConfigError(f"{source}: a node policy must be a mapping; got {type(d).__name__}")
        problems = [
            f"{source}: {k}: no such policy setting; choose from {sorted(_CONVERTERS)}"
            for k in d if k not in _CONVERTERS
        ]
        values: dict[str, Any] = {}
        for k, conv in _CONVERTERS.items():
            if k in d:
                try:
                    values[k] = conv(d[k])
                except ValueError as e:
                    problems.append(f"{source}: {k} {e}")
        if problems:
            raise ConfigError(problems)
        return cls(**values)

    def to_mapping(self) -> dict[str, Any]:
        """Plain YAML-ready dict (sorted lists), the inverse of :meth:`from_mapping`."""
        out: dict[str, Any] = {}
        for f in fields(self):
            v = getattr(self, f.name)
            out[f.name] = sorted(v) if isinstance(v, frozenset) else v
        return out


def strict_default() -> NodePolicy:
    """The policy of a real node without a policy file.

    DP-SGD only, epsilon <= 8 (over everything the node ever spends on its data),
    delta <= 1e-5, secure aggregation required with >= 40 bits against 5% of the
    cohort colluding with the server (the secure-aggregation default,
    ``lepton_fed.secagg.security.DEFAULT_LEVEL``), cohorts of at least 3, the built-in model
    families, only ``epsilon`` and ``unit-weight`` (and ``declined``) in the clear,
    no trust-on-first-use keys, no seeded noise.
    """
    return NodePolicy()


def open_policy() -> NodePolicy:
    """Accept anything: the simulation default (the operator is the experimenter)."""
    return NodePolicy(
        privacy_modes=PRIVACY_MODES, max_epsilon=None, max_delta=None,
        require_secagg=False, min_clients_per_round=1, min_security_bits=None,
        models=None, max_rounds=None, clear_metrics=frozenset({ANY_METRIC}),
        allow_tofu_keys=True, allow_reproducible_noise=True,
    )


def load_policy(path: str | os.PathLike[str]) -> NodePolicy:
    """Read a node policy from a YAML file (keys as :class:`NodePolicy` fields).

    Raises:
        ConfigError: unreadable file, invalid YAML, not a mapping, or every problem
            :meth:`NodePolicy.from_mapping` finds.
    """
    from omegaconf import OmegaConf

    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"node policy file {str(p)!r} cannot be read: {e}") from e
    try:
        loaded = OmegaConf.create(text) if text.strip() else OmegaConf.create({})
        raw = OmegaConf.to_container(loaded, resolve=True)
    except Exception as e:  # noqa: BLE001 - YAML syntax or interpolation errors
        raise ConfigError(f"node policy file {str(p)!r} is not valid YAML: {e}") from e
    if not isinstance(raw, dict):
        raise ConfigError(f"node policy file {str(p)!r} must hold a mapping of settings")
    return NodePolicy.from_mapping(raw, source=f"node policy file {str(p)!r}")
