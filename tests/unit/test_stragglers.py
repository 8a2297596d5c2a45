"""Stragglers: a per-round deadline (``federation.round_deadline``); replies after it are
discarded and counted as ``late``, the round goes on with whoever answered in time, and
under secure aggregation a late masked input is a dropout (its masks are recovered).

The grids here are the in-process grid with one node answering late: its reply is held
back and either left for a later pull (as Flower's SuperLink keeps a reply that arrived
after ``send_and_receive`` gave up) or handed back among a later exchange's replies.
"""

import json
import threading
import time

import pytest
from flwr.app import Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from lepton_fed.client.app import app as lepton_app
from lepton_fed.config.validate import validate
from lepton_fed.inprocess import InProcessGrid
from lepton_fed.server import exchange as exchange_module
from lepton_fed.server import validate_updates as vu
from lepton_fed.server.exchange import exchange
from lepton_fed.server.outputs import RunWriter
from lepton_fed.server.rounds import run_federation

BASE = ("model=logreg", "federation.num_clients=3", "federation.clients_per_round=3",
        "federation.rounds=3")


class Late(InProcessGrid):
    """Holds back the replies ``hold(node, msg)`` picks: ``mode="pulled"`` leaves them
    for ``pull_messages``; ``mode="handed"`` returns them among the next exchange's
    replies of the same message type. Records every exchange's (type, timeout)."""

    def __init__(self, client_app, n, hold, mode, **kw):
        super().__init__(client_app, n, **kw)
        self.hold, self.mode = hold, mode
        self.held: dict[str, list[Message]] = {}
        self.timeouts: list[tuple[str, float | None]] = []

    def send_and_receive(self, messages, *, timeout=None):
        messages = list(messages)
        if not messages:
            return []
        kind = messages[0].metadata.message_type
        self.timeouts.append((kind, timeout))
        released = self.held.pop(kind, [])
        out = []
        for m in messages:
            r = self._deliver(m)
            if r is None:
                continue
            if self.hold(m.metadata.dst_node_id, m):
                if self.mode == "pulled":
                    self._pending[m.metadata.message_id] = r
                else:
                    self.held.setdefault(kind, []).append(r)
            else:
                out.append(r)
        return out + released


def _round_of(msg):
    conf = msg.content["config"] if "config" in msg.content else None
    return int(conf["server-round"]) if conf is not None and "server-round" in conf else None


def _late_in_round(node, rnd):
    return lambda nid, m: (nid == node and m.metadata.message_type == "train"
                           and _round_of(m) == rnd)


def _rows(d):
    return [json.loads(x) for x in (d / "metrics.jsonl").read_text().splitlines()]


# ------------------------------------------------------------------ the exchange itself
def _echo_app():
    app = ClientApp()

    @app.train()
    def train(msg, ctx):
        return Message(RecordDict({"metrics": MetricRecord({"num-examples": 1})}), reply_to=msg)

    return app


def _msgs(nodes):
    return [Message(RecordDict(), dst_node_id=n, message_type="train") for n in nodes]


@pytest.mark.parametrize("mode", ["pulled", "handed"])
def test_a_late_reply_is_set_apart_and_leaves_the_overdue_book(mode):
    first = {"round": True}
    grid = Late(_echo_app(), 2, lambda nid, m: nid == 2 and first["round"], mode)
    overdue: dict[str, int] = {}
    ex1 = exchange(grid, _msgs([1, 2]), 5.0, overdue=overdue)
    assert [ex1.node(r) for r in ex1.ok] == [1] and ex1.missing == [2] and not ex1.late
    (late_id, late_node), = overdue.items()
    assert late_node == 2
    first["round"] = False
    ex2 = exchange(grid, _msgs([1, 2]), 5.0, overdue=overdue)
    assert sorted(ex2.node(r) for r in ex2.ok) == [1, 2]
    assert all(r.metadata.reply_to_message_id in ex2.node_of for r in ex2.ok)
    assert [(n, r.metadata.reply_to_message_id) for n, r in ex2.late] == [(2, late_id)]
    assert overdue == {} and not ex2.missing


