"""Wire messages: one frozen dataclass per (stage, direction), versioned byte encoding.

Layout of every message (little-endian)::

    version u8 | stage u8 | kind u8 (0 request, 1 reply) | reserved u8 (0) |
    run_id u64 | round u32 | sender u64 | body

The header is 24 bytes so that the masked vector of a masked-input reply starts at a
multiple of 4 (offset 60 in fast mode, 28 in robust mode): numpy then sums it in place
without the unaligned-access copy (about 40% of the summing cost at 100k parameters).

``from_bytes`` refuses (``ProtocolAbort``) another version, stage, kind, run, round or
sender than expected, truncated bodies and trailing bytes. Requests come from the
server (``sender == SERVER_ID``) and name their ``recipient``.

Fast mode uses stages ADVERTISE, MASKED_INPUT and UNMASK; robust mode
(``SecAggParams.share_keys_first``) uses ADVERTISE, SHARE_KEYS, ROBUST_MASKED_INPUT and
ROBUST_UNMASK, each with its own message classes.

The server reads replies with ``records_from_bytes`` (one ``struct`` call for the header,
record blocks as zero-copy numpy structured arrays, no per-share Python objects) and
writes its per-node requests with ``encode_records``; both are byte-for-byte equivalent
to ``from_bytes``/``to_bytes`` (tested). Whenever the fast reader sees anything
unexpected it re-parses with ``from_bytes``, so the refusal and its message are the
same.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
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
    "CT_DTYPE",
    "HEADER_BYTES",
    "MAX_COHORT",
    "MAX_ROUNDS_PER_ADVERT",
    "REPLY",
    "REQUEST",
    "ROBUST_CIPHERTEXT_BYTES",
    "ROBUST_CT_DTYPE",
    "SERVER_ID",
    "SHARE_DTYPE",
    "WIRE_VERSION",
    "AdvertiseReply",
    "AdvertiseRequest",
    "Header",
    "MaskedInputReply",
    "MaskedInputRequest",
    "NeighbourKey",
    "RobustMaskedInputReply",
    "RobustMaskedInputRequest",
    "RobustUnmaskReply",
    "RobustUnmaskRequest",
    "RoundKey",
    "ShareCiphertext",
    "ShareKeysReply",
    "ShareKeysRequest",
    "UnmaskReply",
    "UnmaskRequest",
    "peek_header",
]

#: 2: 24-byte header with a reserved byte (4-byte aligned masked vectors); 1: the
#: 23-byte header (not accepted any more).
WIRE_VERSION = 2
REQUEST = 0
REPLY = 1
#: Sender id of every server request; node ids must be below it.
SERVER_ID = MAX_U64
MAX_COHORT = 1 << 20
MAX_ROUNDS_PER_ADVERT = 1 << 16
_HEADER_WHAT = "secagg message"
_HEADER = struct.Struct("<BBBBQIQ")
HEADER_BYTES = _HEADER.size  # 24
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")


class _Slow(Exception):
    """Internal: the fast reader met something unexpected; re-parse with from_bytes."""


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
    if r.u8() != 0:
        raise ProtocolAbort("reserved header byte must be 0")
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
        w.u8(0)
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
    def header_bytes(cls, *, run_id: int, round: int, sender: int) -> bytes:
        """The 24-byte header of a message of this class."""
        return _HEADER.pack(
            WIRE_VERSION, int(cls.STAGE), cls.KIND, 0, run_id, round, sender
        )

    @classmethod
    def _fast_body(
        cls, data: bytes, *, run_id: int, round: int, sender: int
    ) -> memoryview:
        """Checks the header in one ``struct`` call; returns the body (zero-copy).

        Raises:
            _Slow: anything unexpected (the caller re-parses with ``from_bytes``).
        """
        try:
            mv = memoryview(data).cast("B")
            head = _HEADER.unpack_from(mv, 0)
        except (TypeError, ValueError, struct.error):
            raise _Slow from None
        if head != (WIRE_VERSION, int(cls.STAGE), cls.KIND, 0, run_id, round, sender):
            raise _Slow
        return mv[HEADER_BYTES:]

    @classmethod
    def _refuse(cls, data: bytes, **context: int) -> ProtocolAbort:
        """The ProtocolAbort that ``from_bytes`` raises for ``data``."""
        try:
            cls.from_bytes(data, **context)
        except ProtocolAbort as exc:
            return exc
        return ProtocolAbort(f"malformed {cls.__name__}")  # pragma: no cover

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


#: Robust mode: mask public key (32) + b-share (33) + mask-key share (33) + tag (16).
ROBUST_CIPHERTEXT_BYTES = KEY_BYTES + 2 * SHARE_BYTES + 16
_RCT = struct.Struct(f"<Q{NONCE_BYTES}s{ROBUST_CIPHERTEXT_BYTES}s")

#: numpy views of the record blocks (fields ``V`` keep trailing zero bytes).
CT_DTYPE = np.dtype(
    [("peer", "<u8"), ("nonce", f"V{NONCE_BYTES}"), ("data", f"V{CIPHERTEXT_BYTES}")]
)
ROBUST_CT_DTYPE = np.dtype(
    [
        ("peer", "<u8"),
        ("nonce", f"V{NONCE_BYTES}"),
        ("data", f"V{ROBUST_CIPHERTEXT_BYTES}"),
    ]
)
SHARE_DTYPE = np.dtype([("owner", "<u8"), ("value", f"V{SHARE_BYTES}")])
_SEED_DTYPE = np.dtype([("peer", "<u8"), ("seed", f"V{KEY_BYTES}")])
assert CT_DTYPE.itemsize == _CT.size and ROBUST_CT_DTYPE.itemsize == _RCT.size


def _write_cts(
    w: Writer,
    cts: tuple[ShareCiphertext, ...],
    fmt: struct.Struct = _CT,
    size: int = CIPHERTEXT_BYTES,
) -> None:
    for c in cts:
        _check_sizes((c.nonce, NONCE_BYTES), (c.data, size))
    w.records(fmt, cts)


def _read_cts(r: Reader, fmt: struct.Struct = _CT) -> tuple[ShareCiphertext, ...]:
    return tuple(map(ShareCiphertext._make, r.records(fmt, MAX_COHORT)))


def _take_records(body: memoryview, pos: int, dtype: np.dtype) -> tuple[np.ndarray, int]:
    """A u32 count then ``count`` records of ``dtype``, as a zero-copy array."""
    if pos + 4 > len(body):
        raise _Slow
    (count,) = _U32.unpack_from(body, pos)
    pos += 4
    end = pos + count * dtype.itemsize
    if count > MAX_COHORT or end > len(body):
        raise _Slow
    return np.frombuffer(body[pos:end], dtype=dtype), end


def _take_raw(body: memoryview, pos: int, size: int) -> tuple[bytes, int, int]:
    """A u32 count then ``count`` records of ``size`` bytes: (block, count, end)."""
    if pos + 4 > len(body):
        raise _Slow
    (count,) = _U32.unpack_from(body, pos)
    pos += 4
    end = pos + count * size
    if count > MAX_COHORT or end > len(body):
        raise _Slow
    return bytes(body[pos:end]), count, end


def _two_blocks(
    cls: type[_Message], data: bytes, first: int, second: int, **ctx: int
) -> tuple[bytes, int, bytes, int]:
    try:
        body = cls._fast_body(data, **ctx)
        a, na, pos = _take_raw(body, 0, first)
        b, nb, pos = _take_raw(body, pos, second)
        if pos != len(body):
            raise _Slow
    except _Slow:
        raise cls._refuse(data, **ctx) from None
    return a, na, b, nb


def _ids_bytes(ids: Sequence[int]) -> bytes:
    return struct.pack(f"<I{len(ids)}Q", len(ids), *ids)


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
    def records_from_bytes(
        cls, data: bytes, *, run_id: int, round: int, sender: int
    ) -> tuple[bytes, np.ndarray, np.ndarray]:
        """Server-side reader: ``(commitment, masked uint32 vector, CT_DTYPE records)``.

        Same acceptance as :meth:`from_bytes`; nothing is copied.

        Raises:
            ProtocolAbort: as :meth:`from_bytes`.
        """
        ctx = {"run_id": run_id, "round": round, "sender": sender}
        try:
            body = cls._fast_body(data, **ctx)
            if len(body) < KEY_BYTES + 4:
                raise _Slow
            (size,) = _U32.unpack_from(body, KEY_BYTES)
            pos = KEY_BYTES + 4 + size
            if pos > len(body) or size % 4:
                raise _Slow
            cts, end = _take_records(body, pos, CT_DTYPE)
            if end != len(body):
                raise _Slow
        except _Slow:
            raise cls._refuse(data, **ctx) from None
        vector = np.frombuffer(body[KEY_BYTES + 4 : pos], dtype="<u4")
        return bytes(body[:KEY_BYTES]), vector, cts

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
                _U64.pack(recipient),
                _ids_bytes(survivors),
                _ids_bytes(dropped),
                _U32.pack(len(records)),
                records.tobytes(),
            )
        )

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
    def records_from_bytes(
        cls, data: bytes, *, run_id: int, round: int, sender: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Server-side reader: ``(SHARE_DTYPE records, (peer, seed) records)``.

        Raises:
            ProtocolAbort: as :meth:`from_bytes`.
        """
        ctx = {"run_id": run_id, "round": round, "sender": sender}
        try:
            body = cls._fast_body(data, **ctx)
            shares, pos = _take_records(body, 0, SHARE_DTYPE)
            seeds, pos = _take_records(body, pos, _SEED_DTYPE)
            if pos != len(body):
                raise _Slow
        except _Slow:
            raise cls._refuse(data, **ctx) from None
        return shares, seeds

    @classmethod
    def raw_records(
        cls, data: bytes, *, run_id: int, round: int, sender: int
    ) -> tuple[bytes, int, bytes, int]:
        """Server-side reader: the share block (41-byte records) and its count, the
        seed block (40-byte records) and its count, as bytes.

        Raises:
            ProtocolAbort: as :meth:`from_bytes`.
        """
        return _two_blocks(
            cls, data, _SHARE.size, _SEED.size, run_id=run_id, round=round, sender=sender
        )

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


