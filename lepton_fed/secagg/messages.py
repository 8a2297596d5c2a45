"""Wire messages: one frozen dataclass per (stage, direction), versioned byte encoding.

Layout of every message (little-endian)::

    version u8 | stage u8 | kind u8 (0 request, 1 reply) | run_id u64 | round u32 |
    sender u64 | body

``from_bytes`` refuses (``ProtocolAbort``) another version, stage, kind, run, round or
sender than expected, truncated bodies and trailing bytes. Requests come from the
server (``sender == SERVER_ID``) and name their ``recipient``.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import ClassVar, NamedTuple, Self

import numpy as np

from lepton_fed.errors import ProtocolAbort
from lepton_fed.secagg._wire import MAX_U64, Reader, Writer
from lepton_fed.secagg.keys import KEY_BYTES, NONCE_BYTES, SIGNATURE_BYTES
from lepton_fed.secagg.shamir import SHARE_BYTES
from lepton_fed.secagg.stages import Stage

__all__ = [
    "CIPHERTEXT_BYTES",
    "MAX_COHORT",
    "MAX_ROUNDS_PER_ADVERT",
    "REPLY",
    "REQUEST",
    "SERVER_ID",
    "WIRE_VERSION",
    "AdvertiseReply",
    "AdvertiseRequest",
    "Header",
    "MaskedInputReply",
    "MaskedInputRequest",
    "NeighbourKey",
    "RoundKey",
    "ShareCiphertext",
    "UnmaskReply",
    "UnmaskRequest",
    "peek_header",
]

WIRE_VERSION = 1
REQUEST = 0
REPLY = 1
#: Sender id of every server request; node ids must be below it.
SERVER_ID = MAX_U64
MAX_COHORT = 1 << 20
MAX_ROUNDS_PER_ADVERT = 1 << 16
_HEADER_WHAT = "secagg message"


@dataclass(frozen=True, kw_only=True)
class Header:
    """Fields common to every message."""

    version: int
    stage: Stage
    kind: int
    run_id: int
    round: int
    sender: int


def _read_header(r: Reader) -> Header:
    version = r.u8()
    if version != WIRE_VERSION:
        raise ProtocolAbort(f"unsupported secagg wire version {version}")
    stage_byte = r.u8()
    try:
        stage = Stage(stage_byte)
    except ValueError:
        raise ProtocolAbort(f"unknown secagg stage {stage_byte}") from None
    kind = r.u8()
    if kind not in (REQUEST, REPLY):
        raise ProtocolAbort(f"unknown message kind {kind}")
    return Header(
        version=version,
        stage=stage,
        kind=kind,
        run_id=r.u64(),
        round=r.u32(),
        sender=r.u64(),
    )


def peek_header(data: bytes) -> Header:
    """Parses only the header (e.g. to route a request to the right client method).

    Raises:
        ProtocolAbort: truncated header, unknown version, stage or kind.
    """
    return _read_header(Reader(data, _HEADER_WHAT))


@dataclass(frozen=True, kw_only=True)
class _Message:
    STAGE: ClassVar[Stage]
    KIND: ClassVar[int]

    run_id: int
    round: int
    sender: int

    def to_bytes(self) -> bytes:
        """Versioned encoding (see module docstring)."""
        w = Writer()
        w.u8(WIRE_VERSION)
        w.u8(int(self.STAGE))
        w.u8(self.KIND)
        w.u64(self.run_id)
        w.u32(self.round)
        w.u64(self.sender)
        self._write_body(w)
        return w.getvalue()

    def _write_body(self, w: Writer) -> None:
        raise NotImplementedError

    @classmethod
    def _read_body(cls, r: Reader, h: Header) -> Self:
        raise NotImplementedError

    @classmethod
    def from_bytes(
        cls,
        data: bytes,
        *,
        run_id: int | None = None,
        round: int | None = None,
        sender: int | None = None,
    ) -> Self:
        """Decodes and checks a message.

        Args:
            data: encoded message.
            run_id: if given, the run the message must belong to.
            round: if given, the round it must belong to.
            sender: if given, who must have sent it.

        Raises:
            ProtocolAbort: wrong version, stage, kind, run, round or sender; malformed
                or trailing bytes.
        """
        r = Reader(data, cls.__name__)
        h = _read_header(r)
        if h.stage != cls.STAGE or h.kind != cls.KIND:
            raise ProtocolAbort(
                f"expected a {cls.__name__}, got stage {h.stage.name} kind {h.kind}"
            )
        for name, want, got in (
            ("run", run_id, h.run_id),
            ("round", round, h.round),
            ("sender", sender, h.sender),
        ):
            if want is not None and want != got:
                raise ProtocolAbort(f"{cls.__name__} for {name} {got}, expected {want}")
        msg = cls._read_body(r, h)
        r.done()
        return msg


@dataclass(frozen=True, kw_only=True)
class RoundKey:
    """One advertised per-round X25519 public key and its Ed25519 signature."""

    public_key: bytes
    signature: bytes


@dataclass(frozen=True, kw_only=True)
class NeighbourKey:
    """A neighbour's round key as relayed by the server, with its identity key."""

    node_id: int
    identity_key: bytes
    public_key: bytes
    signature: bytes


