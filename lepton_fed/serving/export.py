"""Run directory -> compressed, quantized, signed serving artifact.

Artifact layout (``format_version`` 1)::

    OUT/
      model.int8.onnx          served model (or model.int8.pt / model.fp32.onnx, see
                               manifest["runtime"]["file"])
      model.fp32.safetensors   fp32 reference weights (after pruning)
      preprocess.json          input schema, scaler, class names, model spec
      signer.pub               Ed25519 public key of the signer (PEM)
      manifest.json            everything below + sha256 of every other file
      manifest.sig             Ed25519 signature of the canonical manifest bytes

The export never serves a model it has not measured: each int8 candidate is run on
``heldout.npz`` and one that loses more than ``max_accuracy_drop`` accuracy against the
(pruned) fp32 model is rejected, falling back to fp32 with the reason recorded.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from lepton_fed.compression.quantize import (
    INPUT_NAME,
    OUTPUT_NAME,
    QUANTIZATION_MODES,
    quantize_candidates,
    require_serve_extra,
)
from lepton_fed.data.preprocess import Preprocessor
from lepton_fed.errors import ConfigError, IncompatibleModelError
from lepton_fed.serving.manifest import FORMAT_VERSION, REFERENCE, ExportMeasurements
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
    "load_run",
]

#: Held-out accuracies closer than this count as equal when choosing a candidate.
ACCURACY_TIE = 0.005


def _build(spec: Mapping[str, Any], state: Mapping[str, Any]) -> Any:
    from lepton_fed.models import build_model

    try:
        model = build_model(dict(spec))
        model.load_state_dict(dict(state), strict=True)
    except (RuntimeError, ValueError, KeyError, TypeError) as e:
        raise IncompatibleModelError(
            f"model.safetensors does not fit the model spec {dict(spec)}: {e}"
        ) from None
    return model.eval()


def _rank(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Most accurate first; within ``ACCURACY_TIE`` of the best, fastest first.

    Speed is the sum of the median latencies at batch 1 and batch 64, so neither
    single-row serving nor batched scoring is ignored.
    """
    if not rows:
        return []
    best = max(r["accuracy"] for r in rows)

    def speed(r: dict[str, Any]) -> float:
        return float(r["latency"]["b1"]["p50_us"] + r["latency"]["b64"]["p50_us"])

    return sorted(rows, key=lambda r: (r["accuracy"] < best - ACCURACY_TIE, speed(r)))


def _latencies(fn: Any, X: np.ndarray, seconds: float) -> dict[str, Any]:
    from lepton_fed.compression.evaluate import latency

    return {f"b{b}": latency(fn, X[:1024], b, max_seconds=seconds) for b in (1, 64)}


def _check_out(out: Path, overwrite: bool) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        if not overwrite:
            raise ConfigError(
                f"--out {out} exists and is not empty (pass overwrite=True)"
            )
        if not (out / MANIFEST).is_file():
            raise ConfigError(f"refusing to overwrite {out}: it is not an artifact")


