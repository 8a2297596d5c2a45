"""Privacy math vs independent accountants (dp-accounting, closed forms, Opacus pins)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from dp_accounting import dp_event
from dp_accounting.rdp import rdp_privacy_accountant as dpa

from lepton_fed.privacy import analysis as pa

INT_ORDERS = [a for a in pa.DEFAULT_ORDERS if a == int(a)]


def independent_dpsgd_epsilon(history, delta, orders=None):
    """dp-accounting's RDP accountant, events composed by hand (not the code under test)."""
    acc = (
        dpa.RdpAccountant(orders=orders) if orders is not None else dpa.RdpAccountant()
    )
    for sigma, q, steps in history:
        gauss = dp_event.GaussianDpEvent(sigma)
        acc.compose(
            gauss if q == 1.0 else dp_event.PoissonSampledDpEvent(q, gauss), steps
        )
    return acc.get_epsilon(delta)


def closed_form_gaussian_epsilon(noise_multiplier, rounds, delta, orders):
    """Gaussian mechanism: RDP(a) = a / (2 z^2) per release; Balle et al. 2020 conversion."""
    best = math.inf
    for a in orders:
        rdp = rounds * a / (2 * noise_multiplier**2)
        best = min(best, rdp + math.log1p(-1 / a) - math.log(delta * a) / (a - 1))
    return best


def test_default_orders_are_dp_accounting_defaults():
    # Prepare/Execute/Assert: same order set as the independent accountant.
    assert sorted(pa.DEFAULT_ORDERS) == sorted(float(a) for a in dpa.DEFAULT_RDP_ORDERS)


def test_epsilon_matches_opacus_pinned_value():
    # Opacus tests/accountants_test.py::test_rdp_accountant
    eps = pa.epsilon_for(noise_multiplier=1.5, sample_rate=0.04, steps=2250, delta=1e-5)
    assert eps == pytest.approx(7.32911117143, abs=1e-9)


@pytest.mark.parametrize(
    ("sigma", "q", "steps", "delta"),
    [
        (1.5, 0.04, 2250, 1e-5),
        (0.879, 1 / 9, 45, 1e-5),
        (0.6, 0.01, 10_000, 1e-6),
        (4.0, 0.3, 20, 1e-3),
        (1.1, 1.0, 3, 1e-5),
    ],
)
def test_epsilon_matches_dp_accounting(sigma, q, steps, delta):
    # Integer orders: both libraries compute the same RDP in closed form.
    ours = pa.epsilon_for(
        noise_multiplier=sigma,
        sample_rate=q,
        steps=steps,
        delta=delta,
        orders=INT_ORDERS,
    )
    ref = independent_dpsgd_epsilon([(sigma, q, steps)], delta, INT_ORDERS)
    assert ours == pytest.approx(ref, rel=1e-9)
    # All orders: the fractional-order series differ in the 5th digit between libraries.
    ours = pa.epsilon_for(
        noise_multiplier=sigma, sample_rate=q, steps=steps, delta=delta
    )
    assert ours == pytest.approx(
        independent_dpsgd_epsilon([(sigma, q, steps)], delta), rel=1e-4
    )


def test_heterogeneous_history_matches_dp_accounting():
    history = [(1.0, 0.01, 300), (2.0, 0.05, 100), (1.0, 0.01, 200), (0.8, 1 / 9, 9)]
    ours = pa.epsilon_for_history(history, delta=1e-5, orders=INT_ORDERS)
    assert ours == pytest.approx(
        independent_dpsgd_epsilon(history, 1e-5, INT_ORDERS), rel=1e-9
    )
    # Merging identical phases is exact and order-independent.
    merged = [(1.0, 0.01, 500), (2.0, 0.05, 100), (0.8, 1 / 9, 9)]
    assert pa.epsilon_for_history(merged, delta=1e-5) == pytest.approx(
        pa.epsilon_for_history(history[::-1], delta=1e-5), rel=1e-12
    )


