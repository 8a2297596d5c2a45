"""Wire messages: round trips, version/stage/run/round/sender checks, malformed input."""

from __future__ import annotations

import numpy as np
import pytest

from lepton_fed.errors import ProtocolAbort
from lepton_fed.secagg.stages import Stage
from lepton_fed.secagg.wire import (
    CT_DTYPE,
    HEADER_BYTES,
    SERVER_ID,
    SIGNATURE_DTYPE,
    WIRE_VERSION,
    AdvertiseReply,
    AdvertiseRequest,
    MaskedInputReply,
    MaskedInputRequest,
    MemberKey,
    RoundKey,
    ShareCiphertext,
    UnmaskReply,
    UnmaskRequest,
    peek_header,
)

CT = ShareCiphertext(peer=4, nonce=b"n" * 12, data=b"c" * 49)
#: Fields of a masked-input request.
ROUND_REQUEST = {
    "run_id": 1,
    "round": 2,
    "sender": SERVER_ID,
    "recipient": 3,
    "cohort": (3, 4, 9),
    "members": tuple(
        MemberKey(identity_key=bytes([i]) * 32, round_key=bytes([i + 1]) * 32)
        for i in (3, 4, 9)
    ),
    "graph_seed": b"g" * 32,
    "neighbours": 2,
    "threshold": 2,
    "clip": 0.5,
    "bits": 32,
    "dim": 10,
    "signatures": ((4, b"s" * 64), (9, b"t" * 64)),
}
SAMPLES = [
    AdvertiseRequest(run_id=1, round=1, sender=SERVER_ID, recipient=3, num_rounds=5),
    AdvertiseReply(
        run_id=1,
        round=1,
        sender=3,
        identity_key=b"i" * 32,
        round_keys=(RoundKey(public_key=b"p" * 32, signature=b"s" * 64),) * 2,
    ),
    MaskedInputRequest(**ROUND_REQUEST),
    MaskedInputReply(
        run_id=1,
        round=2,
        sender=3,
        commitment=b"c" * 32,
        masked=b"\x01" * 44,
        ciphertexts=(CT,),
    ),
    UnmaskRequest(
        run_id=1,
        round=2,
        sender=SERVER_ID,
        recipient=3,
        survivors=(4,),
        dropped=(9,),
        ciphertexts=(CT,),
    ),
    UnmaskReply(
        run_id=1,
        round=2,
        sender=3,
        self_mask_shares=((4, b"v" * 33),),
        pairwise_seeds=((9, b"s" * 32),),
    ),
]


@pytest.mark.parametrize("msg", SAMPLES, ids=lambda m: type(m).__name__)
def test_roundtrip_and_header(msg) -> None:
    # Execute
    data = msg.to_bytes()
    back = type(msg).from_bytes(
        data, run_id=msg.run_id, round=msg.round, sender=msg.sender
    )
    # Assert
    assert back == msg
    assert data[0] == WIRE_VERSION
    h = peek_header(data)
    assert (h.stage, h.run_id, h.round, h.sender) == (
        msg.STAGE,
        msg.run_id,
        msg.round,
        msg.sender,
    )


@pytest.mark.parametrize("msg", SAMPLES, ids=lambda m: type(m).__name__)
def test_wrong_context_is_refused(msg) -> None:
    data = msg.to_bytes()
    with pytest.raises(ProtocolAbort, match="round"):
        type(msg).from_bytes(data, round=msg.round + 1)
    with pytest.raises(ProtocolAbort, match="run"):
        type(msg).from_bytes(data, run_id=msg.run_id + 1)
    with pytest.raises(ProtocolAbort, match="sender"):
        type(msg).from_bytes(data, sender=12345)
    with pytest.raises(ProtocolAbort, match="version"):
        type(msg).from_bytes(bytes([WIRE_VERSION + 1]) + data[1:])
    with pytest.raises(ProtocolAbort, match="truncated"):
        type(msg).from_bytes(data[:-1])
    with pytest.raises(ProtocolAbort, match="trailing"):
        type(msg).from_bytes(data + b"\x00")


def test_message_of_another_stage_or_kind_is_refused() -> None:
    # Prepare
    masked = SAMPLES[3].to_bytes()
    unmask_req = SAMPLES[4].to_bytes()
    # Assert
    with pytest.raises(ProtocolAbort, match="expected a UnmaskReply"):
        UnmaskReply.from_bytes(masked)
    with pytest.raises(ProtocolAbort, match="expected a UnmaskReply"):
        UnmaskReply.from_bytes(unmask_req)  # same stage, request kind
    with pytest.raises(ProtocolAbort, match="unknown secagg stage"):
        peek_header(masked[:1] + bytes([9]) + masked[2:])
    with pytest.raises(ProtocolAbort):
        peek_header(b"")
    with pytest.raises(ProtocolAbort, match="bytes"):
        MaskedInputReply.from_bytes("not bytes")  # type: ignore[arg-type]


