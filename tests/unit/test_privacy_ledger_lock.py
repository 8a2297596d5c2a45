"""Budgets that cannot be reset or overspent: locked reservations across real processes,
ledger keys the server cannot move, and real nodes that refuse to train without a ledger."""

from __future__ import annotations

import fcntl
import multiprocessing as mp
import os
import time

import numpy as np
import pandas as pd
import pytest
from flwr.app import Context, RecordDict

from lepton_fed.client.dp import (
    DPDecision,
    ledger_key,
    record_round,
    reserve_dp_round,
)
from lepton_fed.client.node import NodeState
from lepton_fed.client.train import LocalResult
from lepton_fed.data.datasets import load_dataset
from lepton_fed.errors import PrivacyBudgetExhausted
from lepton_fed.policy.codes import BUDGET_EXHAUSTED, LEDGER_REQUIRED
from lepton_fed.privacy import (
    FileLedger,
    LedgerError,
    PrivacyEvent,
    dataset_fingerprint,
)
from lepton_fed.privacy.analysis import local_schedule

DELTA = 1e-5
EV = PrivacyEvent(noise_multiplier=2.0, sample_rate=0.05, steps=20)
CTX = mp.get_context("fork")


def _fits(target: float) -> int:
    """How many EV events fit under ``target`` (computed on a private in-memory ledger)."""
    from lepton_fed.privacy import PrivacyLedger

    ledger, n = PrivacyLedger(dataset="count"), 0
    while ledger.can_afford(EV, target_epsilon=target, delta=DELTA):
        ledger.record(EV)
        n += 1
    return n


# ------------------------------------------------------------ concurrent processes


def _reserve_until_refused(directory, key, target, barrier, out, settle):
    store = FileLedger(directory)
    barrier.wait()
    got = 0
    try:
        while True:
            _, held = store.reserve(key, EV, target_epsilon=target, delta=DELTA)
            got += 1
            if settle:  # the round ran one step less than planned
                time.sleep(0.001)
                actual = PrivacyEvent(noise_multiplier=2.0, sample_rate=0.05, steps=19)
                store.settle(key, held.reservation, actual)
    except PrivacyBudgetExhausted:
        out.put(("ok", got))
    except BaseException as e:  # noqa: BLE001 - report to the parent
        out.put(("error", repr(e)))


def _race(tmp_path, *, procs, target, settle):
    barrier, out = CTX.Barrier(procs), CTX.Queue()
    ps = [CTX.Process(target=_reserve_until_refused,
                      args=(tmp_path, "site", target, barrier, out, settle))
          for _ in range(procs)]
    for p in ps:
        p.start()
    results = [out.get(timeout=120) for _ in ps]
    for p in ps:
        p.join(timeout=30)
        assert p.exitcode == 0
    assert all(kind == "ok" for kind, _ in results), results
    return [n for _, n in results]


def test_concurrent_processes_never_exceed_the_cap(tmp_path):
    target = 2.0
    fit = _fits(target)
    assert 4 <= fit <= 40
    got = _race(tmp_path, procs=4, target=target, settle=False)
    ledger = FileLedger(tmp_path).load("site")
    assert sum(got) == fit == len(ledger)  # exactly the budget, across all processes
    assert ledger.epsilon(delta=DELTA) <= target * (1 + 1e-9)
    assert len(ledger.pending) == fit  # unsettled reservations count in full


def test_concurrent_reserve_and_settle_stay_within_the_cap(tmp_path):
    target = 2.0
    got = _race(tmp_path, procs=4, target=target, settle=True)
    ledger = FileLedger(tmp_path).load("site")
    assert sum(got) == len(ledger) >= _fits(target)  # settling smaller frees a little
    assert not ledger.pending
    assert all(e.steps == 19 for e in ledger.events)
    assert ledger.epsilon(delta=DELTA) <= target * (1 + 1e-9)


def _reserve_and_report(directory, started, done):
    started.set()
    FileLedger(directory).reserve("site", EV, target_epsilon=100.0, delta=DELTA)
    done.set()