class ShareCiphertext(NamedTuple):
    """An AEAD-encrypted Shamir share; ``peer`` is the receiver in a reply, the sender
    in an unmask request.

    A (immutable) named tuple rather than a dataclass: the server routes k of these
    per node per round, and tuples are built straight from ``struct.iter_unpack``.
    """

    peer: int
    nonce: bytes
    data: bytes


#: A share ciphertext is one 33-byte share value plus the 16-byte Poly1305 tag.
CIPHERTEXT_BYTES = SHARE_BYTES + 16
_CT = struct.Struct(f"<Q{NONCE_BYTES}s{CIPHERTEXT_BYTES}s")


_SHARE = struct.Struct(f"<Q{SHARE_BYTES}s")
_SEED = struct.Struct(f"<Q{KEY_BYTES}s")
_ROUND_KEY = struct.Struct(f"<{KEY_BYTES}s{SIGNATURE_BYTES}s")
_NEIGHBOUR_KEY = struct.Struct(f"<Q{KEY_BYTES}s{KEY_BYTES}s{SIGNATURE_BYTES}s")


def _check_sizes(*pairs: tuple[bytes, int]) -> None:
    for data, size in pairs:
        if len(data) != size:
            raise ValueError(f"expected a {size}-byte field, got {len(data)} bytes")


def _write_cts(w: Writer, cts: tuple[ShareCiphertext, ...]) -> None:
    for c in cts:
        _check_sizes((c.nonce, NONCE_BYTES), (c.data, CIPHERTEXT_BYTES))
    w.records(_CT, cts)


def _read_cts(r: Reader) -> tuple[ShareCiphertext, ...]:
    return tuple(map(ShareCiphertext._make, r.records(_CT, MAX_COHORT)))


@dataclass(frozen=True, kw_only=True)
class AdvertiseRequest(_Message):
    """Server -> node: advertise round keys for rounds ``round .. round+num_rounds-1``."""

    STAGE = Stage.ADVERTISE
    KIND = REQUEST
    recipient: int
    num_rounds: int

    def _write_body(self, w: Writer) -> None:
        w.u64(self.recipient)
        w.u32(self.num_rounds)

    @classmethod
    def _read_body(cls, r: Reader, h: Header) -> Self:
        return cls(
            run_id=h.run_id,
            round=h.round,
            sender=h.sender,
            recipient=r.u64(),
            num_rounds=r.u32(),
        )


@dataclass(frozen=True, kw_only=True)
class AdvertiseReply(_Message):
    """Node -> server: identity public key and one signed X25519 key per round."""

    STAGE = Stage.ADVERTISE
    KIND = REPLY
    identity_key: bytes
    round_keys: tuple[RoundKey, ...]

    def _write_body(self, w: Writer) -> None:
        w.fixed(self.identity_key, KEY_BYTES)
        for k in self.round_keys:
            _check_sizes((k.public_key, KEY_BYTES), (k.signature, SIGNATURE_BYTES))
        w.records(_ROUND_KEY, [(k.public_key, k.signature) for k in self.round_keys])

    @classmethod
    def _read_body(cls, r: Reader, h: Header) -> Self:
        ident = r.fixed(KEY_BYTES)
        keys = tuple(
            RoundKey(public_key=pk, signature=sig)
            for pk, sig in r.records(_ROUND_KEY, MAX_ROUNDS_PER_ADVERT)
        )
        return cls(
            run_id=h.run_id,
            round=h.round,
            sender=h.sender,
            identity_key=ident,
            round_keys=keys,
        )


