"""Parameters, neighbour graph and stage transitions."""

from __future__ import annotations

import os

import pytest

from lepton_fed.errors import ProtocolAbort
from lepton_fed.secagg.graph import check_graph_params, neighbour_graph
from lepton_fed.secagg.params import SecAggParams, default_params
from lepton_fed.secagg.security import SecurityLevel, choose_graph, exposure_log2
from lepton_fed.secagg.stages import (
    CLIENT_TRANSITIONS,
    SERVER_TRANSITIONS,
    ClientPhase,
    ServerPhase,
    Stage,
    check_transition,
)


@pytest.mark.parametrize("n", [3, 4, 10, 50, 100, 200, 1000, 10_000])
def test_derived_params_reach_the_security_level(n: int) -> None:
    # Execute
    p = default_params(num_clients=n, rounds=10)
    k, t = p.for_cohort(n)
    choice = p.graph_choice(n)
    # Assert: the documented bound holds, and t is the smallest that reaches it
    assert (choice.neighbours, choice.threshold) == (k, t) == (
        choose_graph(n).neighbours,
        choose_graph(n).threshold,
    )
    check_graph_params(n, k, t)
    assert exposure_log2(n, k, t, 0.05) <= -40
    if t - 1 > k // 2:
        assert exposure_log2(n, k, t - 1, 0.05) > -40
    assert choice.privacy_log2 == exposure_log2(n, k, t, 0.05)


def test_published_table_is_what_the_code_derives() -> None:
    # The k/t table in lepton_fed/secagg/README.md (40 bits, 5 % colluding, 5 % dropout)
    table = {10: (8, 5), 100: (28, 17), 1000: (54, 38), 10_000: (64, 45)}
    for n, kt in table.items():
        c = choose_graph(n)
        assert (c.neighbours, c.threshold) == kt


def test_overrides_and_security_level_keywords() -> None:
    p = default_params(
        num_clients=100, rounds=3, neighbours=40, clip=0.5, bits=24
    )
    k, t = p.for_cohort(100)
    assert (k, p.clip, p.bits) == (40, 0.5, 24)
    assert t == min(
        tt for tt in range(21, 41) if exposure_log2(100, 40, tt, 0.05) <= -40
    )
    fixed = default_params(num_clients=100, rounds=3, neighbours=10, threshold=6)
    assert fixed.for_cohort(100) == (10, 6)
    assert fixed.for_cohort(8) == (7, 5)  # complete graph, t scaled with k
    strict = default_params(num_clients=1000, rounds=1, security_bits=64)
    assert strict.security == SecurityLevel(security_bits=64)
    assert strict.for_cohort(1000)[0] > default_params(
        num_clients=1000, rounds=1
    ).for_cohort(1000)[0]
    with pytest.raises(TypeError):
        default_params(num_clients=10, rounds=3, nonsense=1)


def test_unreachable_level_is_refused_before_any_round() -> None:
    # 2 nodes with a colluder assumed: the sum reveals the other input
    with pytest.raises(ValueError, match="no graph reaches"):
        default_params(num_clients=2, rounds=1)
    assert default_params(num_clients=2, rounds=1, colluding_fraction=0).for_cohort(2) == (
        1,
        1,
    )


@pytest.mark.parametrize(
    "kwargs",
    [
        {"neighbours": 4, "threshold": 2, "rounds": 1},
        {"neighbours": 4, "threshold": 5, "rounds": 1},
        {"neighbours": 0, "rounds": 1},
        {"neighbours": 4, "threshold": 3, "rounds": 0},
        {"rounds": 1, "clip": 0.0},
        {"rounds": 1, "bits": 40},
    ],
)
def test_invalid_params_raise(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        SecAggParams(**kwargs)
    with pytest.raises(ValueError):
        default_params(num_clients=1, rounds=1)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"security_bits": -1},
        {"colluding_fraction": 1.0},
        {"dropout_rate": -0.1},
        {"correctness_bits": float("inf")},
    ],
)
def test_invalid_security_level_raises(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        SecurityLevel(**kwargs)


def test_for_cohort_with_explicit_k_shrinks_it_and_keeps_t_above_half() -> None:
    p = SecAggParams(neighbours=18, threshold=12, rounds=1)
    assert p.for_cohort(10) == (9, 6)
    assert p.for_cohort(2) == (1, 1)
    p_odd = SecAggParams(neighbours=7, threshold=5, rounds=1)
    assert p_odd.for_cohort(20) == (6, 5)
    for m in range(2, 40):
        k, t = p.for_cohort(m)
        check_graph_params(m, k, t)


@pytest.mark.parametrize(("m", "k"), [(5, 4), (20, 6), (51, 18), (200, 24)])
def test_graph_is_regular_undirected_and_deterministic(m: int, k: int) -> None:
    # Prepare
    cohort = [7 * i + 3 for i in range(m)]
    seed = os.urandom(32)
    # Execute
    g = neighbour_graph(cohort, seed, run_id=1, round=2, k=k)
    # Assert
    assert g == neighbour_graph(list(reversed(cohort)), seed, run_id=1, round=2, k=k)
    assert set(g) == set(cohort)
    for v, nbrs in g.items():
        assert len(nbrs) == k and v not in nbrs
        assert all(v in g[u] for u in nbrs)
    if k < m - 1:
        assert g != neighbour_graph(cohort, seed, run_id=1, round=3, k=k)


def test_graph_rejects_bad_inputs() -> None:
    with pytest.raises(ValueError):
        neighbour_graph([1, 1, 2], bytes(32), run_id=1, round=1, k=1)
    with pytest.raises(ValueError):
        neighbour_graph(list(range(10)), bytes(32), run_id=1, round=1, k=3)
    for m, k, t in [(1, 1, 1), (5, 5, 3), (10, 3, 2), (10, 4, 2), (10, 4, 5)]:
        with pytest.raises(ValueError):
            check_graph_params(m, k, t)


def test_transitions_fail_closed() -> None:
    assert (
        check_transition(CLIENT_TRANSITIONS, ClientPhase.READY, Stage.MASKED_INPUT)
        == ClientPhase.MASKED
    )
    with pytest.raises(ProtocolAbort, match="UNMASK is not allowed in phase READY"):
        check_transition(CLIENT_TRANSITIONS, ClientPhase.READY, Stage.UNMASK)
    with pytest.raises(ProtocolAbort):
        check_transition(CLIENT_TRANSITIONS, ClientPhase.NEW, Stage.MASKED_INPUT)
    with pytest.raises(ProtocolAbort):
        check_transition(SERVER_TRANSITIONS, ServerPhase.IDLE, Stage.MASKED_INPUT)
    with pytest.raises(ProtocolAbort, match="finish"):
        check_transition(SERVER_TRANSITIONS, ServerPhase.READY, None)
