"""privacy=distributed through the real server loop and client handlers (in-process):
the server only decodes, yet the released model carries the designed noise; rounds with
too few masked inputs are abandoned before anything is unmasked; nodes check the plan
against their own policy; uploads stay 4 bytes per parameter."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from lepton_fed.client.app import app
from lepton_fed.errors import RunFailed
from lepton_fed.inprocess import InProcessGrid
from lepton_fed.privacy.distributed_config import plan_for_config
from lepton_fed.server.outputs import RunWriter
from lepton_fed.server.rounds import run_federation
from lepton_fed.utils.records import from_array_record

N = 5
BASE = ("data=digits", "model=logreg", "privacy=distributed", "secagg=on",
        f"federation.num_clients={N}", f"federation.clients_per_round={N}",
        "client.epochs=1")
DIM = 64 * 10 + 10


def _grid(drop=None):
    grid = InProcessGrid(app, N, drop=drop)
    sent: list[tuple[int, dict[str, np.ndarray]]] = []  # (round, global model sent)
    real = grid._deliver

    def deliver(msg):
        if msg.metadata.message_type == "train":
            rnd = int(msg.content["config"]["server-round"])
            if not sent or sent[-1][0] != rnd:
                sent.append((rnd, from_array_record(msg.content["arrays"])))
        return real(msg)

    grid._deliver = deliver
    return grid, sent


def _flat(state):
    return np.concatenate([np.asarray(v, np.float64).ravel() for v in state.values()])


def _rows(d):
    return [json.loads(x) for x in (d / "metrics.jsonl").read_text().splitlines()]


def test_server_that_only_decodes_releases_the_designed_noise(compose_cfg, tmp_path):
    """Every node's update is exactly zero (lr=0): what changes the global model is the
    nodes' noise shares alone, and it has the planned size."""
    cfg = compose_cfg(*BASE, "federation.rounds=4", "client.lr=0.0", "privacy.epsilon=8.0")
    grid, sent = _grid()
    s = run_federation(grid, cfg, RunWriter(tmp_path))
    assert s["rounds_completed"] == 4
    plan = plan_for_config(cfg, DIM)
    steps = np.concatenate([_flat(b) - _flat(a) for (_, a), (_, b)
                            in zip(sent, sent[1:], strict=False)])
    assert steps.size == 3 * DIM
    want = math.sqrt(N) * plan.local_sigma * plan.gamma / N  # N shares, divided by N
    assert steps.std() == pytest.approx(want, rel=0.1)
    assert abs(steps.mean()) < 4 * want / math.sqrt(steps.size)
    rows = _rows(tmp_path)
    ddp = [r["secagg"]["distributed_dp"] for r in rows]
    assert [d["releases"] for d in ddp] == [1, 2, 3, 4]
    assert ddp[-1]["epsilon"] == pytest.approx(8.0, rel=1e-6)
    assert all(d["wrap_log2"] <= -40 for d in ddp)
    # uploads: the masked vector is 4 bytes per parameter (+ the count) plus shares
    for m in (m for m in grid.seen if m.metadata.message_type == "train"):
        assert set(m.content["metrics"].keys()) <= {"declined"}
        assert 4 * (DIM + 1) <= len(bytes(m.content["secagg"]["reply"])) <= 4 * (DIM + 1) + 800


def test_too_few_masked_inputs_abandon_the_round_before_unmasking(compose_cfg, tmp_path):
    cfg = compose_cfg(*BASE, "federation.rounds=2")

    def drop(nid, msg):  # one node never answers round 1's train message
        return (msg.metadata.message_type == "train" and nid == 2
                and int(msg.content["config"]["server-round"]) == 1)

    grid, sent = _grid(drop)
    s = run_federation(grid, cfg, RunWriter(tmp_path))
    rows = _rows(tmp_path)
    assert rows[0]["secagg"]["abandoned"].startswith("distributed_dp_too_few")
    assert "abandoned" not in rows[1]["secagg"]
    assert rows[1]["secagg"]["distributed_dp"]["releases"] == 1  # round 1 was never unmasked
    assert s["rounds_completed"] == 2
    # nothing of round 1 was unmasked, and the global model did not move
    unmask_rounds = [m for m in grid.seen if m.metadata.message_type == "query.secagg_unmask"]
    assert len(unmask_rounds) == N  # round 2's only
    assert np.array_equal(_flat(sent[0][1]), _flat(sent[1][1]))


