"""Post-training int8 quantization for CPU serving.

The main path is ONNX: ``torch.onnx.export(dynamo=True, external_data=False)`` with a
dynamic batch dimension, then ONNX Runtime ``quantize_dynamic`` (int8 weights,
activations quantized per call) or ``quantize_static`` (QDQ, activations calibrated
on sample rows). The fallback, when ONNX export or quantization fails, is torch's
``torch.ao.quantization.quantize_dynamic`` on ``nn.Linear`` layers. Measured on this
stack (``reference/stack-measured.md`` 3(e)): ONNX Runtime int8 is the fastest, 4x
smaller than fp32, with unchanged accuracy.

Requires the ``lepton-fed[serve]`` extra (onnx, onnxruntime, onnxscript) for the ONNX
path; the torch fallback needs only torch.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import warnings
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "INPUT_NAME",
    "OUTPUT_NAME",
    "QUANTIZATION_MODES",
    "QUANTIZED_OP_TYPES",
    "QuantCandidate",
    "export_onnx",
    "load_torch_int8",
    "onnx_op_counts",
    "quantize_candidates",
    "quantize_onnx_dynamic",
    "quantize_onnx_static",
    "quantize_torch_dynamic",
    "require_serve_extra",
    "save_torch_int8",
]

QUANTIZATION_MODES = ("auto", "dynamic", "static", "torch", "none")
INPUT_NAME = "features"
OUTPUT_NAME = "logits"

#: ONNX op types that only appear in a graph ONNX Runtime actually quantized.
QUANTIZED_OP_TYPES = frozenset(
    {
        "MatMulInteger",
        "ConvInteger",
        "DynamicQuantizeLinear",
        "DynamicQuantizeMatMul",
        "QLinearMatMul",
        "QLinearConv",
        "QuantizeLinear",
        "DequantizeLinear",
        "MatMulIntegerToFloat",
    }
)


def require_serve_extra(*modules: str) -> None:
    """Import ``modules`` or raise :class:`~lepton_fed.errors.MissingExtra` (an ImportError
    too) naming ``pip install "lepton-fed[serve]"``."""
    from lepton_fed.utils.extras import require

    require(*modules, purpose="export and serving")


@dataclass
class QuantCandidate:
    """One quantized (or deliberately unquantized) model ready to be evaluated.

    Attributes:
        runtime: ``"onnxruntime"`` or ``"torch"``.
        precision: ``"int8"`` or ``"fp32"``.
        method: ``"dynamic"``, ``"static"`` or ``"none"``.
        path: the model file.
        quantized_ops: quantized op types and their counts (ONNX only).
        notes: why this candidate looks the way it does (failures, fallbacks).
    """

    runtime: str
    precision: str
    method: str
    path: Path
    quantized_ops: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence the exporter's and quantizer's benign chatter (documented in 3(e))."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "root")]
    levels = [lg.level for lg in loggers]
    try:
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        with (
            warnings.catch_warnings(),
            contextlib.redirect_stdout(io.StringIO()),
        ):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, lv in zip(loggers, levels, strict=True):
            lg.setLevel(lv)


def export_onnx(model: Any, num_features: int, path: str | os.PathLike[str]) -> Path:
    """Export ``model`` to one self-contained ONNX file with a dynamic batch dimension.

    The graph has one float32 input ``features`` of shape ``[batch, num_features]`` and
    one output ``logits`` of shape ``[batch, num_classes]``; the weights are embedded
    (``external_data=False``), and ``onnx.checker`` passes on the result.

    Raises:
        ImportError: the ``lepton-fed[serve]`` extra is missing.
        RuntimeError: the exporter failed (the message says why).
    """
    require_serve_extra("onnx", "onnxscript")
    import onnx
    import torch

    out = Path(path)
    model = model.eval()
    example = (torch.zeros(2, int(num_features)),)
    batch = torch.export.Dim("batch", min=1, max=1 << 20)
    with _quiet(), torch.no_grad():
        program = torch.onnx.export(
            model,
            example,
            None,
            dynamo=True,
            external_data=False,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_shapes=({0: batch},),
            verbose=False,
        )
        if program is None:
            raise RuntimeError("torch.onnx.export returned no program")
        program.save(str(out), external_data=False)
    onnx.checker.check_model(str(out))
    return out


def onnx_op_counts(path: str | os.PathLike[str]) -> Counter[str]:
    """Op types in an ONNX graph's main graph and their counts."""
    import onnx

    return Counter(node.op_type for node in onnx.load(str(path)).graph.node)


