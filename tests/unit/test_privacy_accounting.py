"""Privacy ledger: federation-wide accounting, budget checks, storage and tampering."""

from __future__ import annotations

import json
from functools import cache

import numpy as np
import pytest
from dp_accounting import dp_event
from dp_accounting.rdp import rdp_privacy_accountant as dpa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lepton_fed.errors import PrivacyBudgetExhausted
from lepton_fed.privacy import (
    FileLedger,
    LedgerError,
    PrivacyEvent,
    PrivacyLedger,
    dataset_fingerprint,
    local_schedule,
    noise_multiplier_for,
)

DELTA = 1e-5


INT_ORDERS = [float(a) for a in range(2, 64)] + [128.0, 256.0, 512.0, 1024.0]


def independent_epsilon(events, delta=DELTA, orders=None):
    """dp-accounting RDP accountant composed by hand over the recorded events.

    At fractional orders dp-accounting 0.6 over-estimates the subsampled-Gaussian
    RDP (by up to ~1% at q=1/9; Opacus's values match numerical integration, see
    test_privacy_analysis), so with all orders its epsilon is a slightly looser bound.
    """
    acc = dpa.RdpAccountant(orders=orders) if orders else dpa.RdpAccountant()
    for e in events:
        gauss = dp_event.GaussianDpEvent(e.noise_multiplier)
        event = (
            gauss
            if e.sample_rate == 1.0
            else dp_event.PoissonSampledDpEvent(e.sample_rate, gauss)
        )
        acc.compose(event, e.steps)
    return acc.get_epsilon(delta)


@cache
def calibrated_sigma(target, q, planned_steps):
    return noise_multiplier_for(
        target_epsilon=target, delta=DELTA, sample_rate=q, steps=planned_steps
    )


def make_ledger(n_events=3):
    ledger = PrivacyLedger(dataset="a" * 64, node_id="node-7")
    for r in range(1, n_events + 1):
        ledger.record(
            PrivacyEvent(
                noise_multiplier=0.9,
                sample_rate=1 / 9,
                steps=9,
                round=r,
                run_id="run-1",
            )
        )
    return ledger


def test_epsilon_after_rounds_equals_independent_recomputation():
    # Prepare: five rounds, the client's data size changes once (q changes).
    ledger = PrivacyLedger(dataset="f" * 64)
    sch_a = local_schedule(num_examples=144, batch_size=16, epochs=2)
    sch_b = local_schedule(num_examples=200, batch_size=16, epochs=1)
    # Execute
    for r, sch in enumerate([sch_a, sch_a, sch_b, sch_a, sch_b], start=1):
        ledger.record(
            PrivacyEvent(
                noise_multiplier=0.95,
                sample_rate=sch.sample_rate,
                steps=sch.steps,
                round=r,
            )
        )
    # Assert: one epsilon for the whole history, not a per-round one.
    eps = ledger.epsilon(delta=DELTA)
    loose = independent_epsilon(ledger.events)
    assert eps <= loose <= eps * (1 + 2e-3)
    # Restricted to integer orders, where both compute RDP in closed form: equal.
    from lepton_fed.privacy.analysis import epsilon_for_history

    assert epsilon_for_history(
        ledger.history, delta=DELTA, orders=INT_ORDERS
    ) == pytest.approx(independent_epsilon(ledger.events, orders=INT_ORDERS), rel=1e-9)
    single_round = PrivacyLedger(dataset="f" * 64, events=ledger.events[:1]).epsilon(
        delta=DELTA
    )
    assert eps > single_round


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    target=st.sampled_from([1.0, 8.0]),
    batch=st.sampled_from([16, 48]),
    epochs=st.sampled_from([1, 2]),
    planned_rounds=st.sampled_from([2, 5]),
    participation=st.lists(st.booleans(), min_size=1, max_size=10),
    greed=st.sampled_from([1.0, 0.5]),
)
def test_budget_checked_client_never_exceeds_target(
    target, batch, epochs, planned_rounds, participation, greed
):
    # Prepare: sigma calibrated once per run for the worst case (every planned round).
    sch = local_schedule(num_examples=144, batch_size=batch, epochs=epochs)
    sigma = (
        calibrated_sigma(target, sch.sample_rate, planned_rounds * sch.steps) * greed
    )
    ledger = PrivacyLedger(dataset="0" * 64)
    event = PrivacyEvent(
        noise_multiplier=sigma, sample_rate=sch.sample_rate, steps=sch.steps
    )
    # Execute: a server asks for len(participation) rounds (maybe more than planned).
    for takes_part in participation:
        before = ledger.epsilon(delta=DELTA)
        if takes_part and ledger.can_afford(event, target_epsilon=target, delta=DELTA):
            ledger.record(event)
        elif takes_part and greed == 1.0:
            # The calibrated sigma always affords the planned rounds.
            assert len(ledger) >= planned_rounds
        if not takes_part:  # sitting out spends nothing
            assert ledger.epsilon(delta=DELTA) == before
        # Assert: never over the target, at any point.
        assert ledger.epsilon(delta=DELTA) <= target * (1 + 1e-9)
    assert len(ledger) <= sum(participation)
    if ledger.events:  # the independent bound over integer orders is never below ours
        assert ledger.epsilon(delta=DELTA) <= independent_epsilon(
            ledger.events, orders=INT_ORDERS
        ) * (1 + 1e-9)


