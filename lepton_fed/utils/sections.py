"""Reading a setting from a config section that may be a DictConfig, a plain mapping
(a config parsed from YAML on a node) or an object with attributes."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["setting"]


def setting(section: Any, name: str, default: Any = None) -> Any:
    """``section[name]`` (or its attribute ``name``); ``default`` when the section is
    None or has no such key."""
    if section is None:
        return default
    if isinstance(section, Mapping):
        return section.get(name, default)
    return getattr(section, name, default)
