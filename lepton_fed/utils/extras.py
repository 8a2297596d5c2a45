"""Optional dependencies: which ``lepton-fed[...]`` extra installs a module, and a check
that raises :class:`~lepton_fed.errors.MissingExtra` (naming the pip command) before any
work starts, instead of an ImportError traceback halfway through."""

from __future__ import annotations

import importlib

from lepton_fed.errors import MissingExtra

__all__ = ["EXTRA_OF", "as_missing_extra", "require"]

#: top-level module -> the extra that installs it (pyproject.toml ``optional-dependencies``).
EXTRA_OF = {
    "onnx": "serve",
    "onnxruntime": "serve",
    "onnxscript": "serve",
    "fastapi": "serve",
    "uvicorn": "serve",
    "pyarrow": "parquet",
    "prometheus_client": "observe",
    "tensorboard": "observe",
}


def require(*modules: str, purpose: str) -> None:
    """Import every one of ``modules``, or raise one :class:`MissingExtra` naming them all.

    Args:
        modules: top-level module names, each a key of :data:`EXTRA_OF`.
        purpose: what needs them, shown first in the message (``"lepton-fed serve"``).

    Raises:
        MissingExtra: at least one module cannot be imported.
        KeyError: a module that no extra installs (a programming error).
    """
    missing = []
    for name in modules:
        extra = EXTRA_OF[name]
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append((extra, name))
    if missing:
        raise MissingExtra(missing[0][0], [m for _, m in missing], purpose)


def as_missing_extra(
    exc: ImportError, purpose: str = "this command"
) -> MissingExtra | None:
    """The :class:`MissingExtra` an ImportError of an optional module stands for, else None.

    Used by the CLI's error guard as a safety net for an optional import that no
    :func:`require` call guarded.
    """
    if isinstance(exc, MissingExtra):
        return exc
    top = (exc.name or "").split(".")[0]
    if top in EXTRA_OF:
        return MissingExtra(EXTRA_OF[top], [top], purpose)
    return None
