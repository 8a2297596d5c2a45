"""Security-level bounds: exact tails (checked against scipy), the model behind them
(checked against the real neighbour graph), and the parameter choice."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from lepton_fed.secagg.graph import neighbour_graph
from lepton_fed.secagg.security import (
    SecurityLevel,
    abort_log2,
    assumed_colluders,
    choose_graph,
    exposure_log2,
)


@pytest.mark.parametrize(
    ("m", "k", "t", "gamma"),
    [
        (1000, 30, 20, 0.05),
        (1000, 54, 38, 0.05),
        (200, 24, 16, 0.1),
        (50, 18, 12, 0.2),
        (20, 2, 2, 0.1),
        (10_000, 64, 45, 0.05),
        (12, 11, 8, 0.3),
    ],
)
def test_exposure_bound_matches_scipy_hypergeometric(m, k, t, gamma) -> None:
    c = assumed_colluders(m, gamma)
    p = stats.hypergeom(m - 1, c, k).sf(2 * t - k - 1) * (m - c)
    ours = exposure_log2(m, k, t, gamma)
    if p == 0:
        assert ours == -math.inf
    else:
        assert ours == pytest.approx(min(0.0, math.log2(p)), abs=1e-6)


@pytest.mark.parametrize(
    ("m", "k", "t", "delta"),
    [(1000, 54, 38, 0.05), (100, 28, 17, 0.05), (50, 24, 14, 0.1), (10, 8, 5, 0.01)],
)
def test_abort_bound_matches_scipy_binomial(m, k, t, delta) -> None:
    p = m * stats.binom(k, delta).sf(k - t)
    assert abort_log2(m, k, t, delta) == pytest.approx(min(0.0, math.log2(p)), abs=1e-6)


def test_issue_figure_old_default_was_weak() -> None:
    # Issue 8 item 5: k=30, t=20 at n=1000 and 5 % colluders exposed an input with
    # probability about 2^-10.8 per round; the derived parameters reach 2^-40.
    assert exposure_log2(1000, 30, 20, 0.05) == pytest.approx(-10.88, abs=0.01)
    c = choose_graph(1000)
    assert c.privacy_log2 <= -40 and c.correctness_log2 <= -20


def test_colluders_are_rounded_up_and_capped() -> None:
    assert assumed_colluders(10, 0.05) == 1
    assert assumed_colluders(1000, 0.05) == 50
    assert assumed_colluders(2, 0.9) == 1
    assert assumed_colluders(100, 0.0) == 0


def test_bigger_k_with_the_same_t_is_weaker() -> None:
    # why a node compares bounds rather than k and t separately
    assert exposure_log2(1000, 60, 38, 0.05) > exposure_log2(1000, 54, 38, 0.05)


def test_choice_is_the_cheapest_that_meets_both_targets() -> None:
    level = SecurityLevel()
    c = choose_graph(1000, level)
    for k in range(2, c.neighbours, 2):  # every smaller even k fails a target
        ok = [
            t
            for t in range(k // 2 + 1, k + 1)
            if exposure_log2(1000, k, t, 0.05) <= -40
        ]
        assert not ok or abort_log2(1000, k, ok[0], 0.05) > -20


def test_small_cohorts_fall_back_to_the_best_correctness() -> None:
    c = choose_graph(4)
    assert c.privacy_log2 == -math.inf  # 1 colluder cannot reach 2t - k = 2
    assert c.correctness_log2 > -20  # unreachable with 4 nodes: best effort
    with pytest.raises(ValueError, match="no graph reaches"):
        choose_graph(2)


def test_neighbourhood_model_holds_for_the_real_graph() -> None:
    # The bound assumes a node's neighbourhood is a uniform k-subset of the others, so
    # its colluding neighbours are hypergeometric. Check that on the real graph.
    m, k, colluders, target = 30, 6, set(range(1, 6)), 0
    cohort = list(range(m))
    counts = np.zeros(k + 1, dtype=int)
    trials = 3000
    rng = np.random.default_rng(7)  # fixed seeds: the test cannot flake
    for _ in range(trials):
        graph = neighbour_graph(cohort, rng.bytes(32), run_id=1, round=1, k=k)
        counts[len(colluders.intersection(graph[target]))] += 1
    expected = stats.hypergeom(m - 1, len(colluders), k).pmf(range(k + 1)) * trials
    keep = expected >= 5  # chi-square validity; pool the tail
    observed = np.append(counts[keep], counts[~keep].sum())
    exp = np.append(expected[keep], expected[~keep].sum())
    assert stats.chisquare(observed, exp).pvalue > 1e-4
