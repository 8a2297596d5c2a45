"""Fuzzing every secure-aggregation message a node or the server parses: arbitrary bytes,
truncations, extensions, splices and bit flips of valid messages of a real round (real
keys, real signatures, real AEAD). 0 crashes: every refusal is a ProtocolAbort.

Beyond not crashing:
- a message that parses re-encodes to exactly the bytes received (one encoding each);
- the server's zero-copy readers accept exactly what ``from_bytes`` accepts, with the
  same refusal;
- a node answers a masked-input or unmask request only when it is the server's own,
  byte for byte;
- a tampered advertisement never gets its node into a round with other keys than its
  own (signatures are checked when a round uses them);
- a tampered unmask reply never changes the unmasked sum: it is refused, the round
  aborts, or the other shares give the honest sum.
"""

from __future__ import annotations

import copy
import os
from dataclasses import replace
from functools import cache

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from lepton_fed.errors import ProtocolAbort
from lepton_fed.secagg import SecAggClient, SecAggServer, make_clients
from lepton_fed.secagg.params import SecAggParams
from lepton_fed.secagg.wire import (
    AdvertiseReply,
    AdvertiseRequest,
    MaskedInputReply,
    MaskedInputRequest,
    UnmaskReply,
    UnmaskRequest,
    peek_header,
)

