"""The artifact manifest: what was served, how it was measured, and where it came from.

``files`` (sha256 and size of every other file) and ``signer`` are added when the
manifest is signed (:func:`~lepton_fed.serving.signing.sign_manifest`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from lepton_fed.data.preprocess import Preprocessor

__all__ = ["FORMAT_VERSION", "READABLE_FORMATS", "REFERENCE", "ExportMeasurements"]

#: 2: an ONNX model takes raw features (``runtime.preprocessing == "graph"``, inputs
#: listed under ``runtime.inputs``); 1: it took the scaled matrix.
FORMAT_VERSION = 2
#: Formats :func:`~lepton_fed.serving.runtime.load_artifact` still reads.
READABLE_FORMATS = (1, 2)
REFERENCE = "model.fp32.safetensors"
_VERSIONED = (
    "lepton-fed", "torch", "onnx", "onnxruntime", "onnxscript", "numpy",
    "cryptography", "safetensors",
)  # fmt: skip


def _versions() -> dict[str, str | None]:
    from importlib import metadata

    out: dict[str, str | None] = {}
    for name in _VERSIONED:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def _privacy(summary: Mapping[str, Any]) -> dict[str, Any]:
    p = summary.get("privacy") or {}
    return {
        "mode": p.get("mode", "none"),
        "epsilon": p.get("epsilon"),
        "delta": p.get("delta"),
    }


@dataclass
class ExportMeasurements:
    """What an export measured and chose; :meth:`manifest` turns it into the manifest."""

    spec: dict[str, Any]
    pre: Preprocessor
    summary: dict[str, Any]
    rows: int
    quantization: str
    max_accuracy_drop: float
    prune_report: dict[str, Any]
    fp32_unpruned: float = 0.0
    fp32_acc: float = 0.0
    fp32_lat: dict[str, Any] = field(default_factory=dict)
    ort_fp32_lat: dict[str, Any] | None = None
    fp32_onnx_bytes: int | None = None
    calibration_rows: int | None = None
    evaluated: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    runtime: dict[str, Any] = field(default_factory=dict)
    served_acc: float = 0.0
    served_lat: dict[str, Any] = field(default_factory=dict)
    data: str = "heldout.npz"

    def manifest(self, stage: Path, source: Mapping[str, Any]) -> dict[str, Any]:
        """The manifest, without ``files`` and ``signer`` (added when signing).

        Args:
            stage: the artifact directory being written.
            source: where the model came from (``{"run", "model_sha256"}``).
        """
        int8 = self.runtime["precision"] == "int8"
        served = stage / self.runtime["file"]
        ref = stage / REFERENCE
        like = self.fp32_onnx_bytes if served.suffix == ".onnx" else ref.stat().st_size
        lat, srv = self.fp32_lat, self.served_lat
        static_used = any(r["method"] == "static" for r in self.evaluated)
        return {
            "format": "lepton-fed-artifact",
            "format_version": FORMAT_VERSION,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "model": self.spec,
            "task": self.pre.task,
            "input_schema": {
                "features": [f.to_dict() for f in self.pre.features],
                "encoded_width": int(self.spec["num_features"]),
            },
            "class_names": list(self.pre.class_names),
            "runtime": self.runtime,
            "reference": {"file": REFERENCE, "engine": "torch", "precision": "fp32"},
            "quantization": {
                "requested": self.quantization,
                "applied": int8,
                "max_accuracy_drop": self.max_accuracy_drop,
                "calibration": {"source": self.data, "rows": self.calibration_rows}
                if static_used
                else None,
                "candidates": [
                    {k: v for k, v in r.items() if k != "candidate"}
                    for r in self.evaluated
                ],
                "notes": self.notes,
            },
            "pruning": {
                **self.prune_report,
                "accuracy_before": self.fp32_unpruned,
                "accuracy_after": self.fp32_acc,
                "accuracy_cost": self.fp32_unpruned - self.fp32_acc,
            },
            "evaluation": {
                "data": self.data,
                "rows": self.rows,
                "accuracy": {
                    "fp32_unpruned": self.fp32_unpruned,
                    "fp32": self.fp32_acc,
                    "int8": self.served_acc if int8 else None,
                    "served": self.served_acc,
                    "drop": self.fp32_acc - self.served_acc,
                },
                "size_bytes": {
                    "fp32_safetensors": ref.stat().st_size,
                    "fp32_onnx": self.fp32_onnx_bytes,
                    "served": served.stat().st_size,
                    "ratio_served_vs_fp32": served.stat().st_size / max(1, like or 1),
                },
                "latency_us": {
                    "threads": 1,
                    "fp32_torch": lat,
                    "fp32_onnxruntime": self.ort_fp32_lat,
                    "served": srv,
                    "speedup_b1": lat["b1"]["p50_us"] / max(srv["b1"]["p50_us"], 1e-9),
                    "speedup_b64": lat["b64"]["p50_us"]
                    / max(srv["b64"]["p50_us"], 1e-9),
                },
            },
            "privacy": _privacy(self.summary),
            "training": {
                "rounds": self.summary.get("rounds_completed"),
                "num_clients": self.summary.get("num_clients"),
                "final": self.summary.get("final"),
                "secagg": bool(
                    (self.summary.get("secagg") or {}).get("enabled", False)
                ),
            },
            "source": dict(source),
            "versions": _versions(),
        }