def test_a_node_refuses_a_plan_above_its_own_epsilon_cap(compose_cfg, tmp_path, caplog):
    from lepton_fed.secagg.provisioning import make_sim_bundle

    make_sim_bundle(tmp_path / "b", N)
    (tmp_path / "b" / "node_policy.yaml").write_text(
        "privacy_modes: [distributed]\nmax_epsilon: 2.0\nmax_delta: 1.0e-5\n"
        "require_secagg: true\nmin_clients_per_round: 3\nmin_security_bits: null\n"
        "models: null\nclear_metrics: []\nallow_tofu_keys: false\n")
    cfg = compose_cfg(*BASE, "federation.rounds=1", "privacy.epsilon=8.0")
    grid = InProcessGrid(app, N, bundle=tmp_path / "b")
    # the policy check at setup already refuses the run (before any key or data is used)
    with pytest.raises(RunFailed, match="no node accepted the run.*EPSILON_CAP"):
        run_federation(grid, cfg, RunWriter(tmp_path / "run"))
    assert not [m for m in grid.seen if m.metadata.message_type == "train"]
    # were the setup check bypassed, the node's own plan check refuses the round too
    from lepton_fed.policy import NodePolicy
    from lepton_fed.privacy.distributed_config import plan_for_config, policy_problems

    pol = NodePolicy.from_mapping(
        __import__("yaml").safe_load((tmp_path / "b" / "node_policy.yaml").read_text()))
    bad = policy_problems(plan_for_config(cfg, 650), max_epsilon=pol.max_epsilon,
                          max_delta=pol.max_delta, min_clients=pol.min_clients_per_round,
                          colluding_fraction=pol.colluding_fraction)
    assert any("epsilon" in b for b in bad)


def test_a_node_refuses_a_cohort_smaller_than_the_noise_is_sized_for(compose_cfg, tmp_path,
                                                                     caplog, monkeypatch):
    """A curious server sets nodes up for 5 contributors, then puts only 3 in a round's
    cohort (here: 2 nodes look disconnected when it samples). Each node's noise share
    is sized for 5, so the 3 would release a sum with 3/5 of the designed variance: every
    node's protocol client refuses the request itself (the node's noise plan raises its
    smallest accepted cohort) before it masks anything, whatever the server does next,
    and its ledger keeps nothing spent."""

    class Hiding(InProcessGrid):
        """Two nodes look disconnected once the setup exchange is over."""

        def get_node_ids(self):
            ids = list(self.contexts)
            setup_done = any(m.metadata.message_type == "query.setup" for m in self.seen)
            return ids[:3] if setup_done else ids

    from lepton_fed.client.dp import SIM_LEDGERS_ENV
    from lepton_fed.privacy.file_ledger import FileLedger

    monkeypatch.setenv(SIM_LEDGERS_ENV, str(tmp_path / "ledgers"))
    cfg = compose_cfg(*BASE, "federation.rounds=1", "federation.node_wait=0",
                      f"privacy.min_contributors={N}")
    grid = Hiding(app, N)
    run_federation(grid, cfg, RunWriter(tmp_path))
    trains = [m for m in grid.seen if m.metadata.message_type == "train"]
    assert len(trains) == 3, len(trains)  # the server did send the small cohort
    assert all(m.has_error() for m in trains)
    # the reply carries only the code; the node's own log names the reason
    assert all("SECAGG_ABORT" in m.error.reason for m in trains)
    assert "cohort of 3 nodes is outside [5," in caplog.text
    assert not [m for m in trains if not m.has_error() and "secagg" in m.content]
    rows = _rows(tmp_path)
    assert rows[0]["secagg"].get("abandoned"), rows[0]
    for pid in range(3):  # the reservation was dropped: nothing left the node
        store = FileLedger(tmp_path / "ledgers" / f"partition-{pid}")
        keys = store.keys()  # it reserved, then dropped the reservation
        assert keys and all(not store.load(k).events for k in keys), pid