def test_without_the_book_the_stale_reply_check_refuses_a_late_reply():
    first = {"round": True}
    grid = Late(_echo_app(), 2, lambda nid, m: nid == 2 and first["round"], "handed")
    exchange(grid, _msgs([1, 2]), 5.0)
    first["round"] = False
    ex = exchange(grid, _msgs([1, 2]), 5.0)  # no overdue book: the late reply is among ok
    assert len(ex.ok) == 3 and not ex.late
    _, bad = vu.validate_replies(ex.ok, {}, rnd=2, sent=ex.node_of)
    assert [j.code for j in bad if j.code == vu.STALE_ROUND] == [vu.STALE_ROUND]
    assert bad[[j.code for j in bad].index(vu.STALE_ROUND)].reply.metadata.src_node_id == 2


def test_the_overdue_book_is_bounded(monkeypatch):
    monkeypatch.setattr(exchange_module, "MAX_OVERDUE", 3)
    overdue: dict[str, int] = {}
    for _ in range(4):
        exchange_module.remember_overdue({f"{len(overdue)}-{n}": n for n in (1, 2)}, set(),
                                         overdue)
    assert len(overdue) == 3


# ------------------------------------------------------------------ through the round loop
@pytest.mark.parametrize("mode", ["pulled", "handed"])
def test_the_round_goes_on_without_the_straggler_and_its_late_reply_is_discarded(
        compose_cfg, tmp_path, mode):
    cfg = compose_cfg(*BASE, "federation.round_deadline=7")
    grid = Late(lepton_app, 3, _late_in_round(3, 1), mode)
    s = run_federation(grid, cfg, RunWriter(tmp_path))
    rows = _rows(tmp_path)
    assert s["rounds_completed"] == 3
    assert [r["clients"] for r in rows] == [2, 3, 3]  # the late reply is never aggregated
    assert [r["late"] for r in rows] == [0, 1, 0]
    assert rows[0]["failures"] == {"NO_REPLY": 1} and rows[1]["failures"] == {}
    assert s["nodes"]["late"] == {"partition-2": 1}
    assert s["nodes"]["failures"] == {"partition-2": {"NO_REPLY": 1}}
    assert {t for k, t in grid.timeouts if k == "train"} == {7.0}
    assert {t for k, t in grid.timeouts if k != "train"} == {float(cfg.federation.round_timeout)}


def test_a_late_reply_the_book_forgot_is_refused_as_stale(compose_cfg, tmp_path, monkeypatch):
    monkeypatch.setattr(exchange_module, "MAX_OVERDUE", 0)  # nothing remembered
    grid = Late(lepton_app, 3, _late_in_round(3, 1), "handed")
    s = run_federation(grid, compose_cfg(*BASE), RunWriter(tmp_path))
    rows = _rows(tmp_path)
    assert [r["clients"] for r in rows] == [2, 3, 3] and [r["late"] for r in rows] == [0, 0, 0]
    assert rows[1]["failures"] == {vu.STALE_ROUND: 1}
    assert s["nodes"]["failures"] == {"partition-2": {"NO_REPLY": 1, vu.STALE_ROUND: 1}}


def test_no_deadline_means_the_round_timeout(compose_cfg, tmp_path):
    cfg = compose_cfg(*BASE, "federation.rounds=1", "federation.round_timeout=42")
    grid = Late(lepton_app, 3, lambda nid, m: False, "pulled")
    run_federation(grid, cfg, RunWriter(tmp_path))
    assert {t for _, t in grid.timeouts} == {42.0}


class Timed(InProcessGrid):
    """Flower's timing: each node answers in its own thread (one message at a time per
    node); ``send_and_receive`` returns what arrived within ``timeout``; a reply that
    arrives later waits for ``pull_messages``."""

    def __init__(self, client_app, n, **kw):
        super().__init__(client_app, n, **kw)
        self.lock = threading.Lock()
        self.node_locks = {nid: threading.Lock() for nid in self.contexts}

    def _answer(self, m, done):
        with self.node_locks[m.metadata.dst_node_id]:
            r = self._deliver(m)
        with self.lock:
            if r is not None:
                self._pending[m.metadata.message_id] = r
        done.set()

    def send_and_receive(self, messages, *, timeout=None):
        messages = list(messages)
        events = []
        for m in messages:
            done = threading.Event()
            threading.Thread(target=self._answer, args=(m, done), daemon=True).start()
            events.append(done)
        end = time.monotonic() + (timeout or 0.0)
        for e in events:
            e.wait(max(0.0, end - time.monotonic()))
        return self.pull_messages([m.metadata.message_id for m in messages])

    def pull_messages(self, message_ids):
        with self.lock:
            return super().pull_messages(message_ids)


