"""Real-federation behaviour of the real apps, in-process (no Ray): nodes that read only
their own files, a coordinator that holds no data, the schema contract checked by name,
federated evaluation, nodes that restart, vanish or fail, and coded error replies."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from lepton_fed.client import app as client_module
from lepton_fed.errors import RunFailed
from lepton_fed.inprocess import InProcessGrid
from lepton_fed.server.outputs import RunWriter
from lepton_fed.server.rounds import run_federation

FEATURES = ["age", "chol", "bp", "smoker"]


def _hospital(rng: np.random.Generator, n: int, shift: float) -> pd.DataFrame:
    age = rng.normal(55 + shift, 8, n)
    chol = rng.normal(230 + 10 * shift, 30, n)
    bp = rng.normal(130, 15, n)
    smoker = rng.choice(["yes", "no"], n)
    score = 0.08 * (age - 55) + 0.03 * (chol - 230) + 0.9 * (smoker == "yes") - 0.4
    y = np.where(score + rng.normal(0, 0.7, n) > 0, "sick", "healthy")
    return pd.DataFrame({"age": age, "chol": chol, "bp": bp, "smoker": smoker, "target": y})


@pytest.fixture
def federation(tmp_path):
    """Three hospitals, each with its own CSV (columns in a different order each), and the
    federation's declared schema."""
    rng = np.random.default_rng(3)
    files = []
    for i, n in enumerate((160, 120, 200)):
        df = _hospital(rng, n, shift=i - 1.0)
        cols = list(df.columns)
        df = df[cols[i:] + cols[:i]]  # column order differs per hospital
        p = tmp_path / f"hospital{i}.csv"
        df.to_csv(p, index=False)
        files.append(p)
    schema = {"label": "target", "classes": ["healthy", "sick"],
              "features": ["age", "chol", "bp", {"name": "smoker", "kind": "categorical",
                                                  "levels": ["no", "yes"]}]}
    sp = tmp_path / "schema.yaml"
    sp.write_text(yaml.safe_dump(schema))
    return files, sp


def _cfg(compose_cfg, schema_path, *extra):
    return compose_cfg("data=csv", "data.label=target", f"data.schema={schema_path}",
                       "evaluation.server_data=false", "model=logreg",
                       "federation.num_clients=3", "federation.clients_per_round=3",
                       "federation.rounds=3", "client.epochs=2", "federation.node_wait=1",
                       *extra)


OPEN_POLICY = Path(__file__).resolve().parents[2] / "conf" / "node_policy" / "open.yaml"


def _grid(files, policy=OPEN_POLICY, **kw):
    configs = [{"data-path": str(f), "node-name": f"hospital-{chr(97 + i)}",
                "ledger-dir": str(f.parent / f"ledger{i}"), "policy": str(policy)}
               for i, f in enumerate(files)]
    return InProcessGrid(client_module.app, len(files), node_configs=configs, **kw)


def test_coordinator_without_data_trains_and_evaluates_federated(compose_cfg, federation, tmp_path):
    files, schema = federation
    cfg = _cfg(compose_cfg, schema)
    out = tmp_path / "run"
    s = run_federation(_grid(files), cfg, RunWriter(out))
    assert s["rounds_completed"] == 3
    assert s["evaluation"] == {"server_data": False, "federated": True}
    assert not (out / "heldout.npz").exists()  # the coordinator has no rows to hold out
    fed = s["final"]["federated"]
    # every node evaluated on its own held-out rows (20 % of 160 + 120 + 200)
    assert fed["nodes"] == 3 and fed["n"] == 32 + 24 + 40
    assert set(fed["per_node"]) == {"hospital-a", "hospital-b", "hospital-c"}
    assert s["final"]["accuracy"] == pytest.approx(fed["accuracy"]) and fed["accuracy"] > 0.7
    assert 0.5 < fed["auc"] <= 1.0
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert all(r["accuracy"] is not None and r["federated"]["nodes"] == 3 for r in rows)
    prep = json.loads((out / "preprocess.json").read_text())
    assert [f["name"] for f in prep["features"]] == ["age", "chol", "bp", "smoker"]
    assert prep["class_names"] == ["healthy", "sick"]
    # the scaler is the federation's: built from the nodes' training rows, by NAME
    train_rows = []
    for f in files:
        from omegaconf import OmegaConf

        from lepton_fed.client.local_data import _file_data

        nd = _file_data(str(f), OmegaConf.to_yaml(OmegaConf.create(
            yaml.safe_load(schema.read_text()))), None, "name: csv\n", 0.2)
        train_rows.append(nd.train.X)
    pooled = np.concatenate(train_rows)
    assert np.allclose(prep["scaler"]["mean"], pooled.mean(0), rtol=1e-4, atol=1e-4)
    assert s["nodes"]["names"] == ["hospital-a", "hospital-b", "hospital-c"]


