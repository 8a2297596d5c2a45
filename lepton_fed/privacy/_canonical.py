"""Canonical JSON bytes and their digest, shared by the ledger and the fingerprint."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

__all__ = ["canonical_json", "digest"]


def canonical_json(obj: Any) -> bytes:
    """Sorted keys, no spaces, ASCII only, finite floats only (``ValueError`` else)."""
    return json.dumps(
        obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    ).encode("utf-8")


def digest(body: Mapping[str, Any]) -> str:
    """``"sha256:<hex>"`` of :func:`canonical_json` of ``body``."""
    return "sha256:" + hashlib.sha256(canonical_json(dict(body))).hexdigest()
