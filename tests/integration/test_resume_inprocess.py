"""A run that dies in a round and is resumed from its checkpoint ends where an
uninterrupted run ends (real ServerApp loop and ClientApp handlers, in-process grid)."""

import json

import numpy as np
import pytest
from flwr.clientapp import ClientApp
from safetensors.numpy import load_file

from lepton_fed.client import app as client_module
from lepton_fed.inprocess import InProcessGrid
from lepton_fed.server import checkpoint as ck
from lepton_fed.server.checkpoint import CheckpointError
from lepton_fed.server.outputs import RunWriter
from lepton_fed.server.rounds import run_federation


class Died(BaseException):
    """Stands for the process dying (the in-process grid turns Exceptions into replies)."""


def _dying_app(k):
    """The real ClientApp, except that the process dies while one node trains round k,
    after other nodes of that round have trained."""
    app = ClientApp()
    app.query("setup")(client_module.setup)
    app.evaluate()(client_module.evaluate)

    @app.train()
    def train(msg, ctx):
        if int(msg.content["config"]["server-round"]) == k and ctx.node_id == 3:
            raise Died
        return client_module.train(msg, ctx)

    return app


class DieAfterRound:
    """Dies once round ``k`` is checkpointed and its row published."""

    def __init__(self, k):
        self.k = k

    def on_round(self, row):
        if row["round"] == self.k:
            raise Died

    def on_finish(self, summary):
        pass


def _run(cfg, d, observers=(), resume=None, app=None):
    grid = InProcessGrid(app or client_module.app, cfg.federation.num_clients)
    return run_federation(grid, cfg, RunWriter(d), observers, resume=resume)


def _interrupted(cfg, d, k):
    with pytest.raises(Died):
        _run(cfg, d, app=_dying_app(k))
    assert ck.load(d).round == k - 1 and _rounds(d) == list(range(1, k))
    return _run(cfg, d, resume=str(d))


def _max_diff(a, b):
    wa, wb = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    assert set(wa) == set(wb)
    return max(float(np.max(np.abs(wa[k] - wb[k]))) for k in wa)


