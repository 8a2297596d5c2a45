"""Reading a ``simulate`` run directory: the inputs of an export, checked first."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from lepton_fed.data.preprocess import Preprocessor
from lepton_fed.errors import ConfigError

__all__ = ["RUN_FILES", "load_run"]

RUN_FILES = ("model.safetensors", "preprocess.json", "heldout.npz", "summary.json")


def load_run(run_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """Read what export needs from a run directory, checking it first.

    Returns:
        ``{"preprocessor", "summary", "state", "X", "y"}``.

    Raises:
        ConfigError: not a run directory (every missing file is named) or a malformed
            file.
    """
    from safetensors.torch import load_file

    d = Path(run_dir)
    if not d.is_dir():
        raise ConfigError(f"RUN_DIR {d} does not exist or is not a directory")
    missing = [f for f in RUN_FILES if not (d / f).is_file()]
    if missing:
        raise ConfigError(
            f"RUN_DIR {d} is not a run directory: missing {', '.join(missing)} "
            f"(a run directory holds {', '.join(RUN_FILES)})"
        )
    try:
        pre = Preprocessor.from_dict(json.loads((d / "preprocess.json").read_text()))
    except (ValueError, KeyError, TypeError) as e:
        raise ConfigError(f"{d / 'preprocess.json'} is malformed: {e}") from None
    if not pre.model.get("name"):
        raise ConfigError(f"{d / 'preprocess.json'} has no model spec under 'model'")
    try:
        summary = json.loads((d / "summary.json").read_text())
        if not isinstance(summary, dict):
            raise ValueError("not a JSON object")
    except ValueError as e:
        raise ConfigError(f"{d / 'summary.json'} is malformed: {e}") from None
    try:
        with np.load(d / "heldout.npz", allow_pickle=False) as npz:
            X = np.asarray(npz["X"], dtype=np.float32)
            y = np.asarray(npz["y"], dtype=np.int64)
    except (OSError, KeyError, ValueError) as e:
        raise ConfigError(
            f"{d / 'heldout.npz'} is malformed (needs X and y): {e}"
        ) from None
    if X.ndim != 2 or y.shape != (X.shape[0],):
        raise ConfigError(f"heldout.npz: X {X.shape} and y {y.shape} do not match")
    try:
        state = load_file(str(d / "model.safetensors"))
    except Exception as e:  # safetensors raises its own error types
        raise ConfigError(f"{d / 'model.safetensors'} is malformed: {e}") from None
    return {"preprocessor": pre, "summary": summary, "state": state, "X": X, "y": y}
