"""Every reply a hostile or broken client can send is rejected with its code, or used."""

import uuid
from collections import OrderedDict

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from lepton_fed.compression.wire import make_codec
from lepton_fed.inprocess import InProcessGrid
from lepton_fed.server import validate_updates as vu
from lepton_fed.utils.records import to_array_record

G = OrderedDict(w=np.zeros((3, 2), np.float32), b=np.zeros(2, np.float32))


@pytest.fixture(autouse=True)
def _flower_identity():
    InProcessGrid(ClientApp(), 1)  # Flower's Message needs a task identity


def _request(node=1):
    m = Message(RecordDict(), dst_node_id=node, message_type="train")
    m.metadata.__dict__["_message_id"] = uuid.uuid4().hex
    return m


def _content(state=None, metrics=None, arrays=None):
    rec = arrays if arrays is not None else to_array_record(
        state if state is not None else {k: v + 0.1 for k, v in G.items()})
    return RecordDict({"arrays": rec, "metrics": MetricRecord(
        metrics if metrics is not None else {"num-examples": 10})})


def _check(content, **kw):
    return vu.check_update(content, G, **kw)


def test_an_honest_update_passes():
    assert _check(_content()) is None
    assert _check(_content(), clip=10.0) is None


@pytest.mark.parametrize("bad, code", [
    (np.nan, vu.INVALID_NONFINITE), (np.inf, vu.INVALID_NONFINITE),
    (-np.inf, vu.INVALID_NONFINITE)])
def test_non_finite_values_are_rejected(bad, code):
    w = G["w"].copy()
    w[1, 1] = bad
    assert _check(_content({"w": w, "b": G["b"]}))[0] == code


@pytest.mark.parametrize("state, code, needle", [
    ({"w": np.zeros((2, 3), np.float32), "b": G["b"]}, vu.INVALID_SHAPE, "shape (2, 3)"),
    ({"w": np.zeros((3, 2), np.float64), "b": G["b"]}, vu.INVALID_DTYPE, "dtype float64"),
    ({"w": G["w"]}, vu.INVALID_SHAPE, "not the model's"),
    ({"w": G["w"], "b": G["b"], "x": G["b"]}, vu.INVALID_SHAPE, "not the model's"),
    ({"b": G["b"], "w": G["w"]}, vu.INVALID_SHAPE, "not the model's"),
])
def test_wrong_keys_shapes_and_dtypes_are_rejected(state, code, needle):
    got = _check(_content(state))
    assert got is not None and got[0] == code and needle in got[1]


def test_a_buffer_that_does_not_match_its_declared_shape_is_rejected():
    liar = Array(dtype="float32", shape=(3, 2), stype="numpy.ndarray", data=b"\x00" * 7)
    rec = ArrayRecord(OrderedDict(w=liar, b=Array(G["b"])))
    assert _check(_content(arrays=rec))[0] == vu.INVALID_ENCODING


def test_norms_beyond_the_clip_are_rejected_within_float_slack():
    big = {"w": np.full((3, 2), 1.0, np.float32), "b": G["b"]}  # norm sqrt(6)
    code, detail = _check(_content(big), clip=1.0)
    assert code == vu.INVALID_NORM and "exceeds the clip 1" in detail
    edge = {"w": np.full((3, 2), 1 / np.sqrt(6), np.float32), "b": G["b"]}
    assert _check(_content(edge), clip=1.0) is None  # float32 rounding of an honest clip
    assert _check(_content(big)) is None  # no clip applies: nothing to hold it to


@pytest.mark.parametrize("metrics", [
    {}, {"num-examples": -1}, {"num-examples": float("nan")}, {"num-examples": float("inf")}])
def test_a_missing_or_impossible_weight_is_rejected(metrics):
    assert _check(_content(metrics=metrics))[0] == vu.INVALID_WEIGHT


def test_non_finite_metrics_are_rejected_but_an_infinite_epsilon_is_kept():
    assert _check(_content(metrics={"num-examples": 3, "train-loss": float("nan")}))[0] \
        == vu.INVALID_METRICS
    assert _check(_content(metrics={"num-examples": 3, "epsilon": float("inf")})) is None


def test_a_reply_without_arrays_is_rejected():
    content = RecordDict({"metrics": MetricRecord({"num-examples": 3})})
    assert _check(content)[0] == vu.INVALID_MISSING


def test_encoded_updates_are_decoded_and_checked():
    codec = make_codec("int8", block=4)
    delta = np.linspace(-1, 1, 8).astype(np.float32)
    payload = codec.encode(delta, np.random.default_rng(0))
    good = {**payload, "meta.block": np.array([4], np.int64)}
    assert _check(_content(arrays=to_array_record(good)), codec="int8", clip=0.1) is None
    no_meta = to_array_record(payload)
    assert _check(_content(arrays=no_meta), codec="int8")[0] == vu.INVALID_ENCODING
    short = {**payload, "meta.block": np.array([2], np.int64)}
    assert _check(_content(arrays=to_array_record(short)), codec="int8")[0] == vu.INVALID_ENCODING


