"""Central DP with update codecs: the server re-clips every DECODED update to the clip, so
the sensitivity the accountant assumes holds whatever the codec sends (top-k's error
feedback sends residual mass from earlier rounds: decoded norms above the clip)."""

from __future__ import annotations

import json
from collections import OrderedDict

import numpy as np
import pytest
from flwr.app import Message, MetricRecord, RecordDict

from lepton_fed.compression.update import TopKCodec
from lepton_fed.compression.wire import make_codec
from lepton_fed.inprocess import InProcessGrid
from lepton_fed.server import aggregate
from lepton_fed.server.outputs import RunWriter
from lepton_fed.server.rounds import run_federation
from lepton_fed.utils.records import to_array_record

G = OrderedDict([("w", np.zeros(400, np.float32))])


@pytest.fixture(autouse=True)
def _flower_task_identity():
    from lepton_fed.inprocess import _set_identity

    _set_identity(1)  # Flower Messages need a run identity


def _topk_reply(vec: np.ndarray, residual: np.ndarray) -> tuple[Message, np.ndarray]:
    payload, residual = TopKCodec(0.1).encode(vec.astype(np.float32), residual)
    rec = to_array_record({**payload, "meta.fraction": np.array([0.1])})
    return Message(RecordDict({"arrays": rec, "metrics": MetricRecord({"num-examples": 1})}),
                   dst_node_id=1, message_type="train"), residual


def test_every_decoded_update_is_reclipped_before_summing():
    rng = np.random.default_rng(0)
    clip = 1.0
    replies, residual = [], np.zeros(400, np.float32)
    v = rng.normal(size=400)
    v *= clip / np.linalg.norm(v)  # the node clipped its own update (same direction each round)
    for _ in range(12):  # the error-feedback residual grows: later decoded norms are > clip
        m, residual = _topk_reply(v, residual)
        replies.append(m)
    norms = [float(np.linalg.norm(aggregate.reply_update(r.content, G, "topk"))) for r in replies]
    assert max(norms) > 1.2 * clip  # the attack surface: decoded norms exceed the clip
    for r in replies:
        one = aggregate.sum_updates([r], G, "topk", clip=clip)
        assert np.linalg.norm(one) <= clip * (1 + 1e-9)
    total = aggregate.sum_updates(replies, G, "topk", clip=clip)
    assert np.linalg.norm(total) <= len(replies) * clip * (1 + 1e-9)
    # without the clip (no central DP) the decoded updates are summed as they are
    raw = aggregate.sum_updates(replies, G, "topk")
    assert np.linalg.norm(raw) > np.linalg.norm(total)


def test_decoded_payload_that_is_not_finite_is_refused():
    codec = make_codec("int8")
    payload = codec.encode(np.ones(10, np.float32), np.random.default_rng(0))
    payload["scale"] = np.array([np.inf], np.float32)
    rec = to_array_record({**payload, "meta.block": np.array([256])})
    msg = Message(RecordDict({"arrays": rec}), dst_node_id=1, message_type="train")
    with pytest.raises(ValueError, match="finite"):
        aggregate.reply_update(msg.content, OrderedDict([("w", np.zeros(10, np.float32))]),
                               "int8")


def test_central_dp_with_topk_runs_and_reports_reclipping(compose_cfg, tmp_path):
    cfg = compose_cfg("privacy=central", "privacy.noise_multiplier=0.5", "privacy.clip=0.5",
                      "compression=topk", "federation.num_clients=3",
                      "federation.clients_per_round=3", "federation.rounds=3")
    from lepton_fed.client import app

    s = run_federation(InProcessGrid(app.app, 3), cfg, RunWriter(tmp_path))
    assert s["rounds_completed"] == 3
    assert s["privacy"]["mode"] == "central" and s["privacy"]["epsilon"] > 0
    assert s["privacy"]["server_reclips_decoded_updates"] is True
    assert json.loads((tmp_path / "summary.json").read_text())["privacy"]["clip"] == 0.5
