"""Parameters, neighbour graph and stage transitions."""

from __future__ import annotations

import os

import pytest

from lepton_fed.errors import ProtocolAbort
from lepton_fed.secagg.graph import check_graph_params, neighbour_graph
from lepton_fed.secagg.params import SecAggParams, default_params
from lepton_fed.secagg.stages import (
    CLIENT_TRANSITIONS,
    SERVER_TRANSITIONS,
    ClientPhase,
    ServerPhase,
    Stage,
    check_transition,
)


@pytest.mark.parametrize(
    ("n", "k", "t"),
    [
        (2, 1, 1),
        (3, 2, 2),
        (5, 4, 3),
        (8, 7, 5),
        (9, 8, 6),
        (50, 18, 12),
        (100, 20, 14),
        (1000, 30, 20),
    ],
)
def test_default_params(n: int, k: int, t: int) -> None:
    p = default_params(num_clients=n, rounds=10)
    assert (p.neighbours, p.threshold) == (k, t)
    assert 2 * p.threshold > p.neighbours
    assert p.for_cohort(n) == (k, t)


def test_every_field_is_overridable_and_threshold_follows_neighbours() -> None:
    p = default_params(
        num_clients=100, rounds=3, neighbours=10, clip=0.5, bits=24, unmask_timeout_s=5
    )
    assert (p.neighbours, p.threshold, p.clip, p.bits) == (10, 7, 0.5, 24)
    assert p.timeout_for(Stage.UNMASK) == 5
    assert (
        default_params(num_clients=100, rounds=3, neighbours=10, threshold=6).threshold
        == 6
    )
    with pytest.raises(TypeError):
        default_params(num_clients=10, rounds=3, nonsense=1)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"neighbours": 4, "threshold": 2, "rounds": 1},
        {"neighbours": 4, "threshold": 5, "rounds": 1},
        {"neighbours": 0, "threshold": 1, "rounds": 1},
        {"neighbours": 4, "threshold": 3, "rounds": 0},
        {"neighbours": 4, "threshold": 3, "rounds": 1, "clip": 0.0},
        {"neighbours": 4, "threshold": 3, "rounds": 1, "bits": 40},
        {"neighbours": 4, "threshold": 3, "rounds": 1, "unmask_timeout_s": 0},
    ],
)
def test_invalid_params_raise(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        SecAggParams(**kwargs)
    with pytest.raises(ValueError):
        default_params(num_clients=1, rounds=1)


def test_for_cohort_shrinks_k_and_keeps_t_above_half() -> None:
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


def test_robust_mode_is_opt_in_with_its_own_timeout() -> None:
    p = default_params(num_clients=50, rounds=3)
    assert p.share_keys_first is False and p.exchanges_per_round == 2
    r = default_params(
        num_clients=50, rounds=3, share_keys_first=True, share_keys_timeout_s=7
    )
    assert r.exchanges_per_round == 3
    assert r.timeout_for(Stage.SHARE_KEYS) == 7
    assert r.timeout_for(Stage.ROBUST_MASKED_INPUT) == r.masked_input_timeout_s
    assert r.timeout_for(Stage.ROBUST_UNMASK) == r.unmask_timeout_s
    with pytest.raises(ValueError):
        default_params(num_clients=5, rounds=1, share_keys_timeout_s=0)


def test_robust_transitions_fail_closed() -> None:
    assert (
        check_transition(CLIENT_TRANSITIONS, ClientPhase.READY, Stage.SHARE_KEYS)
        == ClientPhase.SHARED
    )
    assert (
        check_transition(
            CLIENT_TRANSITIONS, ClientPhase.SHARED, Stage.ROBUST_MASKED_INPUT
        )
        == ClientPhase.MASKED
    )
    with pytest.raises(ProtocolAbort):
        check_transition(CLIENT_TRANSITIONS, ClientPhase.READY, Stage.ROBUST_MASKED_INPUT)
    with pytest.raises(ProtocolAbort):
        check_transition(CLIENT_TRANSITIONS, ClientPhase.SHARED, Stage.UNMASK)
    with pytest.raises(ProtocolAbort):
        check_transition(SERVER_TRANSITIONS, ServerPhase.READY, Stage.ROBUST_MASKED_INPUT)
    assert (
        check_transition(SERVER_TRANSITIONS, ServerPhase.READY, Stage.SHARE_KEYS)
        == ServerPhase.COLLECTING_SHARES
    )
    assert Stage.ROBUST_UNMASK.canonical == Stage.UNMASK
