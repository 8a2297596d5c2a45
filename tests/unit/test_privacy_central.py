"""Central DP: clipping, noise on the sum, and the accountant vs independent references."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from dp_accounting import dp_event
from dp_accounting.rdp import rdp_privacy_accountant as dpa

from lepton_fed.privacy import CentralAccountant, add_gaussian_noise, clip_update
from lepton_fed.privacy.analysis import DEFAULT_ORDERS
from lepton_fed.privacy.noise import OSNoise, SecureNoise


def closed_form_epsilon(sigmas, delta):
    """Sum of Gaussian RDP curves a/(2 z^2), converted with Balle et al. 2020, Prop. 12."""
    best = math.inf
    for a in DEFAULT_ORDERS:
        rdp = sum(a / (2 * z**2) for z in sigmas)
        best = min(best, rdp + math.log1p(-1 / a) - math.log(delta * a) / (a - 1))
    return best


def test_clip_update_scales_down_to_the_bound_and_reports_the_norm():
    rng = np.random.default_rng(0)
    v = rng.normal(size=1000).astype(np.float32)
    norm = float(np.linalg.norm(v.astype(np.float64)))
    clipped, reported = clip_update(v, clip=1.0)
    assert reported == pytest.approx(norm)
    assert clipped.dtype == np.float32
    assert np.linalg.norm(clipped.astype(np.float64)) == pytest.approx(1.0, rel=1e-6)
    assert np.allclose(clipped, v / norm, rtol=1e-6)  # direction kept
    small, n2 = clip_update(v * 1e-4, clip=1.0)
    assert np.array_equal(small, v * 1e-4) and n2 < 1.0  # within the bound: unchanged
    assert small is not v


@pytest.mark.parametrize(
    ("vec", "clip", "match"),
    [
        (np.array([1.0, np.nan]), 1.0, "non-finite"),
        (np.array([1.0, np.inf]), 1.0, "non-finite"),
        (np.ones(3), 0.0, "clip"),
        (np.ones(3), -1.0, "clip"),
        (np.ones((2, 2)), 1.0, "1-D"),
        (np.ones(3, dtype=np.int64), 1.0, "float"),
    ],
)
def test_clip_update_rejects_bad_input(vec, clip, match):
    with pytest.raises(ValueError, match=match):
        clip_update(vec, clip=clip)


def test_noise_std_is_sigma_times_clip_on_the_sum():
    total = np.zeros(200_000)
    noisy = add_gaussian_noise(
        total, noise_multiplier=1.5, clip=0.2, rng=np.random.default_rng(1)
    )
    assert np.std(noisy) == pytest.approx(0.3, rel=0.01)
    assert abs(np.mean(noisy)) < 0.01
    assert not np.any(total)  # input untouched
    # Same generator state -> same noise; different seed -> different noise.
    a = add_gaussian_noise(
        np.ones(5), noise_multiplier=1.0, clip=1.0, rng=np.random.default_rng(3)
    )
    b = add_gaussian_noise(
        np.ones(5), noise_multiplier=1.0, clip=1.0, rng=np.random.default_rng(3)
    )
    c = add_gaussian_noise(
        np.ones(5), noise_multiplier=1.0, clip=1.0, rng=np.random.default_rng(4)
    )
    assert np.array_equal(a, b) and not np.array_equal(a, c)


@pytest.mark.parametrize("source", [OSNoise, SecureNoise])
def test_noise_from_an_os_source_has_the_right_std_and_is_never_repeated(source):
    # Prepare: the same global seeds before each call (what a member could know)
    total = np.full(100_000, 2.0)
    draws = []
    for _ in range(2):
        np.random.seed(0)
        torch.manual_seed(0)
        draws.append(add_gaussian_noise(total, noise_multiplier=1.5, clip=0.2, rng=source()))
    # Assert
    noise = draws[0] - total
    assert draws[0].dtype == np.float64 and draws[0].shape == total.shape
    assert np.std(noise) == pytest.approx(0.3, rel=0.02)
    assert abs(np.mean(noise)) < 0.01
    assert not np.array_equal(draws[0], draws[1])
    assert np.all(total == 2.0)  # input untouched


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"noise_multiplier": 0.0}, "noise_multiplier"),
        ({"clip": 0.0}, "clip"),
        ({"rng": 3}, "rng"),
        ({"total": np.array([np.nan])}, "non-finite"),
    ],
)
def test_add_gaussian_noise_rejects_bad_input(kw, match):
    args = (
        dict(
            total=np.zeros(3),
            noise_multiplier=1.0,
            clip=1.0,
            rng=np.random.default_rng(0),
        )
        | kw
    )
    with pytest.raises(ValueError, match=match):
        add_gaussian_noise(**args)


def test_accountant_matches_independent_recomputations():
    # Prepare
    sigmas = [1.0, 1.0, 0.8, 2.0, 1.0]
    acc = CentralAccountant(delta=1e-5, population_size=10)
    ref = dpa.RdpAccountant()
    # Execute
    for z in sigmas:
        acc.step(noise_multiplier=z, num_clients=10)
        ref.compose(dp_event.GaussianDpEvent(z))
    # Assert
    assert acc.rounds == 5
    assert acc.epsilon == pytest.approx(ref.get_epsilon(1e-5), rel=1e-9)
    assert acc.epsilon == pytest.approx(closed_form_epsilon(sigmas, 1e-5), rel=1e-9)
    assert CentralAccountant(delta=1e-5, population_size=10).epsilon == 0.0


def test_accountant_state_round_trip_and_checks():
    acc = CentralAccountant(delta=1e-5, population_size=4)
    for _ in range(3):
        acc.step(noise_multiplier=1.2, num_clients=4)
    state = json.loads(json.dumps(acc.state_dict()))  # survives JSON
    back = CentralAccountant(delta=1e-5, population_size=4)
    back.load_state_dict(state)
    assert back.epsilon == acc.epsilon and back.rounds == 3
    with pytest.raises(ValueError, match="delta"):
        CentralAccountant(delta=1e-6, population_size=4).load_state_dict(state)
    with pytest.raises(ValueError, match="population_size"):
        CentralAccountant(delta=1e-5, population_size=5).load_state_dict(state)
    for bad in (
        {**state, "mechanism": "dpsgd"},
        {**state, "version": 9},
        {**state, "x": 1},
    ):
        with pytest.raises(ValueError):
            CentralAccountant(delta=1e-5, population_size=4).load_state_dict(bad)
    with pytest.raises(ValueError, match="noise_multiplier"):
        CentralAccountant(delta=1e-5, population_size=4).load_state_dict(
            {**state, "rounds": [[0.0, 4]]}
        )


def test_accountant_budget_check_and_validation():
    acc = CentralAccountant(delta=1e-5, population_size=3)
    assert acc.can_afford(noise_multiplier=1.0, num_clients=3, target_epsilon=5.0)
    acc.step(noise_multiplier=1.0, num_clients=3)
    assert not acc.can_afford(noise_multiplier=1.0, num_clients=3, target_epsilon=5.0)
    assert acc.rounds == 1  # the check did not spend
    with pytest.raises(ValueError, match="num_clients"):
        acc.step(noise_multiplier=1.0, num_clients=4)
    with pytest.raises(ValueError, match="delta"):
        CentralAccountant(delta=1.0, population_size=3)
