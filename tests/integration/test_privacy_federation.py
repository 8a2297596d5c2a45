"""Privacy end to end through the real server loop and client handlers (in-process)."""

import json

import numpy as np
import pandas as pd
import pytest

from lepton_fed.client.app import app
from lepton_fed.inprocess import InProcessGrid
from lepton_fed.privacy.accounting import PrivacyLedger
from lepton_fed.server.outputs import RunWriter
from lepton_fed.server.rounds import run_federation


def _run(cfg, d, n=None):
    grid = InProcessGrid(app, n or cfg.federation.num_clients)
    return run_federation(grid, cfg, RunWriter(d)), grid


def _independent_rdp_epsilon(history, delta):
    """Recompute epsilon with Google's dp-accounting (not the code under test)."""
    import dp_accounting
    from dp_accounting.rdp import RdpAccountant

    orders = list(range(2, 257))
    acc = RdpAccountant(orders)
    for sigma, q, steps in history:
        acc.compose(dp_accounting.PoissonSampledDpEvent(
            q, dp_accounting.GaussianDpEvent(sigma)), int(steps))
    return acc.get_epsilon(delta)


def test_dpsgd_epsilon_is_whole_run_and_recomputes(compose_cfg, tmp_path):
    # the RDP accountant governs here (recomputed below with dp-accounting's RDP; the PLD
    # accountant is recomputed in test_privacy_accountants.py)
    cfg = compose_cfg("privacy=dpsgd", "privacy.epsilon=2.0", "privacy.accountant=rdp",
                      "federation.rounds=4",
                      "federation.num_clients=3", "federation.clients_per_round=3")
    s, grid = _run(cfg, tmp_path)
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    eps = [r["epsilon"] for r in rows]
    assert all(b > a for a, b in zip(eps, eps[1:], strict=False)), eps  # accumulates
    assert eps[-1] <= 2.0 + 1e-9
    assert eps[-1] > 1.5  # sigma was calibrated for the whole run, not per round
    for nid, ctx in grid.contexts.items():
        st = ctx.state["lepton"]
        ledger = PrivacyLedger.from_bytes(st["dp-ledger"])
        assert len(ledger) == 4  # one event per round
        indep = _independent_rdp_epsilon(ledger.history, 1e-5)
        reported = s["privacy"]["per_client"][f"partition-{nid - 1}"]
        # dp-accounting's fractional-order RDP is a slight over-estimate (~1%); the
        # recomputation must agree closely and never be below what we report by more
        # than numerical noise
        assert reported == pytest.approx(indep, rel=0.02)
        assert reported <= indep + 1e-6
    assert s["privacy"]["mode"] == "dpsgd" and s["privacy"]["epsilon"] == max(
        s["privacy"]["per_client"].values())


def test_budget_exhaustion_declines_and_ends_cleanly(compose_cfg, tmp_path):
    # sigma fixed (not calibrated): the budget runs out after a few rounds
    cfg = compose_cfg("privacy=dpsgd", "privacy.epsilon=1.5", "privacy.noise_multiplier=1.0",
                      "federation.rounds=8", "federation.num_clients=3",
                      "federation.clients_per_round=3")
    s, grid = _run(cfg, tmp_path)
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["declined"] == 3 and rows[-1]["clients"] == 0
    assert len(rows) < 8  # stopped early, cleanly
    assert s["privacy"]["stopped_clients"] and max(s["privacy"]["per_client"].values()) <= 1.5
    assert s["rounds_completed"] == len(rows) - 1


def test_each_client_draws_its_own_noise(tmp_path, compose_cfg):
    # two silos holding IDENTICAL rows; with noise dominating, identical noise would make
    # their updates nearly identical
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 4))
    y = (X[:, 0] > 0).astype(int)
    df = pd.DataFrame(np.vstack([X, X]), columns=list("abcd"))
    df["y"] = np.concatenate([y, y])
    df["site"] = ["s1"] * 40 + ["s2"] * 40
    p = tmp_path / "twins.csv"
    df.to_csv(p, index=False)
    cfg = compose_cfg("data=csv", f"data.path={p}", "data.label=y", "data.silo_column=site",
                      "data.features=[a,b,c,d]", "partition=natural", "model=logreg",
                      "federation.num_clients=2", "federation.clients_per_round=2",
                      "federation.rounds=1", "privacy=dpsgd", "privacy.noise_multiplier=20.0",
                      "privacy.epsilon=1000", "data.test_fraction=0.25")
    from lepton_fed.client.node import NodeState
    from lepton_fed.client.round import run_train_round
    from lepton_fed.utils.records import from_array_record

    grid = InProcessGrid(app, 2)
    run_federation(grid, cfg, RunWriter(tmp_path / "r"))  # sets up both nodes
    from flwr.app import ConfigRecord

    from lepton_fed.models import build_model, get_state
    from lepton_fed.utils.records import to_array_record

    g = get_state(build_model({"name": "logreg", "num_features": 4, "num_classes": 2}))
    ups = []
    for nid in (1, 2):
        node = NodeState(grid.contexts[nid])
        out = run_train_round(node, to_array_record(g), ConfigRecord({"server-round": 2}))
        w = from_array_record(out.record)
        ups.append(np.concatenate([(w[k] - g[k]).ravel() for k in g]))
    corr = np.corrcoef(ups[0], ups[1])[0, 1]
    assert abs(corr) < 0.9, corr


