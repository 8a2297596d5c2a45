"""Measuring and choosing the served model: the body of an export.

Prune, quantize (:mod:`lepton_fed.compression.quantize`), put the input stage in front
of every ONNX model (:mod:`lepton_fed.serving.input_stage`), run each candidate on the
held-out rows exactly as it will be served (raw features in), reject any that loses more
than ``max_accuracy_drop`` against fp32, and keep the most accurate (the fastest within
:data:`ACCURACY_TIE`).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lepton_fed.compression.prune import PruneSpec
from lepton_fed.compression.quantize import OUTPUT_NAME, quantize_candidates
from lepton_fed.data.preprocess import Preprocessor
from lepton_fed.serving.input_stage import InputLayout, add_input_stage
from lepton_fed.serving.manifest import REFERENCE, ExportMeasurements

__all__ = ["ACCURACY_TIE", "ExportRequest", "measure_and_stage"]

#: Held-out accuracies closer than this count as equal when choosing a candidate.
ACCURACY_TIE = 0.005


@dataclass(frozen=True)
class ExportRequest:
    """What an export was asked for, checked by the caller.

    Attributes:
        prune: the parsed pruning request.
        quantization: one of :data:`~lepton_fed.compression.quantize.QUANTIZATION_MODES`.
        calibration: rows for static int8 calibration (``None``: no static).
        max_accuracy_drop: the accuracy an int8 model may lose against fp32.
        latency_seconds: time budget per latency measurement.
        summary: the training summary recorded in the manifest.
        source: the manifest's ``source`` (``{"run", "model_sha256"}``).
        data: what the held-out rows are, for the manifest.
    """

    prune: PruneSpec
    quantization: str
    calibration: int | None
    max_accuracy_drop: float
    latency_seconds: float
    summary: Mapping[str, Any]
    source: Mapping[str, Any]
    data: str


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


def _evaluate(
    ex: ExportMeasurements,
    cands: list[Any],
    X: np.ndarray,
    y: np.ndarray,
    seconds: float,
) -> None:
    """Accuracy of every candidate on the encoded, unscaled rows ``X`` (the served
    pipeline: ONNX graphs scale in-graph); latency of those within the accuracy budget."""
    from lepton_fed.compression.evaluate import accuracy
    from lepton_fed.serving.runtime import load_backend

    for c in cands:
        try:
            fn = load_backend(
                c.runtime, c.precision, c.path.read_bytes(), ex.spec, pre=ex.pre,
                in_graph=c.runtime == "onnxruntime",
            )  # fmt: skip
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


def _stage(cands: list[Any], fp32: Path | None, pre: Preprocessor) -> Path | None:
    """Put the input stage in front of every ONNX model (after quantization, so the
    stage stays fp32 and calibration saw the scaled rows the model was trained on)."""
    for c in cands:
        if c.runtime == "onnxruntime":
            c.path = add_input_stage(c.path, pre, c.path.with_suffix(".raw.onnx"))
    return (
        None
        if fp32 is None
        else add_input_stage(fp32, pre, fp32.with_suffix(".raw.onnx"))
    )


def _serve_fp32(
    ex: ExportMeasurements, stage: Path, fp32_onnx: Path | None, fp32_fn: Any
) -> tuple[str, Any]:
    """No usable int8 model: the staged fp32 ONNX graph, else the torch reference."""
    from lepton_fed.serving.runtime import OrtBackend, ScaledBackend

    if ex.quantization != "none":
        ex.notes.append("no usable int8 model: serving fp32")
    if fp32_onnx is not None:
        shutil.copyfile(fp32_onnx, stage / "model.fp32.onnx")
        ex.runtime = {"engine": "onnxruntime", "precision": "fp32", "method": "none"}
        return "model.fp32.onnx", OrtBackend(fp32_onnx, layout=InputLayout.of(ex.pre))
    ex.runtime = {"engine": "torch", "precision": "fp32", "method": "none"}
    return REFERENCE, ScaledBackend(fp32_fn, ex.pre.scaler)


def measure_and_stage(
    model: Any,
    pre: Preprocessor,
    X: np.ndarray,
    y: np.ndarray,
    work: Path,
    req: ExportRequest,
) -> tuple[Path, dict[str, Any]]:
    """Write an artifact's files (unsigned) into ``work/stage``.

    Args:
        model: the fp32 torch model, fitting ``pre.model``.
        pre: its preprocessing.
        X: held-out rows, encoded and unscaled; ``y``: their labels.
        work: an empty scratch directory.
        req: the checked request.

    Returns:
        ``(stage_dir, manifest)``; the manifest lacks ``files`` and ``signer``.
    """
    from safetensors.torch import save_file

    from lepton_fed.compression.evaluate import accuracy, single_thread
    from lepton_fed.compression.prune import prune_model
    from lepton_fed.serving.runtime import OrtBackend, TorchBackend

    seconds = float(req.latency_seconds)
    spec = dict(pre.model)
    stage = work / "stage"
    stage.mkdir()
    Xs = pre.scaler.transform(X)  # what the torch model (and calibration) takes
    with single_thread():
        fp32_unpruned = accuracy(TorchBackend(model), Xs, y)
        pruned, report = prune_model(model, req.prune)
        if report.hidden_after is not None:
            spec["hidden"] = report.hidden_after
        pre = Preprocessor(pre.features, pre.scaler, pre.class_names, spec, pre.task)
        ex = ExportMeasurements(
            spec, pre, dict(req.summary), int(len(y)), req.quantization,
            float(req.max_accuracy_drop), report.to_dict(), fp32_unpruned, data=req.data,
        )  # fmt: skip
        fp32_fn = TorchBackend(pruned)
        ex.fp32_acc = accuracy(fp32_fn, Xs, y)
        ex.fp32_lat = _latencies(fp32_fn, Xs, seconds)
        state = {k: v.contiguous() for k, v in pruned.state_dict().items()}
        save_file(state, str(stage / REFERENCE))
        calib = Xs[: int(req.calibration)] if req.calibration else None
        ex.calibration_rows = None if calib is None else int(len(calib))
        cands, fp32_core = quantize_candidates(
            pruned, int(spec["num_features"]), work, mode=req.quantization,
            calibration=calib, notes=ex.notes,
        )  # fmt: skip
        fp32_onnx = _stage(cands, fp32_core, pre)
        _evaluate(ex, cands, X, y, seconds)
        ok = _rank([r for r in ex.evaluated if "rejected" not in r])
        if ok:
            c = ok[0]["candidate"]
            name = "model.int8.onnx" if c.runtime == "onnxruntime" else "model.int8.pt"
            shutil.copyfile(c.path, stage / name)
            ex.runtime = {"engine": c.runtime, "precision": "int8", "method": c.method}
            ex.served_acc, ex.served_lat = ok[0]["accuracy"], ok[0]["latency"]
        else:
            name, fn = _serve_fp32(ex, stage, fp32_onnx, fp32_fn)
            ex.served_acc = accuracy(fn, X, y)
            ex.served_lat = _latencies(fn, X, seconds)
    if fp32_onnx is not None:
        ex.fp32_onnx_bytes = fp32_onnx.stat().st_size
        fp32_ort = OrtBackend(fp32_onnx, layout=InputLayout.of(pre))
        ex.ort_fp32_lat = _latencies(fp32_ort, X, seconds)
    onnx = ex.runtime["engine"] == "onnxruntime"
    ex.runtime.update(
        file=name,
        # ONNX: raw features in, the graph encodes and scales; torch: the scaled matrix
        preprocessing="graph" if onnx else "preprocess.json",
        **({"inputs": InputLayout.of(pre).manifest_inputs()} if onnx else {}),
        output=OUTPUT_NAME,
        # Dynamic int8 scales activations per call over the whole batch, so a
        # row's probabilities can shift slightly with the other rows in its batch.
        batch_invariant=not ex.runtime["method"].startswith("dynamic"),
        threads_measured=1,
    )
    (stage / "preprocess.json").write_text(
        json.dumps(pre.to_dict(), indent=2, allow_nan=False) + "\n"
    )
    return stage, ex.manifest(stage, req.source)
