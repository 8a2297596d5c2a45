"""The message header and the base class of every message (encoding and decoding).

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
    "ids_bytes",
    "masked_vector",
    "peek_header",
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
    #: version, stage, kind and reserved byte of the header (set per subclass)
    _PREFIX: ClassVar[tuple[int, int, int, int]]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._PREFIX = (WIRE_VERSION, int(cls.STAGE), cls.KIND, 0)

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
    def _decode(
        cls,
        data: bytes,
        parse: Callable[[Reader], _T],
        *,
        run_id: int | None,
        round: int | None,
        sender: int | None,
    ) -> tuple[tuple[int, ...], _T]:
        """The header (checked in one ``struct`` call) and ``parse`` of the body, which
        must consume it exactly: the one decoding path of every message.

        Raises:
            ProtocolAbort: as :meth:`from_bytes`.
        """
        r = Reader(data, cls.__name__)
        try:
            head = r.unpack(_HEADER)
        except ProtocolAbort:
            head = ()
        if (
            head[:4] != cls._PREFIX
            or (run_id is not None and head[4] != run_id)
            or (round is not None and head[5] != round)
            or (sender is not None and head[6] != sender)
        ):
            raise cls._header_refusal(data, run_id=run_id, round=round, sender=sender)
        out = parse(r)
        r.done()
        return head, out

    @classmethod
    def _header_refusal(
        cls,
        data: bytes,
        *,
        run_id: int | None,
        round: int | None,
        sender: int | None,
    ) -> ProtocolAbort:
        """Why the header of ``data`` is refused, field by field in wire order (only
        reached when the one-call check failed)."""
        try:
            h = _read_header(Reader(data, cls.__name__))
        except ProtocolAbort as exc:
            return exc
        if h.stage != cls.STAGE or h.kind != cls.KIND:
            return ProtocolAbort(
                f"expected a {cls.__name__}, got stage {h.stage.name} kind {h.kind}"
            )
        for name, want, got in (
            ("run", run_id, h.run_id),
            ("round", round, h.round),
            ("sender", sender, h.sender),
        ):
            if want is not None and want != got:
                return ProtocolAbort(f"{cls.__name__} for {name} {got}, expected {want}")
        return ProtocolAbort(f"malformed {cls.__name__} header")  # pragma: no cover

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
        head, fields = cls._decode(
            data, cls._read_fields, run_id=run_id, round=round, sender=sender
        )
        return cls(run_id=head[4], round=head[5], sender=head[6], **fields)


def masked_vector(masked: bytes | memoryview) -> np.ndarray:
    """A masked vector as a read-only ``uint32`` array (no copy).

    Raises:
        ProtocolAbort: a length that is not a multiple of 4 bytes.
    """
    if len(masked) % 4:
        raise ProtocolAbort("masked vector length is not a multiple of 4 bytes")
    return np.frombuffer(masked, dtype="<u4")


def ids_bytes(ids: Sequence[int]) -> bytes:
    """The wire encoding of a list of node ids (u32 count, u64 ids)."""
    return struct.pack(f"<I{len(ids)}Q", len(ids), *ids)