def test_node_whose_file_differs_is_refused_naming_the_column(compose_cfg, federation, tmp_path):
    files, schema = federation
    df = pd.read_csv(files[1]).drop(columns=["chol"])
    df.to_csv(files[1], index=False)
    cfg = _cfg(compose_cfg, schema, "federation.clients_per_round=2")
    grid = _grid(files)
    s = run_federation(grid, cfg, RunWriter(tmp_path / "run"))
    assert s["rounds_completed"] == 3
    assert s["nodes"]["refused"] == {"hospital-b": "SCHEMA_MISMATCH"}
    # the error reply names the node and the column, and nothing else
    errs = [m for m in grid.seen if m.has_error()]
    assert errs and all(m.error.reason == "lepton-fed:SCHEMA_MISMATCH node=hospital-b "
                        "(columns: chol)" for m in errs)


def test_a_restarted_node_rejoins_and_a_vanished_node_does_not_hang(compose_cfg, federation,
                                                                     tmp_path):
    files, schema = federation
    cfg = _cfg(compose_cfg, schema, "federation.rounds=4", "federation.min_clients=2")
    gone: set[int] = set()

    def drop(nid, msg):
        return nid in gone

    grid = _grid(files, drop=drop)
    calls = {"n": 0}
    real = grid._deliver

    def deliver(msg):
        if msg.metadata.message_type == "train":
            calls["n"] += 1
            if calls["n"] == 4:  # node 1 restarts before round 2: its Context is gone
                grid.contexts[1].state.clear()
            if calls["n"] == 7:  # node 3 vanishes for good in round 3
                gone.add(3)
        return real(msg)

    grid._deliver = deliver
    s = run_federation(grid, cfg, RunWriter(tmp_path / "run"))
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert s["rounds_completed"] == 4
    assert rows[1]["declined"] == 1  # the restarted node asked for the setup again...
    assert s["nodes"]["declines"]["hospital-a"] == {"NEEDS_SETUP": 1}
    assert rows[2]["clients"] >= 2 and rows[3]["clients"] == 2  # ...and trained again after
    assert s["nodes"]["failures"]["hospital-c"]["NO_REPLY"] >= 1  # named by roster name


def test_too_few_nodes_ends_the_run_cleanly(compose_cfg, federation, tmp_path):
    files, schema = federation
    cfg = _cfg(compose_cfg, schema, "federation.min_clients=3")
    grid = _grid(files)
    real = grid._deliver

    def deliver(msg):
        reply = real(msg)
        if msg.metadata.message_type == "query.setup" and msg.metadata.dst_node_id == 2:
            grid.get_node_ids = lambda: [1, 3]  # node 2 disconnects after its setup
        return reply

    grid._deliver = deliver
    s = run_federation(grid, cfg, RunWriter(tmp_path / "run"))
    assert s["rounds_completed"] == 0 and "fewer than 3 eligible nodes" in s["stopped"]
    assert (tmp_path / "run" / "summary.json").exists()


def test_no_node_accepting_is_a_clear_failure(compose_cfg, federation, tmp_path):
    files, schema = federation
    for f in files:
        pd.read_csv(f).drop(columns=["bp"]).to_csv(f, index=False)
    cfg = _cfg(compose_cfg, schema)
    with pytest.raises(RunFailed, match="no node accepted the run.*SCHEMA_MISMATCH"):
        run_federation(_grid(files), cfg, RunWriter(tmp_path / "run"))


