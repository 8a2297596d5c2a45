"""PLD accounting beside RDP: both recomputed independently with dp-accounting, the
chosen accountant used consistently for calibration and the ledger's budget check."""

from __future__ import annotations

import math

import pytest
from dp_accounting import GaussianDpEvent, PoissonSampledDpEvent
from dp_accounting.pld import PLDAccountant
from dp_accounting.rdp import RdpAccountant

from lepton_fed.errors import PrivacyBudgetExhausted
from lepton_fed.privacy import analysis as pa
from lepton_fed.privacy.central import CentralAccountant
from lepton_fed.privacy.ledger import PrivacyEvent, PrivacyLedger
from lepton_fed.privacy.pld import (
    PLD_DISCRETIZATION,
    PLD_MIN_SIGMA,
    check_accountant,
    check_accountant_config,
    run_accountant,
)

DELTA = 1e-5
# (sigma, q, steps): a digits client, a long run, full batch, heavy noise
SETTINGS = [(0.879, 1 / 9, 45), (1.5, 0.04, 2250), (3.0, 1.0, 8), (5.0, 0.25, 40)]


def _dpa_pld(history, delta=DELTA, vdi=PLD_DISCRETIZATION):
    acc = PLDAccountant(value_discretization_interval=vdi)
    for s, q, n in history:
        acc.compose(GaussianDpEvent(s) if q == 1 else
                    PoissonSampledDpEvent(q, GaussianDpEvent(s)), n)
    return acc.get_epsilon(delta)


def _dpa_rdp(history, delta=DELTA):
    acc = RdpAccountant()
    for s, q, n in history:
        acc.compose(PoissonSampledDpEvent(q, GaussianDpEvent(s)), n)
    return acc.get_epsilon(delta)


@pytest.mark.parametrize(("sigma", "q", "steps"), SETTINGS)
def test_pld_epsilon_equals_dp_accounting_pld(sigma, q, steps):
    ours = pa.epsilon_for(noise_multiplier=sigma, sample_rate=q, steps=steps, delta=DELTA,
                          accountant="pld")
    assert ours == pytest.approx(_dpa_pld([(sigma, q, steps)]), rel=1e-9)
    # a finer grid is tighter, never looser: ours is an upper bound of it, and close
    fine = _dpa_pld([(sigma, q, steps)], vdi=1e-4)
    assert fine - 1e-9 <= ours <= fine * 1.005


@pytest.mark.parametrize(("sigma", "q", "steps"), SETTINGS)
def test_rdp_epsilon_matches_dp_accounting_rdp_and_pld_is_tighter(sigma, q, steps):
    rdp = pa.epsilon_for(noise_multiplier=sigma, sample_rate=q, steps=steps, delta=DELTA)
    pld = pa.epsilon_for(noise_multiplier=sigma, sample_rate=q, steps=steps, delta=DELTA,
                         accountant="pld")
    theirs = _dpa_rdp([(sigma, q, steps)])
    # dp-accounting over-estimates fractional orders slightly (README): ours <= theirs
    assert theirs * 0.99 <= rdp <= theirs * (1 + 1e-9)
    assert pld < rdp


def test_heterogeneous_history_composes_like_dp_accounting():
    h = [(1.0, 0.1, 30), (2.0, 0.2, 20), (1.0, 0.1, 15), (4.0, 1.0, 3)]
    ours = pa.epsilon_for_history(h, delta=DELTA, accountant="pld")
    merged = [(1.0, 0.1, 45), (2.0, 0.2, 20), (4.0, 1.0, 3)]
    assert ours == pytest.approx(_dpa_pld(merged), rel=1e-6)
    assert ours < pa.epsilon_for_history(h, delta=DELTA)


def test_full_batch_is_the_exact_gaussian_composition():
    # T Gaussian steps of sigma are one Gaussian of sigma/sqrt(T): the analytic
    # Gaussian mechanism (Balle & Wang 2018) gives delta(eps); PLD's eps must be at it
    from scipy.stats import norm

    sigma, steps = 3.0, 8
    eps = pa.epsilon_for(noise_multiplier=sigma, sample_rate=1.0, steps=steps, delta=DELTA,
                         accountant="pld")
    mu = math.sqrt(steps) / sigma
    delta_at = norm.cdf(-eps / mu + mu / 2) - math.exp(eps) * norm.cdf(-eps / mu - mu / 2)
    assert delta_at <= DELTA * (1 + 1e-6)
    delta_below = (norm.cdf(-(eps - 0.01) / mu + mu / 2)
                   - math.exp(eps - 0.01) * norm.cdf(-(eps - 0.01) / mu - mu / 2))
    assert delta_below > DELTA  # and not much looser than the exact curve