def test_windowed_default_orders_equal_full_order_set():
    rng = np.random.default_rng(7)
    for _ in range(30):
        kw = dict(
            noise_multiplier=float(rng.uniform(0.5, 4)),
            sample_rate=float(rng.choice([0.004, 0.05, 0.2, 1.0])),
            steps=int(rng.integers(1, 2000)),
            delta=float(rng.choice([1e-3, 1e-5, 1e-8])),
        )
        fast = pa.epsilon_for(**kw)
        assert fast == pytest.approx(
            pa.epsilon_for(**kw, orders=pa.DEFAULT_ORDERS), rel=1e-12
        )


def test_zero_steps_spend_nothing_and_more_steps_spend_more():
    kw = dict(noise_multiplier=1.0, sample_rate=0.1, delta=1e-5)
    assert pa.epsilon_for(steps=0, **kw) == 0.0
    assert pa.epsilon_for_history([], delta=1e-5) == 0.0
    assert 0 < pa.epsilon_for(steps=10, **kw) < pa.epsilon_for(steps=20, **kw)


@pytest.mark.parametrize(
    ("target", "q", "steps"), [(8.0, 1 / 9, 45), (1.0, 0.02, 500), (3.0, 1.0, 10)]
)
def test_noise_multiplier_round_trip(target, q, steps):
    sigma = pa.noise_multiplier_for(
        target_epsilon=target, delta=1e-5, sample_rate=q, steps=steps
    )
    eps = pa.epsilon_for(noise_multiplier=sigma, sample_rate=q, steps=steps, delta=1e-5)
    assert eps <= target
    assert eps == pytest.approx(target, rel=1e-4)
    # Minimal: a slightly smaller sigma overspends.
    less = pa.epsilon_for(
        noise_multiplier=sigma * (1 - 1e-4), sample_rate=q, steps=steps, delta=1e-5
    )
    assert less > target


def test_noise_multiplier_for_unreachable_target_raises():
    with pytest.raises(ValueError, match="unreachable"):
        pa.noise_multiplier_for(
            target_epsilon=1e-4, delta=1e-5, sample_rate=1.0, steps=1000
        )


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"delta": 1.0}, "delta"),
        ({"delta": 0.0}, "delta"),
        ({"delta": float("nan")}, "delta"),
        ({"noise_multiplier": 0.0}, "noise_multiplier"),
        ({"noise_multiplier": -1.0}, "noise_multiplier"),
        ({"sample_rate": 0.0}, "sample_rate"),
        ({"sample_rate": 1.5}, "sample_rate"),
        ({"steps": -1}, "steps"),
        ({"steps": 2.5}, "steps"),
        ({"steps": True}, "steps"),
    ],
)
def test_epsilon_for_rejects_bad_values(kwargs, name):
    args = dict(noise_multiplier=1.0, sample_rate=0.1, steps=10, delta=1e-5) | kwargs
    with pytest.raises(ValueError, match=name):
        pa.epsilon_for(**args)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"target_epsilon": 0.0}, "target_epsilon"),
        ({"target_epsilon": -2}, "target_epsilon"),
        ({"delta": 1.0}, "delta"),
        ({"steps": 0}, "steps"),
    ],
)
def test_noise_multiplier_for_rejects_bad_values(kwargs, name):
    args = dict(target_epsilon=1.0, delta=1e-5, sample_rate=0.1, steps=10) | kwargs
    with pytest.raises(ValueError, match=name):
        pa.noise_multiplier_for(**args)


