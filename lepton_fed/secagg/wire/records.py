"""Record types inside message bodies (keys, signatures, share ciphertexts, shares, seeds) and
their fixed-size layouts, as ``struct`` formats and numpy dtypes.

Package-private to :mod:`lepton_fed.secagg.wire`, which re-exports the public
names.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from lepton_fed.secagg.keys import KEY_BYTES, NONCE_BYTES, SIGNATURE_BYTES
from lepton_fed.secagg.shamir import SHARE_BYTES
from lepton_fed.secagg.wire.binary import Reader, Writer
from lepton_fed.secagg.wire.codec import MAX_COHORT

__all__ = [
    "CIPHERTEXT_BYTES",
    "CT",
    "CT_DTYPE",
    "MEMBER",
    "ROUND_KEY",
    "SEED",
    "SHARE",
    "SHARE_DTYPE",
    "SIGNATURE",
    "SIGNATURE_DTYPE",
    "MemberKey",
    "RoundKey",
    "ShareCiphertext",
    "check_sizes",
    "cts_of",
    "read_cts",
    "write_cts",
]


@dataclass(frozen=True, kw_only=True)
class RoundKey:
    """One advertised per-round X25519 public key and its Ed25519 signature."""

    public_key: bytes
    signature: bytes


class MemberKey(NamedTuple):
    """A cohort member's identity key and round public key, as relayed by the server
    (one per cohort member, in cohort order; the graph seed is their hash)."""

    identity_key: bytes
    round_key: bytes


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
CT = struct.Struct(f"<Q{NONCE_BYTES}s{CIPHERTEXT_BYTES}s")

SHARE = struct.Struct(f"<Q{SHARE_BYTES}s")
SEED = struct.Struct(f"<Q{KEY_BYTES}s")
ROUND_KEY = struct.Struct(f"<{KEY_BYTES}s{SIGNATURE_BYTES}s")
MEMBER = struct.Struct(f"<{KEY_BYTES}s{KEY_BYTES}s")
SIGNATURE = struct.Struct(f"<Q{SIGNATURE_BYTES}s")

#: numpy views of the record blocks (fields ``V`` keep trailing zero bytes).
CT_DTYPE = np.dtype(
    [("peer", "<u8"), ("nonce", f"V{NONCE_BYTES}"), ("data", f"V{CIPHERTEXT_BYTES}")]
)
SIGNATURE_DTYPE = np.dtype([("node", "<u8"), ("signature", f"V{SIGNATURE_BYTES}")])
SHARE_DTYPE = np.dtype([("owner", "<u8"), ("value", f"V{SHARE_BYTES}")])
assert CT_DTYPE.itemsize == CT.size and SIGNATURE_DTYPE.itemsize == SIGNATURE.size
assert SHARE_DTYPE.itemsize == SHARE.size


def check_sizes(*pairs: tuple[bytes, int]) -> None:
    """Each ``(data, size)`` has ``len(data) == size``.

    Raises:
        ValueError: a field of another size (the message cannot be encoded).
    """
    for data, size in pairs:
        if len(data) != size:
            raise ValueError(f"expected a {size}-byte field, got {len(data)} bytes")


def write_cts(w: Writer, cts: tuple[ShareCiphertext, ...]) -> None:
    """A block of share ciphertexts (:data:`CT` records)."""
    for c in cts:
        check_sizes((c.nonce, NONCE_BYTES), (c.data, CIPHERTEXT_BYTES))
    w.records(CT, cts)


def read_cts(r: Reader) -> tuple[ShareCiphertext, ...]:
    """Inverse of :func:`write_cts`."""
    return cts_of(r.block(CT_DTYPE, MAX_COHORT))


def cts_of(records: np.ndarray) -> tuple[ShareCiphertext, ...]:
    """:data:`CT_DTYPE` records as :class:`ShareCiphertext` tuples."""
    return tuple(map(ShareCiphertext._make, CT.iter_unpack(records.tobytes())))
