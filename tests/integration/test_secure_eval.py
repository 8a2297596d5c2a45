"""Secure federated evaluation through the real server loop and client handlers
(in-process): nodes with their own CSV files and a policy that keeps evaluation sums
private; with secure aggregation the server still reports federation-wide accuracy,
loss and AUC -- equal to the pooled figures within quantization -- and no reply carries
a node's sums in the clear."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from flwr.app import ConfigRecord
from omegaconf import OmegaConf
from safetensors.torch import load_file
from sklearn.metrics import roc_auc_score

from lepton_fed.client import app as client_module
from lepton_fed.client.evaluate import eval_sums
from lepton_fed.client.local_data import _file_data
from lepton_fed.data.preprocess import Preprocessor
from lepton_fed.inprocess import InProcessGrid
from lepton_fed.models import build_model
from lepton_fed.models.predict import EVAL_LOSS_CAP
from lepton_fed.secagg.provisioning import make_sim_bundle, sim_bundle_paths
from lepton_fed.server.fedeval import combine
from lepton_fed.server.outputs import RunWriter
from lepton_fed.server.rounds import run_federation

SIZES = (160, 120, 200, 140)
#: a hospital's policy: secure aggregation required, nothing about evaluation in the clear
POLICY = {"privacy_modes": ["none"], "max_epsilon": None, "require_secagg": True,
          "min_clients_per_round": 3, "min_security_bits": 40.0, "models": None,
          "clear_metrics": ["epsilon", "unit-weight"], "allow_tofu_keys": False}


def _hospital(rng: np.random.Generator, n: int, shift: float) -> pd.DataFrame:
    age = rng.normal(55 + shift, 8, n)
    chol = rng.normal(230 + 10 * shift, 30, n)
    smoker = rng.choice(["yes", "no"], n)
    score = 0.08 * (age - 55) + 0.03 * (chol - 230) + 0.9 * (smoker == "yes") - 0.4
    y = np.where(score + rng.normal(0, 0.7, n) > 0, "sick", "healthy")
    return pd.DataFrame({"age": age, "chol": chol, "smoker": smoker, "target": y})


@pytest.fixture
def hospitals(tmp_path):
    rng = np.random.default_rng(5)
    files = []
    for i, n in enumerate(SIZES):
        p = tmp_path / f"hospital{i}.csv"
        _hospital(rng, n, shift=i - 1.5).to_csv(p, index=False)
        files.append(p)
    schema = {"label": "target", "classes": ["healthy", "sick"],
              "features": ["age", "chol", {"name": "smoker", "kind": "categorical",
                                           "levels": ["no", "yes"]}],
              # declared normalization: these nodes send no feature statistics either
              "normalization": {"age": [55.0, 10.0], "chol": [230.0, 35.0]}}
    sp = tmp_path / "schema.yaml"
    sp.write_text(yaml.safe_dump(schema))
    pol = tmp_path / "policy.yaml"
    pol.write_text(yaml.safe_dump(POLICY))
    make_sim_bundle(tmp_path / "keys", len(files))  # keys and signed roster, given per node
    paths = sim_bundle_paths(tmp_path / "keys")
    configs = [{"data-path": str(f), "node-name": f"hospital-{chr(97 + i)}",
                "ledger-dir": str(tmp_path / f"ledger{i}"), "policy": str(pol),
                "identity-key": str(paths.identity_key(i)), "roster": str(paths.roster),
                "federation-public-key": str(paths.federation_public_key)}
               for i, f in enumerate(files)]
    return files, sp, configs


def _cfg(compose_cfg, schema, *extra):
    n = len(SIZES)
    return compose_cfg("data=csv", "data.label=target", f"data.schema={schema}",
                       "evaluation.server_data=false", "model=logreg", "secagg=on",
                       f"federation.num_clients={n}", f"federation.clients_per_round={n}",
                       "federation.rounds=2", "client.epochs=2", "federation.node_wait=1",
                       *extra)


def _pooled(run_dir: Path, files, schema: Path):
    """Pooled figures of the final model over every node's held-out rows."""
    pre = Preprocessor.from_dict(json.loads((run_dir / "preprocess.json").read_text()))
    net = build_model(pre.model)
    net.load_state_dict({k: v for k, v in load_file(str(run_dir / "model.safetensors")).items()})
    schema_yaml = OmegaConf.to_yaml(OmegaConf.create(yaml.safe_load(schema.read_text())))
    sums, Xs, ys = [], [], []
    for f in files:
        test = _file_data(str(f), schema_yaml, None, "name: csv\n", 0.2).test
        X = pre.scaler.transform(test.X)
        sums.append(eval_sums(net, X, test.y))
        Xs.append(X)
        ys.append(test.y)
    X, y = np.concatenate(Xs), np.concatenate(ys)
    with torch.no_grad():
        p = torch.softmax(net(torch.as_tensor(X, dtype=torch.float32)), 1).numpy()
    return combine(sums), sums, roc_auc_score(y, p[:, 1])


