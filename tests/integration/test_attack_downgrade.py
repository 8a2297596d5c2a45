"""A curious coordinator tries to talk strict nodes into weaker settings, through the real
ClientApp: every downgrade is declined with a reason code, and nothing derived from the
node's data leaves it in the clear."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from flwr.app import ConfigRecord, Message, RecordDict
from omegaconf import OmegaConf

from lepton_fed.client import app as client_module
from lepton_fed.inprocess import InProcessGrid
from lepton_fed.server.outputs import RunWriter
from lepton_fed.server.rounds import run_federation
from lepton_fed.sim_bundle import write_bundle
from lepton_fed.utils.records import to_array_record

STRICT = ["node_policy=strict", "privacy=dpsgd", "privacy.epsilon=3", "secagg=on",
          "federation.num_clients=4", "federation.clients_per_round=4", "federation.rounds=1",
          "model=logreg"]


@pytest.fixture
def strict_grid(compose_cfg, tmp_path):
    """Four simulated nodes holding the strict real-node policy, set up by an honest run."""
    cfg = compose_cfg(*STRICT)
    write_bundle(tmp_path / "bundle", cfg)
    grid = InProcessGrid(client_module.app, 4, bundle=tmp_path / "bundle")
    s = run_federation(grid, cfg, RunWriter(tmp_path / "run"))
    assert s["rounds_completed"] == 1  # the honest request is accepted
    return grid, cfg


def _setup(grid, cfg, **changes):
    bad = OmegaConf.to_container(cfg, resolve=True)
    for key, value in changes.items():
        sect, _, leaf = key.partition("__")
        bad[sect][leaf] = value
    bad.pop("node_policy", None)
    msg = Message(RecordDict({"config": ConfigRecord({"config-yaml": OmegaConf.to_yaml(bad)})}),
                  dst_node_id=1, message_type="query.setup")
    (reply,) = grid.send_and_receive([msg])
    return reply


@pytest.mark.parametrize("changes, code", [
    ({"privacy__mode": "none"}, "PRIVACY_MODE"),
    ({"privacy__epsilon": 1e6}, "EPSILON_CAP"),
    ({"privacy__delta": 0.1}, "DELTA"),
    ({"secagg__enabled": False}, "SECAGG_REQUIRED"),
    # k=2, t=2 in a cohort of 100: the node computes the level itself (a stated
    # secagg.security_bits would not fool it) and finds ~2 bits, not 40
    ({"secagg__neighbours": 2, "secagg__threshold": 2, "federation__clients_per_round": 100},
     "SECURITY_LEVEL"),
    ({"federation__clients_per_round": 2}, "COHORT_SIZE"),
    ({"privacy__reproducible": True}, "REPRODUCIBLE_NOISE"),
])
def test_downgraded_run_config_is_declined_with_a_code(strict_grid, changes, code):
    grid, cfg = strict_grid
    reply = _setup(grid, cfg, **changes)
    assert not reply.has_error() and "decline" in reply.content
    dec = reply.content["decline"]
    codes = {str(dec["code"])} | {part.split(":")[0].strip() for part in str(dec["detail"]).split(";")}
    assert code in codes, dec  # every broken limit is named (the first one is the code)
    assert "metrics" not in reply.content or set(reply.content["metrics"]) <= {
        "declined", "num-examples"}  # no feature statistics, no count


def test_a_train_message_without_secure_aggregation_gets_no_plain_update(strict_grid):
    grid, cfg = strict_grid
    w = {"net.weight": np.zeros((2, 30), np.float32), "net.bias": np.zeros(2, np.float32)}
    msg = Message(RecordDict({"arrays": to_array_record(w),
                              "config": ConfigRecord({"server-round": 2})}),
                  dst_node_id=2, message_type="train")
    (reply,) = grid.send_and_receive([msg])
    assert str(reply.content["decline"]["code"]) == "SECAGG_REQUIRED"
    assert "arrays" not in reply.content  # no weights, no count, no loss
    assert set(reply.content["metrics"]) <= {"declined", "num-examples"}
    assert int(reply.content["metrics"]["num-examples"]) == 0


def test_honest_strict_round_sends_nothing_from_the_data_in_the_clear(strict_grid):
    grid, _ = strict_grid
    kinds = Counter(m.metadata.message_type for m in grid.seen if not m.has_error())
    # every node answered its setup and its train message: the checks below see them all
    assert kinds["query.setup"] == 4 and kinds["train"] == 4, kinds
    assert not [m for m in grid.seen if m.has_error()]
    for m in grid.seen:
        if m.has_error():
            continue
        mt = m.metadata.message_type
        if mt == "query.setup":
            assert "metrics" not in m.content  # strict: feature statistics stay on the node
        if mt == "train":
            assert "arrays" not in m.content and "secagg" in m.content
            assert set(m.content["metrics"]) <= {"declined", "epsilon", "unit-weight"}


@pytest.mark.parametrize("mean, scale", [
    ([0.0] * 30, [0.0] * 30),            # a zero scale: division by zero on the node
    ([float("nan")] * 30, [1.0] * 30),   # NaN
    ([0.0] * 30, [1.0] * 29),            # lengths differ
    ([], []),                            # empty
])
def test_a_malformed_scaler_from_the_server_is_refused_and_not_stored(strict_grid,
                                                                       mean, scale):
    from lepton_fed.client.node import NodeState

    grid, _ = strict_grid
    before = NodeState(grid.contexts[2]).scaler
    w = {"net.weight": np.zeros((2, 30), np.float32), "net.bias": np.zeros(2, np.float32)}
    msg = Message(RecordDict({"arrays": to_array_record(w),
                              "lepton": ConfigRecord({"scaler-mean": mean,
                                                      "scaler-scale": scale})}),
                  dst_node_id=2, message_type="evaluate")
    (reply,) = grid.send_and_receive([msg])
    assert reply.has_error() and "INVALID_REQUEST" in reply.error.reason
    after = NodeState(grid.contexts[2]).scaler
    assert (before is None and after is None) or np.array_equal(before.mean, after.mean)


@pytest.mark.parametrize("mu", [float("nan"), -1.0, float("inf"), "0.1"])
def test_a_bad_proximal_mu_from_the_server_is_refused_before_training(compose_cfg, tmp_path,
                                                                       mu):
    """FedProx's mu comes in the train message: NaN, negative, infinite or not a number
    is refused (INVALID_REQUEST) instead of training on a broken objective."""
    cfg = compose_cfg("model=logreg", "federation.num_clients=2",
                      "federation.clients_per_round=2", "federation.rounds=1")
    grid = InProcessGrid(client_module.app, 2)
    run_federation(grid, cfg, RunWriter(tmp_path))  # sets both nodes up (open policy)
    from safetensors.numpy import load_file

    w = load_file(tmp_path / "model.safetensors")  # the run's own global model
    msg = Message(RecordDict({"arrays": to_array_record(w),
                              "config": ConfigRecord({"server-round": 2, "proximal-mu": mu})}),
                  dst_node_id=1, message_type="train")
    (reply,) = grid.send_and_receive([msg])
    assert reply.has_error() and "INVALID_REQUEST" in reply.error.reason


@pytest.mark.parametrize("message_type", ["query.secagg_unmask", "query.secagg_advertise",
                                          "train"])
@pytest.mark.parametrize("request_value", [10**6, "text", [1, 2]])
def test_a_secagg_request_that_is_not_bytes_is_refused(strict_grid, message_type,
                                                       request_value):
    """The request field is untrusted: an integer would become a zero-filled buffer of
    that size, anything else garbage; every handler refuses it (SECAGG_ABORT)."""
    grid, _ = strict_grid
    content = RecordDict({"secagg": ConfigRecord({"request": request_value})})
    if message_type == "train":
        w = {"net.weight": np.zeros((2, 30), np.float32), "net.bias": np.zeros(2, np.float32)}
        content["arrays"] = to_array_record(w)
        content["config"] = ConfigRecord({"server-round": 2})
    (reply,) = grid.send_and_receive([Message(content, dst_node_id=2,
                                              message_type=message_type)])
    assert reply.has_error() and "SECAGG_ABORT" in reply.error.reason, reply