def test_require_raises_budget_exhausted_with_numbers():
    ledger = make_ledger(3)
    big = PrivacyEvent(noise_multiplier=0.5, sample_rate=1.0, steps=100)
    assert not ledger.can_afford(big, target_epsilon=5.0, delta=DELTA)
    with pytest.raises(PrivacyBudgetExhausted, match="target 5.0"):
        ledger.require(big, target_epsilon=5.0, delta=DELTA)
    assert len(ledger) == 3  # nothing recorded
    small = PrivacyEvent(noise_multiplier=50.0, sample_rate=0.01, steps=1)
    ledger.require(small, target_epsilon=100.0, delta=DELTA)


def test_projected_epsilon_does_not_record():
    ledger = make_ledger(2)
    ev = PrivacyEvent(noise_multiplier=0.9, sample_rate=1 / 9, steps=9)
    projected = ledger.projected_epsilon(ev, delta=DELTA)
    assert len(ledger) == 2
    ledger.record(ev)
    assert ledger.epsilon(delta=DELTA) == pytest.approx(projected, rel=1e-12)


def test_record_stamps_round_run_and_time():
    ledger = make_ledger(1)
    (ev,) = ledger.events
    assert (ev.round, ev.run_id) == (1, "run-1")
    assert ev.recorded_at is not None and ev.recorded_at.endswith("+00:00")


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"noise_multiplier": 0.0}, "noise_multiplier"),
        ({"sample_rate": 0.0}, "sample_rate"),
        ({"sample_rate": 1.01}, "sample_rate"),
        ({"steps": 0}, "steps"),
        ({"round": -1}, "round"),
        ({"run_id": 5}, "run_id"),
    ],
)
def test_event_rejects_bad_values(kwargs, name):
    args = dict(noise_multiplier=1.0, sample_rate=0.1, steps=3) | kwargs
    with pytest.raises(ValueError, match=name):
        PrivacyEvent(**args)


def test_ledger_bytes_round_trip():
    ledger = make_ledger(3)
    data = ledger.to_bytes()
    back = PrivacyLedger.from_bytes(data, dataset="a" * 64)
    assert back == ledger
    assert back.to_bytes() == data
    assert back.epsilon(delta=DELTA) == ledger.epsilon(delta=DELTA)


def _edit(data: bytes, fn, *, fix_digest: bool = False) -> bytes:
    from lepton_fed.privacy._canonical import digest

    state = json.loads(data)
    fn(state)
    if fix_digest:
        state["digest"] = digest({k: v for k, v in state.items() if k != "digest"})
    return json.dumps(state).encode()