def test_tiny_sigma_falls_back_to_rdp_an_upper_bound():
    s = PLD_MIN_SIGMA / 2
    pld = pa.epsilon_for(noise_multiplier=s, sample_rate=0.1, steps=3, delta=DELTA,
                         accountant="pld")
    assert pld == pa.epsilon_for(noise_multiplier=s, sample_rate=0.1, steps=3, delta=DELTA)


@pytest.mark.parametrize("target", [1.0, 3.0, 8.0])
def test_calibration_meets_the_target_under_its_own_accountant(target):
    kw = {"target_epsilon": target, "delta": DELTA, "sample_rate": 1 / 9, "steps": 90}
    s_pld = pa.noise_multiplier_for(**kw, accountant="pld")
    s_rdp = pa.noise_multiplier_for(**kw)
    got = _dpa_pld([(s_pld, 1 / 9, 90)])
    assert got <= target * (1 + 1e-9) and got == pytest.approx(target, rel=1e-3)
    assert s_pld < s_rdp
    # the PLD sigma would NOT pass an RDP budget check: mixing accountants is caught
    assert pa.epsilon_for(noise_multiplier=s_pld, sample_rate=1 / 9, steps=90,
                          delta=DELTA) > target


def test_central_pld_equals_dp_accounting_and_is_tighter_than_flower_rdp():
    ours = pa.central_epsilon(noise_multiplier=1.0, rounds=10, delta=DELTA,
                              accountant="pld")
    assert ours == pytest.approx(_dpa_pld([(1.0, 1.0, 10)]), rel=1e-9)
    assert ours < pa.central_epsilon(noise_multiplier=1.0, rounds=10, delta=DELTA)
    z = pa.central_noise_multiplier_for(target_epsilon=3.0, delta=DELTA, rounds=20,
                                        accountant="pld")
    assert _dpa_pld([(z, 1.0, 20)]) <= 3.0 * (1 + 1e-9)
    acc = CentralAccountant(delta=DELTA, population_size=10, accountant="pld")
    for _ in range(20):
        acc.step(noise_multiplier=z, num_clients=5)
    assert acc.epsilon == pytest.approx(_dpa_pld([(z, 1.0, 20)]), rel=1e-9)
    assert acc.epsilon_with("rdp") > acc.epsilon


def test_ledger_budget_check_uses_the_given_accountant():
    """A sigma calibrated with PLD for 10 rounds affords exactly 10 rounds under PLD;
    under RDP the same ledger refuses earlier."""
    q, steps, target = 1 / 9, 9, 3.0
    sigma = pa.noise_multiplier_for(target_epsilon=target, delta=DELTA, sample_rate=q,
                                    steps=10 * steps, accountant="pld")

    def rounds_afforded(accountant: str) -> int:
        ledger = PrivacyLedger(dataset="d")
        ev = PrivacyEvent(noise_multiplier=sigma, sample_rate=q, steps=steps)
        n = 0
        while n < 20:
            try:
                held = ledger.reserve(ev, target_epsilon=target, delta=DELTA,
                                      accountant=accountant)
            except PrivacyBudgetExhausted:
                return n
            ledger.settle(str(held.reservation), ev)
            n += 1
        return n

    assert rounds_afforded("pld") == 10
    assert rounds_afforded("rdp") < 10


def test_unknown_accountant_is_refused_clearly():
    with pytest.raises(ValueError, match="accountant must be one of"):
        check_accountant("moments")
    with pytest.raises(ValueError, match="accountant must be one of"):
        pa.epsilon_for(noise_multiplier=1.0, sample_rate=0.1, steps=1, delta=DELTA,
                       accountant="gdp")
    with pytest.raises(ValueError, match="PLD accountant takes none"):
        pa.epsilon_for(noise_multiplier=1.0, sample_rate=0.1, steps=1, delta=DELTA,
                       accountant="pld", orders=[2.0, 4.0])


def test_config_key():
    from omegaconf import OmegaConf

    assert run_accountant(OmegaConf.create({"privacy": {"accountant": "pld"}})) == "pld"
    # a config written before the key existed keeps the conservative accountant
    assert run_accountant(OmegaConf.create({"privacy": {}})) == "rdp"
    bad = OmegaConf.create({"privacy": {"accountant": "moments"}})
    assert "privacy.accountant='moments'" in check_accountant_config(bad)[0]
    assert check_accountant_config(OmegaConf.create({"privacy": {"accountant": "rdp"}})) == []
