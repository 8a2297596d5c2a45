"""Compose the Hydra config outside ``@hydra.main`` (CLI pre-checks, tests, notebooks)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from functools import partial
from typing import cast

from omegaconf import DictConfig, OmegaConf

from lepton_fed.config.paths import conf_dir
from lepton_fed.config.schema_check import (
    composition_problem,
    schema_problems,
    settings_under,
)
from lepton_fed.config.validate import check_overrides, raise_if, validate
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
    """Compose ``conf/config.yaml`` with ``overrides`` (no sweep values), typed by the
    schema (:mod:`lepton_fed.config.schema`); value rules are :func:`validate`'s.

    Raises:
        ConfigError: what the schema refuses (an unknown key, a value of the wrong type,
            an interpolation that does not resolve) or an option that does not exist,
            each naming the key (and the config file when the error is in one).
    """
    from hydra import compose as _compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from lepton_fed.config.schema import register

    register()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
            cfg = _compose(config_name="config", overrides=plain_slots(overrides or []))
    except (HydraException, OmegaConfBaseException) as exc:
        raise ConfigError(composition_problem(exc)) from exc
    finally:
        GlobalHydra.instance().clear()
    raise_if(schema_problems(cfg))
    return cfg


def precheck(overrides: list[str], *, multirun: bool = False,
             deployment: bool = False, engine: str = "ray") -> list[DictConfig]:
    """Check command-line overrides fully before anything expensive starts
    (``deployment=True``: for a real federation; ``engine``: ``"ray"`` or
    ``"in-process"``, what will run the simulation; see :func:`validate`).

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
        good = _drop_bad_settings(combo, partial(add, combo=combo))
        try:
            cfg = compose(good)
        except ConfigError as exc:  # the schema's problems, each naming its key
            for prob in exc.problems:
                add(prob, combo)
            continue
        for prob in validate(cfg, deployment=deployment, engine=engine):
            add(prob, combo)
        cfgs.append(cfg)
    if problems:
        raise ConfigError(problems)
    return cfgs


def _drop_bad_settings(overrides: list[str], report: Callable[[str], None]) -> list[str]:
    """Report (and drop) every ``key=value`` override the schema refuses: a key that is
    not in the config, a value of the wrong type, a deletion of a schema key.

    Each is tried, in order, on the config the group choices compose to, so all of them
    are named at once (Hydra's composition stops at the first). Group choices, ``hydra.*``
    and mapping/list values are left to the full composition.
    """
    import copy

    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import open_dict
    from omegaconf.errors import OmegaConfBaseException

    from lepton_fed.config.paths import GROUPS

    parsed = OverridesParser.create().parse_overrides(overrides)
    groups = [raw for ov, raw in zip(parsed, overrides, strict=True)
              if ov.key_or_group in GROUPS or ov.key_or_group.startswith("hydra")]
    try:
        trial = copy.deepcopy(compose(groups))
    except ConfigError:  # reported when the full set is composed
        return overrides
    good = list(groups)
    for ov, raw in zip(parsed, overrides, strict=True):
        if raw in groups:
            continue
        key = ov.key_or_group
        parent, _, leaf = key.rpartition(".")
        node = OmegaConf.select(trial, parent) if parent else trial
        schema_keys = settings_under(parent)
        adds = ov.is_add() or ov.is_force_add()
        if not isinstance(node, DictConfig) or (leaf not in node and (
                not adds or schema_keys is not None)):
            keys = schema_keys or (sorted(cast(Iterable[str], node.keys()))
                                   if isinstance(node, DictConfig) else [])
            report(f"{key}: no such setting" + (
                f"; settings under {parent or 'the top level'} are {keys}" if keys else ""))
            continue
        if ov.is_delete():
            if schema_keys is not None:
                report(f"{key} is a setting of the schema and cannot be deleted (~{key}); "
                       f"set it instead ({key}=VALUE)")
                continue
        elif not ov.is_sweep_override():
            value = ov.value()
            if value is None or isinstance(value, str | int | float | bool):
                try:
                    with open_dict(node):
                        node[leaf] = value
                except OmegaConfBaseException as exc:
                    report(composition_problem(exc))
                    continue
        good.append(raw)
    return good


def to_yaml(cfg: DictConfig) -> str:
    """Resolved YAML text of a config."""
    return OmegaConf.to_yaml(cfg, resolve=True)
