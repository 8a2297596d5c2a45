"""Loading a verified artifact and predicting with it, offline or behind HTTP.

:func:`load_artifact` verifies every hash and the signature *before* reading a model,
then re-checks the hash of the exact bytes it loads (so a file swapped after the
check is refused too). The ONNX Runtime path does not import torch.

Every backend a :class:`Predictor` holds takes the *encoded, unscaled* matrix
(:meth:`~lepton_fed.data.preprocess.Preprocessor.encode_rows`): an ONNX artifact scales
(and one-hot encodes) inside its graph (:mod:`lepton_fed.serving.input_stage`); a torch
artifact, or a format-1 ONNX artifact, is wrapped in a :class:`ScaledBackend`.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lepton_fed.data.preprocess import Preprocessor, Scaler
from lepton_fed.errors import ArtifactError
from lepton_fed.serving.input_stage import InputLayout
from lepton_fed.serving.manifest import FORMAT_VERSION, READABLE_FORMATS
from lepton_fed.serving.signing import Verification, verify_artifact

__all__ = [
    "OrtBackend",
    "Predictor",
    "ScaledBackend",
    "TorchBackend",
    "load_artifact",
    "load_backend",
    "softmax",
]

Backend = Callable[[np.ndarray], np.ndarray]


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float64 (stable: the row max is subtracted first)."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return np.asarray(e / e.sum(axis=1, keepdims=True))


class OrtBackend:
    """An ONNX Runtime CPU session: ``float32[n, d] -> logits[n, k]``.

    Args:
        model: path or serialized bytes of an ONNX model.
        threads: intra-op threads (1 is best for batch-1 serving and comparable
            latency numbers).
        layout: the graph takes raw features (an artifact's graph with its input
            stage); calls then take the encoded, unscaled matrix and feed each graph
            input from it. ``None``: the graph's one input gets the matrix as is.

    Raises:
        ValueError: the graph's inputs are not the ones ``layout`` names.
    """

    def __init__(
        self,
        model: str | os.PathLike[str] | bytes,
        threads: int = 1,
        layout: InputLayout | None = None,
    ) -> None:
        from lepton_fed.compression.quantize import require_serve_extra

        require_serve_extra("onnxruntime")
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = int(threads)
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.log_severity_level = 3
        src = model if isinstance(model, bytes) else str(model)
        self.session = ort.InferenceSession(src, so, providers=["CPUExecutionProvider"])
        names = [i.name for i in self.session.get_inputs()]
        self.input_name = names[0]
        self.layout = layout
        if layout is not None:
            want = [i["name"] for i in layout.manifest_inputs()]
            if names != want:
                raise ValueError(f"the graph's inputs are {names}; expected {want}")
        self._run = self.session.run

    def __call__(self, X: np.ndarray) -> np.ndarray:
        """Logits for ``X`` (encoded and unscaled when built with a ``layout``)."""
        if self.layout is not None and not self.layout.numeric_only:
            return np.asarray(self._run(None, self.layout.feed(X))[0])
        return np.asarray(self._run(None, {self.input_name: X})[0])


class ScaledBackend:
    """Scale an encoded matrix in Python, then call ``backend`` (torch artifacts)."""

    def __init__(self, backend: Backend, scaler: Scaler) -> None:
        self.backend = backend
        self.scaler = scaler

    def __call__(self, X: np.ndarray) -> np.ndarray:
        """Logits for an encoded, unscaled ``X``."""
        return self.backend(self.scaler.transform(X))


class TorchBackend:
    """A torch module in eval/inference mode: ``float32[n, d] -> logits[n, k]``."""

    def __init__(self, model: Any) -> None:
        self.model = model.eval()

    def __call__(self, X: np.ndarray) -> np.ndarray:
        """Logits for the matrix the model takes (scaled)."""
        import torch

        with torch.inference_mode():
            return np.asarray(
                self.model(torch.from_numpy(np.ascontiguousarray(X))).numpy()
            )


def load_backend(
    engine: str,
    precision: str,
    data: bytes,
    spec: Mapping[str, Any],
    *,
    threads: int = 1,
    pre: Preprocessor | None = None,
    in_graph: bool = False,
) -> Backend:
    """Build a backend from a model file's bytes.

    Args:
        engine: ``onnxruntime`` or ``torch``.
        precision: ``int8`` or ``fp32``.
        data: the model file's bytes.
        spec: the model spec (torch models are rebuilt from it).
        threads: intra-op threads for ONNX Runtime.
        pre: the artifact's preprocessing. With it, the backend takes the encoded,
            unscaled matrix; without it, the matrix the model itself takes.
        in_graph: the ONNX graph has the input stage (scaling happens in the graph);
            needs ``pre``.

    Raises:
        ArtifactError: an unknown engine/precision pair or bytes that do not load.
    """
    if in_graph and (pre is None or engine != "onnxruntime"):
        raise ArtifactError(
            "only an ONNX graph with its preprocessing can scale in-graph"
        )
    try:
        base: Backend
        if engine == "onnxruntime":
            layout = InputLayout.of(pre) if in_graph and pre is not None else None
            base = OrtBackend(data, threads=threads, layout=layout)
            if layout is not None:
                return base
        elif engine == "torch" and precision == "fp32":
            from safetensors.torch import load as load_st

            from lepton_fed.models import build_model

            model = build_model(dict(spec))
            model.load_state_dict(load_st(data), strict=True)
            base = TorchBackend(model)
        elif engine == "torch" and precision == "int8":
            from lepton_fed.compression.quantize import load_torch_int8

            base = TorchBackend(load_torch_int8(dict(spec), data))
        else:
            raise ArtifactError(
                f"unknown runtime {engine!r} with precision {precision!r}"
            )
    except (ImportError, ArtifactError):
        raise
    except Exception as e:  # a verified file that still does not load
        raise ArtifactError(f"cannot load the {engine} {precision} model: {e}") from e
    return base if pre is None else ScaledBackend(base, pre.scaler)


class Predictor:
    """Raw rows in, class names and probabilities out.

    Attributes:
        preprocessor: validates and encodes rows.
        backend: encoded, unscaled matrix -> logits (the model runtime).
        manifest: the verified manifest.
        verification: how the artifact was verified (``None`` if built by hand).
    """

    def __init__(
        self,
        preprocessor: Preprocessor,
        backend: Backend,
        manifest: Mapping[str, Any] | None = None,
        verification: Verification | None = None,
    ) -> None:
        self.preprocessor = preprocessor
        self.backend = backend
        self.manifest = dict(manifest or {})
        self.verification = verification
        self.class_names = list(preprocessor.class_names)

    def predict_logits(self, X: np.ndarray) -> np.ndarray:
        """Logits for an encoded (one-hot), *unscaled* ``float32[n, d]`` matrix."""
        X = np.ascontiguousarray(X, dtype=np.float32)
        if X.ndim != 2:
            raise ValueError(f"expected a 2-D matrix, got shape {X.shape}")
        return np.asarray(self.backend(X))

    def predict_matrix(self, X: np.ndarray) -> np.ndarray:
        """Class probabilities (float64 ``[n, k]``) for an encoded, unscaled matrix."""
        return softmax(self.predict_logits(X))

    def format(self, probs: np.ndarray) -> list[dict[str, Any]]:
        """``[{"class": name, "probabilities": {name: p}}]`` for a probability matrix."""
        names = self.class_names
        best = probs.argmax(axis=1).tolist()
        return [
            {"class": names[b], "probabilities": dict(zip(names, row, strict=True))}
            for b, row in zip(best, probs.tolist(), strict=True)
        ]

    def predict_rows(self, rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """Validate and encode raw rows, then predict (the backend scales).

        Raises:
            RowError: a malformed row; ``field`` names it (``rows[i].feature``).
        """
        X = self.preprocessor.encode_rows(rows)
        if len(X) == 0:
            return []
        return self.format(self.predict_matrix(X))


def _read_verified(d: Path, name: str, files: Mapping[str, Any]) -> bytes:
    data = (d / name).read_bytes()
    if hashlib.sha256(data).hexdigest() != files.get(name, {}).get("sha256"):
        raise ArtifactError(f"hash mismatch: {name} changed after verification")
    return data


def load_artifact(
    artifact_dir: str | os.PathLike[str],
    *,
    trusted_public_key: Any = None,
    threads: int = 1,
) -> Predictor:
    """Verify an artifact, then load its served model and preprocessing.

    Args:
        artifact_dir: a directory written by
            :func:`~lepton_fed.serving.export.export_artifact`.
        trusted_public_key: see :func:`~lepton_fed.serving.signing.verify_artifact`.
        threads: intra-op threads for ONNX Runtime.

    Raises:
        ArtifactError: verification fails, or the manifest or files are malformed.
        ImportError: the runtime the artifact needs is not installed.
    """
    d = Path(artifact_dir)
    verification = verify_artifact(d, trusted_public_key)
    manifest = verification.manifest
    files = manifest["files"]
    try:
        version = manifest["format_version"]
        runtime = manifest["runtime"]
        engine, precision, fname = (
            runtime["engine"],
            runtime["precision"],
            runtime["file"],
        )
        spec = manifest["model"]
    except (KeyError, TypeError) as e:
        raise ArtifactError(f"manifest is missing {e}") from None
    if version not in READABLE_FORMATS:
        raise ArtifactError(
            f"artifact format_version {version!r}; this lepton-fed reads "
            f"{list(READABLE_FORMATS)} (format {FORMAT_VERSION} is current)"
        )
    # format 1 graphs took the scaled matrix; format 2 says where scaling happens
    in_graph = version >= 2 and runtime.get("preprocessing") == "graph"
    if fname not in files or "preprocess.json" not in files:
        raise ArtifactError("manifest does not list the model or preprocess.json")
    try:
        pre = Preprocessor.from_dict(
            json.loads(_read_verified(d, "preprocess.json", files).decode("utf-8"))
        )
    except ArtifactError:
        raise
    except (ValueError, KeyError, TypeError) as e:
        raise ArtifactError(f"preprocess.json is malformed: {e}") from None
    backend = load_backend(
        engine, precision, _read_verified(d, fname, files), spec,
        threads=threads, pre=pre, in_graph=in_graph,
    )  # fmt: skip
    return Predictor(pre, backend, manifest, verification)