# ------------------------------------------------------------------- robust mode
@dataclass(frozen=True, kw_only=True)
class ShareKeysRequest(MaskedInputRequest):
    """Server -> node (robust mode, exchange 1): same body as :class:`MaskedInputRequest`.

    The node checks everything a fast-mode masked-input request is checked for, and
    answers with shares instead of a masked input.
    """

    STAGE = Stage.SHARE_KEYS
    KIND = REQUEST


@dataclass(frozen=True, kw_only=True)
class ShareKeysReply(_Message):
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
        _write_cts(w, self.ciphertexts, _RCT, ROBUST_CIPHERTEXT_BYTES)

    @classmethod
    def _read_body(cls, r: Reader, h: Header) -> Self:
        return cls(
            run_id=h.run_id,
            round=h.round,
            sender=h.sender,
            mask_key=r.fixed(KEY_BYTES),
            commitment=r.fixed(KEY_BYTES),
            ciphertexts=_read_cts(r, _RCT),
        )

    @classmethod
    def records_from_bytes(
        cls, data: bytes, *, run_id: int, round: int, sender: int
    ) -> tuple[bytes, bytes, np.ndarray]:
        """Server-side reader: ``(mask_key, commitment, ROBUST_CT_DTYPE records)``.

        Raises:
            ProtocolAbort: as :meth:`from_bytes`.
        """
        ctx = {"run_id": run_id, "round": round, "sender": sender}
        try:
            body = cls._fast_body(data, **ctx)
            cts, end = _take_records(body, 2 * KEY_BYTES, ROBUST_CT_DTYPE)
            if end != len(body):
                raise _Slow
        except _Slow:
            raise cls._refuse(data, **ctx) from None
        return bytes(body[:KEY_BYTES]), bytes(body[KEY_BYTES : 2 * KEY_BYTES]), cts