def test_reserved_header_byte_must_be_zero() -> None:
    data = SAMPLES[0].to_bytes()
    with pytest.raises(ProtocolAbort, match="reserved"):
        peek_header(data[:3] + b"\x05" + data[4:])


def test_header_stage_values_are_stable() -> None:
    assert [s.value for s in Stage] == [1, 2, 3]
    data = SAMPLES[0].to_bytes()
    for removed in (4, 5, 6):  # the stages of the removed 3-exchange mode
        with pytest.raises(ProtocolAbort, match="unknown secagg stage"):
            peek_header(data[:1] + bytes([removed]) + data[2:])


def test_huge_counts_are_refused_without_allocation() -> None:
    # A reply claiming 2^32-1 round keys but carrying none
    head = SAMPLES[1].to_bytes()[: HEADER_BYTES + 32]
    with pytest.raises(ProtocolAbort):
        AdvertiseReply.from_bytes(head + b"\xff\xff\xff\xff")


@pytest.mark.parametrize(
    "msg",
    [m for m in SAMPLES if hasattr(type(m), "records_from_bytes")],
    ids=lambda m: type(m).__name__,
)
def test_fast_server_readers_accept_and_refuse_like_from_bytes(msg) -> None:
    data = msg.to_bytes()
    ctx = {"run_id": msg.run_id, "round": msg.round, "sender": msg.sender}
    type(msg).records_from_bytes(data, **ctx)  # accepted
    bad_inputs = [
        data[:-1],
        data + b"\x00",
        bytes([WIRE_VERSION + 1]) + data[1:],
        data[:3] + b"\x01" + data[4:],  # reserved header byte
        "not bytes",
    ]
    for bad in bad_inputs:
        with pytest.raises(ProtocolAbort) as fast:
            type(msg).records_from_bytes(bad, **ctx)
        with pytest.raises(ProtocolAbort) as slow:
            type(msg).from_bytes(bad, **ctx)
        assert str(fast.value) == str(slow.value)
    with pytest.raises(ProtocolAbort, match="round"):
        type(msg).records_from_bytes(data, **{**ctx, "round": msg.round + 1})


def test_server_request_encoders_match_to_bytes() -> None:
    cts = (CT, CT._replace(peer=9))
    records = np.frombuffer(
        b"".join(c.peer.to_bytes(8, "little") + c.nonce + c.data for c in cts),
        dtype=CT_DTYPE,
    )
    fast = UnmaskRequest.encode_records(
        run_id=1, round=2, recipient=3, survivors=(4, 9), dropped=(11,), records=records
    )
    assert fast == UnmaskRequest(
        run_id=1,
        round=2,
        sender=SERVER_ID,
        recipient=3,
        survivors=(4, 9),
        dropped=(11,),
        ciphertexts=cts,
    ).to_bytes()
    req = MaskedInputRequest(**ROUND_REQUEST)
    shared = b"".join(
        (
            (3).to_bytes(4, "little"),
            b"".join(n.to_bytes(8, "little") for n in req.cohort),
            (3).to_bytes(4, "little"),
            b"".join(m.identity_key + m.round_key for m in req.members),
            req.graph_seed,
            MaskedInputRequest.parameter_bytes(
                neighbours=2, threshold=2, clip=0.5, bits=32, dim=10
            ),
        )
    )
    sigs = np.frombuffer(
        b"".join(n.to_bytes(8, "little") + s for n, s in req.signatures),
        dtype=SIGNATURE_DTYPE,
    )
    assert (
        MaskedInputRequest.encode_parts(
            run_id=1, round=2, recipient=3, shared=shared, signatures=sigs.tobytes(),
            count=len(sigs),
        )
        == req.to_bytes()
    )


def test_masked_input_request_needs_one_member_per_cohort_node() -> None:
    bad = MaskedInputRequest(**{**ROUND_REQUEST, "members": ROUND_REQUEST["members"][:2]})
    with pytest.raises(ValueError, match="one entry per cohort member"):
        bad.to_bytes()


def test_masked_vectors_start_4_byte_aligned() -> None:
    fast = SAMPLES[3].to_bytes()
    assert HEADER_BYTES == 24
    assert fast.index(b"\x01" * 44) % 4 == 0