def test_a_slow_node_misses_the_deadline_in_real_time(compose_cfg, tmp_path):
    """The slow node answers only once round 1 has ended: were the round waiting for it,
    the node would give up waiting after 30 s and the round-1 row would come after that
    (``released`` False)."""
    from lepton_fed.client import app as client_module

    slow = ClientApp()
    round1_done = threading.Event()
    released: list[bool] = []

    @slow.query("setup")
    def setup(msg, ctx):
        return client_module.setup(msg, ctx)

    @slow.train()
    def train(msg, ctx):
        if ctx.node_id == 3 and _round_of(msg) == 1:
            released.append(round1_done.wait(30.0))
        return client_module.train(msg, ctx)

    class Round1Ends:
        def on_round(self, row):
            if row["round"] == 1:
                round1_done.set()

        def on_finish(self, summary):
            pass

    cfg = compose_cfg(*BASE, "federation.round_deadline=1.0")
    s = run_federation(Timed(slow, 3), cfg, RunWriter(tmp_path), observers=[Round1Ends()])
    rows = _rows(tmp_path)
    assert rows[0]["clients"] == 2 and rows[0]["failures"] == {"NO_REPLY": 1}
    assert released == [True]  # the round did not wait for the straggler
    assert sum(r["late"] for r in rows) >= 1 and set(s["nodes"]["late"]) == {"partition-2"}
    assert all(r["clients"] <= r["sampled"] for r in rows)


# ------------------------------------------------------------------ secure aggregation
@pytest.mark.parametrize("mode", ["pulled", "handed"])
def test_under_secagg_a_late_masked_input_is_a_dropout_and_then_discarded(
        compose_cfg, tmp_path, mode):
    cfg = compose_cfg("model=logreg", "federation.num_clients=5",
                      "federation.clients_per_round=5", "federation.rounds=2", "secagg=on",
                      "federation.round_deadline=9")
    grid = Late(lepton_app, 5, _late_in_round(3, 1), mode)
    s = run_federation(grid, cfg, RunWriter(tmp_path))
    rows = _rows(tmp_path)
    assert s["rounds_completed"] == 2 and s["secagg"]["abandoned_rounds"] == []
    assert [r["secagg"]["contributors"] for r in rows] == [4, 5]
    assert [r["late"] for r in rows] == [0, 1] and s["nodes"]["late"] == {"partition-2": 1}
    assert {t for k, t in grid.timeouts if k == "train"} == {9.0}
    assert {t for k, t in grid.timeouts if k.startswith("query.secagg")} == {
        float(cfg.secagg.timeout)}


# ------------------------------------------------------------------ the setting
@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf"])
def test_a_deadline_that_is_not_a_positive_number_is_refused(compose_cfg, value):
    problems = validate(compose_cfg(f"federation.round_deadline={value}"))
    assert any("federation.round_deadline must be a positive number" in p for p in problems)


def test_a_deadline_that_is_no_number_is_named(compose_cfg):
    from lepton_fed.errors import ConfigError

    with pytest.raises(ConfigError) as ei:  # the typed schema refuses it while composing
        compose_cfg("federation.round_deadline=soon")
    assert ei.value.problems == ["federation.round_deadline must be a number or null, got 'soon'"]


def test_a_resumed_run_may_change_its_deadline():
    from lepton_fed.server.checkpoint import RESUMABLE_CHANGES

    assert "federation.round_deadline" in RESUMABLE_CHANGES


def test_late_counts_survive_a_resume(compose_cfg, tmp_path):
    cfg = compose_cfg(*BASE[:-1], "federation.rounds=2")
    run_federation(Late(lepton_app, 3, _late_in_round(3, 1), "pulled"), cfg, RunWriter(tmp_path))
    more = compose_cfg(*BASE[:-1], "federation.rounds=3", "federation.round_deadline=5")
    s = run_federation(Late(lepton_app, 3, lambda nid, m: False, "pulled"), more,
                       RunWriter(tmp_path), resume=str(tmp_path))
    assert s["rounds_completed"] == 3 and s["nodes"]["late"] == {"partition-2": 1}
    assert [r["late"] for r in _rows(tmp_path)] == [0, 1, 0]