@dataclass(frozen=True, kw_only=True)
class RobustMaskedInputRequest(_Message):
    """Server -> node (robust mode, exchange 2): the ciphertexts addressed to the node
    by the neighbours that shared keys (``peer`` = sender). Exactly those neighbours are
    masked with."""

    STAGE = Stage.ROBUST_MASKED_INPUT
    KIND = REQUEST
    recipient: int
    ciphertexts: tuple[ShareCiphertext, ...]

    def _write_body(self, w: Writer) -> None:
        w.u64(self.recipient)
        _write_cts(w, self.ciphertexts, _RCT, ROBUST_CIPHERTEXT_BYTES)

    @classmethod
    def _read_body(cls, r: Reader, h: Header) -> Self:
        return cls(
            run_id=h.run_id,
            round=h.round,
            sender=h.sender,
            recipient=r.u64(),
            ciphertexts=_read_cts(r, _RCT),
        )

    @classmethod
    def encode_records(
        cls, *, run_id: int, round: int, recipient: int, records: np.ndarray
    ) -> bytes:
        """``to_bytes`` of the request whose ciphertexts are ``records`` (ROBUST_CT_DTYPE)."""
        return b"".join(
            (
                cls.header_bytes(run_id=run_id, round=round, sender=SERVER_ID),
                _U64.pack(recipient),
                _U32.pack(len(records)),
                records.tobytes(),
            )
        )


