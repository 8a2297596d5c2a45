"""Fuzzing what a client can send the server: train replies (plain and encoded) and the
setup statistics. 0 crashes; every rejection is a named code with a detail."""

import uuid
from collections import OrderedDict

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays as np_arrays

from lepton_fed.inprocess import InProcessGrid
from lepton_fed.server import validate_updates as vu
from lepton_fed.server.registry import NodeRegistry
from lepton_fed.server.setup import setup_nodes

InProcessGrid(ClientApp(), 1)  # Flower's Message needs a task identity

G = OrderedDict(w=np.zeros((4, 3), np.float32), b=np.zeros(3, np.float32))
CODES = {v for k, v in vars(vu).items() if k.startswith(("INVALID_", "STALE_"))}
FUZZ = settings(max_examples=150, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

dtypes = st.sampled_from([np.float32, np.float64, np.float16, np.int64, np.int8, np.uint8])
shapes = st.sampled_from([(4, 3), (3,), (3, 4), (12,), (0,), (4, 3, 1), ()])
any_array = st.tuples(dtypes, shapes).flatmap(lambda ds: np_arrays(ds[0], ds[1]))
keys = st.sampled_from(["w", "b", "x", "meta.block", "meta.fraction", "q", "scale", "idx",
                        "values", "scales"])
scalar = st.one_of(st.integers(-2**63, 2**63 - 1), st.floats(allow_nan=True, allow_infinity=True))
metric_values = st.one_of(scalar, st.lists(st.floats(allow_nan=True), max_size=3),
                          st.lists(st.integers(-10, 10), max_size=3))
metric_keys = st.sampled_from(["num-examples", "unit-weight", "train-loss", "epsilon",
                               "server-round", "update-norm", "declined", "other"])


def _raw_array(draw_bytes, dtype, shape):
    """An Array whose declared dtype/shape need not match its buffer."""
    return Array(dtype=dtype, shape=shape, stype="numpy.ndarray", data=draw_bytes)


raw_arrays = st.builds(_raw_array, st.binary(max_size=64),
                       st.sampled_from(["float32", "float64", "int8", "<f4", "weird", ""]),
                       st.lists(st.integers(-2, 5), max_size=3).map(tuple))


SIZE = int(sum(v.size for v in G.values()))


@st.composite
def encoded(draw):
    """A real int8/top-k payload of a random update, then maybe mutated."""
    from lepton_fed.compression.wire import make_codec

    vec = draw(np_arrays(np.float32, SIZE, elements=st.floats(-5, 5, width=32)))
    if draw(st.booleans()):
        codec = make_codec("int8", block=draw(st.sampled_from([4, 8, 256])))
        payload = dict(codec.encode(vec, np.random.default_rng(0)))
        payload["meta.block"] = np.array([codec.block_size], np.int64)
    else:
        codec = make_codec("topk", fraction=draw(st.sampled_from([0.1, 0.5, 1.0])))
        payload = dict(codec.encode(vec, None)[0])
        payload["meta.fraction"] = np.array([codec.fraction], np.float64)
    for _ in range(draw(st.integers(0, 2))):  # mutations
        k = draw(st.sampled_from(sorted(payload)))
        how = draw(st.sampled_from(["drop", "dtype", "truncate", "nan", "garbage"]))
        v = payload[k]
        if how == "drop":
            del payload[k]
        elif how == "dtype":
            payload[k] = v.astype(draw(dtypes))
        elif how == "truncate":
            payload[k] = v[: max(0, v.size - 1)]
        elif how == "nan" and v.dtype.kind == "f" and v.size:
            payload[k] = np.where(np.arange(v.size) == 0, np.nan, v).astype(v.dtype)
        else:
            payload[k] = draw(any_array)
    return OrderedDict((k, Array(np.ascontiguousarray(v))) for k, v in payload.items())


@st.composite
def contents(draw):
    out = RecordDict()
    kind = draw(st.sampled_from(["model", "model", "encoded", "random", "none"]))
    if kind == "model":  # the model's keys, any values, sometimes a wrong shape/dtype
        rec = OrderedDict((k, Array(draw(np_arrays(np.float32, v.shape)))) for k, v in G.items())
        if draw(st.booleans()):
            rec[draw(st.sampled_from(list(G)))] = draw(st.one_of(any_array.map(Array),
                                                                 raw_arrays))
        out["arrays"] = ArrayRecord(rec)
    elif kind == "encoded":
        out["arrays"] = ArrayRecord(draw(encoded()))
    elif kind == "random":
        out["arrays"] = ArrayRecord(OrderedDict(
            (k, draw(st.one_of(any_array.map(Array), raw_arrays)))
            for k in draw(st.lists(keys, max_size=5, unique=True))))
    metrics = draw(st.dictionaries(metric_keys, metric_values, max_size=3))
    mostly = st.sampled_from([True, True, True, False])  # hypothesis favours the first
    if draw(mostly):  # a plausible weight
        metrics["num-examples"] = draw(st.one_of(st.integers(1, 10**6), scalar))
    if draw(mostly):
        out["metrics"] = MetricRecord(metrics)
    elif draw(st.booleans()):
        out["metrics"] = ConfigRecord({"num-examples": "ten"})
    return out


def _ok_or_coded(result):
    if result is not None:
        code, detail = result
        assert code in CODES and isinstance(detail, str) and detail


@FUZZ
@given(contents(), st.sampled_from(["none", "int8", "topk"]),
       st.one_of(st.none(), st.floats(0.01, 10)))
def test_any_reply_is_used_or_rejected_with_a_code(content, codec, clip):
    _ok_or_coded(vu.check_update(content, G, codec=codec, clip=clip))


@FUZZ
@given(contents())
def test_an_accepted_plain_update_is_finite_and_model_shaped(content):
    if vu.check_update(content, G, codec="none", clip=None) is None:
        rec = content["arrays"]
        for k, ref in G.items():
            v = rec[k].numpy()
            assert v.shape == ref.shape and v.dtype == ref.dtype and np.all(np.isfinite(v))
        w = content["metrics"]["num-examples"]
        assert np.isfinite(w) and w >= 0


@FUZZ
@given(st.lists(contents(), max_size=4), st.lists(st.booleans(), max_size=4),
       st.integers(1, 3))
def test_a_rounds_replies_split_into_usable_and_rejected(batch, fresh, rnd):
    reqs = []
    for i in range(len(batch)):
        m = Message(RecordDict(), dst_node_id=i + 1, message_type="train")
        m.metadata.__dict__["_message_id"] = uuid.uuid4().hex
        reqs.append(m)
    sent = {m.metadata.message_id: i + 1 for i, m in enumerate(reqs) if
            (fresh[i] if i < len(fresh) else True)}
    replies = [Message(c, reply_to=reqs[i]) for i, c in enumerate(batch)]
    ok, bad = vu.validate_replies(replies, G, rnd=rnd, sent=sent,
                                  name=lambda m: f"n{sent.get(m.metadata.reply_to_message_id)}")
    assert len(ok) + len(bad) == len(replies)
    for j in bad:
        assert j.code in CODES and j.detail
    assert all(m.metadata.reply_to_message_id in sent for m in ok)


# ---------------------------------------------------------------- setup statistics
stat_values = st.one_of(st.none(), scalar, st.text(max_size=5),
                        st.lists(st.floats(allow_nan=True, allow_infinity=True), max_size=4),
                        st.lists(st.integers(-5, 5), max_size=4))


@st.composite
def setup_replies(draw):
    content = RecordDict()
    if draw(st.booleans()):
        content["node"] = ConfigRecord({"name": draw(st.text(max_size=80))})
    if draw(st.booleans()):  # well-formed statistics with any values
        floats3 = st.lists(st.floats(allow_nan=True, allow_infinity=True), min_size=3,
                           max_size=3)
        content["metrics"] = MetricRecord({
            "count": draw(st.integers(-2, 2**62)), "sum": draw(floats3),
            "sumsq": draw(floats3)})
    elif draw(st.booleans()):
        metrics = {}
        for k in draw(st.lists(st.sampled_from(["count", "sum", "sumsq", "x"]), unique=True)):
            v = draw(stat_values)
            if v is not None and not isinstance(v, str):
                metrics[k] = v
        content["metrics"] = MetricRecord(metrics)
    return content


def _setup_app(content):
    app = ClientApp()

    @app.query("setup")
    def setup(msg, ctx):
        return Message(content, reply_to=msg)

    return app


def _setup(content):
    from lepton_fed.data.preprocess import Scaler

    reg = NodeRegistry()
    res = setup_nodes(InProcessGrid(_setup_app(content), 1), reg, [1], "x: 1", 5.0,
                      num_features=3)
    if not res.accepted:
        assert reg.refused[1] == "INVALID_REPLY"
        return
    assert 1 in reg.ready and len(reg.name(1)) <= 64
    if res.stats:
        sc = Scaler.from_stats(res.stats)
        assert np.all(np.isfinite(sc.mean)) and np.all(np.isfinite(sc.scale))
        assert np.all(sc.scale > 0)


@FUZZ
@given(setup_replies())
def test_any_setup_reply_is_accepted_or_refused_with_a_code(content):
    _setup(content)


def _stats(count, sumsq):
    return RecordDict({"metrics": MetricRecord({"count": count, "sum": [0.0, 0.0, 0.0],
                                                "sumsq": [0.0, 0.0, sumsq]})})


def test_statistics_of_zero_rows_are_refused():
    _setup(_stats(0, 0.0))


def test_statistics_that_overflow_the_scaler_are_refused():
    _setup(_stats(1, 1e78))