def test_central_dp_epsilon_recomputes_and_noise_on_sum(compose_cfg, tmp_path):
    import dp_accounting
    from dp_accounting.rdp import RdpAccountant

    cfg = compose_cfg("privacy=central", "privacy.noise_multiplier=1.0", "privacy.clip=1.0",
                      "privacy.accountant=rdp",
                      "federation.rounds=3", "federation.num_clients=4",
                      "federation.clients_per_round=4")
    s, _ = _run(cfg, tmp_path)
    acc = RdpAccountant()
    acc.compose(dp_accounting.GaussianDpEvent(1.0), 3)
    assert s["privacy"]["epsilon"] == pytest.approx(acc.get_epsilon(1e-5), rel=1e-3)
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["epsilon"] for r in rows] == sorted(r["epsilon"] for r in rows)


def test_central_dp_default_accountant_pld_recomputes(compose_cfg, tmp_path):
    """A default central run (``privacy.accountant`` left at its default, PLD): the
    summary's epsilon equals dp_accounting's PLD composition of the released rounds."""
    from dp_accounting import GaussianDpEvent
    from dp_accounting.pld import PLDAccountant

    cfg = compose_cfg("privacy=central", "privacy.noise_multiplier=1.0", "privacy.clip=1.0",
                      "federation.rounds=3", "federation.num_clients=4",
                      "federation.clients_per_round=4")
    assert cfg.privacy.accountant == "pld"
    s, _ = _run(cfg, tmp_path)
    acc = PLDAccountant(value_discretization_interval=1e-4)
    acc.compose(GaussianDpEvent(1.0), 3)
    assert s["privacy"]["epsilon"] == pytest.approx(acc.get_epsilon(1e-5), rel=1e-3)


def test_central_dp_calibrates_sigma_for_target(compose_cfg, tmp_path):
    cfg = compose_cfg("privacy=central", "privacy.epsilon=5.0", "federation.rounds=3",
                      "federation.num_clients=4", "federation.clients_per_round=4")
    s, _ = _run(cfg, tmp_path)
    assert 4.5 < s["privacy"]["epsilon"] <= 5.0 + 1e-6


def test_sitting_out_spends_nothing_and_no_one_overspends(compose_cfg, tmp_path):
    cfg = compose_cfg("privacy=dpsgd", "privacy.epsilon=1.0", "federation.rounds=4",
                      "federation.num_clients=6", "federation.clients_per_round=3")
    s, grid = _run(cfg, tmp_path)
    for ctx in grid.contexts.values():
        st = ctx.state["lepton"]
        if "dp-ledger" in st:
            ledger = PrivacyLedger.from_bytes(st["dp-ledger"])
            rounds = [e.round for e in ledger.events]
            assert len(rounds) == len(set(rounds))  # at most one charge per round
            assert ledger.epsilon(delta=1e-5) <= 1.0 + 1e-9
    # every event belongs to a round the node was actually sampled in
    sampled = {}
    for m in grid.seen:
        if m.metadata.message_type == "train":
            sampled.setdefault(m.metadata.src_node_id, 0)
            sampled[m.metadata.src_node_id] += 1
    for nid, ctx in grid.contexts.items():
        st = ctx.state["lepton"]
        n_events = len(PrivacyLedger.from_bytes(st["dp-ledger"])) if "dp-ledger" in st else 0
        assert n_events == sampled.get(nid, 0)
    assert sum(sampled.values()) == 12 and len(sampled) > 3  # partial participation happened


def test_ledger_file_survives_a_new_run_so_spend_cannot_reset(compose_cfg, tmp_path):
    cfg = compose_cfg("privacy=dpsgd", "privacy.epsilon=1.0", "federation.rounds=3",
                      "federation.num_clients=3", "federation.clients_per_round=3")
    ledgers = tmp_path / "ledgers"

    def run(d):
        grid = InProcessGrid(app, 3)
        for ctx in grid.contexts.values():  # a real node's ledger directory
            ctx.node_config["ledger-dir"] = str(ledgers / str(ctx.node_id))
        return run_federation(grid, cfg, RunWriter(d))

    first = run(tmp_path / "run1")
    assert first["rounds_completed"] == 3
    assert max(first["privacy"]["per_client"].values()) == pytest.approx(1.0, abs=1e-6)
    assert sorted(p.name for p in ledgers.iterdir()) == ["1", "2", "3"]
    # a new run on the same data (fresh Contexts, as after a node restart) cannot spend more
    second = run(tmp_path / "run2")
    rows = [json.loads(x) for x in (tmp_path / "run2" / "metrics.jsonl").read_text().splitlines()]
    assert rows[0]["declined"] == 3 and rows[0]["clients"] == 0
    assert second["rounds_completed"] == 0
    assert max(second["privacy"]["per_client"].values()) <= 1.0 + 1e-9
