"""The message header, the base class of every message, and the fast-reader helpers.

Package-private to :mod:`lepton_fed.secagg.wire`, whose docstring describes the
layout.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Self, TypeVar

import numpy as np

from lepton_fed.errors import ProtocolAbort
from lepton_fed.secagg.stages import Stage
from lepton_fed.secagg.wire.binary import MAX_U64, Reader, Writer

__all__ = [
    "HEADER_BYTES",
    "MAX_COHORT",
    "MAX_ROUNDS_PER_ADVERT",
    "REPLY",
    "REQUEST",
    "SERVER_ID",
    "U32",
    "U64",
    "WIRE_VERSION",
    "Header",
    "Message",
    "Slow",
    "ids_bytes",
    "masked_vector",
    "peek_header",
    "take_records",
    "take_two",
    "two_raw_blocks",
]

#: 3: masked-input requests carry every cohort member's identity and round key, the
#: graph seed is their hash, and only the neighbours' signatures are relayed; the
#: 3-exchange mode and its stages 4-6 are gone. 2: 24-byte header with a reserved
#: byte (4-byte aligned masked vectors); 1: the 23-byte header. Only 3 is accepted.
WIRE_VERSION = 3
REQUEST = 0
REPLY = 1
#: Sender id of every server request; node ids must be below it.
SERVER_ID = MAX_U64
MAX_COHORT = 1 << 20
MAX_ROUNDS_PER_ADVERT = 1 << 16
_HEADER_WHAT = "secagg message"
_HEADER = struct.Struct("<BBBBQIQ")
HEADER_BYTES = _HEADER.size  # 24
U32 = struct.Struct("<I")
U64 = struct.Struct("<Q")

_T = TypeVar("_T")


class Slow(Exception):
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
class Message:
    """Base of every message: the header fields, the encoding and the checks.

    A subclass sets ``STAGE`` and ``KIND``, declares its body fields, and writes and
    reads them in :meth:`_write_body` and :meth:`_read_fields`.
    """

    STAGE: ClassVar[Stage]
    KIND: ClassVar[int]

    run_id: int
    round: int
    sender: int

    def to_bytes(self) -> bytes:
        """Versioned encoding (see the package docstring)."""
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
    def _read_fields(cls, r: Reader) -> dict[str, Any]:
        """The body fields, read in wire order."""
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
            Slow: anything unexpected (the caller re-parses with ``from_bytes``).
        """
        try:
            mv = memoryview(data).cast("B")
            head = _HEADER.unpack_from(mv, 0)
        except (TypeError, ValueError, struct.error):
            raise Slow from None
        if head != (WIRE_VERSION, int(cls.STAGE), cls.KIND, 0, run_id, round, sender):
            raise Slow
        return mv[HEADER_BYTES:]

    @classmethod
    def _fast_read(
        cls,
        data: bytes,
        parse: Callable[[memoryview], _T],
        *,
        run_id: int,
        round: int,
        sender: int,
    ) -> _T:
        """``parse(body)`` after a fast header check; the ``from_bytes`` refusal when
        the header or ``parse`` meets anything unexpected (:class:`Slow`).

        Raises:
            ProtocolAbort: as :meth:`from_bytes`.
        """
        ctx = {"run_id": run_id, "round": round, "sender": sender}
        try:
            return parse(cls._fast_body(data, **ctx))
        except Slow:
            raise cls._refuse(data, **ctx) from None

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
        msg = cls(
            run_id=h.run_id, round=h.round, sender=h.sender, **cls._read_fields(r)
        )
        r.done()
        return msg


def masked_vector(masked: bytes | memoryview) -> np.ndarray:
    """A masked vector as a read-only ``uint32`` array (no copy).

    Raises:
        ProtocolAbort: a length that is not a multiple of 4 bytes.
    """
    if len(masked) % 4:
        raise ProtocolAbort("masked vector length is not a multiple of 4 bytes")
    return np.frombuffer(masked, dtype="<u4")


def _block(body: memoryview, pos: int, size: int) -> tuple[int, int, int]:
    """A u32 count at ``pos`` then ``count`` records of ``size`` bytes:
    ``(start, count, end)`` of the records."""
    if pos + 4 > len(body):
        raise Slow
    (count,) = U32.unpack_from(body, pos)
    end = pos + 4 + count * size
    if count > MAX_COHORT or end > len(body):
        raise Slow
    return pos + 4, count, end


def take_records(body: memoryview, pos: int, dtype: np.dtype) -> tuple[np.ndarray, int]:
    """A u32 count then ``count`` records of ``dtype``, as a zero-copy array."""
    start, _, end = _block(body, pos, dtype.itemsize)
    return np.frombuffer(body[start:end], dtype=dtype), end


def take_two(
    body: memoryview, first: np.dtype, second: np.dtype
) -> tuple[np.ndarray, np.ndarray]:
    """A body of exactly two record blocks, as zero-copy arrays."""
    a, pos = take_records(body, 0, first)
    b, pos = take_records(body, pos, second)
    if pos != len(body):
        raise Slow
    return a, b


def two_raw_blocks(
    body: memoryview, first: int, second: int
) -> tuple[bytes, int, bytes, int]:
    """A body of exactly two blocks of ``first``- and ``second``-byte records:
    ``(block, count, block, count)``, as bytes."""
    a0, na, pos = _block(body, 0, first)
    b0, nb, end = _block(body, pos, second)
    if end != len(body):
        raise Slow
    return bytes(body[a0:pos]), na, bytes(body[b0:end]), nb


def ids_bytes(ids: Sequence[int]) -> bytes:
    """The wire encoding of a list of node ids (u32 count, u64 ids)."""
    return struct.pack(f"<I{len(ids)}Q", len(ids), *ids)
