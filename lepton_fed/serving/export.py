"""Model (or run directory) -> compressed, quantized, signed serving artifact.

Artifact layout (``format_version`` 2)::

    OUT/
      model.int8.onnx          served model: raw features in, logits out (or
                               model.int8.pt / model.fp32.onnx, see
                               manifest["runtime"]["file"])
      model.fp32.safetensors   fp32 reference weights (after pruning)
      preprocess.json          input schema, scaler, class names, model spec
      signer.pub               Ed25519 public key of the signer (PEM)
      manifest.json            everything below + sha256 of every other file
      manifest.sig             Ed25519 signature of the canonical manifest bytes

An ONNX model carries its preprocessing as a first stage
(:mod:`lepton_fed.serving.input_stage`): a plain ``onnxruntime.InferenceSession`` takes
raw feature values, in the column order ``manifest["runtime"]["inputs"]`` lists. A torch
model (the fallback) takes the scaled matrix; ``runtime.preprocessing`` says which.

The export never serves a model it has not measured (:mod:`lepton_fed.serving.measure`):
each int8 candidate, with its input stage, is run on the held-out rows and one that
loses more than ``max_accuracy_drop`` accuracy against the (pruned) fp32 model is
rejected, falling back to fp32 with the reason recorded.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from lepton_fed.compression.prune import PruneSpec, parse_prune_spec
from lepton_fed.compression.quantize import QUANTIZATION_MODES, require_serve_extra
from lepton_fed.data.preprocess import Preprocessor
from lepton_fed.errors import ConfigError, IncompatibleModelError
from lepton_fed.serving.input_stage import InputLayout
from lepton_fed.serving.manifest import FORMAT_VERSION
from lepton_fed.serving.measure import ExportRequest, measure_and_stage
from lepton_fed.serving.run_dir import RUN_FILES, load_run
from lepton_fed.serving.signing import (
    MANIFEST,
    load_or_create_signing_key,
    sha256_file,
    sign_manifest,
)

__all__ = [
    "FORMAT_VERSION",
    "QUANTIZATION_MODES",
    "RUN_FILES",
    "export_artifact",
    "export_model",
    "load_run",
]


def _build(spec: Mapping[str, Any], state: Mapping[str, Any]) -> Any:
    from lepton_fed.models import build_model

    try:
        model = build_model(dict(spec))
        model.load_state_dict(dict(state), strict=True)
    except (RuntimeError, ValueError, KeyError, TypeError) as e:
        raise IncompatibleModelError(
            f"the weights do not fit the model spec {dict(spec)}: {e}"
        ) from None
    return model.eval()


def _check_out(out: Path, overwrite: bool) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        if not overwrite:
            raise ConfigError(
                f"--out {out} exists and is not empty (pass overwrite=True)"
            )
        if not (out / MANIFEST).is_file():
            raise ConfigError(f"refusing to overwrite {out}: it is not an artifact")


def _check_args(
    out: Path, overwrite: bool, quantization: str, max_accuracy_drop: float, prune: str
) -> PruneSpec:
    """Every argument problem before any model is built."""
    if quantization not in QUANTIZATION_MODES:
        raise ConfigError(
            f"quantization={quantization!r}; choose one of {list(QUANTIZATION_MODES)}"
        )
    if not 0.0 <= float(max_accuracy_drop) <= 1.0:
        raise ConfigError(f"max_accuracy_drop={max_accuracy_drop} must be in [0, 1]")
    spec = parse_prune_spec(prune)
    _check_out(out, overwrite)
    require_serve_extra("onnx", "onnxruntime", "onnxscript")
    return spec


def _check_rows(
    X: Any, y: Any, pre: Preprocessor, where: str
) -> tuple[np.ndarray, np.ndarray]:
    """Held-out rows that fit the schema and the model, with labels in range."""
    if not pre.model.get("name"):
        raise ConfigError("the preprocessor has no model spec under 'model'")
    X = np.asarray(X, dtype=np.float32)
    y = np.asarray(y)
    if X.ndim != 2 or y.ndim != 1 or len(X) != len(y) or len(y) == 0:
        raise ConfigError(
            f"{where}: X {X.shape} and y {y.shape} must be a non-empty matrix and "
            "one label per row"
        )
    width, encoded = int(pre.model.get("num_features", -1)), InputLayout.of(pre).width
    if X.shape[1] != width or encoded != width:
        raise IncompatibleModelError(
            f"{where} has {X.shape[1]} columns and the schema encodes {encoded}; "
            f"the model expects {width}"
        )
    if not np.issubdtype(y.dtype, np.integer) or not (
        0 <= y.min() and y.max() < len(pre.class_names)
    ):
        raise ConfigError(
            f"{where}: labels must be integers in [0, {len(pre.class_names)})"
        )
    return X, y.astype(np.int64)


def _write(
    out: Path,
    model: Any,
    pre: Preprocessor,
    X: np.ndarray,
    y: np.ndarray,
    req: ExportRequest,
    signing_key_path: str | os.PathLike[str] | None,
) -> Path:
    """Measure and stage in a temporary sibling, sign, then rename into place."""
    key = load_or_create_signing_key(signing_key_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        stage, manifest = measure_and_stage(model, pre, X, y, work, req)
        manifest["files"] = {
            p.name: {"sha256": sha256_file(p), "bytes": p.stat().st_size}
            for p in sorted(stage.iterdir())
        }
        sign_manifest(stage, manifest, key)
        if out.exists():
            shutil.rmtree(out) if out.is_dir() else out.unlink()
        stage.rename(out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return out


def export_model(
    model: Any,
    preprocessor: Preprocessor,
    X: Any,
    y: Any,
    out_dir: str | os.PathLike[str],
    *,
    summary: Mapping[str, Any] | None = None,
    prune: str = "none",
    signing_key_path: str | os.PathLike[str] | None = None,
    calibration: int | None = 256,
    quantization: str = "auto",
    max_accuracy_drop: float = 0.02,
    latency_seconds: float = 0.3,
    overwrite: bool = False,
) -> Path:
    """Prune, quantize, evaluate, and sign a trained model (no run directory needed).

    Args:
        model: the trained torch model. ``preprocessor.model`` is its spec: the
            artifact rebuilds the model from the spec, so the weights must fit it.
        preprocessor: the schema, scaler and class names the model was trained with.
        X: held-out rows, **encoded and unscaled** (``float32[n, num_features]``, what
            :meth:`~lepton_fed.data.preprocess.Preprocessor.encode_rows` returns or a
            dataset's ``TabularData.X``).
        y: their integer labels.
        out_dir: the artifact directory to create; written in a temporary sibling and
            renamed at the end, so a failed export leaves nothing half-written.
        summary: the training summary (``privacy``, ``rounds_completed``...) recorded
            in the manifest.
        prune: ``none`` | ``magnitude:AMOUNT`` | ``structured:AMOUNT``.
        signing_key_path: Ed25519 PEM private key (the federation signing key). ``None``
            uses (and on first use creates) the local key, see
            :func:`~lepton_fed.serving.signing.load_or_create_signing_key`.
        calibration: held-out rows used to calibrate static int8 (``None``/0 disables
            static). These rows are also part of the accuracy evaluation; the manifest
            says so.
        quantization: ``auto`` (ONNX Runtime dynamic and static, plus linear-only
            dynamic for CNNs; keep the more accurate, or the faster when within
            ``ACCURACY_TIE``; torch dynamic if ONNX fails), ``dynamic``, ``static``,
            ``torch`` (torch.ao dynamic only) or ``none`` (serve fp32).
        max_accuracy_drop: reject an int8 candidate that loses more held-out accuracy
            than this (absolute, e.g. 0.02 = 2 points) against fp32.
        latency_seconds: time budget per latency measurement.
        overwrite: replace an existing artifact at ``out_dir``.

    Returns:
        ``out_dir`` as a Path.

    Raises:
        ConfigError: a bad argument, rows or labels that do not fit, or an existing
            ``out_dir`` without ``overwrite``.
        IncompatibleModelError: the weights or the rows do not fit the model spec.
        MissingExtra: the ``lepton-fed[serve]`` extra is missing.
    """
    from safetensors.torch import save

    out = Path(out_dir)
    prune_spec = _check_args(out, overwrite, quantization, max_accuracy_drop, prune)
    X, y = _check_rows(X, y, preprocessor, "X")
    rebuilt = _build(preprocessor.model, model.state_dict())
    state = {k: v.contiguous() for k, v in rebuilt.state_dict().items()}
    req = ExportRequest(
        prune_spec, quantization, calibration, float(max_accuracy_drop),
        float(latency_seconds), dict(summary or {}),
        {"run": None, "model_sha256": hashlib.sha256(save(state)).hexdigest()},
        "given rows",
    )  # fmt: skip
    return _write(out, rebuilt, preprocessor, X, y, req, signing_key_path)


def export_artifact(
    run_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    prune: str = "none",
    signing_key_path: str | os.PathLike[str] | None = None,
    calibration: int | None = 256,
    quantization: str = "auto",
    max_accuracy_drop: float = 0.02,
    latency_seconds: float = 0.3,
    overwrite: bool = False,
) -> Path:
    """Prune, quantize, evaluate, and sign the final model of a run.

    The held-out rows are ``heldout.npz`` (stored scaled; the export measures on them
    unscaled, as users send them). Every keyword is :func:`export_model`'s.

    Args:
        run_dir: a ``simulate`` run directory (``model.safetensors``,
            ``preprocess.json``, ``heldout.npz``, ``summary.json``).
        out_dir: the artifact directory to create.

    Returns:
        ``out_dir`` as a Path.

    Raises:
        ConfigError: a bad argument, a RUN_DIR that is not a run directory (the missing
            files are named), or an existing ``out_dir`` without ``overwrite``.
        IncompatibleModelError: the weights do not fit the model spec.
        MissingExtra: the ``lepton-fed[serve]`` extra is missing.
    """
    out = Path(out_dir)
    prune_spec = _check_args(out, overwrite, quantization, max_accuracy_drop, prune)
    run = load_run(run_dir)
    pre: Preprocessor = run["preprocessor"]
    scaled = run["X"]
    if scaled.shape[1] != int(pre.model.get("num_features", -1)):
        raise IncompatibleModelError(
            f"heldout.npz has {scaled.shape[1]} columns; the model expects "
            f"{pre.model.get('num_features')}"
        )
    X = (scaled * pre.scaler.scale + pre.scaler.mean).astype(np.float32)
    X, y = _check_rows(X, run["y"], pre, "heldout.npz")
    model = _build(pre.model, run["state"])
    req = ExportRequest(
        prune_spec, quantization, calibration, float(max_accuracy_drop),
        float(latency_seconds), run["summary"],
        {"run": Path(run_dir).resolve().name,
         "model_sha256": sha256_file(Path(run_dir) / "model.safetensors")},
        "heldout.npz",
    )  # fmt: skip
    return _write(out, model, pre, X, y, req, signing_key_path)
