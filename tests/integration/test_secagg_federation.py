"""Secure aggregation through the real server loop and client handlers (in-process)."""

import json
import warnings

import numpy as np
import pytest
from safetensors.numpy import load_file

from lepton_fed.client.app import app
from lepton_fed.client.node import NodeState
from lepton_fed.inprocess import InProcessGrid
from lepton_fed.secagg.client.state import decode_state
from lepton_fed.secagg.provisioning import make_sim_bundle
from lepton_fed.server.outputs import RunWriter
from lepton_fed.server.rounds import run_federation

BASE = ("federation.num_clients=5", "federation.clients_per_round=5")


def _run(cfg, d, drop=None, bundle=None):
    n = cfg.federation.num_clients
    configs = None
    if bundle is not None:
        configs = [{"partition-id": i, "num-partitions": n, "sim-bundle": str(bundle)}
                   for i in range(n)]
    grid = InProcessGrid(app, n, drop=drop, node_configs=configs)
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
    info = _rows(tmp_path / "s")[0]["secagg"]
    # 5 nodes, 1 colluder assumed: k=4, t=3 cannot expose an input (bound 0: null)
    assert (info["neighbours"], info["threshold"], info["security_bits"]) == (4, 3, None)


def test_roster_from_the_simulation_bundle_no_trust_on_first_use(compose_cfg, tmp_path):
    make_sim_bundle(tmp_path / "bundle", 5)
    cfg = compose_cfg(*BASE, "federation.rounds=1", "secagg=on")
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="secagg trust on first use")
        s, grid = _run(cfg, tmp_path / "run", bundle=tmp_path / "bundle")
    assert s["rounds_completed"] == 1 and _rows(tmp_path / "run")[0]["secagg"]["contributors"] == 5
    from lepton_fed.secagg.provisioning import (
        load_federation_public_key,
        sim_bundle_paths,
    )
    from lepton_fed.secagg.roster import load_roster

    paths = sim_bundle_paths(tmp_path / "bundle")
    roster = load_roster(paths.roster, load_federation_public_key(paths.federation_public_key))
    for ctx in grid.contexts.values():  # every node trusted exactly the bundle's roster
        st = decode_state(bytes(NodeState(ctx).get("secagg-state")))
        # the state keeps the roster's digest (re-attached from the bundle on restore)
        assert st.roster_kind == 2 and st.roster_digest is not None and not st.pinned
        assert len(roster.identity_keys) == 5


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


def test_each_round_lists_its_exchanges(compose_cfg, tmp_path):
    """metrics.jsonl says where a round's time and bytes went, exchange by exchange (what
    a benchmark or an operator reads instead of patching the loop)."""
    plain, _ = _run(compose_cfg(*BASE, "federation.rounds=2"), tmp_path / "p")
    sec, _ = _run(compose_cfg(*BASE, "federation.rounds=2", "secagg=on"), tmp_path / "s")
    for d, summary, kinds in ((tmp_path / "p", plain, ["train"]),
                              (tmp_path / "s", sec, ["train", "query.secagg_unmask"])):
        for row in _rows(d):
            ex = row["exchanges"]
            assert [e["type"] for e in ex] == kinds, ex  # keys came with the setup
            assert all(e["sent"] == e["answered"] == 5 and e["seconds"] >= 0 for e in ex)
            assert sum(e["bytes_up"] for e in ex) == row["bytes_up"]
        setup = summary["setup_exchange"]
        assert (setup["type"], setup["sent"], setup["answered"]) == ("query.setup", 5, 5)