@pytest.mark.parametrize(
    ("edit", "fix_digest", "match"),
    [
        (lambda s: s["events"][0].update(steps=1), False, "digest mismatch"),
        (lambda s: s["events"].pop(), False, "digest mismatch"),
        (lambda s: s.update(version=99), True, "version"),
        (lambda s: s.update(version=True), True, "version"),
        (lambda s: s.update(mechanism="central/gaussian"), True, "mechanism"),
        (lambda s: s.update(format="other"), True, "format"),
        (lambda s: s.update(extra=1), True, "keys"),
        (lambda s: s["events"][0].pop("run_id"), True, "keys"),
        (lambda s: s["events"][0].update(steps=-3), True, "steps"),
        (lambda s: s["events"][0].update(steps=True), True, "steps"),
        (lambda s: s.update(events={}), True, "list"),
    ],
)
def test_tampered_or_mismatched_ledger_raises(edit, fix_digest, match):
    data = _edit(make_ledger(2).to_bytes(), edit, fix_digest=fix_digest)
    with pytest.raises(LedgerError, match=match):
        PrivacyLedger.from_bytes(data)


def test_ledger_for_another_dataset_or_garbage_raises():
    data = make_ledger(1).to_bytes()
    with pytest.raises(LedgerError, match="dataset"):
        PrivacyLedger.from_bytes(data, dataset="b" * 64)
    for junk in (b"", b"\xff\xfe", b"[1, 2]", b'{"a": NaN}'):
        with pytest.raises(LedgerError):
            PrivacyLedger.from_bytes(junk)


def test_file_ledger_survives_restart(tmp_path):
    # Prepare
    X, y = np.arange(20.0).reshape(10, 2), np.arange(10) % 2
    key = dataset_fingerprint(X, y)
    store = FileLedger(tmp_path, node_id="hospital-a")
    ledger = store.load(key)
    assert len(ledger) == 0
    # Execute: two rounds, then the "node restarts" (new objects, new run).
    for r in (1, 2):
        ledger.record(
            PrivacyEvent(
                noise_multiplier=1.0, sample_rate=0.1, steps=10, round=r, run_id="run-1"
            )
        )
        store.save(ledger)
    restarted = FileLedger(tmp_path, node_id="hospital-a-new-id").load(key)
    # Assert
    assert restarted.events == ledger.events
    assert restarted.epsilon(delta=DELTA) == ledger.epsilon(delta=DELTA) > 0
    assert store.keys() == [key]
    assert not [p for p in tmp_path.iterdir() if p.suffix == ".tmp"]


def test_file_ledger_reserve_is_atomic_and_checks_budget(tmp_path):
    """Reserve-then-settle, as the client's round does: a reservation that does not fit
    is refused and writes nothing; settled events count exactly as reserved."""
    store = FileLedger(tmp_path)
    ev = PrivacyEvent(noise_multiplier=1.0, sample_rate=0.1, steps=50)

    def spend():
        ledger, held = store.reserve("site-data", ev, target_epsilon=12.0, delta=DELTA)
        store.settle("site-data", held.reservation, ev)
        return ledger

    assert len(spend()) == 1
    with pytest.raises(PrivacyBudgetExhausted):
        for _ in range(100):
            spend()
    before = store.path_for("site-data").read_bytes()
    with pytest.raises(PrivacyBudgetExhausted):
        store.reserve("site-data", ev, target_epsilon=12.0, delta=DELTA)
    assert store.path_for("site-data").read_bytes() == before  # a refusal writes nothing
    spent = store.load("site-data")
    assert 1 < len(spent) < 100 and not [e for e in spent.events if e.pending]
    assert spent.epsilon(delta=DELTA) <= 12.0


def test_file_ledger_refuses_to_lose_spend(tmp_path):
    store = FileLedger(tmp_path)
    stale = store.load("k")
    fresh = store.load("k")
    fresh.record(PrivacyEvent(noise_multiplier=1.0, sample_rate=0.1, steps=5))
    store.save(fresh)
    stale.record(PrivacyEvent(noise_multiplier=2.0, sample_rate=0.1, steps=5))
    with pytest.raises(LedgerError, match="lose spend"):
        store.save(stale)


def test_file_ledger_corrupt_file_is_not_silently_reset(tmp_path):
    store = FileLedger(tmp_path)
    store.save(make_ledger_for(store, "k"))
    path = store.path_for("k")
    path.write_bytes(path.read_bytes().replace(b'"steps":9', b'"steps":1'))
    with pytest.raises(LedgerError, match="digest"):
        store.load("k")


