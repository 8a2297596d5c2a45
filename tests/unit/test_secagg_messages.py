"""Wire messages: round trips, version/stage/run/round/sender checks, malformed input."""

from __future__ import annotations

import pytest

from lepton_fed.errors import ProtocolAbort
from lepton_fed.secagg.messages import (
    SERVER_ID,
    WIRE_VERSION,
    AdvertiseReply,
    AdvertiseRequest,
    MaskedInputReply,
    MaskedInputRequest,
    NeighbourKey,
    RoundKey,
    ShareCiphertext,
    UnmaskReply,
    UnmaskRequest,
    peek_header,
)
from lepton_fed.secagg.stages import Stage

CT = ShareCiphertext(peer=4, nonce=b"n" * 12, data=b"c" * 49)
SAMPLES = [
    AdvertiseRequest(run_id=1, round=1, sender=SERVER_ID, recipient=3, num_rounds=5),
    AdvertiseReply(
        run_id=1,
        round=1,
        sender=3,
        identity_key=b"i" * 32,
        round_keys=(RoundKey(public_key=b"p" * 32, signature=b"s" * 64),) * 2,
    ),
    MaskedInputRequest(
        run_id=1,
        round=2,
        sender=SERVER_ID,
        recipient=3,
        cohort=(3, 4, 9),
        graph_seed=b"g" * 32,
        neighbours=2,
        threshold=2,
        clip=0.5,
        bits=32,
        dim=10,
        neighbour_keys=(
            NeighbourKey(
                node_id=4,
                identity_key=b"i" * 32,
                public_key=b"p" * 32,
                signature=b"s" * 64,
            ),
        ),
    ),
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


def test_header_stage_values_are_stable() -> None:
    assert [s.value for s in Stage] == [1, 2, 3]


def test_huge_counts_are_refused_without_allocation() -> None:
    # A reply claiming 2^32-1 round keys but carrying none
    head = SAMPLES[1].to_bytes()[: 1 + 1 + 1 + 8 + 4 + 8 + 32]
    with pytest.raises(ProtocolAbort):
        AdvertiseReply.from_bytes(head + b"\xff\xff\xff\xff")
