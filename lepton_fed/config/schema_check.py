"""What the typed schema (:mod:`lepton_fed.config.schema`) refuses, as sentences naming the key.

:func:`composition_problem` turns the error Hydra/OmegaConf raise while composing (a key
the schema does not have, a value of the wrong type, an interpolation that does not
resolve) into one problem sentence in the words :mod:`lepton_fed.config.validate` uses
(``federation.rounds must be a whole number, got 'abc'``), naming the config file when
the error is in one. :func:`schema_problems` finds what composition lets through: keys
added with ``+``/``++`` to a typed group, and interpolations that do not resolve.
"""

from __future__ import annotations

import dataclasses
import functools
import re
import types
import typing
from typing import Any, Union

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import (
    ConfigKeyError,
    ConfigTypeError,
    InterpolationResolutionError,
    OmegaConfBaseException,
    ValidationError,
)

from lepton_fed.config.schema import Config

__all__ = [
    "composition_problem",
    "describe",
    "numeric_settings",
    "schema_problems",
    "settings_under",
]


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _field_type(path: str) -> Any:
    """The annotation of the schema field at dotted ``path`` (``[i]`` = a list item),
    or None when the path is not in the schema (``strategy.*``)."""
    t: Any = Config
    for part in re.findall(r"[^.\[\]]+|\[\d+\]", path):
        t = _strip_optional(t)[0]
        if part.startswith("["):
            args = typing.get_args(t)
            if typing.get_origin(t) is not list or not args:
                return None
            t = args[0]
        elif dataclasses.is_dataclass(t) and isinstance(t, type):
            t = _hints(t).get(part)
            if t is None:
                return None
        else:
            return None
    return t


def _strip_optional(t: Any) -> tuple[Any, bool]:
    if typing.get_origin(t) in (Union, types.UnionType):
        args = [a for a in typing.get_args(t) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return t, False


_WORDS = {
    int: "a whole number",
    float: "a number",
    bool: "true or false",
    str: "a string",
}
_PLURAL = {int: "whole numbers", float: "numbers", str: "strings"}


def describe(t: Any) -> str:
    """What a value of schema type ``t`` must be, in words (``a number or null``)."""
    inner, optional = _strip_optional(t)
    if typing.get_origin(inner) is list:
        (item,) = typing.get_args(inner) or (Any,)
        text = f"a list of {_PLURAL.get(item, 'values')}"
    elif dataclasses.is_dataclass(inner):
        text = "a mapping"
    else:
        text = _WORDS.get(inner, "a value")
    return f"{text} or null" if optional else text


@functools.cache
def numeric_settings(skip: tuple[str, ...] = ()) -> tuple[tuple[str, str, bool], ...]:
    """Every number the schema declares, as ``(dotted key, "int" | "num", nullable)``,
    groups in ``skip`` left out: the type table :mod:`~lepton_fed.config.validate`
    checks configs by, derived here so that it cannot drift from the schema."""
    out: list[tuple[str, str, bool]] = []

    def walk(cls: type, prefix: str) -> None:
        for name, hint in _hints(cls).items():
            inner, nullable = _strip_optional(hint)
            key = prefix + name
            if dataclasses.is_dataclass(inner) and isinstance(inner, type):
                if key not in skip:
                    walk(inner, key + ".")
            elif inner in (int, float):
                out.append((key, "int" if inner is int else "num", nullable))

    walk(Config, "")
    return tuple(out)


def settings_under(path: str) -> list[str] | None:
    """The schema's keys under ``path`` ('' = top level), or None (not a typed group)."""
    t = _strip_optional(_field_type(path) if path else Config)[0]
    if dataclasses.is_dataclass(t) and isinstance(t, type):
        return sorted(f.name for f in dataclasses.fields(t))
    return None


def _no_such(key: str) -> str:
    parent, _, _ = key.rpartition(".")
    keys = settings_under(parent)
    where = parent or "the top level"
    return f"{key}: no such setting" + (
        f"; settings under {where} are {keys}" if keys else ""
    )


def _omegaconf_cause(exc: BaseException) -> OmegaConfBaseException | None:
    seen: set[int] = set()
    x: BaseException | None = exc
    while x is not None and id(x) not in seen:
        seen.add(id(x))
        if isinstance(x, OmegaConfBaseException) and x.full_key:
            return x
        x = x.__cause__ or x.__context__
    return None


def composition_problem(exc: BaseException) -> str:
    """One sentence for an exception Hydra raised while composing, naming the key (and the
    config file, when the error is in one); Hydra's own first line otherwise."""
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    m = re.match(r"In '([^']+)': ", first)
    where = f"in conf/{m.group(1)}.yaml: " if m else ""
    cause = _omegaconf_cause(exc)
    taken = re.search(r"An item is already at '([^']+)'", first)
    if cause is None and taken:
        key = taken.group(1)
        return f"+{key}: {key} is already set; drop the + ({key}=VALUE)"
    if cause is None:
        return first
    key = str(cause.full_key)
    if isinstance(cause, ConfigKeyError | AttributeError) and "not in" in str(cause):
        return where + _no_such(key)
    if isinstance(cause, InterpolationResolutionError):
        return where + f"{key}: {(str(cause).splitlines() or [''])[0]}"
    if isinstance(cause, ConfigTypeError) and "deletion" in str(cause):
        return where + (
            f"{key} is a setting of the schema and cannot be deleted (~{key}); "
            f"set it instead ({key}=VALUE)"
        )
    if isinstance(cause, ValidationError):
        t = _field_type(key)
        want = describe(t) if t is not None else "of another type"
        got = "null" if cause.value is None else repr(cause.value)
        return where + f"{key} must be {want}, got {got}"
    return where + f"{key}: {(str(cause).splitlines() or [''])[0]}"


def schema_problems(cfg: DictConfig) -> list[str]:
    """Keys that composition let into a typed group (``+privacy.epsilonn=3``) and
    interpolations that do not resolve, each naming its key (empty: conforms)."""
    out: list[str] = []
    _walk(cfg, "", out)
    return out


def _walk(node: DictConfig | ListConfig, path: str, out: list[str]) -> None:
    known = settings_under(path) if isinstance(node, DictConfig) else None
    keys: list[Any] = (
        list(node.keys()) if isinstance(node, DictConfig) else list(range(len(node)))
    )
    for k in keys:
        key = (
            f"{path}[{k}]" if isinstance(k, int) else f"{path}.{k}" if path else str(k)
        )
        if known is not None and k not in known:
            out.append(_no_such(key))
            continue
        if OmegaConf.is_interpolation(node, k):
            try:
                node[k]
            except OmegaConfBaseException as exc:
                raw = OmegaConf.to_container(node, resolve=False)[k]  # type: ignore[index]
                if "${hydra:" not in str(raw):  # Hydra's run resolves these
                    out.append(composition_problem(exc))
            continue
        child = node._get_node(k)
        if isinstance(child, DictConfig | ListConfig) and not child._is_none():
            _walk(child, key, out)