def test_reserve_waits_for_the_ledger_lock(tmp_path):
    store = FileLedger(tmp_path)
    lock = tmp_path / ".site.lock"
    started, done = CTX.Event(), CTX.Event()
    with open(lock, "a+b") as lf:
        fcntl.flock(lf.fileno(), fcntl.LOCK_EX)  # another process's check-and-record
        p = CTX.Process(target=_reserve_and_report, args=(tmp_path, started, done))
        p.start()
        assert started.wait(60)
        assert not done.wait(0.5)  # blocked while the lock is held
        assert len(store.load("site")) == 0
        fcntl.flock(lf.fileno(), fcntl.LOCK_UN)
    assert done.wait(60)
    p.join(30)
    assert len(store.load("site")) == 1


def _reserve_then_crash(directory):
    FileLedger(directory).reserve("site", EV, target_epsilon=100.0, delta=DELTA)
    os._exit(17)  # dies mid-round: no settle, no cleanup


def test_a_crash_after_reserving_leaves_the_reservation_counted(tmp_path):
    p = CTX.Process(target=_reserve_then_crash, args=(tmp_path,))
    p.start()
    p.join(60)
    assert p.exitcode == 17
    store = FileLedger(tmp_path)
    ledger = store.load("site")
    (held,) = ledger.pending
    assert ledger.epsilon(delta=DELTA) > 0
    # the next reservation is checked against it: a cap with room for one round
    cap = (ledger.epsilon(delta=DELTA) + ledger.projected_epsilon(EV, delta=DELTA)) / 2
    FileLedger(tmp_path / "fresh").reserve("site", EV, target_epsilon=cap, delta=DELTA)
    with pytest.raises(PrivacyBudgetExhausted):
        store.reserve("site", EV, target_epsilon=cap, delta=DELTA)
    # it can still be settled to what was really spent, never above
    with pytest.raises(LedgerError, match="more than its reservation"):
        store.settle("site", held.reservation, PrivacyEvent(noise_multiplier=2.0,
                                                            sample_rate=0.05, steps=21))
    assert store.load("site").pending == (held,)


# ------------------------------------------------------------------ node ledgers


@pytest.fixture
def csv_path(tmp_path):
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"age": rng.normal(50, 10, 80).round(1),
                       "chol": rng.normal(200, 30, 80).round(1),
                       "smoker": rng.choice(["yes", "no"], 80),
                       "label": rng.choice(["sick", "well"], 80)})
    p = tmp_path / "site.csv"
    df.to_csv(p, index=False)
    return p


def _node(**node_config):
    ctx = Context(run_id=1, node_id=7, node_config=dict(node_config), state=RecordDict(),
                  run_config={})
    return NodeState(ctx)


def _data(path, features):
    return load_dataset("csv", path=str(path), label="label", features=features)


@pytest.fixture
def dp_cfg(compose_cfg, csv_path):
    return compose_cfg("data=csv", f"data.path={csv_path}", "data.label=label",
                       "privacy=dpsgd", "privacy.epsilon=1.0", "privacy.accountant=rdp",
                       "federation.rounds=3", "client.epochs=1", "client.batch_size=16")


def test_reordered_features_hit_the_same_ledger(csv_path, tmp_path):
    a = _data(csv_path, ["age", "chol", "smoker"])
    b = _data(csv_path, ["smoker", "chol", "age"])
    assert not np.array_equal(a.X, b.X)
    # the old key moved with the server's column order
    assert dataset_fingerprint(a.X, a.y) != dataset_fingerprint(b.X, b.y)
    # simulation: the partition's rows, in any column order
    assert ledger_key(_node(), a) == ledger_key(_node(), b)
    # real node: the source's bytes; not even feature selection or the label moves it
    real = ledger_key(_node(**{"data-path": str(csv_path)}), a)
    assert real == ledger_key(_node(**{"data-path": str(csv_path)}), b)
    only_age = load_dataset("csv", path=str(csv_path), label="smoker", features=["age"])
    assert real == ledger_key(_node(**{"data-path": str(csv_path)}), only_age)
    # ...while the data itself does
    other = tmp_path / "other.csv"
    other.write_bytes(csv_path.read_bytes().replace(b"yes", b"YES", 1))
    assert ledger_key(_node(**{"data-path": str(other)}), None) != real


