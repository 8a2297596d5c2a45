"""DP-SGD wrapper: real (tiny) Opacus runs: randomness, steps, empty batches, model checks."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lepton_fed.errors import IncompatibleModelError
from lepton_fed.models import build_model
from lepton_fed.privacy import PrivacyLedger, local_schedule
from lepton_fed.privacy.dpsgd import (
    GRAD_SAMPLE_MODES,
    InsecureRNGWarning,
    ReproducibleNoiseWarning,
    dp_loss_step,
    make_private,
    validate_model,
)

# Opacus's hooks warn once that no *inputs* require gradients: benign here.
pytestmark = pytest.mark.filterwarnings("ignore:Full backward hook is firing")


def tiny_data(n=40, features=8, seed=1):
    g = torch.Generator().manual_seed(seed)
    return TensorDataset(
        torch.randn(n, features, generator=g), torch.randint(0, 3, (n,), generator=g)
    )


def one_round(mode="ew", seed=None, n=40, batch=8, epochs=1, model=None, **kw):
    """Build the model (same init every time), wrap, train one round; return weights.

    ``seed`` given: reproducible (seeded) randomness; otherwise OS entropy."""
    torch.manual_seed(123)  # the model builder's seeding: identical init for every call
    model = model or build_model(
        {"name": "mlp", "num_features": 8, "num_classes": 3, "hidden": [16]}
    )
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    private = make_private(
        module=model,
        optimizer=opt,
        data_loader=DataLoader(tiny_data(n), batch_size=batch),
        noise_multiplier=1.0,
        max_grad_norm=1.0,
        grad_sample_mode=mode,
        seed=seed,
        reproducible=seed is not None,
        **kw,
    )
    criterion = nn.CrossEntropyLoss()
    for _ in range(epochs):
        for x, y in private.data_loader:
            dp_loss_step(
                module=private.module,
                optimizer=private.optimizer,
                criterion=criterion,
                inputs=x,
                targets=y,
            )
    weights = torch.cat([p.detach().flatten().clone() for p in model.parameters()])
    return weights, private


@pytest.mark.parametrize("mode", GRAD_SAMPLE_MODES)
@pytest.mark.filterwarnings("ignore::lepton_fed.privacy.noise.ReproducibleNoiseWarning")
def test_reproducible_seed_controls_noise_and_sampling(mode):
    # Prepare/Execute: the global torch seed is identical in all runs (the measured
    # failure mode); only our per-(run, round, client) seed differs.
    a, _ = one_round(mode, seed=11)
    b, _ = one_round(mode, seed=11)
    c, _ = one_round(mode, seed=12)
    # Assert
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


@pytest.mark.parametrize("mode", GRAD_SAMPLE_MODES)
def test_default_draws_fresh_randomness_whatever_the_global_seed(mode):
    # one_round re-seeds the global torch RNG identically before each run
    a, _ = one_round(mode)
    b, _ = one_round(mode)
    assert not torch.equal(a, b)


def test_reproducible_warns_naming_the_risk():
    with pytest.warns(ReproducibleNoiseWarning, match="regenerate the noise"):
        one_round(seed=3)


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"seed": 3}, "reproducible=False"),  # a seed alone would be ignored: refused
        ({"reproducible": True}, "needs a seed"),
        ({"reproducible": True, "seed": 3, "secure_mode": True}, "exclude each other"),
        ({"reproducible": True, "seed": 3, "deployment": True}, "simulations only"),
    ],
)
def test_randomness_settings_that_conflict_are_refused(kw, match):
    with pytest.raises(ValueError, match=match):
        _private(**kw)


@pytest.mark.parametrize("mode", ["ew", "ghost"])
@pytest.mark.parametrize("secure_mode", [False, True])
def test_noise_std_is_sigma_times_clip(mode, secure_mode):
    # Prepare: noise-only steps (empty Poisson batches: the clipped sum is 0), so the
    # SGD update is -lr * noise / expected_batch_size on each of 8*600+600 parameters.
    sigma, clip, lr, batch = 1.3, 0.7, 1.0, 8
    model = nn.Linear(600, 8)
    private = make_private(
        module=model, optimizer=torch.optim.SGD(model.parameters(), lr=lr),
        data_loader=DataLoader(tiny_data(40, 600), batch_size=batch),
        noise_multiplier=sigma, max_grad_norm=clip, grad_sample_mode=mode,
        secure_mode=secure_mode,
    )
    draws = []
    for _ in range(3):
        before = torch.cat([p.detach().flatten().clone() for p in model.parameters()])
        dp_loss_step(module=private.module, optimizer=private.optimizer,
                     criterion=nn.CrossEntropyLoss(), inputs=torch.zeros(0, 600),
                     targets=torch.zeros(0, dtype=torch.long))
        after = torch.cat([p.detach().flatten() for p in model.parameters()])
        draws.append((before - after) * batch / lr)
    noise = torch.cat(draws).double()  # 14424 draws
    # Assert: std sigma*C within 3% (sampling sd of the estimate ~0.6%), mean ~0
    assert noise.std().item() == pytest.approx(sigma * clip, rel=0.03)
    assert abs(noise.mean().item()) < 0.05 * sigma * clip
    assert not torch.equal(draws[0], draws[1])


def test_secure_mode_trains_a_real_model():
    # Prepare: a separable 2-class problem; a linear model at chance before training
    g = torch.Generator().manual_seed(0)
    x = torch.randn(400, 8, generator=g)
    y = (x[:, 0] + x[:, 1] > 0).long()
    torch.manual_seed(0)  # model init only (not DP randomness)
    model = build_model({"name": "mlp", "num_features": 8, "num_classes": 2, "hidden": [16]})
    private = make_private(
        module=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.5),
        data_loader=DataLoader(TensorDataset(x, y), batch_size=40),
        noise_multiplier=0.5, max_grad_norm=1.0, secure_mode=True, deployment=True,
    )
    # Execute
    for _ in range(5):
        for xb, yb in private.data_loader:
            dp_loss_step(module=private.module, optimizer=private.optimizer,
                         criterion=nn.CrossEntropyLoss(), inputs=xb, targets=yb)
    # Assert: every step counted, the model learned the rule
    assert private.steps_taken == 50
    with torch.no_grad():
        acc = (model(x).argmax(1) == y).float().mean().item()
    assert acc > 0.85


@pytest.mark.parametrize(
    ("n", "batch", "epochs"), [(40, 8, 2), (372, 4, 1), (10, 16, 1)]
)
def test_realized_event_matches_local_schedule(n, batch, epochs):
    _, private = one_round(n=n, batch=batch, epochs=epochs)
    sch = local_schedule(num_examples=n, batch_size=batch, epochs=epochs)
    event = private.event(round=3, run_id="r")
    assert (event.sample_rate, event.steps) == (sch.sample_rate, sch.steps)
    assert private.steps_per_epoch == sch.steps_per_epoch
    ledger = PrivacyLedger(dataset="d" * 64)
    ledger.record(event)
    assert ledger.epsilon(delta=1e-5) > 0


@pytest.mark.parametrize("mode", GRAD_SAMPLE_MODES)
def test_empty_poisson_batch_still_takes_a_noisy_step(mode):
    _, private = one_round(mode)
    model_params = [p.detach().clone() for p in private.module.parameters()]
    steps = private.steps_taken
    loss = dp_loss_step(
        module=private.module,
        optimizer=private.optimizer,
        criterion=nn.CrossEntropyLoss(),
        inputs=torch.zeros(0, 8),
        targets=torch.zeros(0, dtype=torch.long),
    )
    assert loss == 0.0
    assert private.steps_taken == steps + 1
    moved = [
        not torch.equal(a, b.detach())
        for a, b in zip(model_params, private.module.parameters(), strict=True)
    ]
    assert all(moved)  # pure noise moved every parameter


def test_cnn_trains_in_every_mode():
    for mode in GRAD_SAMPLE_MODES:
        torch.manual_seed(0)
        cnn = build_model({"name": "cnn", "num_features": 64, "num_classes": 3})
        opt = torch.optim.SGD(cnn.parameters(), lr=0.1)
        ds = TensorDataset(torch.randn(16, 64), torch.randint(0, 3, (16,)))
        private = make_private(
            module=cnn,
            optimizer=opt,
            data_loader=DataLoader(ds, batch_size=8),
            noise_multiplier=1.0,
            max_grad_norm=1.0,
            grad_sample_mode=mode,
        )
        for x, y in private.data_loader:
            dp_loss_step(
                module=private.module,
                optimizer=private.optimizer,
                criterion=nn.CrossEntropyLoss(),
                inputs=x,
                targets=y,
            )
        assert private.steps_taken == 2


class BNNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(self.bn(self.conv(x)).mean((2, 3)))


class RunningScale(nn.Module):
    """Trainable layer with a running statistic: Opacus has no fix for it."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(4))
        self.register_buffer("running_mean", torch.zeros(4))

    def forward(self, x):
        return x * self.weight - self.running_mean


