"""privacy=distributed on each node's own privacy ledger, through the real ClientApp and
server loop (in-process): every release is recorded before the reply leaves the node,
the recorded epsilon is the plan's over the rounds the node contributed to, and a second
run that the ledger cannot pay for is declined with BUDGET_EXHAUSTED (nothing recorded,
nothing released)."""

from __future__ import annotations

import pytest

from lepton_fed.client.app import app
from lepton_fed.client.ddp_budget import release_event
from lepton_fed.client.dp import SIM_LEDGERS_ENV
from lepton_fed.inprocess import InProcessGrid
from lepton_fed.privacy.accounting import FileLedger, PrivacyLedger
from lepton_fed.privacy.distributed import plan_distributed
from lepton_fed.privacy.distributed_config import plan_for_config
from lepton_fed.server.exchange import decline_code
from lepton_fed.server.outputs import RunWriter
from lepton_fed.server.rounds import run_federation

N = 4
DIM = 64 * 10 + 10
BASE = ("data=digits", "model=logreg", "privacy=distributed", "secagg=on",
        f"federation.num_clients={N}", f"federation.clients_per_round={N}",
        "client.epochs=1", "federation.rounds=3", "privacy.epsilon=3.0")


def _ledger(root, pid) -> PrivacyLedger | None:
    store = FileLedger(root / f"partition-{pid}")
    keys = store.keys() if (root / f"partition-{pid}").is_dir() else []
    assert len(keys) <= 1
    return store.load(keys[0]) if keys else None


def _watch(grid, root):
    """Wrap the grid's delivery: when a node's train reply comes back (it has left the
    node), snapshot that node's ledger."""
    snaps: list[tuple[int, int, list[tuple[int | None, bool]], bool]] = []
    real = grid._deliver

    def deliver(msg):
        reply = real(msg)
        if msg.metadata.message_type == "train" and reply is not None:
            rnd = int(msg.content["config"]["server-round"])
            led = _ledger(root, msg.metadata.dst_node_id - 1)
            events = [(e.round, e.pending) for e in (led.events if led else ())]
            snaps.append((msg.metadata.dst_node_id, rnd, events, "secagg" in reply.content))
        return reply

    grid._deliver = deliver
    return snaps


def test_release_event_is_the_plans_accounting():
    """The ledger's event for one release composes to the plan's epsilon over any number
    of releases (tau = 0 at 32 bits), with the ledger's own RDP accountant."""
    plan = plan_distributed(epsilon=3.0, delta=1e-5, rounds=10, clip=1.0, dim=DIM,
                            min_contributors=4, max_contributors=4, colluders=1)
    ev = release_event(plan)
    assert (ev.sample_rate, ev.steps) == (1.0, 1)
    for k in (1, 4, 10):
        led = PrivacyLedger(dataset="d")
        for r in range(k):
            led.record(release_event(plan, round_=r + 1))
        assert led.epsilon(delta=1e-5, accountant="rdp") == pytest.approx(
            plan.epsilon_after(k), rel=1e-6)


def test_releases_recorded_before_they_leave_and_second_run_declined(
        compose_cfg, tmp_path, monkeypatch):
    root = tmp_path / "ledgers"
    monkeypatch.setenv(SIM_LEDGERS_ENV, str(root))
    cfg = compose_cfg(*BASE)
    plan = plan_for_config(cfg, DIM)

    grid = InProcessGrid(app, N)
    snaps = _watch(grid, root)
    s = run_federation(grid, cfg, RunWriter(tmp_path / "run1"))
    assert s["rounds_completed"] == 3
    released = [x for x in snaps if x[3]]
    assert len(released) == 3 * N
    for _nid, rnd, events, _ in released:
        # this round's release is on the ledger, settled, when its reply comes back
        assert (rnd, False) in events
        assert all(not pending for _, pending in events)
    for pid in range(N):
        led = _ledger(root, pid)
        assert led is not None and [e.round for e in led.events] == [1, 2, 3]
        eps = led.epsilon(delta=float(cfg.privacy.delta), accountant="rdp")
        assert eps == pytest.approx(plan.epsilon_after(3), rel=1e-6)
        assert eps <= 3.0 * (1 + 1e-9)

    # a second run on the same data: the ledgers are full, every node declines
    before = {pid: _ledger(root, pid).events for pid in range(N)}
    grid2 = InProcessGrid(app, N, run_id=2)
    snaps2 = _watch(grid2, root)
    s2 = run_federation(grid2, cfg, RunWriter(tmp_path / "run2"))
    train_replies = [r for r in grid2.seen if r.metadata.message_type == "train"]
    assert train_replies and all("secagg" not in r.content for r in train_replies)
    assert {decline_code(r) for r in train_replies} == {"BUDGET_EXHAUSTED"}
    assert not any(x[3] for x in snaps2)
    assert s2["rounds_completed"] < 3 or s2.get("stop_reason")
    for pid in range(N):  # nothing recorded for the declined rounds
        assert _ledger(root, pid).events == before[pid]


def test_partly_spent_ledger_pays_what_is_left(compose_cfg, tmp_path, monkeypatch):
    """Run 1 spends epsilon 1 (3 releases); run 2 targets epsilon 3 over 3 rounds: each
    node contributes exactly the releases that still fit under 3 on its ledger (here
    2), then declines with BUDGET_EXHAUSTED; its ledger never exceeds 3."""
    root = tmp_path / "ledgers"
    monkeypatch.setenv(SIM_LEDGERS_ENV, str(root))
    cfg1 = compose_cfg(*BASE[:-1], "privacy.epsilon=1.0")
    run_federation(InProcessGrid(app, N), cfg1, RunWriter(tmp_path / "run1"))
    cfg3 = compose_cfg(*BASE)
    grid = InProcessGrid(app, N, run_id=2)
    snaps = _watch(grid, root)
    run_federation(grid, cfg3, RunWriter(tmp_path / "run2"))

    ev1 = release_event(plan_for_config(cfg1, DIM))
    ev3 = release_event(plan_for_config(cfg3, DIM))
    fit, led = 0, PrivacyLedger(dataset="d", events=[ev1] * 3)
    while fit < 3 and led.can_afford(ev3, target_epsilon=3.0, delta=1e-5):
        led.record(ev3)
        fit += 1
    assert fit == 2
    for pid in range(N):
        stored = _ledger(root, pid)
        assert len(stored.events) == 3 + fit
        assert stored.epsilon(delta=1e-5, accountant="rdp") <= 3.0 * (1 + 1e-9)
    by_round = {rnd: [x[3] for x in snaps if x[1] == rnd] for rnd in (1, 2, 3)}
    assert all(by_round[1]) and all(by_round[2])
    assert by_round[3] and not any(by_round[3])
    last = [r for r in grid.seen if r.metadata.message_type == "train"][-N:]
    assert {decline_code(r) for r in last} == {"BUDGET_EXHAUSTED"}