def _evaluate(
    ex: ExportMeasurements,
    cands: list[Any],
    X: np.ndarray,
    y: np.ndarray,
    seconds: float,
) -> None:
    """Accuracy of every candidate; latency of those within the accuracy budget."""
    from lepton_fed.compression.evaluate import accuracy
    from lepton_fed.serving.runtime import load_backend

    for c in cands:
        try:
            fn = load_backend(c.runtime, c.precision, c.path.read_bytes(), ex.spec)
            acc = accuracy(fn, X, y)
        except Exception as e:
            ex.notes.append(f"{c.runtime} {c.method} int8 does not run: {e}")
            continue
        row = {
            "runtime": c.runtime, "method": c.method, "accuracy": acc,
            "bytes": c.path.stat().st_size, "quantized_ops": c.quantized_ops,
            "candidate": c,
        }  # fmt: skip
        drop = ex.fp32_acc - acc
        if drop > ex.max_accuracy_drop:
            row["rejected"] = f"accuracy drop {drop:.4f} > {ex.max_accuracy_drop}"
            ex.notes.append(f"{c.runtime} {c.method} int8 rejected: {row['rejected']}")
        else:
            row["latency"] = _latencies(fn, X, seconds)
        ex.evaluated.append(row)


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

    Args:
        run_dir: a ``simulate`` run directory (``model.safetensors``,
            ``preprocess.json``, ``heldout.npz``, ``summary.json``).
        out_dir: the artifact directory to create; written in a temporary sibling and
            renamed at the end, so a failed export leaves nothing half-written.
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
        ConfigError: a bad argument, a RUN_DIR that is not a run directory (the missing
            files are named), or an existing ``out_dir`` without ``overwrite``.
        IncompatibleModelError: the weights do not fit the model spec.
        ImportError: the ``lepton-fed[serve]`` extra is missing.
    """
    from safetensors.torch import save_file

    from lepton_fed.compression.evaluate import accuracy, single_thread
    from lepton_fed.compression.prune import parse_prune_spec, prune_model
    from lepton_fed.serving.runtime import OrtBackend, TorchBackend

    if quantization not in QUANTIZATION_MODES:
        raise ConfigError(
            f"quantization={quantization!r}; choose one of {list(QUANTIZATION_MODES)}"
        )
    if not 0.0 <= float(max_accuracy_drop) <= 1.0:
        raise ConfigError(f"max_accuracy_drop={max_accuracy_drop} must be in [0, 1]")
    prune_spec = parse_prune_spec(prune)
    out = Path(out_dir)
    _check_out(out, overwrite)
    require_serve_extra("onnxruntime")
    run = load_run(run_dir)
    pre: Preprocessor = run["preprocessor"]
    X, y = run["X"], run["y"]
    spec = dict(pre.model)
    if X.shape[1] != int(spec.get("num_features", -1)):
        raise IncompatibleModelError(
            f"heldout.npz has {X.shape[1]} columns; the model expects "
            f"{spec.get('num_features')}"
        )
    key = load_or_create_signing_key(signing_key_path)
    model = _build(spec, run["state"])

    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        stage = work / "stage"
        stage.mkdir()
        with single_thread():
            fp32_unpruned = accuracy(TorchBackend(model), X, y)
            pruned, report = prune_model(model, prune_spec)
            if report.hidden_after is not None:
                spec["hidden"] = report.hidden_after
            ex = ExportMeasurements(
                spec, pre, run["summary"], int(len(y)), quantization,
                float(max_accuracy_drop), report.to_dict(), fp32_unpruned,
            )  # fmt: skip
            fp32_fn = TorchBackend(pruned)
            ex.fp32_acc = accuracy(fp32_fn, X, y)
            ex.fp32_lat = _latencies(fp32_fn, X, latency_seconds)
            state = {k: v.contiguous() for k, v in pruned.state_dict().items()}
            save_file(state, str(stage / REFERENCE))
            calib = X[: int(calibration)] if calibration else None
            ex.calibration_rows = None if calib is None else int(len(calib))
            cands, fp32_onnx = quantize_candidates(
                pruned, int(spec["num_features"]), work, mode=quantization,
                calibration=calib, notes=ex.notes,
            )  # fmt: skip
            _evaluate(ex, cands, X, y, latency_seconds)
            ok = _rank([r for r in ex.evaluated if "rejected" not in r])
            if ok:
                c = ok[0]["candidate"]
                name = (
                    "model.int8.onnx" if c.runtime == "onnxruntime" else "model.int8.pt"
                )
                shutil.copyfile(c.path, stage / name)
                ex.runtime = {
                    "engine": c.runtime,
                    "precision": "int8",
                    "method": c.method,
                }
                ex.served_acc, ex.served_lat = ok[0]["accuracy"], ok[0]["latency"]
            else:
                if quantization != "none":
                    ex.notes.append("no usable int8 model: serving fp32")
                if fp32_onnx is not None:
                    name = "model.fp32.onnx"
                    shutil.copyfile(fp32_onnx, stage / name)
                    fn: Any = OrtBackend(fp32_onnx)
                    ex.runtime = {"engine": "onnxruntime", "precision": "fp32"}
                else:
                    name, fn = REFERENCE, fp32_fn
                    ex.runtime = {"engine": "torch", "precision": "fp32"}
                ex.runtime["method"] = "none"
                ex.served_acc = accuracy(fn, X, y)
                ex.served_lat = _latencies(fn, X, latency_seconds)
        if fp32_onnx is not None:
            ex.fp32_onnx_bytes = fp32_onnx.stat().st_size
            ex.ort_fp32_lat = _latencies(OrtBackend(fp32_onnx), X, latency_seconds)
        ex.runtime.update(
            file=name,
            input=INPUT_NAME,
            output=OUTPUT_NAME,
            # Dynamic int8 scales activations per call over the whole batch, so a
            # row's probabilities can shift slightly with the other rows in its batch.
            batch_invariant=not ex.runtime["method"].startswith("dynamic"),
            threads_measured=1,
        )
        pre_out = Preprocessor(
            pre.features, pre.scaler, pre.class_names, spec, pre.task
        )
        (stage / "preprocess.json").write_text(
            json.dumps(pre_out.to_dict(), indent=2, allow_nan=False) + "\n"
        )
        manifest = ex.manifest(stage, Path(run_dir))
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