def test_error_replies_carry_codes_not_data(compose_cfg, federation, tmp_path):
    """A train request with arrays of the wrong shape: the node's error names no value."""
    from flwr.app import Array, ArrayRecord, ConfigRecord, Message, RecordDict

    files, schema = federation
    cfg = _cfg(compose_cfg, schema, "federation.rounds=1")
    grid = _grid(files)
    run_federation(grid, cfg, RunWriter(tmp_path / "run"))
    secret = np.full((3, 3), 123.456, np.float32)
    msg = Message(RecordDict({"arrays": ArrayRecord({"net.weight": Array(secret)}),
                              "config": ConfigRecord({"server-round": 9})}),
                  dst_node_id=1, message_type="train")
    (reply,) = grid.send_and_receive([msg])
    assert reply.has_error()
    assert reply.error.reason in ("lepton-fed:INVALID_REQUEST node=hospital-a",
                                  "lepton-fed:INTERNAL node=hospital-a")
    assert "123" not in reply.error.reason and "/" not in reply.error.reason


def test_feature_statistics_stay_on_nodes_whose_policy_keeps_them(compose_cfg, federation,
                                                                  tmp_path):
    files, schema = federation
    d = yaml.safe_load(schema.read_text())
    d["normalization"] = {"age": [55, 10], "chol": [230, 35], "bp": [130, 15]}
    schema.write_text(yaml.safe_dump(d))
    policy = yaml.safe_load(OPEN_POLICY.read_text())
    policy["clear_metrics"] = ["evaluation", "num-examples"]  # no feature-stats
    pp = tmp_path / "policy.yaml"
    pp.write_text(yaml.safe_dump(policy))
    cfg = _cfg(compose_cfg, schema)
    grid = _grid(files, policy=pp)
    s = run_federation(grid, cfg, RunWriter(tmp_path / "run"))
    setups = [m for m in grid.seen if m.metadata.message_type == "query.setup"]
    assert setups and all("metrics" not in m.content for m in setups)
    assert s["scaler"] == "declared in the schema" and s["rounds_completed"] == 3
    prep = json.loads((tmp_path / "run" / "preprocess.json").read_text())
    assert prep["scaler"]["mean"][:3] == [55, 230, 130]
    trains = [m for m in grid.seen if m.metadata.message_type == "train"]
    assert all(set(m.content["metrics"]) <= {"num-examples", "declined", "unit-weight",
                                             "server-round"}
               for m in trains)  # train-loss and update norms stay on the node too


def test_the_held_out_rows_are_the_nodes_choice_not_the_servers(compose_cfg, federation):
    """A server that lowers ``data.test_fraction`` in a later run cannot move a node's
    held-out rows into training: a real node holds out its own ``test-fraction``."""
    from flwr.app import Context, RecordDict

    from lepton_fed.client.local_data import NODE_TEST_FRACTION, node_data

    files, schema_path = federation
    schema = yaml.safe_load(schema_path.read_text())  # nodes get the schema, not a path
    ctx = Context(run_id=1, node_id=1, node_config={"data-path": str(files[0])},
                  state=RecordDict(), run_config={})

    def cfg(*extra):
        c = _cfg(compose_cfg, schema_path, *extra)
        c.data.schema = schema
        return c

    held = [node_data(cfg(f"data.test_fraction={f}"), ctx).test for f in (0.5, 0.05)]
    assert len(held[0].y) == len(held[1].y) == round(160 * NODE_TEST_FRACTION)
    assert np.array_equal(held[0].X, held[1].X)
    ctx.node_config["test-fraction"] = 0.25
    assert len(node_data(cfg(), ctx).test.y) == 40
    ctx.node_config["test-fraction"] = 1.5
    with pytest.raises(ValueError, match="test-fraction 1.5 must lie strictly between"):
        node_data(cfg(), ctx)


def test_the_server_does_not_set_a_real_nodes_threads(compose_cfg, federation, tmp_path):
    """``federation.num_cpus_per_client`` sizes simulated clients; a real node keeps the
    thread count its operator gave its process."""
    import torch

    files, schema = federation
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        cfg = _cfg(compose_cfg, schema, "federation.num_cpus_per_client=1",
                   "federation.rounds=1")
        run_federation(_grid(files), cfg, RunWriter(tmp_path / "run"))
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
