"""Messages of every stage: ADVERTISE, MASKED_INPUT, UNMASK."""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from lepton_fed.errors import ProtocolAbort
from lepton_fed.secagg.keys import KEY_BYTES, SIGNATURE_BYTES
from lepton_fed.secagg.shamir import SHARE_BYTES
from lepton_fed.secagg.stages import Stage
from lepton_fed.secagg.wire.binary import Reader, Writer
from lepton_fed.secagg.wire.codec import (
    MAX_COHORT,
    MAX_ROUNDS_PER_ADVERT,
    REPLY,
    REQUEST,
    SERVER_ID,
    U32,
    U64,
    Message,
    ids_bytes,
    masked_vector,
)
from lepton_fed.secagg.wire.records import (
    CT_DTYPE,
    MEMBER,
    ROUND_KEY,
    SEED,
    SHARE,
    SIGNATURE,
    MemberKey,
    RoundKey,
    ShareCiphertext,
    check_sizes,
    cts_of,
    read_cts,
    write_cts,
)

__all__ = [
    "AdvertiseReply",
    "AdvertiseRequest",
    "MaskedInputReply",
    "MaskedInputRequest",
    "UnmaskReply",
    "UnmaskRequest",
]


@dataclass(frozen=True, kw_only=True)
class AdvertiseRequest(Message):
    """Server -> node: advertise round keys for rounds ``round .. round+num_rounds-1``."""

    STAGE = Stage.ADVERTISE
    KIND = REQUEST
    recipient: int
    num_rounds: int

    def _write_body(self, w: Writer) -> None:
        w.u64(self.recipient)
        w.u32(self.num_rounds)

    @classmethod
    def _read_fields(cls, r: Reader) -> dict[str, Any]:
        return {"recipient": r.u64(), "num_rounds": r.u32()}


@dataclass(frozen=True, kw_only=True)
class AdvertiseReply(Message):
    """Node -> server: identity public key and one signed X25519 key per round."""

    STAGE = Stage.ADVERTISE
    KIND = REPLY
    identity_key: bytes
    round_keys: tuple[RoundKey, ...]

    def _write_body(self, w: Writer) -> None:
        w.fixed(self.identity_key, KEY_BYTES)
        for k in self.round_keys:
            check_sizes((k.public_key, KEY_BYTES), (k.signature, SIGNATURE_BYTES))
        w.records(ROUND_KEY, [(k.public_key, k.signature) for k in self.round_keys])

    @classmethod
    def _read_fields(cls, r: Reader) -> dict[str, Any]:
        ident = r.fixed(KEY_BYTES)
        keys = tuple(
            RoundKey(public_key=pk, signature=sig)
            for pk, sig in r.records(ROUND_KEY, MAX_ROUNDS_PER_ADVERT)
        )
        return {"identity_key": ident, "round_keys": keys}