def make_ledger_for(store, key):
    ledger = store.load(key)
    ledger.record(PrivacyEvent(noise_multiplier=0.9, sample_rate=1 / 9, steps=9))
    return ledger


@pytest.mark.parametrize("key", ["../escape", "a/b", "", ".hidden", "x" * 200])
def test_file_ledger_rejects_unsafe_keys(tmp_path, key):
    with pytest.raises(ValueError, match="ledger key"):
        FileLedger(tmp_path).load(key)


def test_fingerprint_is_canonical():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(30, 4))
    y = rng.integers(0, 3, size=30)
    fp = dataset_fingerprint(X, y)
    assert len(fp) == 64 and int(fp, 16) >= 0
    perm = rng.permutation(30)
    assert dataset_fingerprint(X[perm], y[perm]) == fp  # row order does not matter
    assert dataset_fingerprint(X.astype(">f8"), y) == fp  # byte order does not matter
    assert dataset_fingerprint(np.asfortranarray(X), y) == fp
    assert dataset_fingerprint(X.astype(np.float32), y) != fp  # dtype matters
    assert dataset_fingerprint(X.reshape(30, 2, 2), y) != fp  # shape matters
    X2 = X.copy()
    X2[3, 1] += 1e-12
    assert dataset_fingerprint(X2, y) != fp  # any value matters
    assert dataset_fingerprint(X[:-1], y[:-1]) != fp  # removing a record matters
    y2 = y.copy()
    y2[0] = (y2[0] + 1) % 3
    assert dataset_fingerprint(X, y2) != fp  # labels matter


def test_fingerprint_rejects_bad_inputs():
    with pytest.raises(ValueError, match="rows"):
        dataset_fingerprint(np.zeros((3, 2)), np.zeros(4))
    with pytest.raises(ValueError, match="dtype"):
        dataset_fingerprint(np.array([[object()]], dtype=object), np.zeros(1))


# ------------------------------------------------------------------ reservations


def test_reserve_counts_in_full_until_settled_and_settle_never_raises_spend():
    ledger = PrivacyLedger(dataset="k")
    ev = PrivacyEvent(noise_multiplier=1.0, sample_rate=0.1, steps=10, round=1)
    held = ledger.reserve(ev, target_epsilon=50.0, delta=DELTA)
    assert held.pending and held.reservation and ledger.pending == (held,)
    recorded = PrivacyLedger(dataset="k", events=[ev])
    assert ledger.epsilon(delta=DELTA) == recorded.epsilon(delta=DELTA) > 0  # in full
    for worse in (dict(steps=11), dict(sample_rate=0.11), dict(noise_multiplier=0.99)):
        actual = PrivacyEvent(**(dict(noise_multiplier=1.0, sample_rate=0.1, steps=10) | worse))
        with pytest.raises(LedgerError, match="more than its reservation"):
            ledger.settle(held.reservation, actual)
    assert ledger.pending == (held,)
    settled = ledger.settle(held.reservation,
                            PrivacyEvent(noise_multiplier=1.0, sample_rate=0.1, steps=7))
    assert settled is not None and not settled.pending and settled.round == 1
    assert ledger.events == (settled,) and not ledger.pending
    with pytest.raises(LedgerError, match="no pending reservation"):
        ledger.settle(held.reservation, None)
    # a round that took no step drops its reservation
    second = ledger.reserve(ev, target_epsilon=50.0, delta=DELTA)
    assert ledger.settle(second.reservation, None) is None
    assert ledger.events == (settled,)


def test_reserve_refuses_over_budget_and_records_nothing():
    ledger = PrivacyLedger(dataset="k")
    ev = PrivacyEvent(noise_multiplier=1.0, sample_rate=0.1, steps=10)
    with pytest.raises(PrivacyBudgetExhausted):
        ledger.reserve(ev, target_epsilon=0.5, delta=DELTA)
    assert len(ledger) == 0
    with pytest.raises(ValueError, match="reserve"):
        ledger.record(PrivacyEvent(noise_multiplier=1.0, sample_rate=0.1, steps=1,
                                   reservation="x", pending=True))