def test_stale_duplicate_and_echoed_round_replies_are_refused_and_the_rest_ordered():
    reqs = {n: _request(n) for n in (1, 2, 3)}
    sent = {m.metadata.message_id: n for n, m in reqs.items()}
    names = {1: "partition-2", 2: "partition-0", 3: "partition-1"}
    old = _request(2)  # a message of an earlier round
    replies = [
        Message(_content(), reply_to=reqs[1]),
        Message(_content(), reply_to=reqs[3]),
        Message(_content(), reply_to=old),
        Message(_content(), reply_to=reqs[1]),
        Message(_content(metrics={"num-examples": 2, "server-round": 4}), reply_to=reqs[2]),
    ]
    ok, bad = vu.validate_replies(replies, G, rnd=5, sent=sent,
                                  name=lambda m: names[sent[m.metadata.reply_to_message_id]])
    assert [sent[m.metadata.reply_to_message_id] for m in ok] == [3, 1]  # by name
    assert [j.code for j in bad] == [vu.STALE_ROUND, vu.INVALID_DUPLICATE, vu.STALE_ROUND]
    assert "not for round 5" in bad[2].detail


def test_rejected_replies_still_report_their_epsilon():
    req = _request(1)
    bad = [vu.Rejection(Message(_content(metrics={"num-examples": 1, "epsilon": 2.5}),
                                reply_to=req), vu.INVALID_NORM, "")]
    assert vu.rejected_epsilons(bad, lambda m: "partition-0") == {"partition-0": 2.5}


def test_a_secure_aggregate_is_checked_for_shape_and_finiteness():
    req = _request(0)
    assert vu.check_aggregate(Message(_content(), reply_to=req), G) is None
    nan = {"w": np.full((3, 2), np.nan, np.float32), "b": G["b"]}
    assert vu.check_aggregate(Message(_content(nan), reply_to=req), G) == vu.INVALID_NONFINITE
    assert vu.check_aggregate(Message(_content({"w": G["w"]}), reply_to=req), G) \
        == vu.INVALID_SHAPE


# ---------------------------------------------------------------- in the round loop
def _hostile_app(poison):
    """The real ClientApp, except that ``poison(node_id, arrays)`` rewrites some replies."""
    from lepton_fed.client import app as client_module
    from lepton_fed.utils.records import from_array_record

    app = ClientApp()

    @app.query("setup")
    def setup(msg, ctx):
        return client_module.setup(msg, ctx)

    @app.train()
    def train(msg, ctx):
        reply = client_module.train(msg, ctx)
        if "arrays" in reply.content:
            state = poison(ctx.node_id, from_array_record(reply.content["arrays"]))
            if state is not None:
                reply.content["arrays"] = to_array_record(state)
        return reply

    return app


def _nan_from_node_2(nid, state):
    if nid == 2:
        return {k: np.full_like(v, np.nan) for k, v in state.items()}
    return None


def test_a_nan_update_under_central_dp_is_rejected_and_the_run_goes_on(compose_cfg, tmp_path):
    from safetensors.numpy import load_file

    from lepton_fed.server.outputs import RunWriter
    from lepton_fed.server.rounds import run_federation

    cfg = compose_cfg("privacy=central", "privacy.noise_multiplier=0.3", "model=logreg",
                      "federation.num_clients=3", "federation.clients_per_round=3",
                      "federation.rounds=2")
    s = run_federation(InProcessGrid(_hostile_app(_nan_from_node_2), 3), cfg, RunWriter(tmp_path))
    assert s["rounds_completed"] == 2 and s["failures"] == 2
    (name, codes), = s["nodes"]["failures"].items()
    assert codes == {vu.INVALID_NONFINITE: 2}
    assert all(np.all(np.isfinite(v)) for v in load_file(tmp_path / "model.safetensors").values())


def test_an_update_beyond_the_clip_and_a_replayed_reply_are_refused(compose_cfg, tmp_path):
    from lepton_fed.server.outputs import RunWriter
    from lepton_fed.server.rounds import run_federation

    def scaled(nid, state):  # node 3 sends 50 x its (clipped) update
        return None if nid != 3 else {k: v * 50 for k, v in state.items()}

    class Replaying(InProcessGrid):
        """Also delivers node 1's round-1 reply again in every later round."""

        first = None

        def send_and_receive(self, messages, *, timeout=None):
            replies = list(super().send_and_receive(messages, timeout=timeout))
            if self.first is None:
                self.first = next((r for r in replies if r.metadata.src_node_id == 1
                                   and r.metadata.message_type == "train"), None)
            elif messages and messages[0].metadata.message_type == "train":
                replies.append(self.first)
            return replies

    cfg = compose_cfg("privacy=central", "privacy.noise_multiplier=0.3", "model=logreg",
                      "federation.num_clients=3", "federation.clients_per_round=3",
                      "federation.rounds=3")
    s = run_federation(Replaying(_hostile_app(scaled), 3), cfg, RunWriter(tmp_path))
    fails = s["nodes"]["failures"]
    assert s["rounds_completed"] == 3
    assert {c for f in fails.values() for c in f} == {vu.INVALID_NORM, vu.STALE_ROUND}
    assert sum(f.get(vu.STALE_ROUND, 0) for f in fails.values()) == 2  # rounds 2 and 3
    assert sum(f.get(vu.INVALID_NORM, 0) for f in fails.values()) == 3
