"""Little-endian binary writer/reader for secagg messages and client state.

Every read is bounds-checked; a truncated or over-long buffer raises
:class:`~lepton_fed.errors.ProtocolAbort`, never ``struct.error`` or ``IndexError``.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from lepton_fed.errors import ProtocolAbort

__all__ = ["MAX_U32", "MAX_U64", "Reader", "Writer"]

MAX_U32 = 2**32 - 1
MAX_U64 = 2**64 - 1

_U8 = struct.Struct("<B")
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_F64 = struct.Struct("<d")
_BUFFERS = (bytes, bytearray, memoryview)  # a tuple: isinstance is faster than on a union


class Writer:
    """Accumulates fields; :meth:`getvalue` joins them once (large blobs are not copied twice)."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def u8(self, value: int) -> None:
        """Writes one unsigned byte."""
        self._parts.append(_U8.pack(value))

    def u32(self, value: int) -> None:
        """Writes a little-endian u32."""
        self._parts.append(_U32.pack(value))

    def u64(self, value: int) -> None:
        """Writes a little-endian u64."""
        self._parts.append(_U64.pack(value))

    def f64(self, value: float) -> None:
        """Writes a little-endian IEEE 754 double."""
        self._parts.append(_F64.pack(value))

    def fixed(self, data: bytes, size: int) -> None:
        """Writes exactly ``size`` bytes (no length prefix)."""
        if len(data) != size:
            raise ValueError(f"expected {size} bytes, got {len(data)}")
        self._parts.append(bytes(data))

    def blob(self, data: bytes | memoryview) -> None:
        """Writes a u32 length prefix, then the bytes."""
        if len(data) > MAX_U32:
            raise ValueError("blob longer than 2**32 - 1 bytes")
        self._parts.append(_U32.pack(len(data)))
        self._parts.append(bytes(data))

    def ids(self, values: Iterable[int]) -> None:
        """Writes a u32 count, then u64 node ids."""
        vals = list(values)
        self.u32(len(vals))
        self._parts.append(struct.pack(f"<{len(vals)}Q", *vals))

    def records(self, fmt: struct.Struct, rows: Sequence[tuple[Any, ...]]) -> None:
        """Writes a u32 count, then one fixed-size ``fmt`` record per row.

        ``struct`` silently pads or truncates ``s`` fields, so callers must check
        byte-string lengths first (the message classes do).
        """
        self.u32(len(rows))
        self._parts.append(b"".join(fmt.pack(*row) for row in rows))

    def getvalue(self) -> bytes:
        """The fields written so far, joined."""
        return b"".join(self._parts)


class Reader:
    """Reads fields written by :class:`Writer`; raises ``ProtocolAbort`` on malformed input."""

    def __init__(self, data: bytes, what: str = "message") -> None:
        if not isinstance(data, _BUFFERS):
            raise ProtocolAbort(f"{what} must be bytes, got {type(data).__name__}")
        view = memoryview(data)
        plain = view.format == "B" and view.ndim == 1 and view.c_contiguous
        self._data = view if plain else view.cast("B")
        self._pos = 0
        self._what = what

    def _take(self, size: int) -> memoryview:
        end = self._pos + size
        if size < 0 or end > len(self._data):
            raise ProtocolAbort(f"truncated {self._what}")
        view = self._data[self._pos : end]
        self._pos = end
        return view

    def unpack(self, fmt: struct.Struct) -> tuple[Any, ...]:
        """Reads one fixed-size ``fmt`` record (one ``struct`` call, no slice)."""
        pos = self._pos
        end = pos + fmt.size
        if end > len(self._data):
            raise ProtocolAbort(f"truncated {self._what}")
        self._pos = end
        return fmt.unpack_from(self._data, pos)

    def u8(self) -> int:
        """Reads one unsigned byte."""
        return int(self.unpack(_U8)[0])

    def u32(self) -> int:
        """Reads a little-endian u32."""
        return int(self.unpack(_U32)[0])

    def u64(self) -> int:
        """Reads a little-endian u64."""
        return int(self.unpack(_U64)[0])

    def f64(self) -> float:
        """Reads a little-endian IEEE 754 double."""
        return float(self.unpack(_F64)[0])

    def fixed(self, size: int) -> bytes:
        """Reads exactly ``size`` bytes (no length prefix)."""
        return bytes(self._take(size))

    def blob(self) -> bytes:
        """Reads a u32 length prefix, then that many bytes."""
        return bytes(self._take(self.u32()))

    def blob_view(self) -> memoryview:
        """Like :meth:`blob` but returns a zero-copy view into the input buffer."""
        return self._take(self.u32())

    def ids(self) -> tuple[int, ...]:
        """Reads a u32 count, then that many u64 node ids."""
        count = self.u32()
        raw = self._take(8 * count)
        return tuple(int(v) for v in struct.unpack(f"<{count}Q", raw))

    def block(self, dtype: np.dtype, max_items: int) -> np.ndarray:
        """Reads a u32 count, then that many ``dtype`` records, as a read-only numpy
        view into the input buffer (no copy, no Python object per record)."""
        n = self.count(max_items)
        pos, end = self._pos, self._pos + dtype.itemsize * n
        if end > len(self._data):
            raise ProtocolAbort(f"truncated {self._what}")
        self._pos = end
        return np.frombuffer(self._data, dtype=dtype, count=n, offset=pos)

    def raw_block(self, size: int, max_items: int) -> bytes:
        """Reads a u32 count, then that many ``size``-byte records, as one bytes
        object (for readers that index records themselves)."""
        n = self.count(max_items)
        return bytes(self._take(size * n))

    def records(self, fmt: struct.Struct, max_items: int) -> list[tuple[Any, ...]]:
        """Reads a u32 count, then that many fixed-size ``fmt`` records (in C)."""
        n = self.count(max_items)
        return list(fmt.iter_unpack(self._take(fmt.size * n)))

    def count(self, max_items: int) -> int:
        """Reads a u32 item count and refuses counts above ``max_items``."""
        n = self.u32()
        if n > max_items:
            raise ProtocolAbort(
                f"{self._what}: {n} items exceeds the limit {max_items}"
            )
        return n

    def done(self) -> None:
        """Raises if bytes remain (trailing data is never ignored)."""
        if self._pos != len(self._data):
            raise ProtocolAbort(
                f"{len(self._data) - self._pos} trailing bytes in {self._what}"
            )