@dataclass(frozen=True, kw_only=True)
class RobustMaskedInputReply(_Message):
    """Node -> server (robust mode): the masked vector only (shares went before)."""

    STAGE = Stage.ROBUST_MASKED_INPUT
    KIND = REPLY
    masked: bytes | memoryview

    def vector(self) -> np.ndarray:
        """The masked vector as a read-only ``uint32`` array (no copy)."""
        if len(self.masked) % 4:
            raise ProtocolAbort("masked vector length is not a multiple of 4 bytes")
        return np.frombuffer(self.masked, dtype="<u4")

    def _write_body(self, w: Writer) -> None:
        w.blob(self.masked)

    @classmethod
    def _read_body(cls, r: Reader, h: Header) -> Self:
        return cls(run_id=h.run_id, round=h.round, sender=h.sender, masked=r.blob_view())

    @classmethod
    def records_from_bytes(
        cls, data: bytes, *, run_id: int, round: int, sender: int
    ) -> np.ndarray:
        """Server-side reader: the masked uint32 vector (zero-copy).

        Raises:
            ProtocolAbort: as :meth:`from_bytes`.
        """
        ctx = {"run_id": run_id, "round": round, "sender": sender}
        try:
            body = cls._fast_body(data, **ctx)
            if len(body) < 4:
                raise _Slow
            (size,) = _U32.unpack_from(body, 0)
            if 4 + size != len(body) or size % 4:
                raise _Slow
        except _Slow:
            raise cls._refuse(data, **ctx) from None
        return np.frombuffer(body[4:], dtype="<u4")


@dataclass(frozen=True, kw_only=True)
class RobustUnmaskRequest(_Message):
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
    def _read_body(cls, r: Reader, h: Header) -> Self:
        return cls(
            run_id=h.run_id,
            round=h.round,
            sender=h.sender,
            recipient=r.u64(),
            survivors=r.ids(),
            dropped=r.ids(),
        )


@dataclass(frozen=True, kw_only=True)
class RobustUnmaskReply(_Message):
    """Node -> server (robust mode): b-shares of surviving neighbours, mask-key shares
    of dropped ones (never both for one neighbour)."""

    STAGE = Stage.ROBUST_UNMASK
    KIND = REPLY
    self_mask_shares: tuple[tuple[int, bytes], ...]
    key_shares: tuple[tuple[int, bytes], ...]

    def _write_body(self, w: Writer) -> None:
        _check_sizes(*[(v, SHARE_BYTES) for _, v in self.self_mask_shares])
        _check_sizes(*[(v, SHARE_BYTES) for _, v in self.key_shares])
        w.records(_SHARE, self.self_mask_shares)
        w.records(_SHARE, self.key_shares)

    @classmethod
    def _read_body(cls, r: Reader, h: Header) -> Self:
        shares = tuple((int(o), bytes(v)) for o, v in r.records(_SHARE, MAX_COHORT))
        keys = tuple((int(o), bytes(v)) for o, v in r.records(_SHARE, MAX_COHORT))
        return cls(
            run_id=h.run_id,
            round=h.round,
            sender=h.sender,
            self_mask_shares=shares,
            key_shares=keys,
        )

    @classmethod
    def records_from_bytes(
        cls, data: bytes, *, run_id: int, round: int, sender: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Server-side reader: ``(b-share records, key-share records)`` (SHARE_DTYPE).

        Raises:
            ProtocolAbort: as :meth:`from_bytes`.
        """
        ctx = {"run_id": run_id, "round": round, "sender": sender}
        try:
            body = cls._fast_body(data, **ctx)
            shares, pos = _take_records(body, 0, SHARE_DTYPE)
            keys, pos = _take_records(body, pos, SHARE_DTYPE)
            if pos != len(body):
                raise _Slow
        except _Slow:
            raise cls._refuse(data, **ctx) from None
        return shares, keys

    @classmethod
    def raw_records(
        cls, data: bytes, *, run_id: int, round: int, sender: int
    ) -> tuple[bytes, int, bytes, int]:
        """Server-side reader: the b-share block and its count, the key-share block
        and its count (41-byte records each), as bytes.

        Raises:
            ProtocolAbort: as :meth:`from_bytes`.
        """
        return _two_blocks(
            cls, data, _SHARE.size, _SHARE.size, run_id=run_id, round=round, sender=sender
        )