def test_validate_model_fixes_batchnorm_with_warning():
    with pytest.warns(UserWarning, match="BatchNorm2d -> GroupNorm"):
        fixed, changes = validate_model(BNNet())
    assert isinstance(fixed.bn, nn.GroupNorm)
    assert changes and "'bn'" in changes[0]
    # The fixed model passes, and an already-compatible model is returned unchanged.
    model = build_model({"name": "mlp", "num_features": 4, "num_classes": 2})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        same, none = validate_model(model, grad_sample_mode="ew")
    assert same is model and none == []


def test_validate_model_refuses_unfixable_layer_naming_it():
    with pytest.raises(
        IncompatibleModelError, match=r"layer '1' \(RunningScale\).*buffers"
    ):
        validate_model(nn.Sequential(nn.Linear(4, 4), RunningScale()))


def test_validate_model_refuses_layer_unsupported_by_ew():
    model = nn.Sequential(nn.Linear(4, 4), nn.PReLU(), nn.Linear(4, 2))
    with pytest.raises(IncompatibleModelError, match=r"layer '1' \(PReLU\).*'ew'"):
        validate_model(model, grad_sample_mode="ew")
    validate_model(model, grad_sample_mode="hooks")  # hooks falls back to functorch


def test_make_private_refuses_unfixed_batchnorm():
    model = BNNet()
    with pytest.raises(IncompatibleModelError, match="validate_model"):
        make_private(
            module=model,
            optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
            data_loader=DataLoader(
                TensorDataset(
                    torch.randn(4, 1, 5, 5), torch.zeros(4, dtype=torch.long)
                ),
                batch_size=2,
            ),
            noise_multiplier=1.0,
            max_grad_norm=1.0,
            grad_sample_mode="hooks",
        )


def _private(**kw):
    model = nn.Linear(8, 3)
    args = dict(
        module=model,
        optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
        data_loader=DataLoader(tiny_data(), batch_size=8),
        noise_multiplier=1.0,
        max_grad_norm=1.0,
    )
    return make_private(**(args | kw))


def test_deployment_without_secure_mode_warns_loudly_simulation_stays_quiet():
    with pytest.warns(InsecureRNGWarning, match="secure_mode"):
        _private(deployment=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _private()
        _private(deployment=True, secure_mode=True)
    assert not [
        w
        for w in caught
        if "Secure RNG" in str(w.message) or w.category is InsecureRNGWarning
    ]


@pytest.mark.parametrize(
    ("kw", "name"),
    [
        ({"noise_multiplier": 0.0}, "noise_multiplier"),
        ({"max_grad_norm": 0.0}, "max_grad_norm"),
        ({"max_grad_norm": float("inf")}, "max_grad_norm"),
        ({"grad_sample_mode": "fast"}, "grad_sample_mode"),
        ({"seed": -1, "reproducible": True}, "seed"),
    ],
)
def test_make_private_rejects_bad_values(kw, name):
    with pytest.raises(ValueError, match=name):
        _private(**kw)