def _quantized_ops(path: Path) -> dict[str, int]:
    return {
        k: v for k, v in sorted(onnx_op_counts(path).items()) if k in QUANTIZED_OP_TYPES
    }


def quantize_onnx_dynamic(
    fp32_path: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    *,
    linear_only: bool = False,
) -> QuantCandidate:
    """ONNX Runtime dynamic int8: QInt8 weights, activations quantized at run time.

    Activation scales are computed per call over the whole input tensor, so a row's
    output can shift slightly with the other rows in its batch.

    Args:
        fp32_path: the fp32 ONNX model.
        out_path: where to write the quantized model.
        linear_only: quantize only ``MatMul``/``Gemm`` (method ``dynamic-linear``),
            leaving convolutions in fp32. On this stack ONNX Runtime's int8 convolutions
            (``ConvInteger``) were 2-4x *slower* than fp32 ones, so for CNNs this keeps
            fp32 speed while still shrinking the dense layers.

    Returns:
        A candidate; ``precision == "fp32"`` (with a note, and ``path`` the fp32 model)
        when ONNX Runtime found nothing to quantize.

    Raises:
        ImportError: the ``lepton-fed[serve]`` extra is missing.
        Exception: whatever ONNX Runtime's quantizer raises (callers fall back).
    """
    require_serve_extra("onnx", "onnxruntime")
    from onnxruntime.quantization import QuantType, quantize_dynamic

    out = Path(out_path)
    with _quiet():
        quantize_dynamic(
            str(fp32_path),
            str(out),
            weight_type=QuantType.QInt8,
            op_types_to_quantize=["MatMul", "Gemm"] if linear_only else None,
        )
    method = "dynamic-linear" if linear_only else "dynamic"
    ops = _quantized_ops(out)
    if not ops:
        out.unlink(missing_ok=True)
        return QuantCandidate(
            "onnxruntime", "fp32", "none", Path(fp32_path),
            notes=[f"ONNX Runtime {method} quantization found no quantizable op"],
        )  # fmt: skip
    return QuantCandidate("onnxruntime", "int8", method, out, ops)