def test_version_1_ledgers_still_load_and_upgrade(tmp_path):
    from lepton_fed.privacy._canonical import digest

    new = make_ledger(2)
    state = new.state_dict()
    for e in state["events"]:
        del e["reservation"], e["pending"]
    state["version"] = 1
    state["digest"] = digest({k: v for k, v in state.items() if k != "digest"})
    old = PrivacyLedger.from_bytes(json.dumps(state).encode())
    assert old == new
    store = FileLedger(tmp_path)
    store.path_for(new.dataset).write_bytes(json.dumps(state).encode())
    store.reserve(new.dataset, PrivacyEvent(noise_multiplier=1.0, sample_rate=0.1, steps=1),
                  target_epsilon=100.0, delta=DELTA)
    assert json.loads(store.path_for(new.dataset).read_bytes())["version"] == 2


def test_file_ledger_save_refuses_to_drop_or_shrink_a_reservation(tmp_path):
    store = FileLedger(tmp_path)
    ev = PrivacyEvent(noise_multiplier=1.0, sample_rate=0.1, steps=5)
    before = store.load("k")  # loaded before another process reserved
    _, held = store.reserve("k", ev, target_epsilon=100.0, delta=DELTA)
    before.record(ev)
    with pytest.raises(LedgerError, match="lose spend"):
        store.save(before)  # would drop the pending reservation
    on_disk = store.load("k")
    on_disk.record(ev)
    store.save(on_disk)  # keeps it: fine
    assert store.load("k").pending == (held,)
    store.settle("k", held.reservation, ev)
    stale = on_disk  # still shows the reservation as pending: saving it would undo
    with pytest.raises(LedgerError, match="lose spend"):  # the settled event
        store.save(stale)
    with pytest.raises(LedgerError, match="no stored ledger"):
        store.settle("other", held.reservation, None)


# ------------------------------------------------------------ source fingerprints


def test_source_fingerprint_is_the_bytes_of_the_source(tmp_path):
    from lepton_fed.privacy import source_fingerprint

    f = tmp_path / "a.csv"
    f.write_text("x,y\n1,2\n")
    fp = source_fingerprint(f)
    g = tmp_path / "renamed.csv"
    g.write_bytes(f.read_bytes())
    assert source_fingerprint(g) == fp  # the name does not count
    g.write_text("x,y\n1,3\n")
    assert source_fingerprint(g) != fp  # every byte does
    d = tmp_path / "site"
    (d / "sub").mkdir(parents=True)
    (d / "a.data").write_text("1,2\n")
    (d / "sub" / "b.data").write_text("3,4\n")
    fd = source_fingerprint(d)
    (d / ".DS_Store").write_text("junk")
    (d / "ledgers").mkdir()
    (d / "ledgers" / "k.json").write_text("{}")
    assert source_fingerprint(d, exclude=[d / "ledgers"]) == fd  # its own ledger is skipped
    assert source_fingerprint(d) != fd
    (d / "sub" / "b.data").rename(d / "sub" / "c.data")
    assert source_fingerprint(d, exclude=[d / "ledgers"]) != fd  # layout counts
    with pytest.raises(FileNotFoundError):
        source_fingerprint(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no file"):
        source_fingerprint(tmp_path / "empty")


def test_named_columns_make_the_fingerprint_column_order_free():
    rng = np.random.default_rng(1)
    X, y = rng.normal(size=(12, 3)), rng.integers(0, 2, 12)
    fp = dataset_fingerprint(X, y, columns=["a", "b", "c"])
    assert dataset_fingerprint(X[:, [2, 0, 1]], y, columns=["c", "a", "b"]) == fp
    assert dataset_fingerprint(X[:, [2, 0, 1]], y, columns=["a", "b", "c"]) != fp
    assert dataset_fingerprint(X, y, columns=["a", "b", "d"]) != fp  # names count
    assert dataset_fingerprint(X, y) != fp
    with pytest.raises(ValueError, match="columns"):
        dataset_fingerprint(X, y, columns=["a", "a", "b"])
