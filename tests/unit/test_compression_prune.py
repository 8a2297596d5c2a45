"""Pruning: spec parsing, global magnitude, structured neurons, exact MLP shrinking."""

from __future__ import annotations

import pytest
import torch

from lepton_fed.compression.prune import parse_prune_spec, prune_model, shrink_mlp
from lepton_fed.errors import ConfigError
from lepton_fed.models import build_model


def _mlp(hidden: list[int] = [32, 16]) -> torch.nn.Module:  # noqa: B006
    torch.manual_seed(0)
    return build_model(
        {"name": "mlp", "num_features": 12, "num_classes": 3, "hidden": hidden}
    ).eval()


@pytest.mark.parametrize(
    ("text", "method", "amount"),
    [
        ("none", "none", 0.0),
        ("magnitude:0.5", "magnitude", 0.5),
        ("structured:0.3", "structured", 0.3),
        (None, "none", 0.0),
    ],
)
def test_parse_prune_spec(text: str | None, method: str, amount: float) -> None:
    spec = parse_prune_spec(text)
    assert (spec.method, spec.amount) == (method, amount)


@pytest.mark.parametrize(
    "text",
    ["magnitude", "magnitude:1.0", "magnitude:-0.1", "random:0.5", "structured:abc"],
)
def test_parse_prune_spec_rejects(text: str) -> None:
    with pytest.raises(ConfigError, match="compression.prune"):
        parse_prune_spec(text)


def test_magnitude_pruning_is_global_permanent_and_leaves_input_alone() -> None:
    # Prepare
    model = _mlp()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    # Execute
    pruned, report = prune_model(model, "magnitude:0.5")
    # Assert
    assert report.sparsity == pytest.approx(0.5, abs=0.01)
    assert not any("weight_orig" in k or "mask" in k for k in pruned.state_dict())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    # global: the kept weights are the largest |w| over all layers together
    ws = [m.weight for m in pruned.modules() if isinstance(m, torch.nn.Linear)]
    kept = torch.cat([w[w != 0].abs() for w in ws])
    orig = torch.cat(
        [before[k].abs().flatten() for k in before if k.endswith("weight")]
    )
    assert kept.min() >= orig.kthvalue(orig.numel() // 2).values - 1e-12


def test_structured_pruning_shrinks_an_mlp_exactly() -> None:
    # Prepare
    model = _mlp()
    from torch.nn.utils import prune

    zeroed = _mlp()
    for m in [m for m in zeroed.modules() if isinstance(m, torch.nn.Linear)][:-1]:
        prune.ln_structured(m, "weight", amount=0.25, n=2, dim=0)
        prune.remove(m, "weight")
    x = torch.randn(50, 12)
    # Execute
    pruned, report = prune_model(model, "structured:0.25")
    # Assert: neurons removed, output layer untouched, same function as zeroed model
    assert report.hidden_after == [24, 12]
    assert report.neurons_removed == 8 + 4
    assert pruned.net[-1].out_features == 3
    torch.testing.assert_close(pruned(x), zeroed(x), rtol=1e-5, atol=1e-5)


def test_shrink_mlp_folds_dead_neuron_bias() -> None:
    model = _mlp([8])
    with torch.no_grad():
        model.net[0].weight[:3] = 0  # three dead neurons with nonzero bias
        model.net[0].bias[:3] = torch.tensor([0.5, -1.0, 2.0])
    x = torch.randn(20, 12)
    shrunk, removed = shrink_mlp(model)
    assert removed == 3 and shrunk.net[0].out_features == 5
    torch.testing.assert_close(shrunk(x), model(x), rtol=1e-5, atol=1e-5)


def test_structured_on_logreg_says_nothing_to_prune() -> None:
    model = build_model({"name": "logreg", "num_features": 5, "num_classes": 2})
    _, report = prune_model(model, "structured:0.5")
    assert "nothing to prune" in report.note and report.sparsity == 0.0


def test_structured_on_cnn_keeps_the_head_and_zeroes_channels() -> None:
    model = build_model(
        {"name": "cnn", "num_features": 64, "num_classes": 10, "input_shape": [1, 8, 8]}
    )
    pruned, report = prune_model(model, "structured:0.5")
    conv = pruned.features[0]
    dead = (conv.weight.flatten(1) == 0).all(1)
    assert int(dead.sum()) == 8
    assert bool((pruned.head.weight != 0).all())
    assert report.hidden_after is None