@dataclass(frozen=True, kw_only=True)
class MaskedInputRequest(_Message):
    """Server -> node: the round's cohort, graph, thresholds, encoding and neighbour keys."""

    STAGE = Stage.MASKED_INPUT
    KIND = REQUEST
    recipient: int
    cohort: tuple[int, ...]
    graph_seed: bytes
    neighbours: int
    threshold: int
    clip: float
    bits: int
    dim: int
    neighbour_keys: tuple[NeighbourKey, ...]

    def _write_body(self, w: Writer) -> None:
        w.u64(self.recipient)
        w.ids(self.cohort)
        w.fixed(self.graph_seed, KEY_BYTES)
        w.u32(self.neighbours)
        w.u32(self.threshold)
        w.f64(self.clip)
        w.u8(self.bits)
        w.u64(self.dim)
        for k in self.neighbour_keys:
            _check_sizes(
                (k.identity_key, KEY_BYTES),
                (k.public_key, KEY_BYTES),
                (k.signature, SIGNATURE_BYTES),
            )
        w.records(
            _NEIGHBOUR_KEY,
            [
                (k.node_id, k.identity_key, k.public_key, k.signature)
                for k in self.neighbour_keys
            ],
        )

    @classmethod
    def _read_body(cls, r: Reader, h: Header) -> Self:
        recipient = r.u64()
        cohort = r.ids()
        seed = r.fixed(KEY_BYTES)
        k, t, clip, bits, dim = r.u32(), r.u32(), r.f64(), r.u8(), r.u64()
        nks = tuple(
            NeighbourKey(node_id=nid, identity_key=ik, public_key=pk, signature=sig)
            for nid, ik, pk, sig in r.records(_NEIGHBOUR_KEY, MAX_COHORT)
        )
        return cls(
            run_id=h.run_id,
            round=h.round,
            sender=h.sender,
            recipient=recipient,
            cohort=cohort,
            graph_seed=seed,
            neighbours=k,
            threshold=t,
            clip=clip,
            bits=bits,
            dim=dim,
            neighbour_keys=nks,
        )


@dataclass(frozen=True, kw_only=True)
class MaskedInputReply(_Message):
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
        if len(self.masked) % 4:
            raise ProtocolAbort("masked vector length is not a multiple of 4 bytes")
        return np.frombuffer(self.masked, dtype="<u4")

    def _write_body(self, w: Writer) -> None:
        w.fixed(self.commitment, KEY_BYTES)
        w.blob(self.masked)
        _write_cts(w, self.ciphertexts)

    @classmethod
    def _read_body(cls, r: Reader, h: Header) -> Self:
        return cls(
            run_id=h.run_id,
            round=h.round,
            sender=h.sender,
            commitment=r.fixed(KEY_BYTES),
            masked=r.blob_view(),
            ciphertexts=_read_cts(r),
        )


@dataclass(frozen=True, kw_only=True)
class UnmaskRequest(_Message):
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
        _write_cts(w, self.ciphertexts)

    @classmethod
    def _read_body(cls, r: Reader, h: Header) -> Self:
        return cls(
            run_id=h.run_id,
            round=h.round,
            sender=h.sender,
            recipient=r.u64(),
            survivors=r.ids(),
            dropped=r.ids(),
            ciphertexts=_read_cts(r),
        )


@dataclass(frozen=True, kw_only=True)
class UnmaskReply(_Message):
    """Node -> server: b-shares of surviving neighbours, pairwise seeds of dropped ones."""

    STAGE = Stage.UNMASK
    KIND = REPLY
    self_mask_shares: tuple[tuple[int, bytes], ...]
    pairwise_seeds: tuple[tuple[int, bytes], ...]

    def _write_body(self, w: Writer) -> None:
        _check_sizes(*[(v, SHARE_BYTES) for _, v in self.self_mask_shares])
        _check_sizes(*[(v, KEY_BYTES) for _, v in self.pairwise_seeds])
        w.records(_SHARE, self.self_mask_shares)
        w.records(_SEED, self.pairwise_seeds)

    @classmethod
    def _read_body(cls, r: Reader, h: Header) -> Self:
        shares = tuple((int(o), bytes(v)) for o, v in r.records(_SHARE, MAX_COHORT))
        seeds = tuple((int(p), bytes(v)) for p, v in r.records(_SEED, MAX_COHORT))
        return cls(
            run_id=h.run_id,
            round=h.round,
            sender=h.sender,
            self_mask_shares=shares,
            pairwise_seeds=seeds,
        )
