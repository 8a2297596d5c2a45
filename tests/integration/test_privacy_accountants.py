"""privacy.accountant end to end (in-process, real server loop and client handlers):
the chosen accountant calibrates sigma and checks the ledger; both epsilons are
reported; each is recomputed independently with dp-accounting from the node's ledger."""

from __future__ import annotations

import pytest
from dp_accounting import GaussianDpEvent, PoissonSampledDpEvent
from dp_accounting.pld import PLDAccountant
from dp_accounting.rdp import RdpAccountant

from lepton_fed.client.app import app
from lepton_fed.client.dp import dp_report
from lepton_fed.client.node import NodeState
from lepton_fed.inprocess import InProcessGrid
from lepton_fed.privacy.accounting import PrivacyLedger
from lepton_fed.server.outputs import RunWriter
from lepton_fed.server.privacy import ServerPrivacy
from lepton_fed.server.rounds import run_federation

BASE = ("data=breast_cancer", "model=logreg", "privacy=dpsgd", "privacy.epsilon=2.0",
        "federation.rounds=3", "federation.num_clients=3", "federation.clients_per_round=3",
        "client.batch_size=32")


def _pld(history, delta):
    acc = PLDAccountant(value_discretization_interval=1e-4)
    for s, q, n in history:
        acc.compose(PoissonSampledDpEvent(q, GaussianDpEvent(s)), int(n))
    return acc.get_epsilon(delta)


def _rdp(history, delta):
    acc = RdpAccountant(list(range(2, 257)))
    for s, q, n in history:
        acc.compose(PoissonSampledDpEvent(q, GaussianDpEvent(s)), int(n))
    return acc.get_epsilon(delta)


def _run(cfg, d):
    grid = InProcessGrid(app, int(cfg.federation.num_clients))
    return run_federation(grid, cfg, RunWriter(d)), grid


@pytest.mark.parametrize("accountant", ["pld", "rdp"])
def test_chosen_accountant_governs_and_both_recompute(compose_cfg, tmp_path, accountant):
    cfg = compose_cfg(*BASE, f"privacy.accountant={accountant}")
    s, grid = _run(cfg, tmp_path)
    pr = s["privacy"]
    assert pr["accountant"] == accountant
    assert pr["epsilon"] <= 2.0 * (1 + 1e-9)
    assert pr["epsilons"][accountant] == pytest.approx(pr["epsilon"])
    for nid, ctx in grid.contexts.items():
        node = NodeState(ctx)
        ledger = PrivacyLedger.from_bytes(node.get("dp-ledger"))
        assert len(ledger) == 3 and not ledger.pending
        pld, rdp = _pld(ledger.history, 1e-5), _rdp(ledger.history, 1e-5)
        reported = pr["per_client"][f"partition-{nid - 1}"]
        both = dp_report(node)
        # the node's figures, recomputed from its ledger with dp-accounting directly
        assert both["epsilon-pld"] == pytest.approx(pld, rel=5e-3)
        assert both["epsilon-pld"] >= pld - 1e-9  # coarser grid: an upper bound of it
        assert both["epsilon-rdp"] == pytest.approx(rdp, rel=0.02)
        assert both["epsilon-rdp"] <= rdp + 1e-6
        assert reported == pytest.approx(both[f"epsilon-{accountant}"])
        assert both["epsilon-pld"] < both["epsilon-rdp"]
        # sigma was calibrated with the chosen accountant: it spends the whole target
        # under that accountant (and, with pld, more than the target under rdp)
        assert both[f"epsilon-{accountant}"] == pytest.approx(2.0, rel=1e-3)
        if accountant == "pld":
            assert both["epsilon-rdp"] > 2.0


def test_summary_takes_both_epsilons_from_replies(compose_cfg):
    cfg = compose_cfg(*BASE)
    sp = ServerPrivacy(cfg)
    sp.observe("a", {"epsilon-rdp": 2.3, "epsilon-pld": 2.0, "epsilon": 2.0})
    sp.observe("b", {"epsilon-rdp": 1.1, "epsilon-pld": 0.9})
    out = sp.summary({"a": 2.0, "b": 0.9}, {})
    assert out["accountant"] == "pld" and out["epsilon"] == 2.0
    assert out["epsilons"] == {"rdp": 2.3, "pld": 2.0}
    # a node whose policy keeps the other accountant's epsilon: only the governing one
    sp2 = ServerPrivacy(cfg)
    assert sp2.summary({"a": 2.0}, {})["epsilons"] == {"rdp": None, "pld": 2.0}


def test_central_reports_both_and_calibrates_with_the_chosen_one(compose_cfg):
    cfg = compose_cfg("privacy=central", "privacy.epsilon=3.0", "privacy.noise_multiplier=null",
                      "federation.rounds=5", "privacy.accountant=pld")
    sp = ServerPrivacy(cfg)
    for _ in range(5):
        sp.account_release(5)
    out = sp.summary({}, {})
    assert out["epsilon"] <= 3.0 * (1 + 1e-9)
    assert out["epsilon"] == pytest.approx(3.0, rel=1e-3)
    assert out["epsilons"]["pld"] == out["epsilon"] < out["epsilons"]["rdp"]
