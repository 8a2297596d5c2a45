"""The one-run audit's statistics (Steinke, Nasr & Jagielski 2023): exact where a closed
form exists, calibrated on a mechanism whose epsilon is known exactly, and powerful
when there is no privacy at all."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from lepton_fed.privacy.audit import (
    audit_bound,
    epsilon_lower_bound,
    make_canaries,
    mia_auc,
    p_value,
)


def test_all_correct_guesses_match_the_closed_form():
    # delta = 0, v = r: P[Bin(r, q) = r] = q^r < alpha  <=>  eps > log(q/(1-q)),
    # q = alpha^(1/r)
    for r, alpha in [(20, 0.05), (100, 0.01)]:
        q = alpha ** (1 / r)
        want = math.log(q / (1 - q))
        got = epsilon_lower_bound(1000, r, r, delta=0.0, alpha=alpha)
        assert got == pytest.approx(want, abs=1e-6)


def test_p_value_is_a_binomial_tail_plus_the_delta_term():
    from scipy.stats import binom

    q = 1 / (1 + math.exp(-1.0))
    assert p_value(100, 50, 40, 1.0, 0.0) == pytest.approx(binom.sf(39, 50, q))
    assert p_value(100, 50, 40, 1.0, 1e-3) > p_value(100, 50, 40, 1.0, 0.0)
    assert p_value(100, 50, 25, 0.0, 0.0) == pytest.approx(binom.sf(24, 50, 0.5))
    with pytest.raises(ValueError):
        p_value(10, 20, 5, 1.0, 0.0)


def _reference_p_value(m, r, v, eps, delta):
    """The paper's reference code (Steinke, Nasr & Jagielski 2023, appendix), verbatim
    in structure: a loop over the mass just below v."""
    from scipy.stats import binom

    q = 1 / (1 + math.exp(-eps))
    beta = binom.sf(v - 1, r, q)
    alpha, total = 0.0, 0.0
    for i in range(1, v + 1):
        total += binom.pmf(v - i, r, q)
        if total > i * alpha:
            alpha = total / i
    return min(beta + alpha * delta * 2 * m, 1)


@pytest.mark.parametrize(("m", "r", "v", "eps", "delta"),
                         [(1000, 100, 90, 2.0, 1e-5), (200, 80, 80, 3.0, 1e-3),
                          (50, 20, 5, 0.5, 0.01), (500, 500, 300, 0.1, 1e-6)])
def test_p_value_matches_the_reference_code(m, r, v, eps, delta):
    assert p_value(m, r, v, eps, delta) == pytest.approx(
        _reference_p_value(m, r, v, eps, delta), rel=1e-9, abs=1e-15)


def _randomized_response(eps, inc, rng):
    """Scores from an exactly eps-DP mechanism: report inclusion truthfully w.p.
    e^eps/(1+e^eps), flipped otherwise (plus tie-breaking jitter)."""
    keep = rng.random(inc.size) < math.exp(eps) / (1 + math.exp(eps))
    return np.where(keep == inc, 1.0, 0.0) + 1e-6 * rng.random(inc.size)


def test_audit_never_exceeds_a_known_epsilon_and_comes_close_with_many_canaries():
    rng = np.random.default_rng(0)
    eps, m = 1.0, 2000
    bounds = []
    for _ in range(20):
        inc = rng.random(m) < 0.5
        bounds.append(audit_bound(_randomized_response(eps, inc, rng), inc, delta=0.0,
                                  confidence=0.95).epsilon)
    assert max(bounds) <= eps  # 95% guarantee per trial; 20/20 here (fixed seed)
    assert np.median(bounds) > 0.75 * eps  # and the audit is tight for this mechanism


def test_no_privacy_gives_a_large_bound():
    rng = np.random.default_rng(1)
    inc = rng.random(200) < 0.5
    b = audit_bound(inc.astype(float) + 0.01 * rng.random(200), inc, delta=1e-5)
    assert b.correct == b.guesses and b.epsilon > 3.0


def test_mia_auc_equals_sklearn():
    rng = np.random.default_rng(2)
    a, b = rng.normal(0.3, 1, 50), rng.normal(0, 1, 70)
    want = roc_auc_score(np.r_[np.ones(50), np.zeros(70)], np.r_[a, b])
    assert mia_auc(a, b) == pytest.approx(want)
    assert mia_auc(np.zeros(3), np.zeros(3)) == 0.5


def test_canaries_lie_in_low_variance_directions_orthogonal_within_a_label():
    rng = np.random.default_rng(3)
    X = rng.normal(size=(500, 6)) * np.array([5, 4, 3, 1e-3, 1e-3, 1e-3])
    xs, ys = make_canaries(X, 2, 6, rng=rng, amplitude=2.0, subspace=3)
    assert xs.shape == (6, 6) and set(ys.tolist()) == {0, 1}
    assert np.abs(xs[:, :3]).max() < 1e-2  # nothing along the high-variance features
    assert np.linalg.norm(xs, axis=1) == pytest.approx(2.0 * math.sqrt(3), rel=1e-5)
    for c in (0, 1):
        g = xs[ys == c] @ xs[ys == c].T
        assert np.allclose(g - np.diag(np.diag(g)), 0, atol=1e-4)


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="equal"):
        audit_bound([1.0, 2.0], [True], delta=0.0)
    with pytest.raises(ValueError, match="confidence"):
        audit_bound([1.0, 2.0], [True, False], delta=0.0, confidence=1.0)
    with pytest.raises(ValueError, match="finite"):
        audit_bound([1.0, float("nan")], [True, False], delta=0.0)
