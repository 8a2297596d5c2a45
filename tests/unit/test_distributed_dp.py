"""Distributed DP math: rotation, discrete Gaussian, conditional rounding, the plan's
epsilon (recomputed independently), the wrap-around bound (respected, and not
vacuous), the secure-aggregation integer path, and attacks that must fail."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import optimize, stats

from lepton_fed.privacy.discrete import (
    RoundingFailed,
    conditional_round,
    discrete_gaussian,
    rounded_norm_bound,
)
from lepton_fed.privacy.distributed import (
    ddg_epsilon,
    decode_sum,
    encode_update,
    plan_distributed,
    plan_for_noise,
    tau_of,
    wrap_log2,
)
from lepton_fed.privacy.hadamard import block_size, rotate, unrotate
from lepton_fed.privacy.secure_rng import CryptoRandom


@pytest.fixture(scope="module")
def rng():
    return CryptoRandom()


# ------------------------------------------------------------------ rotation
@pytest.mark.parametrize("d", [1, 2, 7, 64, 650, 1000])
def test_rotation_is_orthogonal_and_inverted_for_any_length(d):
    x = np.random.default_rng(d).normal(size=d)
    y = rotate(x, seed=123)
    assert y.shape == (d,)  # no padding: uploads stay d values
    assert np.linalg.norm(y) == pytest.approx(np.linalg.norm(x), rel=1e-12)
    assert np.allclose(unrotate(y, seed=123), x, atol=1e-12)
    if d > 2:
        assert not np.allclose(unrotate(y, seed=124), x)


def test_rotation_flattens_a_spike():
    d = 650
    x = np.zeros(d)
    x[-1] = 1.0  # all the energy in one coordinate
    y = rotate(x, seed=7)
    # every coordinate the spike reaches is +-1/sqrt(P), or a Rademacher sum of them
    assert np.max(np.abs(y)) <= 6 / math.sqrt(block_size(d))


# ------------------------------------------------------------ discrete noise
def _dgauss_pmf(sigma, support):
    w = np.exp(-(support.astype(float) ** 2) / (2 * sigma**2))
    return w / w.sum()


@pytest.mark.parametrize("sigma", [0.7, 2.0, 5.5])
def test_discrete_gaussian_matches_its_pmf(sigma, rng):
    n = 40_000
    x = discrete_gaussian(n, sigma, rng)
    assert x.dtype == np.int64
    lim = int(math.ceil(5 * sigma)) + 1
    support = np.arange(-lim, lim + 1)
    pmf = _dgauss_pmf(sigma, np.arange(-60, 61))
    expected = np.array([pmf[60 + k] for k in support]) * n
    observed = np.array([(x == k).sum() for k in support])
    keep = expected >= 5  # chi-square on the well-populated cells
    chi2 = float(np.sum((observed[keep] - expected[keep]) ** 2 / expected[keep]))
    assert stats.chi2.sf(chi2, keep.sum() - 1) > 1e-4, chi2
    assert abs(x.mean()) < 5 * sigma / math.sqrt(n)


def test_discrete_gaussian_variance_at_large_scale(rng):
    sigma, n = 3.0e6, 20_000
    x = discrete_gaussian(n, sigma, rng).astype(float)
    # sample variance / sigma^2 ~ chi2_n / n: 5 standard errors
    assert x.var() / sigma**2 == pytest.approx(1.0, abs=5 * math.sqrt(2 / n))


def test_noise_comes_from_the_csprng_not_from_a_seed():
    np.random.seed(0)
    a = discrete_gaussian(1000, 10.0, CryptoRandom())
    np.random.seed(0)
    b = discrete_gaussian(1000, 10.0, CryptoRandom())
    assert not np.array_equal(a, b)


def test_conditional_rounding_is_unbiased_and_always_within_the_bound(rng):
    d = 50
    x = np.random.default_rng(1).normal(size=d) * 3
    bound = rounded_norm_bound(float(np.linalg.norm(x)), d, math.exp(-0.5))
    draws = np.array([conditional_round(x, bound, rng) for _ in range(2000)])
    assert all(math.sqrt(int((r * r).sum())) <= bound for r in draws)
    assert np.all(np.abs(draws - x) < 1)
    assert np.abs(draws.mean(0) - x).max() < 0.06  # 2000 draws: s.e. <= 0.011
    with pytest.raises(RoundingFailed):
        conditional_round(x, 0.5 * float(np.linalg.norm(x)), rng, max_tries=20)


# ----------------------------------------------------------------- accounting
def _rdp_prop14(alpha, l2, tau, d):
    return min(alpha / 2 * l2**2 + tau * d, alpha / 2 * (l2 + math.sqrt(d) * tau) ** 2)


def _eps_from_rdp(rdp_fn, rounds, delta):
    """Independent conversion over continuous orders (Canonne, Kamath & Steinke 2020,
    Prop. 12 form, as dp-accounting uses it, minimised here with scipy)."""
    def f(a):
        return (rounds * rdp_fn(a) + math.log1p(-1 / a)
                - (math.log(delta) + math.log(a)) / (a - 1))
    res = optimize.minimize_scalar(f, bounds=(1.0001, 1e4), method="bounded",
                                   options={"xatol": 1e-9})
    return float(res.fun)


@pytest.mark.parametrize("sigma,honest,d,rounds", [(0.9, 10, 100, 20), (3.0, 20, 650, 50),
                                                   (50.0, 5, 10_000, 1)])
def test_epsilon_recomputed_independently(sigma, honest, d, rounds):
    sens = 12.0
    got = ddg_epsilon(sensitivity=sens, local_sigma=sigma, honest=honest, max_shares=honest,
                      dim=d, rounds=rounds, delta=1e-5)
    tau = 10 * sum(math.exp(-2 * math.pi**2 * sigma**2 * k / (k + 1)) for k in range(1, honest))
    assert tau == pytest.approx(tau_of(sigma, honest))
    l2 = sens / (math.sqrt(honest) * sigma)
    mine = _eps_from_rdp(lambda a: _rdp_prop14(a, l2, tau, d), rounds, 1e-5)
    # dp-accounting optimises over a fixed order grid: never below the continuous minimum
    assert mine <= got + 1e-9
    assert got == pytest.approx(mine, rel=0.02)


def test_small_tau_matches_the_continuous_gaussian():
    """With large shares tau vanishes and the bound is the Gaussian mechanism's
    (dp-accounting's own Gaussian event, noise multiplier sqrt(h) s / sensitivity)."""
    import dp_accounting
    from dp_accounting.rdp import RdpAccountant

    sens, s, h, rounds = 1000.0, 400.0, 20, 30
    acc = RdpAccountant()
    acc.compose(dp_accounting.SelfComposedDpEvent(
        dp_accounting.GaussianDpEvent(math.sqrt(h) * s / sens), rounds))
    got = ddg_epsilon(sensitivity=sens, local_sigma=s, honest=h, max_shares=h, dim=1000,
                      rounds=rounds, delta=1e-5)
    assert got == pytest.approx(acc.get_epsilon(1e-5), rel=1e-9)


def test_tau_matters_for_small_shares():
    """Tiny shares are not the Gaussian: the sum of discrete Gaussians costs more."""
    common = dict(sensitivity=2.0, honest=50, max_shares=50, dim=1000, rounds=1, delta=1e-5)
    small = ddg_epsilon(local_sigma=0.35, **common)
    gauss = ddg_epsilon(local_sigma=0.35, **common | {"honest": 1, "max_shares": 1,
                                                       "sensitivity": 2.0 / math.sqrt(50)})
    assert small > 1.5 * gauss


@pytest.mark.parametrize("eps", [1.0, 3.0, 8.0])
def test_plan_meets_the_target_and_the_wrap_bound(eps):
    plan = plan_distributed(epsilon=eps, delta=1e-5, rounds=50, clip=1.0, dim=650,
                            min_contributors=20, max_contributors=20, colluders=1)
    assert eps * (1 - 1e-6) <= plan.epsilon <= eps
    assert plan.epsilon_after(50) == pytest.approx(plan.epsilon)
    assert plan.epsilon_after(10) < plan.epsilon and plan.epsilon_after(0) == 0
    assert plan.wrap_log2 <= -40
    assert plan.honest == 19
    again = plan_distributed(epsilon=eps, delta=1e-5, rounds=50, clip=1.0, dim=650,
                             min_contributors=20, max_contributors=20, colluders=1)
    assert again == plan  # every node and the server compute the same plan


def test_plan_for_a_noise_level_round_trips_with_the_target():
    kw = dict(delta=1e-5, rounds=30, clip=0.5, dim=4810, min_contributors=18,
              max_contributors=20, colluders=1)
    target = plan_distributed(epsilon=2.0, **kw)
    back = plan_for_noise(noise_multiplier=target.noise_multiplier, **kw)
    assert back.epsilon == pytest.approx(2.0, rel=1e-6)
    assert back.wrap_log2 <= -40 and back.honest == 17


def test_plan_at_16_bits_costs_little_noise():
    """The paper's regime: 16 bits per coordinate already give nearly the same noise."""
    kw = dict(epsilon=3.0, delta=1e-5, rounds=50, clip=1.0, dim=650, min_contributors=20,
              max_contributors=20, colluders=1)
    p32, p16 = plan_distributed(**kw), plan_distributed(**kw, bits=16)
    assert p16.wrap_log2 <= -40
    assert p16.noise_multiplier == pytest.approx(p32.noise_multiplier, rel=0.02)
    with pytest.raises(ValueError, match="wrap-around bound"):
        plan_distributed(**kw | {"dim": 2_000_000}, bits=8)


def test_plan_refuses_bad_parameters_naming_them():
    with pytest.raises(ValueError) as e:
        plan_distributed(epsilon=0, delta=1.0, rounds=0, clip=-1, dim=0, min_contributors=5,
                         max_contributors=3, colluders=5)
    for name in ("epsilon", "delta", "rounds", "clip", "dim", "min_contributors", "colluders"):
        assert name in str(e.value)


# --------------------------------------------------------------- wrap-around
def _sum_once(plan, n, dim, rng, gamma=None):
    seed = 99
    x = np.random.default_rng(0).normal(size=dim)
    x *= plan.clip / np.linalg.norm(x)  # worst case: every node at the clip, aligned
    p = plan if gamma is None else type(plan)(**{**plan.__dict__, "gamma": gamma,
                                                   "rounded_norm": rounded_norm_bound(
                                                       plan.clip / gamma, dim, plan.beta)})
    total = sum(encode_update(x, p, seed, rng) for _ in range(n))
    return total, x, p, seed


def test_wrap_around_bound_is_respected_and_not_vacuous(rng):
    dim, n, bits = 64, 5, 10
    plan = plan_distributed(epsilon=4.0, delta=1e-5, rounds=1, clip=1.0, dim=dim,
                            min_contributors=n, max_contributors=n, bits=bits, wrap_bits=4)
    half = 2 ** (bits - 1)
    trials = 300

    def wraps(gamma=None):
        count = 0
        for _ in range(trials):
            total, *_ = _sum_once(plan, n, dim, rng, gamma)
            count += bool(np.any(np.abs(total) >= half))
        return count / trials

    bound = 2.0 ** plan.wrap_log2
    assert bound <= 2.0**-4
    assert wraps() <= bound + 3 * math.sqrt(bound / trials)
    # a granularity 8x finer than planned overflows the same field: the bound is what
    # keeps the sum decodable, not luck
    finer = plan.gamma / 8
    assert wrap_log2(gamma=finer, local_sigma=plan.local_sigma * 8, clip=1.0, dim=dim,
                     max_contributors=n, bits=bits) > -4
    assert wraps(finer) > 0.5


# ---------------------------------------------------------- secure aggregation
def _secagg_sum(vectors, bits=32):
    from lepton_fed.secagg import (
        SecAggServer,
        advertise_all,
        default_params,
        make_clients,
    )
    from lepton_fed.secagg.inprocess import simulate_round

    ids = list(range(1, len(vectors) + 1))
    clients, roster = make_clients(ids, min_security_bits=0)
    server = SecAggServer(params=default_params(num_clients=len(ids), rounds=1, bits=bits,
                                                security_bits=0), run_id=5, roster=roster)
    advertise_all(server, clients)
    res = simulate_round(server, clients, dict(zip(ids, vectors, strict=True)), round=1)
    return res


def test_secure_sum_of_integers_is_exact_mod_the_field(rng):
    plan = plan_distributed(epsilon=2.0, delta=1e-5, rounds=3, clip=1.0, dim=300,
                            min_contributors=4, max_contributors=4)
    xs = [np.random.default_rng(i).normal(size=300) * 0.1 for i in range(4)]
    vecs = [encode_update(x, plan, 11, rng) for x in xs]
    res = _secagg_sum(vecs)
    assert res.field_sum is not None and res.field_sum.dtype == np.uint32
    assert int(res.field_sum[-1]) == 4  # the count coordinate
    want = np.mod(np.sum(vecs, axis=0), 2**32).astype(np.uint32)
    assert np.array_equal(res.field_sum[:-1], want)
    noisy = decode_sum(res.field_sum, plan, 11)
    resid = noisy - np.sum(xs, axis=0)
    # what the server decodes is the true sum plus the shares' noise, of the planned size
    sd = math.sqrt(4) * plan.local_sigma * plan.gamma
    assert resid.std() == pytest.approx(sd, rel=0.15)


# ------------------------------------------------------------------- attacks
def test_membership_attack_on_the_released_sum_stays_within_epsilon(rng):
    """The server knows every other node's update and the target's candidate update,
    sees the unmasked sum, and runs the optimal (Neyman-Pearson) test for "the target
    took part". Its true/false positive rates must satisfy TPR <= e^eps FPR + delta."""
    dim, h = 32, 4
    plan = plan_distributed(epsilon=1.0, delta=1e-5, rounds=1, clip=1.0, dim=dim,
                            min_contributors=h + 1, max_contributors=h + 1)
    seed = 3
    target = np.zeros(dim)
    target[0] = 1.0
    others = [np.random.default_rng(i).normal(size=dim) * 0.05 for i in range(h)]
    known = sum(rotate(o, seed) / plan.gamma for o in others)
    direction = rotate(target, seed) / plan.gamma
    u = direction / np.linalg.norm(direction)

    def score(p, with_target):
        vecs = [encode_update(o, p, seed, rng) for o in others]
        if with_target:
            vecs.append(encode_update(target, p, seed, rng))
        else:  # absent: its noise share is missing too (the server sees the sum only)
            vecs.append(discrete_gaussian(dim, p.local_sigma, rng))
        return float((np.sum(vecs, axis=0) - known) @ u)

    def rates(p, trials=400):
        pos = np.array([score(p, True) for _ in range(trials)])
        neg = np.array([score(p, False) for _ in range(trials)])
        thr = np.quantile(neg, 0.9)  # the attacker's threshold at FPR ~ 10%
        return float((neg > thr).mean()), float((pos > thr).mean())

    slack = 2 * 3 * math.sqrt(0.25 / 400)
    fpr, tpr = rates(plan)
    assert tpr <= math.exp(plan.epsilon_after(1)) * fpr + plan.delta + slack
    # the attack has power: with shares 20x too small it beats the same bound easily
    weak = type(plan)(**{**plan.__dict__, "local_sigma": plan.local_sigma / 20})
    fpr, tpr = rates(weak)
    assert tpr > math.exp(plan.epsilon_after(1)) * fpr + plan.delta + slack


def test_the_server_cannot_reproduce_or_remove_the_noise(rng):
    """Everything the server knows (config, rotation seed, every update) is identical in
    two rounds; the sums still differ by noise of the planned size -- there is nothing
    to regenerate -- and no round's sum equals the noiseless value."""
    plan = plan_distributed(epsilon=3.0, delta=1e-5, rounds=5, clip=1.0, dim=200,
                            min_contributors=3, max_contributors=3)
    xs = [np.random.default_rng(i).normal(size=200) * 0.2 for i in range(3)]
    a = decode_sum(np.mod(sum(encode_update(x, plan, 8, CryptoRandom()) for x in xs), 2**32),
                   plan, 8)
    b = decode_sum(np.mod(sum(encode_update(x, plan, 8, CryptoRandom()) for x in xs), 2**32),
                   plan, 8)
    sd = math.sqrt(3) * plan.local_sigma * plan.gamma
    assert np.std(a - b) == pytest.approx(math.sqrt(2) * sd, rel=0.2)
    assert np.std(a - np.sum(xs, axis=0)) == pytest.approx(sd, rel=0.2)
