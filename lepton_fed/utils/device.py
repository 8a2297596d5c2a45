"""Device selection: ``auto`` is CUDA when present, else CPU."""

from __future__ import annotations

__all__ = ["resolve_device"]


def resolve_device(name: str) -> str:
    """Map ``auto|cpu|cuda`` to a torch device string.

    Raises:
        ValueError: ``cuda`` asked for on a machine without CUDA.
    """
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device=cuda but CUDA is not available here; use device=auto or cpu")
    return name