def test_spend_carries_over_when_the_server_reorders_features(dp_cfg, csv_path, tmp_path):
    ledgers = tmp_path / "ledgers"
    cfg = dp_cfg
    spent = []
    for features in (["age", "chol", "smoker"], ["smoker", "age", "chol"]):
        node = _node(**{"data-path": str(csv_path), "ledger-dir": str(ledgers)})
        data = _data(csv_path, features)
        for rnd in (1, 2, 3):
            d = reserve_dp_round(node, cfg, data, round_=rnd)
            if d.settings is None:
                spent.append((features[0], rnd, d.decline))
                continue
            sch = local_schedule(num_examples=len(data.y), batch_size=16, epochs=1)
            res = LocalResult(0.5, sch.steps, len(data.y), sch.sample_rate)
            eps = record_round(node, cfg, d, res, round_=rnd)
            spent.append((features[0], rnd, eps))
    # the first run spends the whole budget; the second, with the columns reordered,
    # finds the same ledger and is declined every round
    assert [s[2] for s in spent[3:]] == [BUDGET_EXHAUSTED] * 3
    assert spent[2][2] == pytest.approx(1.0, abs=1e-6)
    assert len(list(ledgers.glob("*.json"))) == 1


def test_real_node_without_ledger_dir_declines(dp_cfg, csv_path):
    node = _node(**{"data-path": str(csv_path)})
    d = reserve_dp_round(node, dp_cfg, _data(csv_path, None), round_=1)
    assert isinstance(d, DPDecision)
    assert (d.settings, d.decline, d.reservation) == (None, LEDGER_REQUIRED, None)
    assert "ledger-dir" in d.detail and str(csv_path) not in d.detail
    assert node.get("dp-sigma") is None and node.get("dp-ledger") is None


def test_two_runs_on_one_ledger_share_one_budget(dp_cfg, csv_path, tmp_path):
    """Issue 8: two runs on one ledger both trained (1.33 against a target of 1)."""
    cfg, ledgers = dp_cfg, tmp_path / "ledgers"
    runs = [_node(**{"data-path": str(csv_path), "ledger-dir": str(ledgers)}) for _ in "ab"]
    data = _data(csv_path, None)
    sch = local_schedule(num_examples=len(data.y), batch_size=16, epochs=1)
    trained, declined = 0, []
    for rnd in (1, 2, 3):
        decisions = [reserve_dp_round(node, cfg, data, round_=rnd) for node in runs]
        for node, d in zip(runs, decisions, strict=True):  # both train "at once"
            if d.settings is None:
                declined.append(d.decline)
                continue
            trained += 1
            record_round(node, cfg, d, LocalResult(0.1, sch.steps, len(data.y),
                                                   sch.sample_rate), round_=rnd)
    key = ledger_key(runs[0], None)
    ledger = FileLedger(ledgers).load(key)
    assert trained == 3 and declined == [BUDGET_EXHAUSTED] * 3
    assert ledger.epsilon(delta=1e-5) <= 1.0 + 1e-9 and not ledger.pending


def test_record_round_settles_what_was_spent_and_never_more(dp_cfg, csv_path):
    node = _node()  # simulation: ledger in the Context state
    data = _data(csv_path, None)
    d = reserve_dp_round(node, dp_cfg, data, round_=1)
    assert d.settings is not None and d.epsilon == 0.0 and d.reservation
    from lepton_fed.privacy import PrivacyLedger

    held = PrivacyLedger.from_bytes(node.get("dp-ledger")).pending[0]
    too_much = LocalResult(0.1, held.steps + 1, len(data.y), held.sample_rate)
    with pytest.raises(LedgerError, match="more than its reservation"):
        record_round(node, dp_cfg, d, too_much, round_=1)
    assert PrivacyLedger.from_bytes(node.get("dp-ledger")).pending == (held,)
    eps = record_round(node, dp_cfg, d, LocalResult(0.1, held.steps - 1, len(data.y),
                                                    held.sample_rate), round_=1)
    ledger = PrivacyLedger.from_bytes(node.get("dp-ledger"))
    assert not ledger.pending and ledger.events[0].steps == held.steps - 1
    assert eps == pytest.approx(ledger.epsilon(delta=1e-5))
    with pytest.raises(LedgerError, match="without a reservation"):
        record_round(node, dp_cfg, d, too_much, round_=1)
