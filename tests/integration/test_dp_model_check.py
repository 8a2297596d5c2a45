"""Models Opacus cannot handle: fixed with a warning, or refused naming the layer."""

import warnings

import pytest
from safetensors.numpy import load_file
from torch import nn

from lepton_fed.client.app import app
from lepton_fed.errors import IncompatibleModelError
from lepton_fed.inprocess import InProcessGrid
from lepton_fed.models import registry
from lepton_fed.server.outputs import RunWriter
from lepton_fed.server.rounds import run_federation


def _bn_mlp(*, num_features, num_classes, **_):
    return nn.Sequential(
        nn.Linear(num_features, 16),
        nn.BatchNorm1d(16),
        nn.ReLU(),
        nn.Linear(16, num_classes),
    )


def _prelu_mlp(*, num_features, num_classes, **_):
    return nn.Sequential(
        nn.Linear(num_features, 16), nn.PReLU(), nn.Linear(16, num_classes)
    )


BASE = (
    "privacy=dpsgd",
    "privacy.epsilon=3",
    "federation.rounds=2",
    "federation.num_clients=3",
    "federation.clients_per_round=3",
)


def test_batchnorm_is_replaced_with_a_warning_and_trains(
    compose_cfg, tmp_path, monkeypatch
):
    monkeypatch.setitem(registry._REGISTRY, "bn_mlp", _bn_mlp)
    cfg = compose_cfg(*BASE, "model.name=bn_mlp", "privacy.grad_sample_mode=hooks")
    with pytest.warns(UserWarning, match=r"BatchNorm1d -> GroupNorm"):
        s = run_federation(InProcessGrid(app, 3), cfg, RunWriter(tmp_path))
    assert s["rounds_completed"] == 2
    keys = set(load_file(tmp_path / "model.safetensors"))
    assert not any("running_mean" in k for k in keys)


def test_unfixable_layer_refused_before_any_node_is_contacted(
    compose_cfg, tmp_path, monkeypatch
):
    monkeypatch.setitem(registry._REGISTRY, "prelu_mlp", _prelu_mlp)
    cfg = compose_cfg(*BASE, "model.name=prelu_mlp", "privacy.grad_sample_mode=ew")
    grid = InProcessGrid(app, 3)
    with (
        warnings.catch_warnings(),
        pytest.raises(IncompatibleModelError, match=r"layer '1' \(PReLU\)"),
    ):
        run_federation(grid, cfg, RunWriter(tmp_path))
    assert grid.seen == []


def test_unknown_model_name_is_a_config_error(compose_cfg):
    from lepton_fed.config.validate import validate

    problems = validate(compose_cfg("model.name=resnet"))
    assert any("model.name=resnet" in p and "logreg" in p for p in problems)


def test_simulate_refuses_before_ray_starts(compose_cfg, tmp_path, monkeypatch):
    """The model check runs before Flower's simulation engine is ever called (how fast
    the refusal comes is a figure: benchmarks/refusal_time.py)."""
    import flwr.simulation

    from lepton_fed.simulation import simulate

    started = []
    monkeypatch.setattr(
        flwr.simulation, "run_simulation", lambda *a, **k: started.append(1)
    )  # a spy: must never run
    monkeypatch.setitem(registry._REGISTRY, "prelu_mlp", _prelu_mlp)
    cfg = compose_cfg(*BASE, "model.name=prelu_mlp", "privacy.grad_sample_mode=ew")
    with pytest.raises(IncompatibleModelError, match="PReLU"):
        simulate(cfg, tmp_path)
    assert started == []
    assert not (tmp_path / "metrics.jsonl").exists()
