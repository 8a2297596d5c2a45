"""DP defaults through the real server loop and client handlers (in-process): each node
applies the rule to its own data, reserves that schedule, trains exactly it, reports what
it chose; user-set values win."""

from __future__ import annotations

import json

from lepton_fed.client.app import app
from lepton_fed.client.dp import dp_report
from lepton_fed.client.local_data import node_data
from lepton_fed.client.node import NodeState
from lepton_fed.inprocess import InProcessGrid
from lepton_fed.privacy.accounting import PrivacyLedger
from lepton_fed.privacy.auto import choose
from lepton_fed.server.outputs import RunWriter
from lepton_fed.server.rounds import run_federation

AUTO = ("client.batch_size=null", "client.epochs=null", "client.lr=null",
        "privacy.max_grad_norm=null")
BASE = ("data=breast_cancer", "model=logreg", "privacy=dpsgd", "privacy.epsilon=2.0",
        "federation.rounds=3", "federation.num_clients=3", "federation.clients_per_round=3")


def _run(cfg, d):
    grid = InProcessGrid(app, int(cfg.federation.num_clients))
    return run_federation(grid, cfg, RunWriter(d)), grid


def test_nodes_train_the_schedule_the_rule_chose(compose_cfg, tmp_path):
    cfg = compose_cfg(*BASE, *AUTO)
    s, grid = _run(cfg, tmp_path)
    auto = s["privacy"]["auto"]
    assert set(auto["auto_keys"]) == {k.split("=")[0] for k in AUTO}
    assert auto["user_set"] == {} and auto["model"] == "logreg"
    assert s["privacy"]["epsilon"] <= 2.0 * (1 + 1e-9)
    for ctx in grid.contexts.values():
        node = NodeState(ctx)
        n = len(node_data(cfg, ctx).train.y)
        want = choose(n=n, rounds=3, model="logreg", momentum=0.9)
        ledger = PrivacyLedger.from_bytes(node.get("dp-ledger"))
        # reserved and settled schedule == the rule's: full batch, its local steps
        assert [e.sample_rate for e in ledger.events] == [1.0] * 3
        assert [e.steps for e in ledger.events] == [want.local_steps] * 3
        rep = dp_report(node)
        assert rep["dp-batch-size"] == n and rep["dp-lr"] == want.lr
        assert rep["dp-local-steps"] == want.local_steps and rep["dp-clip"] == 1.0
        assert rep["dp-noise-multiplier"] > 1.0


def test_user_values_win_over_the_rule(compose_cfg, tmp_path):
    cfg = compose_cfg(*BASE, *AUTO[1:], "client.batch_size=16", "client.epochs=1")
    s, grid = _run(cfg, tmp_path)
    auto = s["privacy"]["auto"]
    assert auto["user_set"] == {"client.batch_size": 16, "client.epochs": 1}
    for ctx in grid.contexts.values():
        node = NodeState(ctx)
        n = len(node_data(cfg, ctx).train.y)
        ledger = PrivacyLedger.from_bytes(node.get("dp-ledger"))
        per_epoch = int(n / 16 + 0.999999)
        assert all(e.sample_rate == 1 / per_epoch for e in ledger.events)
        assert json.loads(node.get("dp-choice"))["batch_size"] == 16