@pytest.mark.parametrize(
    ("n", "batch"), [(144, 16), (1437, 16), (372, 4), (10, 16), (50, 7)]
)
def test_local_schedule_matches_opacus_dp_data_loader(n, batch):
    import torch
    from opacus.data_loader import DPDataLoader
    from torch.utils.data import DataLoader, TensorDataset

    loader = DataLoader(TensorDataset(torch.zeros(n, 1)), batch_size=batch)
    dp_loader = DPDataLoader.from_data_loader(loader)
    sch = pa.local_schedule(num_examples=n, batch_size=batch, epochs=3)
    assert sch.sample_rate == dp_loader.sample_rate
    assert sch.steps_per_epoch == len(dp_loader)
    assert sch.steps == 3 * len(dp_loader)


def test_local_schedule_reproduces_opacus_rounding_quirk():
    # 93 batches: int(1 / (1 / 93)) == 92 in floating point; the ledger must say 92.
    assert pa.local_schedule(num_examples=372, batch_size=4).steps_per_epoch == 92


@pytest.mark.parametrize(("z", "rounds"), [(1.0, 1), (1.0, 2), (0.7, 30), (3.0, 200)])
def test_central_epsilon_matches_closed_form(z, rounds):
    ours = pa.central_epsilon(noise_multiplier=z, rounds=rounds, delta=1e-5)
    ref = closed_form_gaussian_epsilon(z, rounds, 1e-5, pa.DEFAULT_ORDERS)
    assert ours == pytest.approx(ref, rel=1e-9)


def test_central_epsilon_matches_flower_verified_run():
    # shared/reference/flower-1.42.md 3.3: 4 clients, z=1.0 -> 4.728507, then 7.077392.
    assert pa.central_epsilon(
        noise_multiplier=1.0, rounds=1, delta=1e-5
    ) == pytest.approx(4.728507, abs=1e-6)
    assert pa.central_epsilon(
        noise_multiplier=1.0, rounds=2, delta=1e-5
    ) == pytest.approx(7.077392, abs=1e-6)
    assert pa.central_epsilon(noise_multiplier=1.0, rounds=0, delta=1e-5) == 0.0


def test_central_calibration_round_trip():
    z = pa.central_noise_multiplier_for(target_epsilon=8.0, delta=1e-5, rounds=20)
    eps = pa.central_epsilon(noise_multiplier=z, rounds=20, delta=1e-5)
    assert eps <= 8.0
    assert eps == pytest.approx(8.0, rel=1e-4)
    with pytest.raises(ValueError, match="rounds"):
        pa.central_noise_multiplier_for(target_epsilon=8.0, delta=1e-5, rounds=0)


@pytest.mark.parametrize(
    ("q", "sigma", "order"), [(1 / 9, 0.95, 3.9), (0.04, 1.5, 3.9), (1 / 9, 0.88, 2.5)]
)
def test_fractional_order_rdp_matches_numerical_integration(q, sigma, order):
    # RDP(a) = log E_{z~N(0,s^2)}[((1-q) + q exp((2z-1)/(2 s^2)))^a] / (a-1)
    # (Mironov, Talwar, Zhang 2019), integrated numerically: a third, naive reference
    # for the fractional orders, where Opacus and dp-accounting disagree slightly.
    mp = pytest.importorskip("mpmath")
    from lepton_fed.privacy.analysis import _rdp_one_step

    mp.mp.dps = 30
    a, s, qq = mp.mpf(order), mp.mpf(sigma), mp.mpf(q)

    def integrand(z):
        return (
            mp.npdf(z, 0, s) * ((1 - qq) + qq * mp.exp((2 * z - 1) / (2 * s**2))) ** a
        )

    ref = float(mp.log(mp.quad(integrand, [-mp.inf, -10, 0, 10, 40, mp.inf])) / (a - 1))
    (ours,) = _rdp_one_step(q, sigma, (order,))
    assert ours == pytest.approx(ref, rel=1e-9)


def test_pinned_doctest_values_hold():
    # The pinned values live in docstrings; run them even without --doctest-modules.
    import doctest

    from lepton_fed.privacy import central, fingerprint

    for module in (pa, fingerprint, central):
        result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
        assert result.attempted > 0 and result.failed == 0, module.__name__
