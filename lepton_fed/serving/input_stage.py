"""The served ONNX graph's first stage: raw feature values in, the model's input out.

An artifact's ONNX model takes the features a user has, not the scaled matrix the
network was trained on, so a plain ONNX consumer (``onnxruntime`` in any language,
Triton, a browser) needs nothing but the graph and the column order in the manifest:

* ``features`` -- ``float32[batch, n_numeric]``: the numeric features, raw, in schema
  order (``manifest["runtime"]["inputs"][i]["columns"]``). Present when the schema has
  a numeric feature.
* ``categories`` -- ``string[batch, n_categorical]``: the categorical features' levels
  as strings, in schema order. Present only when the schema has a categorical feature;
  each column is one-hot encoded in the graph (``ai.onnx.ml`` ``OneHotEncoder`` with
  ``zeros=0``), so **an unknown level makes the run fail** rather than silently encode
  as all zeros.

The stage then applies the federation's scaler as ``(x - mean) / scale`` in float32 --
the same operations, in the same order, as :meth:`~lepton_fed.data.preprocess.Scaler.
transform` -- so the graph and the Python preprocessing give the same numbers. The stage
is prepended to a model *after* quantization: it always runs in fp32 (int8 would crush
features of different ranges into one scale) and adds two element-wise ops to the int8
graph.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lepton_fed.data.preprocess import Preprocessor

__all__ = [
    "CATEGORIES_INPUT",
    "NUMERIC_INPUT",
    "STAGE_PREFIX",
    "InputLayout",
    "add_input_stage",
]

NUMERIC_INPUT = "features"
CATEGORIES_INPUT = "categories"
#: Every node and initializer the stage adds is named with this prefix.
STAGE_PREFIX = "input_stage/"


@dataclass(frozen=True)
class InputLayout:
    """Where each raw feature goes: graph input columns <-> encoded matrix columns.

    Attributes:
        numeric: numeric feature names, in schema order (the ``features`` input).
        numeric_cols: each numeric feature's column in the encoded matrix.
        categorical: ``(name, levels)`` of each categorical feature, in schema order
            (the ``categories`` input).
        categorical_starts: each categorical feature's first one-hot column.
        width: encoded matrix width (the model's ``num_features``).
        runs: the encoded matrix as ``("num", first, last)`` runs of consecutive numeric
            features (input columns ``first:last``) and ``("cat", j, 0)`` one-hot blocks
            of categorical feature ``j``, in column order.
    """

    numeric: tuple[str, ...]
    numeric_cols: tuple[int, ...]
    categorical: tuple[tuple[str, tuple[str, ...]], ...]
    categorical_starts: tuple[int, ...]
    width: int
    runs: tuple[tuple[str, int, int], ...]

    @staticmethod
    def of(pre: Preprocessor) -> InputLayout:
        """The layout of ``pre``'s schema (one-hot columns in level order)."""
        numeric: list[str] = []
        cols: list[int] = []
        cats: list[tuple[str, tuple[str, ...]]] = []
        starts: list[int] = []
        runs: list[tuple[str, int, int]] = []
        col = 0
        for f in pre.features:
            if f.kind == "categorical":
                runs.append(("cat", len(cats), 0))
                cats.append((f.name, tuple(f.levels)))
                starts.append(col)
                col += len(f.levels)
            else:
                if runs and runs[-1][0] == "num":
                    runs[-1] = ("num", runs[-1][1], len(numeric) + 1)
                else:
                    runs.append(("num", len(numeric), len(numeric) + 1))
                numeric.append(f.name)
                cols.append(col)
                col += 1
        return InputLayout(
            tuple(numeric), tuple(cols), tuple(cats), tuple(starts), col, tuple(runs)
        )

    @property
    def numeric_only(self) -> bool:
        """True when the encoded matrix is exactly the ``features`` input."""
        return not self.categorical

    def manifest_inputs(self) -> list[dict[str, Any]]:
        """The graph inputs, as the manifest lists them (name, dtype, shape, columns)."""
        out: list[dict[str, Any]] = []
        if self.numeric:
            out.append(
                {
                    "name": NUMERIC_INPUT,
                    "dtype": "float32",
                    "shape": ["batch", len(self.numeric)],
                    "columns": list(self.numeric),
                }
            )
        if self.categorical:
            out.append(
                {
                    "name": CATEGORIES_INPUT,
                    "dtype": "string",
                    "shape": ["batch", len(self.categorical)],
                    "columns": [n for n, _ in self.categorical],
                    "levels": {n: list(lv) for n, lv in self.categorical},
                }
            )
        return out

    def feed(self, X: np.ndarray) -> dict[str, np.ndarray]:
        """Graph inputs for an encoded, unscaled matrix (one-hot blocks -> level strings).

        ``X`` is what :meth:`~lepton_fed.data.preprocess.Preprocessor.encode_rows`
        returns; with a numeric-only schema it is passed through unchanged.
        """
        X = np.ascontiguousarray(X, dtype=np.float32)
        if self.numeric_only:
            return {NUMERIC_INPUT: X}
        out: dict[str, np.ndarray] = {}
        if self.numeric:
            out[NUMERIC_INPUT] = np.ascontiguousarray(X[:, list(self.numeric_cols)])
        cats = np.empty((X.shape[0], len(self.categorical)), dtype=object)
        for j, ((_, levels), start) in enumerate(
            zip(self.categorical, self.categorical_starts, strict=True)
        ):
            block = X[:, start : start + len(levels)]
            cats[:, j] = np.asarray(levels, dtype=object)[block.argmax(axis=1)]
        out[CATEGORIES_INPUT] = cats
        return out


def _stage_nodes(
    layout: InputLayout, pre: Preprocessor, out_name: str, batch: Any
) -> tuple[list[Any], list[Any], list[Any]]:
    """``(nodes, initializers, graph_inputs)`` of the stage, ending in ``out_name``."""
    from onnx import TensorProto, helper, numpy_helper

    P = STAGE_PREFIX
    nodes: list[Any] = []
    inits: list[Any] = []
    inputs = []
    if layout.numeric:
        inputs.append(
            helper.make_tensor_value_info(
                NUMERIC_INPUT, TensorProto.FLOAT, [batch, len(layout.numeric)]
            )
        )
    if layout.categorical:
        inputs.append(
            helper.make_tensor_value_info(
                CATEGORIES_INPUT, TensorProto.STRING, [batch, len(layout.categorical)]
            )
        )

    made: set[str] = set()

    def const(name: str, value: np.ndarray) -> str:
        if P + name not in made:
            made.add(P + name)
            inits.append(numpy_helper.from_array(value, P + name))
        return P + name

    if layout.numeric_only:
        encoded = NUMERIC_INPUT
    else:
        pieces: list[str] = []
        for kind, a, b in layout.runs:
            if kind == "num" and (a, b) == (0, len(layout.numeric)):
                pieces.append(NUMERIC_INPUT)
            elif kind == "num":
                name = f"{P}numeric_{a}_{b}"
                nodes.append(
                    helper.make_node(
                        "Slice",
                        [
                            NUMERIC_INPUT,
                            const(f"start_{a}", np.array([a], np.int64)),
                            const(f"end_{b}", np.array([b], np.int64)),
                            const("axis_1", np.array([1], np.int64)),
                        ],
                        [name],
                        name=name,
                    )
                )
                pieces.append(name)
            else:
                fname, levels = layout.categorical[a]
                col = f"{P}category_{a}"
                nodes.append(
                    helper.make_node(
                        "Gather",
                        [CATEGORIES_INPUT, const(f"index_{a}", np.array(a, np.int64))],
                        [col],
                        name=col,
                        axis=1,
                    )
                )
                hot = f"{P}onehot_{a}"
                nodes.append(
                    helper.make_node(
                        "OneHotEncoder",
                        [col],
                        [hot],
                        name=hot,
                        domain="ai.onnx.ml",
                        cats_strings=list(levels),
                        zeros=0,
                    )
                )
                pieces.append(hot)
        encoded = f"{P}encoded"
        nodes.append(
            helper.make_node("Concat", pieces, [encoded], name=encoded, axis=1)
        )
    mean = np.asarray(pre.scaler.mean, np.float32).reshape(1, -1)
    scale = np.asarray(pre.scaler.scale, np.float32).reshape(1, -1)
    if mean.shape[1] != layout.width or scale.shape[1] != layout.width:
        raise ValueError(
            f"the scaler has {mean.shape[1]} columns; the schema encodes {layout.width}"
        )
    if not mean.any() and bool(
        (scale == 1).all()
    ):  # identity: a declared normalization
        nodes.append(helper.make_node("Identity", [encoded], [out_name], name=P + "id"))
    else:
        centred = P + "centred"
        nodes.append(
            helper.make_node(
                "Sub", [encoded, const("mean", mean)], [centred], name=centred
            )
        )
        nodes.append(
            helper.make_node(
                "Div", [centred, const("scale", scale)], [out_name], name=P + "scaled"
            )
        )
    return nodes, inits, inputs


def add_input_stage(
    model_path: str | os.PathLike[str],
    pre: Preprocessor,
    out_path: str | os.PathLike[str],
    *,
    input_name: str = NUMERIC_INPUT,
) -> Path:
    """Write ``model_path`` with the raw-feature stage in front of it to ``out_path``.

    Args:
        model_path: an ONNX model whose one input ``input_name`` is the encoded,
            scaled ``float32[batch, width]`` matrix (fp32 or quantized).
        pre: the preprocessing the model was trained with (schema and scaler).
        out_path: where to write the combined model (a single file).
        input_name: the model's input name.

    Returns:
        ``out_path``; ``onnx.checker`` passes on it.

    Raises:
        ValueError: the model does not have that one input, its width does not match the
            schema, or the scaler does not match the schema.
    """
    import onnx
    from onnx import helper

    model = onnx.load(str(model_path))
    graph = model.graph
    if [i.name for i in graph.input] != [input_name]:
        raise ValueError(
            f"expected one graph input {input_name!r}, got {[i.name for i in graph.input]}"
        )
    dims = graph.input[0].type.tensor_type.shape.dim
    layout = InputLayout.of(pre)
    if len(dims) != 2 or (
        dims[1].HasField("dim_value") and dims[1].dim_value != layout.width
    ):
        raise ValueError(
            f"the model's input is {[d.dim_value or d.dim_param for d in dims]}; "
            f"the schema encodes {layout.width} columns"
        )
    batch: Any = dims[0].dim_param or (dims[0].dim_value or "batch")
    inner = STAGE_PREFIX + "model_input"
    for node in graph.node:
        for k, name in enumerate(node.input):
            if name == input_name:
                node.input[k] = inner
    for out in graph.output:
        if out.name == input_name:
            raise ValueError(f"the model passes its input {input_name!r} straight out")
    nodes, inits, inputs = _stage_nodes(layout, pre, inner, batch)
    old_nodes = list(graph.node)
    del graph.node[:]
    graph.node.extend([*nodes, *old_nodes])
    graph.initializer.extend(inits)
    del graph.input[:]
    graph.input.extend(inputs)
    if layout.categorical and not any(
        o.domain == "ai.onnx.ml" for o in model.opset_import
    ):
        model.opset_import.append(helper.make_opsetid("ai.onnx.ml", 1))
    onnx.checker.check_model(model)
    out = Path(out_path)
    onnx.save(model, str(out))
    return out
