"""The real ServerApp round loop and ClientApp handlers, delivered in-process (no Ray)."""

import json

import numpy as np
import pytest
from flwr.clientapp import ClientApp
from safetensors.numpy import load_file

from lepton_fed.client import app as client_module
from lepton_fed.errors import RunFailed
from lepton_fed.inprocess import InProcessGrid
from lepton_fed.server.outputs import RunWriter
from lepton_fed.server.rounds import run_federation


def _run(cfg, tmp_path, app=None, n=None, **grid_kw):
    grid = InProcessGrid(app or client_module.app, n or cfg.federation.num_clients, **grid_kw)
    return run_federation(grid, cfg, RunWriter(tmp_path)), tmp_path


def test_run_directory_contract(compose_cfg, tmp_path):
    cfg = compose_cfg("federation.num_clients=3", "federation.clients_per_round=3",
                      "federation.rounds=3")
    summary, d = _run(cfg, tmp_path)
    rows = [json.loads(x) for x in (d / "metrics.jsonl").read_text().splitlines()]
    assert [r["round"] for r in rows] == [1, 2, 3]
    for r in rows:
        assert {"round", "loss", "accuracy", "auc", "clients", "epsilon", "bytes_up",
                "bytes_down", "seconds"} <= set(r)
        assert r["clients"] == 3 and r["epsilon"] is None and r["bytes_up"] > 0
    on_disk = json.loads((d / "summary.json").read_text())
    assert on_disk["rounds_completed"] == 3 and on_disk["num_clients"] == 3
    assert {"accuracy", "loss", "auc"} <= set(on_disk["final"])
    assert on_disk["final"]["accuracy"] > 0.85
    assert on_disk["privacy"]["mode"] == "none" and on_disk["secagg"]["enabled"] is False
    assert on_disk["model"] == "model.safetensors"
    w = load_file(d / "model.safetensors")
    assert set(w) == {"net.0.weight", "net.0.bias", "net.2.weight", "net.2.bias",
                      "net.4.weight", "net.4.bias"}
    assert (d / "plots" / "accuracy.png").stat().st_size > 1000
    assert "data:" in (d / "config.yaml").read_text()
    assert json.loads((d / "preprocess.json").read_text())["model"]["name"] == "mlp"


def test_seeded_runs_reproduce_and_seeds_differ(compose_cfg, tmp_path):
    a, _ = _run(compose_cfg("federation.rounds=2"), tmp_path / "a")
    b, _ = _run(compose_cfg("federation.rounds=2"), tmp_path / "b")
    c, _ = _run(compose_cfg("federation.rounds=2", "seed=5"), tmp_path / "c")
    assert a["final"] == b["final"]
    assert a["final"] != c["final"]


@pytest.mark.parametrize("strategy", ["fedprox", "fedadam", "fedyogi", "fedadagrad",
                                      "krum", "trimmed_mean", "median"])
def test_strategies_train(compose_cfg, tmp_path, strategy):
    cfg = compose_cfg(f"strategy={strategy}", "federation.rounds=3", "model=logreg")
    s, _ = _run(cfg, tmp_path)
    assert s["rounds_completed"] == 3
    assert s["final"]["accuracy"] > 0.8, s["final"]


def test_partial_participation_and_dirichlet_digits(compose_cfg, tmp_path):
    cfg = compose_cfg("data=digits", "partition=dirichlet", "partition.alpha=0.3",
                      "federation.num_clients=20", "federation.clients_per_round=5",
                      "federation.rounds=3")
    s, d = _run(cfg, tmp_path)
    rows = [json.loads(x) for x in (d / "metrics.jsonl").read_text().splitlines()]
    assert all(r["clients"] == 5 for r in rows)
    assert rows[-1]["loss"] < rows[0]["loss"]


def _crashing_app(crash_nodes):
    app = ClientApp()

    @app.query("setup")
    def setup(msg, ctx):
        return client_module.setup(msg, ctx)

    @app.train()
    def train(msg, ctx):
        if ctx.node_id in crash_nodes:
            raise RuntimeError("disk on fire")
        return client_module.train(msg, ctx)

    return app


def test_a_crashing_client_is_recorded_not_fatal(compose_cfg, tmp_path):
    cfg = compose_cfg("federation.num_clients=3", "federation.clients_per_round=3",
                      "federation.rounds=2")
    s, d = _run(cfg, tmp_path, app=_crashing_app({2}))
    rows = [json.loads(x) for x in (d / "metrics.jsonl").read_text().splitlines()]
    assert [r["failed"] for r in rows] == [1, 1] and [r["clients"] for r in rows] == [2, 2]
    assert s["rounds_completed"] == 2 and s["failures"] == 2


def test_run_fails_clearly_when_no_client_succeeds(compose_cfg, tmp_path):
    cfg = compose_cfg("federation.num_clients=3", "federation.clients_per_round=3",
                      "federation.rounds=3")
    with pytest.raises(RunFailed, match="round 1: no client succeeded.*disk on fire"):
        _run(cfg, tmp_path, app=_crashing_app({1, 2, 3}))
    # what was done is kept: the metrics line of the failed round and the model
    assert (tmp_path / "metrics.jsonl").read_text().count("\n") == 1
    assert (tmp_path / "model.safetensors").exists()


def test_scaler_built_from_client_sums(compose_cfg, tmp_path):
    from lepton_fed.data.federated import federated_split

    cfg = compose_cfg("federation.rounds=1")
    _run(cfg, tmp_path)
    pre = json.loads((tmp_path / "preprocess.json").read_text())
    split = federated_split(cfg)
    pooled_train = np.concatenate([split.client(i).X for i in range(cfg.federation.num_clients)])
    np.testing.assert_allclose(pre["scaler"]["mean"], pooled_train.mean(0), rtol=1e-4)
