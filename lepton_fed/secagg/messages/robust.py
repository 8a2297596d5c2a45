"""Messages of robust mode (``SecAggParams.share_keys_first``): SHARE_KEYS,
ROBUST_MASKED_INPUT and ROBUST_UNMASK."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np

from lepton_fed.secagg._wire import Reader, Writer
from lepton_fed.secagg.keys import KEY_BYTES
from lepton_fed.secagg.messages._codec import (
    REPLY,
    REQUEST,
    SERVER_ID,
    U32,
    U64,
    Message,
    Slow,
    masked_vector,
    take_records,
    take_two,
    two_raw_blocks,
)
from lepton_fed.secagg.messages._records import (
    RCT,
    ROBUST_CIPHERTEXT_BYTES,
    ROBUST_CT_DTYPE,
    SHARE,
    SHARE_DTYPE,
    ShareCiphertext,
    check_sizes,
    read_cts,
    read_pairs,
    write_cts,
)
from lepton_fed.secagg.messages.fast import MaskedInputRequest
from lepton_fed.secagg.shamir import SHARE_BYTES
from lepton_fed.secagg.stages import Stage

__all__ = [
    "RobustMaskedInputReply",
    "RobustMaskedInputRequest",
    "RobustUnmaskReply",
    "RobustUnmaskRequest",
    "ShareKeysReply",
    "ShareKeysRequest",
]


@dataclass(frozen=True, kw_only=True)
class ShareKeysRequest(MaskedInputRequest):
    """Server -> node (robust mode, exchange 1): same body as :class:`MaskedInputRequest`.

    The node checks everything a fast-mode masked-input request is checked for, and
    answers with shares instead of a masked input.
    """

    STAGE = Stage.SHARE_KEYS
    KIND = REQUEST


def _share_keys_body(body: memoryview) -> tuple[bytes, bytes, np.ndarray]:
    cts, end = take_records(body, 2 * KEY_BYTES, ROBUST_CT_DTYPE)
    if end != len(body):
        raise Slow
    return bytes(body[:KEY_BYTES]), bytes(body[KEY_BYTES : 2 * KEY_BYTES]), cts


@dataclass(frozen=True, kw_only=True)
class ShareKeysReply(Message):
    """Node -> server (robust mode): the round's mask public key, a commitment to b, and
    per neighbour an AEAD ciphertext of (mask public key, b-share, mask-key share)."""

    STAGE = Stage.SHARE_KEYS
    KIND = REPLY
    mask_key: bytes
    commitment: bytes
    ciphertexts: tuple[ShareCiphertext, ...]

    def _write_body(self, w: Writer) -> None:
        w.fixed(self.mask_key, KEY_BYTES)
        w.fixed(self.commitment, KEY_BYTES)
        write_cts(w, self.ciphertexts, RCT, ROBUST_CIPHERTEXT_BYTES)

    @classmethod
    def _read_fields(cls, r: Reader) -> dict[str, Any]:
        return {
            "mask_key": r.fixed(KEY_BYTES),
            "commitment": r.fixed(KEY_BYTES),
            "ciphertexts": read_cts(r, RCT),
        }

    @classmethod
    def records_from_bytes(
        cls, data: bytes, *, run_id: int, round: int, sender: int
    ) -> tuple[bytes, bytes, np.ndarray]:
        """Server-side reader: ``(mask_key, commitment, ROBUST_CT_DTYPE records)``.

        Raises:
            ProtocolAbort: as :meth:`from_bytes`.
        """
        return cls._fast_read(
            data, _share_keys_body, run_id=run_id, round=round, sender=sender
        )


@dataclass(frozen=True, kw_only=True)
class RobustMaskedInputRequest(Message):
    """Server -> node (robust mode, exchange 2): the ciphertexts addressed to the node
    by the neighbours that shared keys (``peer`` = sender). Exactly those neighbours are
    masked with."""

    STAGE = Stage.ROBUST_MASKED_INPUT
    KIND = REQUEST
    recipient: int
    ciphertexts: tuple[ShareCiphertext, ...]

    def _write_body(self, w: Writer) -> None:
        w.u64(self.recipient)
        write_cts(w, self.ciphertexts, RCT, ROBUST_CIPHERTEXT_BYTES)

    @classmethod
    def _read_fields(cls, r: Reader) -> dict[str, Any]:
        return {"recipient": r.u64(), "ciphertexts": read_cts(r, RCT)}

    @classmethod
    def encode_records(
        cls, *, run_id: int, round: int, recipient: int, records: np.ndarray
    ) -> bytes:
        """``to_bytes`` of the request whose ciphertexts are ``records`` (ROBUST_CT_DTYPE)."""
        return b"".join(
            (
                cls.header_bytes(run_id=run_id, round=round, sender=SERVER_ID),
                U64.pack(recipient),
                U32.pack(len(records)),
                records.tobytes(),
            )
        )


def _masked_vector_body(body: memoryview) -> np.ndarray:
    if len(body) < 4:
        raise Slow
    (size,) = U32.unpack_from(body, 0)
    if 4 + size != len(body) or size % 4:
        raise Slow
    return np.frombuffer(body[4:], dtype="<u4")


@dataclass(frozen=True, kw_only=True)
class RobustMaskedInputReply(Message):
    """Node -> server (robust mode): the masked vector only (shares went before)."""

    STAGE = Stage.ROBUST_MASKED_INPUT
    KIND = REPLY
    masked: bytes | memoryview

    def vector(self) -> np.ndarray:
        """The masked vector as a read-only ``uint32`` array (no copy)."""
        return masked_vector(self.masked)

    def _write_body(self, w: Writer) -> None:
        w.blob(self.masked)

    @classmethod
    def _read_fields(cls, r: Reader) -> dict[str, Any]:
        return {"masked": r.blob_view()}

    @classmethod
    def records_from_bytes(
        cls, data: bytes, *, run_id: int, round: int, sender: int
    ) -> np.ndarray:
        """Server-side reader: the masked uint32 vector (zero-copy).

        Raises:
            ProtocolAbort: as :meth:`from_bytes`.
        """
        return cls._fast_read(
            data, _masked_vector_body, run_id=run_id, round=round, sender=sender
        )


@dataclass(frozen=True, kw_only=True)
class RobustUnmaskRequest(Message):
    """Server -> node (robust mode): which of the neighbours it masked with survived
    (sent a masked input) and which dropped."""

    STAGE = Stage.ROBUST_UNMASK
    KIND = REQUEST
    recipient: int
    survivors: tuple[int, ...]
    dropped: tuple[int, ...]

    def _write_body(self, w: Writer) -> None:
        w.u64(self.recipient)
        w.ids(self.survivors)
        w.ids(self.dropped)

    @classmethod
    def _read_fields(cls, r: Reader) -> dict[str, Any]:
        return {"recipient": r.u64(), "survivors": r.ids(), "dropped": r.ids()}


@dataclass(frozen=True, kw_only=True)
class RobustUnmaskReply(Message):
    """Node -> server (robust mode): b-shares of surviving neighbours, mask-key shares
    of dropped ones (never both for one neighbour)."""

    STAGE = Stage.ROBUST_UNMASK
    KIND = REPLY
    self_mask_shares: tuple[tuple[int, bytes], ...]
    key_shares: tuple[tuple[int, bytes], ...]

    def _write_body(self, w: Writer) -> None:
        check_sizes(*[(v, SHARE_BYTES) for _, v in self.self_mask_shares])
        check_sizes(*[(v, SHARE_BYTES) for _, v in self.key_shares])
        w.records(SHARE, self.self_mask_shares)
        w.records(SHARE, self.key_shares)

    @classmethod
    def _read_fields(cls, r: Reader) -> dict[str, Any]:
        return {
            "self_mask_shares": read_pairs(r, SHARE),
            "key_shares": read_pairs(r, SHARE),
        }

    @classmethod
    def records_from_bytes(
        cls, data: bytes, *, run_id: int, round: int, sender: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Server-side reader: ``(b-share records, key-share records)`` (SHARE_DTYPE).

        Raises:
            ProtocolAbort: as :meth:`from_bytes`.
        """
        parse = partial(take_two, first=SHARE_DTYPE, second=SHARE_DTYPE)
        return cls._fast_read(data, parse, run_id=run_id, round=round, sender=sender)

    @classmethod
    def raw_records(
        cls, data: bytes, *, run_id: int, round: int, sender: int
    ) -> tuple[bytes, int, bytes, int]:
        """Server-side reader: the b-share block and its count, the key-share block
        and its count (41-byte records each), as bytes.

        Raises:
            ProtocolAbort: as :meth:`from_bytes`.
        """
        parse = partial(two_raw_blocks, first=SHARE.size, second=SHARE.size)
        return cls._fast_read(data, parse, run_id=run_id, round=round, sender=sender)