@dataclass(frozen=True, kw_only=True)
class MaskedInputRequest(Message):
    """Server -> node: the round's cohort with every member's identity and round key,
    the graph seed (their hash), thresholds, encoding, and the neighbours' signatures.

    ``members[i]`` belongs to ``cohort[i]``. ``signatures`` holds one
    ``(neighbour id, Ed25519 signature of its round key)`` per graph neighbour of the
    recipient, in increasing id order.
    """

    STAGE = Stage.MASKED_INPUT
    KIND = REQUEST
    recipient: int
    cohort: tuple[int, ...]
    members: tuple[MemberKey, ...]
    graph_seed: bytes
    neighbours: int
    threshold: int
    clip: float
    bits: int
    dim: int
    signatures: tuple[tuple[int, bytes], ...]

    def _write_body(self, w: Writer) -> None:
        if len(self.members) != len(self.cohort):
            raise ValueError("members must have one entry per cohort member")
        for mk in self.members:
            check_sizes((mk.identity_key, KEY_BYTES), (mk.round_key, KEY_BYTES))
        check_sizes(*[(sig, SIGNATURE_BYTES) for _, sig in self.signatures])
        w.u64(self.recipient)
        w.ids(self.cohort)
        w.records(MEMBER, self.members)
        w.fixed(self.graph_seed, KEY_BYTES)
        params = self.parameter_bytes(
            neighbours=self.neighbours,
            threshold=self.threshold,
            clip=self.clip,
            bits=self.bits,
            dim=self.dim,
        )
        w.fixed(params, _PARAMS.size)
        w.records(SIGNATURE, self.signatures)

    @staticmethod
    def parameter_bytes(
        *, neighbours: int, threshold: int, clip: float, bits: int, dim: int
    ) -> bytes:
        """The fixed-size block after the seed: k u32, t u32, clip f64, bits u8, dim u64."""
        return _PARAMS.pack(neighbours, threshold, clip, bits, dim)

    @classmethod
    def encode_parts(
        cls,
        *,
        run_id: int,
        round: int,
        recipient: int,
        shared: bytes,
        signatures: bytes,
        count: int,
    ) -> bytes:
        """``to_bytes`` from pre-encoded parts (the server writes n requests per round).

        Args:
            shared: the part every recipient gets: cohort ids, members block, seed
                and :meth:`parameter_bytes`.
            signatures: ``count`` records of (u64 id, 64-byte signature).
        """
        return b"".join(
            (
                cls.header_bytes(run_id=run_id, round=round, sender=SERVER_ID),
                U64.pack(recipient),
                shared,
                U32.pack(count),
                signatures,
            )
        )

    @classmethod
    def _read_fields(cls, r: Reader) -> dict[str, Any]:
        recipient = r.u64()
        cohort = r.ids()
        members = tuple(map(MemberKey._make, r.records(MEMBER, MAX_COHORT)))
        seed = r.fixed(KEY_BYTES)
        k, t, clip, bits, dim = r.u32(), r.u32(), r.f64(), r.u8(), r.u64()
        sigs = tuple((int(n), bytes(s)) for n, s in r.records(SIGNATURE, MAX_COHORT))
        return {
            "recipient": recipient,
            "cohort": cohort,
            "members": members,
            "graph_seed": seed,
            "neighbours": k,
            "threshold": t,
            "clip": clip,
            "bits": bits,
            "dim": dim,
            "signatures": sigs,
        }


_PARAMS = struct.Struct("<IIdBQ")


@dataclass(frozen=True, kw_only=True)
class MaskedInputReply(Message):
    """Node -> server: masked vector, commitment to b, one encrypted b-share per neighbour."""

    STAGE = Stage.MASKED_INPUT
    KIND = REPLY
    commitment: bytes
    masked: bytes | memoryview
    ciphertexts: tuple[ShareCiphertext, ...]

    def vector(self) -> np.ndarray:
        """The masked vector as a read-only ``uint32`` array (no copy).

        After ``from_bytes`` ``masked`` is a view into the received buffer, so a
        100k-parameter vector is never copied on the server before it is summed.
        """
        return masked_vector(self.masked)

    def _write_body(self, w: Writer) -> None:
        w.fixed(self.commitment, KEY_BYTES)
        w.blob(self.masked)
        write_cts(w, self.ciphertexts)

    @classmethod
    def records_from_bytes(
        cls, data: bytes, *, run_id: int, round: int, sender: int
    ) -> tuple[bytes, np.ndarray, np.ndarray]:
        """:meth:`from_bytes` for the server: ``(commitment, masked uint32 vector,
        CT_DTYPE records)``, the vector and the records as views into ``data``.

        Same decoder, same acceptance as :meth:`from_bytes`; nothing is copied and no
        Python object is built per ciphertext.

        Raises:
            ProtocolAbort: as :meth:`from_bytes`.
        """
        _, (commitment, masked, cts) = cls._decode(
            data, cls._read_blocks, run_id=run_id, round=round, sender=sender
        )
        return commitment, np.frombuffer(masked, dtype="<u4"), cts

    @staticmethod
    def _read_blocks(r: Reader) -> tuple[bytes, memoryview, np.ndarray]:
        """The body as it lies on the wire: commitment, masked vector, CT records."""
        commitment = r.fixed(KEY_BYTES)
        masked = r.blob_view()
        if len(masked) % 4:
            raise ProtocolAbort("masked vector length is not a multiple of 4 bytes")
        return commitment, masked, r.block(CT_DTYPE, MAX_COHORT)

    @classmethod
    def _read_fields(cls, r: Reader) -> dict[str, Any]:
        commitment, masked, cts = cls._read_blocks(r)
        return {
            "commitment": commitment,
            "masked": masked,
            "ciphertexts": cts_of(cts),
        }


