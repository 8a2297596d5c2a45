"""Models: shapes, Opacus compatibility, weight round-trips."""

import numpy as np
import pytest
import torch
from opacus.validators import ModuleValidator

from lepton_fed.models import (
    available_models,
    build_model,
    flatten_state,
    get_state,
    register_model,
    unflatten_state,
)


@pytest.mark.parametrize("name", ["logreg", "mlp", "cnn"])
def test_builds_forward_and_opacus_compatible(name):
    m = build_model({"name": name, "num_features": 64, "num_classes": 10, "input_shape": [1, 8, 8]})
    assert m(torch.randn(4, 64)).shape == (4, 10)
    assert ModuleValidator.validate(m, strict=False) == []


def test_cnn_needs_matching_shape_and_unknown_model_named():
    with pytest.raises(ValueError, match="square"):
        build_model({"name": "cnn", "num_features": 30, "num_classes": 2})
    with pytest.raises(ValueError, match="choose one of"):
        build_model({"name": "resnet", "num_features": 3, "num_classes": 2})


def test_register_refuses_duplicates():
    assert available_models() == ["cnn", "logreg", "mlp"]
    with pytest.raises(ValueError, match="already registered"):
        register_model("mlp", lambda **_: None)


def test_flatten_roundtrip():
    m = build_model({"name": "mlp", "num_features": 5, "num_classes": 3, "hidden": [4]})
    st = get_state(m)
    v = flatten_state(st)
    back = unflatten_state(v, st)
    assert all(np.array_equal(back[k], st[k]) for k in st)
    with pytest.raises(ValueError, match="entries"):
        unflatten_state(v[:-1], st)