def test_secure_evaluation_reports_pooled_figures_and_nothing_per_node(
        compose_cfg, hospitals, tmp_path):
    files, schema, configs = hospitals
    grid = InProcessGrid(client_module.app, len(files), node_configs=configs)
    s = run_federation(grid, _cfg(compose_cfg, schema), RunWriter(tmp_path / "run"))
    assert s["rounds_completed"] == 2
    fed = s["final"]["federated"]
    assert fed is not None and fed["secure"] and fed["nodes"] == len(files)
    assert "per_node" not in fed
    want, node_sums, exact_auc = _pooled(tmp_path / "run", files, schema)
    assert fed["n"] == want["n"] == sum(int(round(0.2 * n)) for n in SIZES)
    assert all(ns["eval-loss-sum"] / ns["eval-n"] < EVAL_LOSS_CAP for ns in node_sums)
    # quantization: each summed coordinate is off by < contributors / B, B = (2^31-1)/m
    tol = 10 * len(files) ** 2 / (2**31 - 1) / (want["n"] / 10_000)
    assert fed["accuracy"] == pytest.approx(want["accuracy"], abs=tol)
    assert fed["loss"] == pytest.approx(want["loss"], abs=tol * EVAL_LOSS_CAP)
    assert fed["auc"] == pytest.approx(want["auc"], abs=1e-4)  # same bins as in the clear
    assert fed["auc"] == pytest.approx(exact_auc, abs=0.02)    # binned vs exact AUC
    assert s["final"]["accuracy"] == fed["accuracy"]  # the coordinator has no rows
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert all(r["federated"] and r["federated"]["secure"] for r in rows)

    # what the server received: no clear evaluate reply at all; the secure ones carry
    # nothing but the masked vector; no metric record holds an evaluation sum
    kinds = {m.metadata.message_type for m in grid.seen}
    assert "evaluate" not in kinds and "query.secagg_evaluate" in kinds
    for m in grid.seen:
        assert not m.has_error(), m.error.reason
        if m.metadata.message_type == "query.secagg_evaluate":
            assert set(m.content.keys()) == {"secagg"}
            assert set(m.content["secagg"].keys()) == {"reply"}
        for rec in m.content.metric_records.values():
            assert not any(k.startswith("eval-") for k in rec), m.metadata.message_type
    # training's protocol state is untouched by evaluation: rounds 1..2 in its own run
    from lepton_fed.client.node import NodeState
    from lepton_fed.secagg.client.state import decode_state

    for ctx in grid.contexts.values():
        node = NodeState(ctx)
        train = decode_state(bytes(node.get("secagg-state")))
        ev = decode_state(bytes(node.get("secagg-state-eval")))
        assert train.run_id != ev.run_id
        assert train.last_round == 2 and ev.last_round == 3  # evaluation at rounds 0, 1, 2


def test_without_secure_aggregation_the_same_policy_declines_evaluation(
        compose_cfg, hospitals, tmp_path):
    """The control: the clear path is refused by these nodes, so the figures above can
    only have come through the secure sum."""
    files, schema, configs = hospitals
    pol = yaml.safe_load(Path(configs[0]["policy"]).read_text()) | {"require_secagg": False}
    Path(configs[0]["policy"]).write_text(yaml.safe_dump(pol))
    grid = InProcessGrid(client_module.app, len(files), node_configs=configs)
    s = run_federation(grid, _cfg(compose_cfg, schema, "secagg=off"),
                       RunWriter(tmp_path / "run"))
    assert s["final"]["federated"] is None
    assert all(c == {"METRICS_NOT_ALLOWED": 3} for c in s["nodes"]["declines"].values())


def test_too_few_contributors_abandon_secure_evaluation(compose_cfg, hospitals, tmp_path,
                                                         caplog):
    files, schema, configs = hospitals

    def drop(nid, msg):  # two nodes never answer the evaluation: 2 left, below 3
        return msg.metadata.message_type == "query.secagg_evaluate" and nid in (1, 2)

    grid = InProcessGrid(client_module.app, len(files), node_configs=configs, drop=drop)
    with caplog.at_level("WARNING", logger="lepton_fed"):
        s = run_federation(grid, _cfg(compose_cfg, schema, "federation.rounds=1"),
                           RunWriter(tmp_path / "run"))
    assert s["rounds_completed"] == 1
    assert s["final"]["federated"] is None  # abandoned, never a figure from 2 nodes
    assert "secure evaluation abandoned" in caplog.text


def test_nodes_refuse_an_evaluation_cohort_below_their_policy(compose_cfg, hospitals, tmp_path,
                                                              caplog):
    """A server that skips its own minimum and asks 2 nodes gets nothing: each node's
    eval-slot client holds the policy's min_clients_per_round (3)."""
    from lepton_fed.server.registry import NodeRegistry
    from lepton_fed.server.secure import SecureAggregator
    from lepton_fed.utils.records import to_array_record

    files, schema, configs = hospitals
    cfg = _cfg(compose_cfg, schema, "federation.rounds=1")
    grid = InProcessGrid(client_module.app, len(files), node_configs=configs)
    run_federation(grid, cfg, RunWriter(tmp_path / "run"))  # nodes are set up
    from safetensors.numpy import load_file as load_np

    arrays = to_array_record(load_np(str(tmp_path / "run" / "model.safetensors")))
    # a server that skips its own minimum and forces a graph for 2 nodes
    rogue = SecureAggregator(_cfg(compose_cfg, schema, "secagg.neighbours=1",
                                  "secagg.threshold=1"), run_id=12345)
    grid.seen.clear()
    with caplog.at_level("ERROR", logger="lepton_fed.node"):
        fed, res = rogue.secure_evaluate(grid, NodeRegistry(), arrays, [1, 2],
                                         ConfigRecord({}), binary=True, min_cohort=2)
    assert fed is None and res.abandoned
    replies = [m for m in grid.seen if m.metadata.message_type == "query.secagg_evaluate"]
    assert len(replies) == 2 and all(m.has_error() for m in replies)
    assert all(m.error.reason.startswith("lepton-fed:SECAGG_ABORT") for m in replies)
    refusals = [r for r in caplog.records if r.name == "lepton_fed.node"
                and "cohort of 2 nodes is outside [3," in r.getMessage().splitlines()[0]]
    assert len(refusals) == 2  # why, in each node's own log
