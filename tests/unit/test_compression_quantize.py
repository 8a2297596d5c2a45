"""ONNX export and int8 quantization of every model family; torch fallback; metrics."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lepton_fed.compression.evaluate import accuracy, compare, latency
from lepton_fed.compression.quantize import (
    export_onnx,
    load_torch_int8,
    quantize_onnx_dynamic,
    quantize_onnx_static,
    quantize_torch_dynamic,
    save_torch_int8,
)
from lepton_fed.models import build_model
from lepton_fed.serving.runtime import OrtBackend, TorchBackend

SPECS = {
    "logreg": {"name": "logreg", "num_features": 30, "num_classes": 2},
    "mlp": {"name": "mlp", "num_features": 64, "num_classes": 10, "hidden": [64, 32]},
    "cnn": {
        "name": "cnn",
        "num_features": 64,
        "num_classes": 10,
        "input_shape": [1, 8, 8],
    },
}


@pytest.mark.parametrize("family", sorted(SPECS))
def test_export_and_quantize_each_family(family: str, tmp_path) -> None:
    # Prepare
    torch.manual_seed(0)
    spec = SPECS[family]
    model = build_model(spec).eval()
    X = (
        np.random.default_rng(0)
        .normal(size=(37, spec["num_features"]))
        .astype(np.float32)
    )
    ref = TorchBackend(model)(X)
    # Execute
    fp32 = export_onnx(model, spec["num_features"], tmp_path / "m.onnx")
    dyn = quantize_onnx_dynamic(fp32, tmp_path / "d.onnx")
    sta = quantize_onnx_static(fp32, tmp_path / "s.onnx", X)
    # Assert: a single file, dynamic batch, logits close to torch
    assert not list(tmp_path.glob("*.data"))
    np.testing.assert_allclose(OrtBackend(fp32)(X), ref, rtol=1e-4, atol=1e-4)
    for cand in (dyn, sta):
        assert cand.precision == "int8" and cand.quantized_ops
        out = OrtBackend(cand.path)(X)
        assert out.shape == ref.shape
        assert np.abs(out - ref).max() < 0.1 * max(1.0, np.abs(ref).max())
    assert OrtBackend(dyn.path)(X[:1]).shape == (1, spec["num_classes"])


def test_torch_fallback_roundtrip(tmp_path) -> None:
    spec = SPECS["mlp"]
    model = build_model(spec).eval()
    qmodel, n = quantize_torch_dynamic(model)
    assert n == 3
    path = save_torch_int8(qmodel, tmp_path / "q.pt")
    again = load_torch_int8(spec, path)
    x = torch.randn(4, 64)
    torch.testing.assert_close(again(x), qmodel(x))


def test_metrics_on_a_known_classifier() -> None:
    X = np.eye(4, dtype=np.float32)
    y = np.array([0, 1, 2, 0])

    def identity(x: np.ndarray) -> np.ndarray:
        return x

    assert accuracy(identity, X, y) == 0.75
    lat = latency(identity, X, 64, max_iters=10, max_seconds=0.1)
    assert lat["iters"] >= 5 and lat["p99_us"] >= lat["p50_us"] > 0
    report = compare(
        identity,
        identity,
        X,
        y,
        reference_bytes=400,
        candidate_bytes=100,
        max_seconds=0.05,
    )
    assert report["accuracy"]["drop"] == 0 and report["size"]["ratio"] == 0.25
    assert set(report["latency"]["speedup"]) == {"b1", "b64"}
