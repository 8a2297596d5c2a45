"""Model weights <-> flat vectors / ArrayRecords, in the state_dict's fixed key order."""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import torch
from torch import nn

__all__ = ["flatten_state", "get_state", "set_state", "unflatten_state"]


def get_state(model: nn.Module) -> OrderedDict[str, np.ndarray]:
    """Copy of the model's parameters and buffers as float32/int numpy arrays."""
    return OrderedDict(
        (k, v.detach().cpu().numpy().copy()) for k, v in model.state_dict().items()
    )


def set_state(model: nn.Module, state: dict[str, np.ndarray]) -> None:
    """Load numpy arrays into ``model`` (strict: keys must match exactly)."""
    model.load_state_dict(
        OrderedDict((k, torch.as_tensor(np.asarray(v))) for k, v in state.items()),
        strict=True,
    )


def flatten_state(state: dict[str, np.ndarray]) -> np.ndarray:
    """Concatenate every array, in key order, into one float64 vector."""
    if not state:
        return np.zeros(0)
    return np.concatenate([np.asarray(v, dtype=np.float64).ravel() for v in state.values()])


def unflatten_state(
    vec: np.ndarray, like: dict[str, np.ndarray]
) -> OrderedDict[str, np.ndarray]:
    """Inverse of :func:`flatten_state`, using ``like`` for keys, shapes and dtypes.

    Raises:
        ValueError: if ``vec`` has the wrong length.
    """
    total = sum(int(np.asarray(v).size) for v in like.values())
    if vec.size != total:
        raise ValueError(f"vector has {vec.size} entries, model has {total}")
    out: OrderedDict[str, np.ndarray] = OrderedDict()
    i = 0
    for k, v in like.items():
        a = np.asarray(v)
        out[k] = vec[i : i + a.size].reshape(a.shape).astype(a.dtype)
        i += a.size
    return out
