"""Secure aggregation through the real server loop and client handlers (in-process)."""

import json

import numpy as np
import pytest
from safetensors.numpy import load_file

from lepton_fed.client.app import app
from lepton_fed.inprocess import InProcessGrid
from lepton_fed.server.outputs import RunWriter
from lepton_fed.server.rounds import run_federation

BASE = ("federation.num_clients=5", "federation.clients_per_round=5")


def _run(cfg, d, drop=None):
    grid = InProcessGrid(app, cfg.federation.num_clients, drop=drop)
    return run_federation(grid, cfg, RunWriter(d)), grid


def _rows(d):
    return [json.loads(x) for x in (d / "metrics.jsonl").read_text().splitlines()]


def test_secagg_matches_plain_within_quantization(compose_cfg, tmp_path):
    plain, _ = _run(compose_cfg(*BASE, "federation.rounds=1"), tmp_path / "p")
    sec, grid = _run(compose_cfg(*BASE, "federation.rounds=1", "secagg=on"), tmp_path / "s")
    a, b = load_file(tmp_path / "p/model.safetensors"), load_file(tmp_path / "s/model.safetensors")
    bound = _rows(tmp_path / "s")[0]["secagg"]["error_bound_mean"]
    diff = max(float(np.abs(a[k] - b[k]).max()) for k in a)
    assert 0 < diff <= bound, (diff, bound)
    assert sec["secagg"]["enabled"] and sec["secagg"]["neighbours"] == 4


def test_server_sees_no_individual_update_weight_or_count(compose_cfg, tmp_path):
    _, grid = _run(compose_cfg(*BASE, "federation.rounds=2", "secagg=on"), tmp_path)
    dim = sum(v.size for v in load_file(tmp_path / "model.safetensors").values())
    train_replies = [m for m in grid.seen if m.metadata.message_type == "train"]
    assert len(train_replies) == 10
    for m in train_replies:
        assert "arrays" not in m.content
        assert set(m.content["metrics"].keys()) <= {"declined", "epsilon"}
        masked = bytes(m.content["secagg"]["reply"])
        # 4 bytes per parameter (+ the weight) plus a small per-neighbour share overhead
        assert 4 * dim < len(masked) <= 4 * (dim + 1) + 4 * 200, (len(masked), dim)


def _drop(stage, nodes, rounds=(1,)):
    def pred(nid, msg):
        conf = msg.content["config"] if "config" in msg.content else None
        rnd = conf["server-round"] if conf is not None and "server-round" in conf else None
        return msg.metadata.message_type == stage and nid in nodes and (
            rnd is None or rnd in rounds)
    return pred


def test_dropout_before_masked_input_recovers(compose_cfg, tmp_path):
    cfg = compose_cfg(*BASE, "federation.rounds=1", "secagg=on")
    s, _ = _run(cfg, tmp_path, drop=_drop("train", {3}))
    info = _rows(tmp_path)[0]["secagg"]
    assert info["contributors"] == 4 and s["rounds_completed"] == 1


def test_dropout_right_before_unmask_recovers(compose_cfg, tmp_path):
    cfg = compose_cfg(*BASE, "federation.rounds=1", "secagg=on")
    def drop(nid, msg):  # node 2 sends its masked input, then vanishes for good
        return msg.metadata.message_type == "query.secagg_unmask" and nid == 2

    s, _ = _run(cfg, tmp_path, drop=drop)
    info = _rows(tmp_path)[0]["secagg"]
    assert info["contributors"] == 5 and s["rounds_completed"] == 1


def test_below_threshold_round_is_abandoned_model_unchanged(compose_cfg, tmp_path):
    cfg = compose_cfg(*BASE, "federation.rounds=2", "secagg=on")
    s, _ = _run(cfg, tmp_path, drop=_drop("train", {1, 2, 3}, rounds=(2,)))
    rows = _rows(tmp_path)
    assert "abandoned" in rows[1]["secagg"] and rows[1]["clients"] == 0
    assert rows[1]["accuracy"] == rows[0]["accuracy"] and rows[1]["loss"] == rows[0]["loss"]
    assert s["rounds_completed"] == 1 and s["secagg"]["abandoned_rounds"] == [2]


@pytest.mark.parametrize("privacy", [("privacy=central", "privacy.noise_multiplier=0.5"),
                                     ("privacy=dpsgd", "privacy.epsilon=3")])
def test_secagg_with_dp(compose_cfg, tmp_path, privacy):
    s, _ = _run(compose_cfg(*BASE, "federation.rounds=2", "secagg=on", *privacy), tmp_path)
    assert s["rounds_completed"] == 2 and s["privacy"]["epsilon"] > 0
    assert s["final"]["accuracy"] > 0.6


def test_robust_mode_survives_dropout_plus_neighbour_vanishing(compose_cfg, tmp_path):
    def drop(nid, msg):
        t = msg.metadata.message_type
        return (t == "train" and nid == 3) or (t == "query.secagg_unmask" and nid == 4)

    seven = ("federation.num_clients=7", "federation.clients_per_round=7")  # k=6, t=4
    fast = compose_cfg(*seven, "federation.rounds=1", "secagg=on")
    _run(fast, tmp_path / "fast", drop=drop)
    assert "abandoned" in _rows(tmp_path / "fast")[0]["secagg"]
    robust = compose_cfg(*seven, "federation.rounds=1", "secagg=on", "secagg.mode=robust")
    s, _ = _run(robust, tmp_path / "robust", drop=drop)
    info = _rows(tmp_path / "robust")[0]["secagg"]
    assert "abandoned" not in info and info["contributors"] == 6
    assert s["rounds_completed"] == 1
