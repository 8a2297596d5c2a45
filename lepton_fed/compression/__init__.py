"""Model compression: pruning, int8 quantization, their evaluation, and update codecs.

Importing this package imports numpy only; torch, onnx and onnxruntime are imported
inside the functions that need them.
"""

from lepton_fed.compression.evaluate import accuracy, compare, latency, single_thread
from lepton_fed.compression.prune import (
    PruneReport,
    PruneSpec,
    parse_prune_spec,
    prune_model,
    shrink_mlp,
)
from lepton_fed.compression.quantize import (
    QuantCandidate,
    export_onnx,
    load_torch_int8,
    quantize_onnx_dynamic,
    quantize_onnx_static,
    quantize_torch_dynamic,
    save_torch_int8,
)
from lepton_fed.compression.update import (
    Int8Codec,
    TopKCodec,
    from_bytes,
    payload_nbytes,
    to_bytes,
)

__all__ = [
    "Int8Codec",
    "PruneReport",
    "PruneSpec",
    "QuantCandidate",
    "TopKCodec",
    "accuracy",
    "compare",
    "export_onnx",
    "from_bytes",
    "latency",
    "load_torch_int8",
    "parse_prune_spec",
    "payload_nbytes",
    "prune_model",
    "quantize_onnx_dynamic",
    "quantize_onnx_static",
    "quantize_torch_dynamic",
    "save_torch_int8",
    "shrink_mlp",
    "single_thread",
    "to_bytes",
]