def quantize_onnx_static(
    fp32_path: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    calibration: np.ndarray,
) -> QuantCandidate:
    """ONNX Runtime static int8 (QDQ, per-channel int8 weights, int8 activations).

    Activation ranges are calibrated (MinMax) on ``calibration`` rows, which must be
    what the model sees at serving time (encoded and scaled features).

    Raises:
        ImportError: the ``lepton-fed[serve]`` extra is missing.
        ValueError: no calibration rows.
        Exception: whatever ONNX Runtime's quantizer raises (callers fall back).
    """
    require_serve_extra("onnx", "onnxruntime")
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    rows = np.asarray(calibration, dtype=np.float32)
    if rows.ndim != 2 or rows.shape[0] == 0:
        raise ValueError("static quantization needs at least one calibration row")

    class _Reader(CalibrationDataReader):  # type: ignore[misc]
        def __init__(self) -> None:
            self._batches = iter(np.array_split(rows, max(1, len(rows) // 64)))

        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(self._batches, None)
            return None if batch is None else {INPUT_NAME: batch}

    out = Path(out_path)
    with _quiet():
        quantize_static(
            str(fp32_path),
            str(out),
            _Reader(),
            quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QInt8,
            weight_type=QuantType.QInt8,
            per_channel=True,
        )
    ops = _quantized_ops(out)
    if not ops:
        out.unlink(missing_ok=True)
        return QuantCandidate(
            "onnxruntime", "fp32", "none", Path(fp32_path),
            notes=["ONNX Runtime static quantization found no quantizable op"],
        )  # fmt: skip
    return QuantCandidate("onnxruntime", "int8", "static", out, ops)


def quantize_torch_dynamic(model: Any) -> tuple[Any, int]:
    """Dynamic int8 quantization of every ``nn.Linear`` with torch (the fallback path).

    Returns:
        ``(quantized_copy, number_of_quantized_linear_layers)``; with 0 layers the
        copy is the unchanged fp32 model.
    """
    import copy

    import torch
    from torch import nn

    n = sum(isinstance(m, nn.Linear) for m in model.modules())
    with _quiet():
        q = torch.ao.quantization.quantize_dynamic(  # type: ignore[no-untyped-call]
            copy.deepcopy(model).eval(), {nn.Linear}, dtype=torch.qint8
        )
    return q, n


def save_torch_int8(qmodel: Any, path: str | os.PathLike[str]) -> Path:
    """Save a :func:`quantize_torch_dynamic` model's state (``torch.save``, no code)."""
    import torch

    out = Path(path)
    torch.save(qmodel.state_dict(), str(out))
    return out


def load_torch_int8(
    spec: dict[str, Any], source: str | os.PathLike[str] | bytes
) -> Any:
    """Rebuild the model from ``spec``, quantize it, and load the saved int8 state from a
    file or from its bytes (the server loads verified artifact bytes).

    Loading uses ``torch.load(weights_only=True)``, which refuses pickled code.
    """
    import io

    import torch

    from lepton_fed.models import build_model

    qmodel, _ = quantize_torch_dynamic(build_model(spec).eval())
    with _quiet():
        state = torch.load(
            io.BytesIO(source) if isinstance(source, bytes) else str(source),
            weights_only=True,
        )
    qmodel.load_state_dict(state)
    return qmodel.eval()


def quantize_candidates(
    model: Any,
    num_features: int,
    workdir: str | os.PathLike[str],
    *,
    mode: str = "auto",
    calibration: np.ndarray | None = None,
    notes: list[str] | None = None,
) -> tuple[list[QuantCandidate], Path | None]:
    """Every int8 model worth evaluating for ``mode``; failures become notes, not errors.

    ``auto`` tries ONNX Runtime dynamic, dynamic on MatMul/Gemm only (graphs with a
    convolution), and static (when ``calibration`` rows are given); ``dynamic`` and
    ``static`` try only that; ``torch`` tries only torch's dynamic quantization, which
    is also the fallback when ONNX export fails or ``auto`` produced nothing; ``none``
    quantizes nothing.

    Args:
        model: the fp32 torch model (eval mode).
        num_features: width of its input.
        workdir: where the ONNX/torch files are written.
        mode: one of :data:`QUANTIZATION_MODES`.
        calibration: encoded, scaled rows for static calibration.
        notes: list to append human-readable notes to (what failed and why).

    Returns:
        ``(candidates, fp32_onnx_path_or_None)``.

    Raises:
        ValueError: an unknown ``mode``.
        ImportError: the ``lepton-fed[serve]`` extra is missing.
    """
    if mode not in QUANTIZATION_MODES:
        raise ValueError(f"mode {mode!r}; choose one of {list(QUANTIZATION_MODES)}")
    work = Path(workdir)
    notes = notes if notes is not None else []
    out: list[QuantCandidate] = []
    fp32: Path | None = None
    if mode != "torch":
        try:
            fp32 = export_onnx(model, num_features, work / "fp32.onnx")
        except ImportError:
            raise
        except Exception as e:
            notes.append(f"ONNX export failed ({type(e).__name__}: {e}); using torch")
    if mode == "none":
        return out, fp32
    tries: list[tuple[str, Any]] = []
    if fp32 is not None and mode in ("auto", "dynamic"):
        tries.append(
            ("dynamic", lambda: quantize_onnx_dynamic(fp32, work / "dyn.onnx"))
        )
        if "Conv" in onnx_op_counts(fp32):
            tries.append(
                (
                    "dynamic-linear",
                    lambda: quantize_onnx_dynamic(
                        fp32, work / "dynlin.onnx", linear_only=True
                    ),
                )
            )
    if fp32 is not None and mode in ("auto", "static"):
        if calibration is None or len(calibration) == 0:
            notes.append("static quantization skipped: no calibration rows")
        else:
            tries.append(
                (
                    "static",
                    lambda: quantize_onnx_static(fp32, work / "st.onnx", calibration),
                )
            )
    for method, make in tries:
        try:
            c = make()
        except Exception as e:
            notes.append(f"ONNX Runtime {method} quantization failed: {e}")
            continue
        out.append(c) if c.precision == "int8" else notes.extend(c.notes)
    if mode == "torch" or (not out and (fp32 is None or mode == "auto")):
        qmodel, n = quantize_torch_dynamic(model)
        if n == 0:
            notes.append("torch dynamic quantization: no nn.Linear to quantize")
        else:
            path = save_torch_int8(qmodel, work / "torch_int8.pt")
            out.append(QuantCandidate("torch", "int8", "dynamic", path))
    return out, fp32