def _rounds(d):
    return [json.loads(x)["round"] for x in (d / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("overrides", [
    ("strategy=fedadam",),
    ("strategy=krum", "federation.num_clients=6", "federation.clients_per_round=4"),
    ("privacy=central", "privacy.reproducible=true", "privacy.noise_multiplier=0.5"),
], ids=["fedadam", "krum-partial", "central-dp"])
def test_resumed_run_ends_with_the_uninterrupted_model(compose_cfg, tmp_path, overrides):
    cfg = compose_cfg("federation.rounds=4", "model=logreg", *overrides)
    a = _run(cfg, tmp_path / "a")
    b = _interrupted(cfg, tmp_path / "b", 3)
    assert _max_diff(tmp_path / "a", tmp_path / "b") <= 1e-6
    assert _rounds(tmp_path / "b") == [1, 2, 3, 4]
    assert b["rounds_completed"] == 4 and b["privacy"]["epsilon"] == a["privacy"]["epsilon"]
    if cfg.privacy.mode == "central":
        acc = ck.load(tmp_path / "b").state["privacy"]["accountant"]
        assert len(acc["rounds"]) == 4  # every released round counted once


def test_the_server_optimizer_state_is_what_makes_fedadam_exact(compose_cfg, tmp_path):
    """The same resume without FedAdam's moments ends elsewhere: the test above would see it."""
    cfg = compose_cfg("federation.rounds=4", "model=logreg", "strategy=fedadam")
    _run(cfg, tmp_path / "a")
    with pytest.raises(Died):
        _run(cfg, tmp_path / "b", app=_dying_app(3))
    saved = ck.load(tmp_path / "b")
    state = saved.state
    assert state["strategy"]["arrays"]["m_t"] and state["strategy"]["arrays"]["v_t"]
    state["strategy"]["arrays"] |= {"m_t": None, "v_t": None}
    ck._write(saved.dir, saved.round, state, saved.arrays)
    _run(cfg, tmp_path / "b", resume=str(tmp_path / "b"))
    assert _max_diff(tmp_path / "a", tmp_path / "b") > 1e-4


def test_secure_aggregation_resumes_under_a_new_protocol_run(compose_cfg, tmp_path):
    """Nodes draw their stochastic rounding from OS entropy, so secure runs agree within
    the field encoding's error, not bit for bit; the resumed run never reuses a run id."""
    cfg = compose_cfg("federation.rounds=4", "model=logreg", "secagg=on",
                      "federation.num_clients=4", "federation.clients_per_round=4")
    _run(cfg, tmp_path / "a")
    d = tmp_path / "b"
    with pytest.raises(Died):
        _run(cfg, d, [DieAfterRound(2)])
    before = ck.load(d).state["secagg"]["run_ids"]
    s = _run(cfg, d, resume=str(d))
    after = ck.load(d).state["secagg"]["run_ids"]
    assert len(before) == 1 and len(after) == 2 and after[0] == before[0] != after[1]
    assert s["secagg"]["abandoned_rounds"] == [] and _rounds(d) == [1, 2, 3, 4]
    assert _max_diff(tmp_path / "a", d) < 1e-3


def test_a_resume_with_another_config_is_refused(compose_cfg, tmp_path):
    cfg = compose_cfg("federation.rounds=3", "model=logreg", "client.epochs=1")
    with pytest.raises(Died):
        _run(cfg, tmp_path, [DieAfterRound(2)])
    other = compose_cfg("federation.rounds=3", "model=logreg", "client.epochs=3")
    with pytest.raises(CheckpointError, match="client.epochs: the run has 1, now 3"):
        _run(other, tmp_path, resume=str(tmp_path))


def test_resuming_a_finished_run_changes_nothing_and_can_extend_it(compose_cfg, tmp_path):
    cfg = compose_cfg("federation.rounds=2", "model=logreg")
    first = _run(cfg, tmp_path)
    again = _run(cfg, tmp_path, resume=str(tmp_path))
    assert again["final"] == first["final"] and _rounds(tmp_path) == [1, 2]
    longer = _run(compose_cfg("federation.rounds=3", "model=logreg"), tmp_path,
                  resume=str(tmp_path))
    assert longer["rounds_completed"] == 3 and _rounds(tmp_path) == [1, 2, 3]


def test_a_published_round_is_always_in_the_checkpoint(compose_cfg, tmp_path):
    """Observers (and metrics.jsonl) see a round only once it is on disk, so a resumed
    run never runs a published round again (central DP: no second noisy release)."""
    cfg = compose_cfg("federation.rounds=4", "model=logreg", "privacy=central",
                      "privacy.noise_multiplier=0.5")
    seen = []

    class Watch:
        def on_round(self, row):
            state = ck.load(tmp_path).state
            seen.append((row["round"], state["round"],
                         len(state["privacy"]["accountant"]["rounds"])))
            if row["round"] == 2:
                raise Died

        def on_finish(self, summary):
            pass

    with pytest.raises(Died):
        _run(cfg, tmp_path, [Watch()])
    assert seen == [(1, 1, 1), (2, 2, 2)]
    s = _run(cfg, tmp_path, resume=str(tmp_path))
    assert _rounds(tmp_path) == [1, 2, 3, 4]
    assert len(ck.load(tmp_path).state["privacy"]["accountant"]["rounds"]) == 4
    assert s["privacy"]["epsilon"] > 0


def test_distributed_dp_releases_are_carried_over(compose_cfg, tmp_path):
    """privacy=distributed: the sums the server unmasked before the crash still count."""
    cfg = compose_cfg("privacy=distributed", "secagg=on", "model=logreg", "federation.rounds=4",
                      "federation.num_clients=4", "federation.clients_per_round=4")
    a = _run(cfg, tmp_path / "a")
    with pytest.raises(Died):
        _run(cfg, tmp_path / "b", [DieAfterRound(2)])
    assert ck.load(tmp_path / "b").state["secagg"]["ddp_releases"] == 2
    b = _run(cfg, tmp_path / "b", resume=str(tmp_path / "b"))
    da, db = (s["secagg"]["rounds"][-1]["distributed_dp"] for s in (a, b))
    assert db["releases"] == da["releases"] == 4 and db["epsilon"] == da["epsilon"] > 0


@pytest.mark.parametrize("on_disk", [True, False], ids=["sim-ledgers", "in-memory"])
def test_a_resumed_dpsgd_simulation_continues_every_virtual_nodes_spend(
        compose_cfg, tmp_path, monkeypatch, on_disk):
    """Simulated nodes without a ledger-dir keep their ledgers under
    ``$LEPTON_FED_SIM_LEDGERS`` (set by ``simulate``): a resumed run (fresh nodes, their
    memory gone) then spends exactly what an uninterrupted run spends. Without it every
    node's spend restarts from zero -- why such a resume is refused."""
    from lepton_fed.client.dp import SIM_LEDGERS_ENV

    cfg = compose_cfg("privacy=dpsgd", "privacy.reproducible=true", "privacy.epsilon=8.0",
                      "model=logreg", "federation.num_clients=3",
                      "federation.clients_per_round=3", "federation.rounds=3")
    monkeypatch.setenv(SIM_LEDGERS_ENV, str(tmp_path / "ref-ledgers"))
    ref = _run(cfg, tmp_path / "ref")
    if on_disk:
        monkeypatch.setenv(SIM_LEDGERS_ENV, str(tmp_path / "ledgers"))
    else:
        monkeypatch.delenv(SIM_LEDGERS_ENV)
    d = tmp_path / "run"
    with pytest.raises(Died):
        _run(cfg, d, [DieAfterRound(2)])
    s = _run(cfg, d, resume=str(d))  # a fresh grid: no node remembers anything

    def last_reported(run_dir):
        return json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[-1])[
            "epsilon_per_node"]

    want = last_reported(tmp_path / "ref")
    assert set(want) == {"partition-0", "partition-1", "partition-2"}
    if on_disk:
        assert last_reported(d) == want and s["privacy"]["per_client"] == ref["privacy"][
            "per_client"]
        assert sorted(p.name for p in (tmp_path / "ledgers").iterdir()) == [
            "partition-0", "partition-1", "partition-2"]
    else:
        assert all(last_reported(d)[n] < want[n] for n in want)
