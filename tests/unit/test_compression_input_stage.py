"""The artifact graph's input stage: raw features in, the same numbers as Python's
preprocessing out, for fp32 and int8 graphs; unknown levels and bad shapes refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from lepton_fed.compression.quantize import (
    export_onnx,
    quantize_onnx_dynamic,
    quantize_onnx_static,
)
from lepton_fed.data.preprocess import FeatureStats, Preprocessor, Scaler
from lepton_fed.data.schema import FeatureSpec
from lepton_fed.models import build_model
from lepton_fed.serving.input_stage import InputLayout, add_input_stage
from lepton_fed.serving.runtime import OrtBackend

FEATURES = [
    FeatureSpec("age"),
    FeatureSpec("city", "categorical", ("lyon", "nice", "paris")),
    FeatureSpec("income"),
    FeatureSpec("score"),
    FeatureSpec("smoker", "categorical", ("no", "yes")),
]


def _rows(n: int, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    return [
        {
            "age": float(rng.normal(50, 12)),
            "city": str(rng.choice(["lyon", "nice", "paris"])),
            "income": float(rng.normal(40_000, 9_000)),
            "score": float(rng.normal()),
            "smoker": str(rng.choice(["no", "yes"])),
        }
        for _ in range(n)
    ]


def _pre(
    features: list[FeatureSpec], rows: list[dict], classes: int = 2
) -> Preprocessor:
    width = InputLayout.of(Preprocessor(features, Scaler.identity(1), [])).width
    enc = Preprocessor(features, Scaler.identity(width), []).encode_rows(rows)
    scaler = Scaler.from_stats([FeatureStats.of(enc)])
    spec = {
        "name": "mlp",
        "num_features": width,
        "num_classes": classes,
        "hidden": [16],
    }
    return Preprocessor(features, scaler, [f"c{i}" for i in range(classes)], spec)


def _session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def graphs(tmp_path_factory: pytest.TempPathFactory) -> dict:
    d = tmp_path_factory.mktemp("stage")
    rows = _rows(64)
    pre = _pre(FEATURES, rows)
    torch.manual_seed(0)
    model = build_model(pre.model).eval()
    fp32 = export_onnx(model, pre.model["num_features"], d / "fp32.onnx")
    scaled = pre.transform_rows(rows)
    cores = {
        "fp32": fp32,
        "dynamic": quantize_onnx_dynamic(fp32, d / "dyn.onnx").path,
        "static": quantize_onnx_static(fp32, d / "st.onnx", scaled).path,
    }
    staged = {k: add_input_stage(p, pre, d / f"{k}.raw.onnx") for k, p in cores.items()}
    return {"rows": rows, "pre": pre, "cores": cores, "staged": staged}


def test_layout_names_columns_in_schema_order(graphs: dict) -> None:
    layout = InputLayout.of(graphs["pre"])
    assert layout.manifest_inputs() == [
        {"name": "features", "dtype": "float32", "shape": ["batch", 3],
         "columns": ["age", "income", "score"]},
        {"name": "categories", "dtype": "string", "shape": ["batch", 2],
         "columns": ["city", "smoker"],
         "levels": {"city": ["lyon", "nice", "paris"], "smoker": ["no", "yes"]}},
    ]  # fmt: skip
    assert layout.width == 8 and layout.numeric_cols == (0, 4, 5)


@pytest.mark.parametrize("kind", ["fp32", "dynamic", "static"])
def test_raw_rows_give_exactly_the_logits_of_python_preprocessing(
    graphs: dict, kind: str
) -> None:
    # Prepare: the rows a plain ONNX consumer has, fed by column name
    rows, pre = graphs["rows"], graphs["pre"]
    feed = {
        "features": np.array(
            [[r[c] for c in ("age", "income", "score")] for r in rows], np.float32
        ),
        "categories": np.array([[r["city"], r["smoker"]] for r in rows], dtype=object),
    }
    # Execute
    raw = _session(graphs["staged"][kind]).run(None, feed)[0]
    # Assert: the core graph on Python-scaled rows gives the same bits
    ref = OrtBackend(graphs["cores"][kind])(pre.transform_rows(rows))
    np.testing.assert_array_equal(raw, ref)
    # ... and the feed built from the encoded matrix is the same feed
    layout = InputLayout.of(pre)
    again = _session(graphs["staged"][kind]).run(
        None, layout.feed(pre.encode_rows(rows))
    )
    np.testing.assert_array_equal(again[0], raw)


def test_stage_stays_fp32_in_int8_graphs(graphs: dict) -> None:
    for kind in ("dynamic", "static"):
        g = onnx.load(str(graphs["staged"][kind])).graph
        stage = [n for n in g.node if n.name.startswith("input_stage/")]
        assert [n.op_type for n in stage][-2:] == ["Sub", "Div"]
        # the first quantization op reads the stage's output, not a raw input
        first_q = next(n for n in g.node if "Quantize" in n.op_type)
        assert first_q.input[0] == "input_stage/model_input"


def test_unknown_level_fails_the_run_instead_of_encoding_zeros(graphs: dict) -> None:
    sess = _session(graphs["staged"]["fp32"])
    feed = {
        "features": np.zeros((1, 3), np.float32),
        "categories": np.array([["marseille", "no"]], dtype=object),
    }
    with pytest.raises(Exception, match="Unknown Category"):
        sess.run(None, feed)


def test_numeric_only_schema_has_one_input_and_identity_scaler_no_arithmetic(
    tmp_path: Path,
) -> None:
    feats = [FeatureSpec(f"x{i}") for i in range(4)]
    pre = Preprocessor(
        feats, Scaler.identity(4), ["a", "b"],
        {"name": "logreg", "num_features": 4, "num_classes": 2},
    )  # fmt: skip
    model = build_model(pre.model).eval()
    core = export_onnx(model, 4, tmp_path / "m.onnx")
    staged = add_input_stage(core, pre, tmp_path / "s.onnx")
    sess = _session(staged)
    assert [i.name for i in sess.get_inputs()] == ["features"]
    ops = [n.op_type for n in onnx.load(str(staged)).graph.node]
    assert "Sub" not in ops and "Div" not in ops
    X = np.random.default_rng(1).normal(size=(5, 4)).astype(np.float32)
    np.testing.assert_array_equal(
        sess.run(None, {"features": X})[0], OrtBackend(core)(X)
    )


def test_width_mismatch_is_refused(graphs: dict, tmp_path: Path) -> None:
    rows = [{k: r[k] for k in ("age", "city", "income")} for r in _rows(8)]
    other = _pre(FEATURES[:3], rows)  # encodes 5 columns; the graph takes 8
    with pytest.raises(ValueError, match="schema encodes 5 columns"):
        add_input_stage(graphs["cores"]["fp32"], other, tmp_path / "x.onnx")
    with pytest.raises(ValueError, match="expected one graph input 'nope'"):
        add_input_stage(
            graphs["cores"]["fp32"],
            graphs["pre"],
            tmp_path / "y.onnx",
            input_name="nope",
        )
