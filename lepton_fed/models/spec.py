"""The model spec of a run: what ``build_model`` needs, derived from config and data."""

from __future__ import annotations

from typing import Any

__all__ = ["model_spec"]


def model_spec(
    model_cfg: Any, *, num_features: int, num_classes: int, input_shape: Any = None
) -> dict[str, Any]:
    """A JSON-serialisable spec (``name``, sizes, ``input_shape``, ``hidden``)."""
    spec: dict[str, Any] = {
        "name": str(model_cfg.name),
        "num_features": int(num_features),
        "num_classes": int(num_classes),
        "input_shape": list(input_shape) if input_shape is not None else None,
    }
    hidden = getattr(model_cfg, "hidden", None) if not isinstance(model_cfg, dict) else model_cfg.get("hidden")
    if hidden is not None:
        spec["hidden"] = [int(h) for h in hidden]
    return spec
