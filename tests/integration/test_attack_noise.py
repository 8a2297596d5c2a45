"""Attacks on DP noise predictability (issue 8, items 1-2): they must now fail.

1. The server knows a client's training seed (``derive_seed(cfg.seed, "train", round,
   partition)``), so if DP-SGD's Poisson sampling and noise were derived from it, the
   server could regenerate the noise and subtract it from the update, recovering the
   client's clipped-gradient sum (measured on the old code: to 2e-6).
2. Every member receives the config (``cfg.seed``), so if central-DP noise were derived
   from it, any member could remove the noise from the released aggregate.

Each attack is also run against ``privacy.reproducible=true`` (the research switch,
which seeds the noise on purpose), where it must SUCCEED: that shows the attack is
real and the tests can fail.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from lepton_fed.client.train import DPSettings, train_local
from lepton_fed.privacy.noise import SeededNoise
from lepton_fed.server.privacy import ServerPrivacy
from lepton_fed.utils.seed import derive_seed

pytestmark = [
    pytest.mark.filterwarnings("ignore:Full backward hook is firing"),
    pytest.mark.filterwarnings("ignore::lepton_fed.privacy.noise.ReproducibleNoiseWarning"),
]

SIGMA, CLIP, LR = 1.0, 1.0, 1.0
N, FEATURES, CLASSES = 32, 6, 3


def _data():
    g = np.random.default_rng(7)
    return g.normal(size=(N, FEATURES)).astype(np.float32), g.integers(0, CLASSES, N)


def _model():
    torch.manual_seed(3)
    return nn.Sequential(nn.Linear(FEATURES, 8), nn.ReLU(), nn.Linear(8, CLASSES))


def _flat(model):
    return torch.cat([p.detach().flatten().double() for p in model.parameters()])


def _client_round(model0, X, y, *, seed, reproducible, mode="ew"):
    """One real DP-SGD round (train_local + Opacus); returns the update w1 - w0.

    batch_size = N makes the Poisson rate 1 (every example in the single step), so
    the clipped-gradient sum S is a fixed function of (model, data): the oracle below.
    """
    model = copy.deepcopy(model0)
    res = train_local(model, X, y, epochs=1, batch_size=N, lr=LR, seed=seed,
                      dp=DPSettings(noise_multiplier=SIGMA, max_grad_norm=CLIP,
                                    grad_sample_mode=mode, reproducible=reproducible))
    assert res.steps == 1 and res.sample_rate == 1.0
    return _flat(model) - _flat(model0)


def _true_clipped_sum(model0, X, y):
    """The secret the attacker wants: sum over examples of the per-example gradient,
    flat-clipped to CLIP (computed independently of Opacus)."""
    total = None
    for xi, yi in zip(torch.as_tensor(X), torch.as_tensor(y), strict=True):
        model = copy.deepcopy(model0)
        loss = nn.CrossEntropyLoss()(model(xi[None]), yi[None].long())
        grads = torch.autograd.grad(loss, list(model.parameters()))
        g = torch.cat([t.flatten().double() for t in grads])
        g = g * min(1.0, CLIP / float(g.norm()))
        total = g if total is None else total + g
    return total


def _server_attack(update, model0, seed):
    """The server's replay: regenerate the noise the client would draw if it were
    derived from the seed (the reproducible source: one draw for all parameters, in
    order), subtract."""
    size = sum(p.numel() for p in model0.parameters())
    noise = SeededNoise(seed).gaussian(SIGMA * CLIP, (size,)).double()  # as add_noise
    # SGD with Opacus's mean reduction: w1 = w0 - LR * (S + noise) / expected_batch (N)
    return -update * N / LR - noise


def _rms(v):
    return float(v.pow(2).mean().sqrt())


@pytest.mark.parametrize("mode", ["ew", "ghost"])
def test_server_cannot_regenerate_dpsgd_noise(mode):
    # Prepare: the attacker knows the model, the seed and (generously) the data
    X, y = _data()
    model0 = _model()
    seed = derive_seed(0, "train", 1, 0)  # what round.py derives: the server knows it
    secret = _true_clipped_sum(model0, X, y)
    # Execute: the client trains twice with the same seed and config
    a = _client_round(model0, X, y, seed=seed, reproducible=False, mode=mode)
    b = _client_round(model0, X, y, seed=seed, reproducible=False, mode=mode)
    error = _rms(_server_attack(a, model0, seed) - secret)
    replay_error = _rms((b - a) * N / LR)  # a full replay of the client's computation
    # Assert: fresh noise every time; the recovered "sum" is off by the noise itself
    assert not torch.equal(a, b)
    assert error > 0.5 * SIGMA * CLIP
    assert replay_error > 0.5 * SIGMA * CLIP


@pytest.mark.parametrize("mode", ["ew", "ghost"])
def test_reproducible_switch_is_replayable_and_the_attack_then_works(mode):
    X, y = _data()
    model0 = _model()
    seed = derive_seed(0, "train", 1, 0)
    secret = _true_clipped_sum(model0, X, y)
    a = _client_round(model0, X, y, seed=seed, reproducible=True, mode=mode)
    b = _client_round(model0, X, y, seed=seed, reproducible=True, mode=mode)
    assert torch.equal(a, b)  # the research switch reproduces bit for bit
    # ...and is exactly as unsafe as documented: the server recovers the secret
    assert _rms(_server_attack(a, model0, seed) - secret) < 1e-4 * SIGMA * CLIP


# ----------------------------------------------------------------------- central DP


def _central_cfg(compose_cfg, *extra):
    return compose_cfg("privacy=central", "privacy.noise_multiplier=1.0", "privacy.clip=1.0",
                       "federation.num_clients=4", "federation.clients_per_round=4", *extra)


def _member_predictions(cfg, rnd, shape):
    """What a member who knows cfg.seed can compute for round ``rnd``'s noise (per
    entry of the mean): the old derivation and the reproducible one."""
    seed = derive_seed(cfg.seed, "central-noise", rnd)
    std = float(cfg.privacy.noise_multiplier) * float(cfg.privacy.clip)
    m = int(cfg.federation.clients_per_round)
    old = np.random.default_rng(seed).normal(0.0, std, size=shape) / m
    seeded = SeededNoise(seed).gaussian(std, shape, dtype=torch.float64).numpy() / m
    return old, seeded


@pytest.mark.parametrize("secure", [False, True])
def test_member_cannot_predict_central_noise(compose_cfg, secure):
    # Prepare: the clipped sum is known to be zero, so the released mean IS the noise
    cfg = _central_cfg(compose_cfg, f"privacy.secure_mode={str(secure).lower()}")
    sp = ServerPrivacy(cfg)
    total = np.zeros(20_000)
    # Execute
    first, second = sp.noisy_mean(total, 1), sp.noisy_mean(total, 1)
    # Assert: fresh noise per call, of the right size, and no prediction fits it
    std = 1.0 * 1.0 / 4
    assert not np.array_equal(first, second)
    assert np.std(first) == pytest.approx(std, rel=0.03)
    for guess in _member_predictions(cfg, 1, total.shape):
        assert _rms(torch.as_tensor(first - guess)) > 0.5 * std
    assert sp.summary({}, {})["reproducible"] is False


def test_reproducible_central_noise_is_predictable_as_documented(compose_cfg):
    cfg = _central_cfg(compose_cfg, "privacy.reproducible=true")
    sp = ServerPrivacy(cfg)
    total = np.zeros(1000)
    released = sp.noisy_mean(total, 2)
    assert np.array_equal(released, ServerPrivacy(cfg).noisy_mean(total, 2))
    _, seeded = _member_predictions(cfg, 2, total.shape)
    assert np.array_equal(released, seeded)  # a member removes the noise exactly
    summary = sp.summary({}, {})
    assert summary["reproducible"] is True and "SEEDED" in summary["noise"]


def test_reproducible_and_secure_mode_together_are_refused(compose_cfg):
    from lepton_fed.errors import ConfigError

    cfg = _central_cfg(compose_cfg, "privacy.reproducible=true", "privacy.secure_mode=true")
    with pytest.raises(ConfigError, match="exclude each other"):
        ServerPrivacy(cfg)


# ------------------------------------------------- whole federations, real ClientApp


def _final_model(compose_cfg, tmp_path, *overrides):
    from safetensors.numpy import load_file

    from lepton_fed.client.app import app
    from lepton_fed.inprocess import InProcessGrid
    from lepton_fed.server.outputs import RunWriter
    from lepton_fed.server.rounds import run_federation

    cfg = compose_cfg(*overrides, "federation.rounds=1", "federation.num_clients=2",
                      "federation.clients_per_round=2")
    run_federation(InProcessGrid(app, 2), cfg, RunWriter(tmp_path))
    weights = load_file(tmp_path / "model.safetensors")
    return np.concatenate([weights[k].ravel() for k in sorted(weights)])


def _twice(compose_cfg, tmp_path, *overrides):
    return (_final_model(compose_cfg, tmp_path / "a", *overrides),
            _final_model(compose_cfg, tmp_path / "b", *overrides))


@pytest.mark.parametrize("privacy", [("privacy=dpsgd", "privacy.epsilon=3"),
                                     ("privacy=central",)])
def test_same_config_twice_gives_different_models(compose_cfg, tmp_path, privacy):
    a, b = _twice(compose_cfg, tmp_path, *privacy)
    assert not np.array_equal(a, b)


def test_reproducible_central_run_is_identical(compose_cfg, tmp_path):
    a, b = _twice(compose_cfg, tmp_path, "privacy=central", "privacy.reproducible=true")
    assert np.array_equal(a, b)


def test_reproducible_dpsgd_run_is_identical(compose_cfg, tmp_path):
    a, b = _twice(compose_cfg, tmp_path, "privacy=dpsgd", "privacy.epsilon=3",
                  "privacy.reproducible=true")
    assert np.array_equal(a, b)
