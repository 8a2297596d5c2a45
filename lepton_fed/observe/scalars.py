"""One round's metrics row as flat, named scalars (the tags TensorBoard shows and the
series the dashboard draws).

A row is what :mod:`lepton_fed.server.rounds` appends to ``metrics.jsonl``: ``round``,
``loss``/``accuracy``/``auc`` (None when the round was not evaluated), ``federated``
{accuracy, loss, auc, nodes}, ``clients``, ``failed``, ``declined``, ``epsilon``,
``bytes_up``, ``bytes_down``, ``seconds``, and, where the round loop records them,
``sampled``, ``connected``, ``epsilon_per_node`` {node: epsilon}, ``declines``
{reason: count} and ``failures`` {code: count}. Missing or None values give no scalar.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

__all__ = ["round_scalars", "tag_part"]

_SAFE = re.compile(r"[^A-Za-z0-9_.-]+")

#: row key -> tag, for the plain numeric fields
_PLAIN = {
    "accuracy": "eval/accuracy",
    "loss": "eval/loss",
    "auc": "eval/auc",
    "epsilon": "privacy/epsilon_max",
    "sampled": "participation/sampled",
    "clients": "participation/clients",
    "failed": "participation/failed",
    "declined": "participation/declined",
    "connected": "participation/connected",
    "bytes_up": "bytes/up",
    "bytes_down": "bytes/down",
    "seconds": "time/round_seconds",
}

_FEDERATED = ("accuracy", "loss", "auc", "nodes")


def tag_part(name: object) -> str:
    """``name`` made safe for a tag or label segment (letters, digits, ``_.-``)."""
    s = _SAFE.sub("_", str(name)).strip("_")
    return s[:64] or "_"


def _num(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, int | float):
        return None
    f = float(v)
    return f if math.isfinite(f) else None


def _per_key(out: dict[str, float], prefix: str, d: Any) -> None:
    if isinstance(d, Mapping):
        for k, v in d.items():
            f = _num(v)
            if f is not None:
                out[f"{prefix}/{tag_part(k)}"] = f


def round_scalars(row: Mapping[str, Any]) -> dict[str, float]:
    """The row's numeric figures keyed by tag (``eval/accuracy``, ``privacy/epsilon/<node>``,
    ``declines/<reason>``, ...); the ``round`` itself is the step, not a scalar."""
    out: dict[str, float] = {}
    for key, tag in _PLAIN.items():
        f = _num(row.get(key))
        if f is not None:
            out[tag] = f
    fed = row.get("federated")
    if isinstance(fed, Mapping):
        for key in _FEDERATED:
            f = _num(fed.get(key))
            if f is not None:
                out[f"federated/{key}"] = f
    _per_key(out, "privacy/epsilon", row.get("epsilon_per_node"))
    _per_key(out, "declines", row.get("declines"))
    _per_key(out, "failures", row.get("failures"))
    return out
