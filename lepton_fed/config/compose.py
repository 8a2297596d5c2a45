"""Compose the Hydra config outside ``@hydra.main`` (CLI pre-checks, tests, notebooks)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from functools import partial
from typing import cast

from omegaconf import DictConfig, OmegaConf

from lepton_fed.config.paths import conf_dir
from lepton_fed.config.validate import check_overrides, validate
from lepton_fed.errors import ConfigError

__all__ = ["compose", "plain_slots", "precheck"]


def plain_slots(overrides: Iterable[str]) -> list[str]:
    """``+experiment=X`` / ``+debug=X`` as ``experiment=X`` / ``debug=X``.

    config.yaml has null slots for these groups (so presets need no ``+``); Hydra refuses
    to append to a slot that exists, so the older spelling is rewritten, not passed on.
    """
    from lepton_fed.config.paths import SLOTS

    return [o[1:] if o.startswith(tuple(f"+{g}=" for g in SLOTS)) else o for o in overrides]


def compose(overrides: list[str] | None = None) -> DictConfig:
    """Compose ``conf/config.yaml`` with ``overrides`` (no sweep values)."""
    from hydra import compose as _compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        cfg = _compose(config_name="config", overrides=plain_slots(overrides or []))
    GlobalHydra.instance().clear()
    return cfg


def precheck(overrides: list[str], *, multirun: bool = False,
             deployment: bool = False) -> list[DictConfig]:
    """Check command-line overrides fully before anything expensive starts
    (``deployment=True``: for a real federation, see :func:`validate`).

    Returns the composed configs (one per sweep combination, at most 256) or raises one
    :class:`ConfigError` with every problem found.
    """
    usable, problems = check_overrides(plain_slots(overrides))
    combos: list[list[str]] = [usable]
    if multirun:
        from hydra.core.override_parser.overrides_parser import OverridesParser

        parsed = OverridesParser.create().parse_overrides(usable)
        combos = [[]]
        for ov, raw in zip(parsed, usable, strict=True):
            if ov.is_sweep_override():
                vals = [f"{ov.get_key_element()}={v}" for v in ov.sweep_string_iterator()]
                combos = [c + [v] for c in combos for v in vals][:256]
            else:
                combos = [c + [raw] for c in combos]
    cfgs: list[DictConfig] = []
    seen: set[str] = set()

    def add(prob: str, combo: list[str]) -> None:
        if prob not in seen:
            seen.add(prob)
            problems.append(f"[{' '.join(combo)}] {prob}" if len(combos) > 1 else prob)

    for combo in combos:
        good = _drop_unknown_keys(combo, partial(add, combo=combo))
        try:
            cfg = compose(good)
        except Exception as exc:  # noqa: BLE001 - Hydra's message names the key
            add(str(exc).splitlines()[0], combo)
            continue
        for prob in validate(cfg, deployment=deployment):
            add(prob, combo)
        cfgs.append(cfg)
    if problems:
        raise ConfigError(problems)
    return cfgs


def _drop_unknown_keys(overrides: list[str], report: Callable[[str], None]) -> list[str]:
    """Report (and drop) plain ``key=value`` overrides whose key is not in the config."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from lepton_fed.config.paths import GROUPS

    parsed = OverridesParser.create().parse_overrides(overrides)
    groups = [
        raw for ov, raw in zip(parsed, overrides, strict=True)
        if ov.key_or_group in GROUPS or ov.is_add() or ov.is_delete() or ov.is_force_add()
        or ov.key_or_group.startswith("hydra")
    ]
    try:
        base = compose(groups)
    except Exception:  # noqa: BLE001 - reported when the full set is composed
        return overrides
    good = list(groups)
    for ov, raw in zip(parsed, overrides, strict=True):
        if raw in groups:
            continue
        key = ov.key_or_group
        parent, _, leaf = key.rpartition(".")
        node = OmegaConf.select(base, parent) if parent else base
        if isinstance(node, DictConfig) and leaf in node:
            good.append(raw)
        else:
            keys = sorted(cast(Iterable[str], node.keys())) if isinstance(node, DictConfig) else []
            report(f"{key}: no such setting" + (f"; settings under {parent or 'the top level'} are {keys}" if keys else ""))
    return good


def to_yaml(cfg: DictConfig) -> str:
    """Resolved YAML text of a config."""
    return OmegaConf.to_yaml(cfg, resolve=True)
