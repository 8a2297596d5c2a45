"""Model registry: name -> builder. ``register_model`` refuses duplicates unless forced."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from torch import nn

from lepton_fed.models.builders import CNN, MLP, LogisticRegression

__all__ = ["available_models", "build_model", "register_model"]

Builder = Callable[..., nn.Module]

_REGISTRY: dict[str, Builder] = {}


def register_model(name: str, builder: Builder, *, force: bool = False) -> None:
    """Register ``builder(num_features=, num_classes=, input_shape=, **kwargs)``.

    Raises:
        ValueError: if ``name`` is taken and ``force`` is False.
    """
    if name in _REGISTRY and not force:
        raise ValueError(f"model {name!r} is already registered (pass force=True)")
    _REGISTRY[name] = builder


def available_models() -> list[str]:
    """Sorted names of every registered model."""
    return sorted(_REGISTRY)


def _logreg(*, num_features: int, num_classes: int, **_: Any) -> nn.Module:
    return LogisticRegression(num_features, num_classes)


def _mlp(
    *, num_features: int, num_classes: int, hidden: Sequence[int] = (128, 128), **_: Any
) -> nn.Module:
    return MLP(num_features, num_classes, hidden)


def _cnn(
    *,
    num_features: int,
    num_classes: int,
    input_shape: Sequence[int] | None = None,
    channels: Sequence[int] = (16, 32),
    **_: Any,
) -> nn.Module:
    return CNN(num_features, num_classes, input_shape, channels)


register_model("logreg", _logreg)
register_model("mlp", _mlp)
register_model("cnn", _cnn)


def build_model(spec: Mapping[str, Any]) -> nn.Module:
    """Build the model a spec mapping describes (see :func:`lepton_fed.models.spec.model_spec`).

    Raises:
        ValueError: unknown model name (the valid names are listed).
    """
    name = spec["name"]
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; choose one of {available_models()}")
    kwargs = {k: v for k, v in spec.items() if k != "name" and v is not None}
    return _REGISTRY[name](**kwargs)