FUZZ = settings(max_examples=1500, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
SLOW_FUZZ = settings(max_examples=400, deadline=None,
                     suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

IDS = (101, 102, 103, 104, 105)
DIM = 6
RUN = 42


@cache
def transcript() -> dict:
    """One real round among five provisioned nodes (complete graph, t = 3), with the
    client states and server states before every step."""
    clients, roster = make_clients(IDS)
    server = SecAggServer(params=SecAggParams(neighbours=4, threshold=3, rounds=3),
                          run_id=RUN, roster=roster)
    t: dict = {"keys": {n: c.identity_key for n, c in clients.items()}, "roster": roster}
    t["client_new"] = {n: c.to_bytes() for n, c in clients.items()}
    t["adv_req"] = server.advertise(list(IDS))
    t["server_adv"] = copy.deepcopy(server)
    t["adv_rep"] = {n: clients[n].advertise(t["adv_req"][n]) for n in IDS}
    t["client_adv"] = {n: c.to_bytes() for n, c in clients.items()}
    server.collect_advertisements(t["adv_rep"])
    t["mi_req"] = server.start_round(round=1, cohort=list(IDS), dim=DIM)
    t["server_mi"] = copy.deepcopy(server)
    rng = np.random.default_rng(0)
    t["mi_rep"] = {n: clients[n].masked_input(
        t["mi_req"][n], delta=rng.uniform(-1, 1, DIM), weight=0.5) for n in IDS}
    t["client_mi"] = {n: c.to_bytes() for n, c in clients.items()}
    t["um_req"] = server.collect_masked_inputs(t["mi_rep"])
    t["server_um"] = copy.deepcopy(server)
    t["um_rep"] = {n: clients[n].unmask(t["um_req"][n]) for n in IDS}
    t["honest"] = copy.deepcopy(server).collect_unmask(t["um_rep"])
    return t


def _client(state: str, n: int) -> SecAggClient:
    t = transcript()
    return SecAggClient.from_bytes(t[state][n], identity_key=t["keys"][n], rng_bytes=os.urandom)


@st.composite
def mutated(draw, valid: bytes) -> bytes:
    """``valid`` with bit flips, a cut, an extension or a spliced run; or any bytes."""
    how = draw(st.sampled_from(["flip", "flip", "header", "cut", "extend", "splice", "any"]))
    data = bytearray(valid)
    if how in ("flip", "header"):
        top = min(len(data), 24) if how == "header" else len(data)
        for _ in range(draw(st.integers(1, 4))):
            i = draw(st.integers(0, top - 1))
            data[i] ^= 1 << draw(st.integers(0, 7))
    elif how == "cut":
        del data[draw(st.integers(0, len(data) - 1)):]
    elif how == "extend":
        data += draw(st.binary(min_size=1, max_size=64))
    elif how == "splice":
        i = draw(st.integers(0, len(data)))
        j = draw(st.integers(i, min(len(data), i + 64)))
        data[i:j] = draw(st.binary(max_size=64))
    else:
        return draw(st.binary(max_size=400))
    return bytes(data)


def _valid(kind: str) -> bytes:
    return transcript()[kind][IDS[1]]


#: (message class, where a valid one is in the transcript, the context its reader checks)
MESSAGES = [
    (AdvertiseRequest, "adv_req", {}), (AdvertiseReply, "adv_rep", {}),
    (MaskedInputRequest, "mi_req", {}), (MaskedInputReply, "mi_rep", {}),
    (UnmaskRequest, "um_req", {}), (UnmaskReply, "um_rep", {}),
]


def _messages_with_data():
    return st.sampled_from(MESSAGES).flatmap(
        lambda m: st.tuples(st.just(m[0]), mutated(_valid(m[1]))))


# ------------------------------------------------------------------ parsers
@FUZZ
@given(_messages_with_data())
def test_from_bytes_refuses_with_protocol_abort_and_accepts_only_canonical_bytes(case):
    cls, data = case
    try:
        msg = cls.from_bytes(data)
    except ProtocolAbort as exc:
        assert str(exc)
        event("refused")
        return
    event("parsed")
    assert msg.to_bytes() == data


@FUZZ
@given(st.one_of(st.binary(max_size=64),
                 st.sampled_from([k for _, k, _ in MESSAGES]).flatmap(
                     lambda k: mutated(_valid(k)))))
def test_peek_header_refuses_with_protocol_abort(data):
    try:
        h = peek_header(data)
    except ProtocolAbort:
        return
    assert h.run_id >= 0 and h.round >= 0


@FUZZ
@given(st.sampled_from(["records", "masked"]).flatmap(
    lambda k: st.tuples(st.just(k), mutated(_valid("mi_rep" if k == "masked" else "um_rep")))))
def test_the_fast_readers_accept_exactly_what_from_bytes_accepts(case):
    which, data = case
    cls = MaskedInputReply if which == "masked" else UnmaskReply
    ctx = {"run_id": RUN, "round": 1, "sender": IDS[1]}
    fast = {"records": UnmaskReply.records_from_bytes,
            "masked": MaskedInputReply.records_from_bytes}[which]
    try:
        cls.from_bytes(data, **ctx)
        slow_error = None
    except ProtocolAbort as exc:
        slow_error = str(exc)
    try:
        fast(data, **ctx)
        fast_error = None
    except ProtocolAbort as exc:
        fast_error = str(exc)
    assert fast_error == slow_error


# ------------------------------------------------------------------ the node
#: (stage of the request, the client state that expects it)
NODE_STAGES = [("adv_req", "client_new"), ("mi_req", "client_adv"), ("um_req", "client_mi")]


@SLOW_FUZZ
@given(st.sampled_from(NODE_STAGES).flatmap(
    lambda s: st.tuples(st.just(s), mutated(_valid(s[0])))))
def test_a_node_refuses_any_tampered_request_with_protocol_abort(case):
    (kind, state), data = case
    client = _client(state, IDS[1])
    try:
        reply = client.handle(data, delta=np.zeros(DIM), weight=0.5)
    except ProtocolAbort as exc:
        assert str(exc)
        event(f"{kind}: refused")
        return
    event(f"{kind}: answered{' (unchanged)' if data == _valid(kind) else ''}")
    # an advertisement request is not authenticated (a node only signs fresh keys for
    # it); the other requests are answered only when they are the server's own, or
    # differ only in what the server chooses and the node checks itself
    if kind != "adv_req":
        assert data == _valid(kind) or _only_free_parameters_differ(data, _valid(kind))
    assert isinstance(reply, bytes) and reply


def _only_free_parameters_differ(data: bytes, valid: bytes) -> bool:
    """Differs from the server's own masked-input request only in the parameters the
    server chooses and the node checks against its own policy and its input: the graph
    threshold (the node recomputes the security level), the field width and the clip
    (an update outside the encoding's range is refused, never wrapped)."""
    try:
        got, want = MaskedInputRequest.from_bytes(data), MaskedInputRequest.from_bytes(valid)
    except (ProtocolAbort, ValueError):
        return False
    return replace(got, clip=want.clip, bits=want.bits, threshold=want.threshold) == want


def test_the_node_stages_answer_their_valid_requests():  # the fuzz above starts from these
    for kind, state in NODE_STAGES:
        assert _client(state, IDS[1]).handle(_valid(kind), delta=np.zeros(DIM), weight=0.5)


# ------------------------------------------------------------------ the server
def _tamper(kind: str):
    return st.sampled_from(IDS).flatmap(
        lambda n: st.tuples(st.just(n), mutated(transcript()[kind][n])))


@SLOW_FUZZ
@given(_tamper("adv_rep"))
def test_a_tampered_advertisement_never_puts_other_keys_into_a_round(case):
    node, data = case
    t = transcript()
    server = copy.deepcopy(t["server_adv"])
    accepted = server.collect_advertisements(t["adv_rep"] | {node: data})
    assert set(accepted) >= set(IDS) - {node}
    try:
        reqs = server.start_round(round=1, cohort=list(IDS), dim=DIM)
    except ProtocolAbort:
        return
    event(f"tampered node in the round: {node in reqs}")
    if node in reqs:  # only with its own identity and round-1 key
        valid = AdvertiseReply.from_bytes(t["adv_rep"][node])
        got = AdvertiseReply.from_bytes(data)
        assert got.identity_key == valid.identity_key
        assert got.round_keys[0] == valid.round_keys[0]


@SLOW_FUZZ
@given(_tamper("mi_rep"))
def test_the_server_refuses_a_tampered_masked_input_with_protocol_abort(case):
    node, data = case
    t = transcript()
    server = copy.deepcopy(t["server_mi"])
    try:
        reqs = server.collect_masked_inputs(t["mi_rep"] | {node: data})
    except ProtocolAbort:
        event("round aborted")
        return
    event(f"{len(reqs)} unmask requests")
    assert set(reqs) <= set(IDS)


@SLOW_FUZZ
@given(_tamper("um_rep"))
def test_a_tampered_unmask_reply_never_changes_the_sum(case):
    node, data = case
    t = transcript()
    server = copy.deepcopy(t["server_um"])
    try:
        result = server.collect_unmask(t["um_rep"] | {node: data})
    except ProtocolAbort:
        event("round aborted")
        return
    event("honest sum")
    assert np.array_equal(result.sum, t["honest"].sum)
    assert result.total_weight == t["honest"].total_weight


@pytest.mark.parametrize("kind, step", [("mi_rep", "collect_masked_inputs"),
                                        ("um_rep", "collect_unmask")])
def test_replies_that_are_not_bytes_are_refused(kind, step):
    t = transcript()
    for junk in (None, "text", 7, [1, 2], {"a": 1}):
        server = copy.deepcopy(t["server_mi" if kind == "mi_rep" else "server_um"])
        try:
            out = getattr(server, step)(t[kind] | {IDS[0]: junk})
        except ProtocolAbort:
            continue  # the round abandoned: nothing was released
        if kind == "mi_rep":  # the junk was no masked input: that node is a dropout
            assert IDS[0] not in out and set(out) == set(IDS) - {IDS[0]}, (junk, sorted(out))
        else:  # its masked input counted; its junk unmask reply was not needed
            assert np.array_equal(out.sum, t["honest"].sum), junk