@dataclass(frozen=True, kw_only=True)
class UnmaskRequest(Message):
    """Server -> node: which neighbours survived/dropped, and the shares addressed to it."""

    STAGE = Stage.UNMASK
    KIND = REQUEST
    recipient: int
    survivors: tuple[int, ...]
    dropped: tuple[int, ...]
    ciphertexts: tuple[ShareCiphertext, ...]

    def _write_body(self, w: Writer) -> None:
        w.u64(self.recipient)
        w.ids(self.survivors)
        w.ids(self.dropped)
        write_cts(w, self.ciphertexts)

    @classmethod
    def encode_records(
        cls,
        *,
        run_id: int,
        round: int,
        recipient: int,
        survivors: Sequence[int],
        dropped: Sequence[int],
        records: np.ndarray,
    ) -> bytes:
        """``to_bytes`` of the request whose ciphertexts are ``records`` (CT_DTYPE)."""
        return b"".join(
            (
                cls.header_bytes(run_id=run_id, round=round, sender=SERVER_ID),
                U64.pack(recipient),
                ids_bytes(survivors),
                ids_bytes(dropped),
                U32.pack(len(records)),
                records.tobytes(),
            )
        )

    @classmethod
    def _read_fields(cls, r: Reader) -> dict[str, Any]:
        return {
            "recipient": r.u64(),
            "survivors": r.ids(),
            "dropped": r.ids(),
            "ciphertexts": read_cts(r),
        }


@dataclass(frozen=True, kw_only=True)
class UnmaskReply(Message):
    """Node -> server: b-shares of surviving neighbours, pairwise seeds of dropped ones."""

    STAGE = Stage.UNMASK
    KIND = REPLY
    self_mask_shares: tuple[tuple[int, bytes], ...]
    pairwise_seeds: tuple[tuple[int, bytes], ...]

    def _write_body(self, w: Writer) -> None:
        check_sizes(*[(v, SHARE_BYTES) for _, v in self.self_mask_shares])
        check_sizes(*[(v, KEY_BYTES) for _, v in self.pairwise_seeds])
        w.records(SHARE, self.self_mask_shares)
        w.records(SEED, self.pairwise_seeds)

    @classmethod
    def records_from_bytes(
        cls, data: bytes, *, run_id: int, round: int, sender: int
    ) -> tuple[bytes, bytes]:
        """:meth:`from_bytes` for the server: the share block (41-byte ``SHARE``
        records) and the seed block (40-byte ``SEED`` records) as bytes, with no
        Python object per share (the server reads a share only when it uses it).

        Raises:
            ProtocolAbort: as :meth:`from_bytes`.
        """
        _, blocks = cls._decode(
            data, cls._read_blocks, run_id=run_id, round=round, sender=sender
        )
        return blocks

    @staticmethod
    def _read_blocks(r: Reader) -> tuple[bytes, bytes]:
        """The body as it lies on the wire: the share block, then the seed block."""
        return r.raw_block(SHARE.size, MAX_COHORT), r.raw_block(SEED.size, MAX_COHORT)

    @classmethod
    def _read_fields(cls, r: Reader) -> dict[str, Any]:
        shares, seeds = cls._read_blocks(r)
        return {
            "self_mask_shares": tuple(SHARE.iter_unpack(shares)),
            "pairwise_seeds": tuple(SEED.iter_unpack(seeds)),
        }
