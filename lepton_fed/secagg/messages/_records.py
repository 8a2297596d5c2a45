"""Record types inside message bodies (keys, share ciphertexts, shares, seeds) and
their fixed-size layouts, as ``struct`` formats and numpy dtypes.

Package-private to :mod:`lepton_fed.secagg.messages`, which re-exports the public
names.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from lepton_fed.secagg._wire import Reader, Writer
from lepton_fed.secagg.keys import KEY_BYTES, NONCE_BYTES, SIGNATURE_BYTES
from lepton_fed.secagg.messages._codec import MAX_COHORT
from lepton_fed.secagg.shamir import SHARE_BYTES

__all__ = [
    "CIPHERTEXT_BYTES",
    "CT",
    "CT_DTYPE",
    "NEIGHBOUR_KEY",
    "RCT",
    "ROBUST_CIPHERTEXT_BYTES",
    "ROBUST_CT_DTYPE",
    "ROUND_KEY",
    "SEED",
    "SEED_DTYPE",
    "SHARE",
    "SHARE_DTYPE",
    "NeighbourKey",
    "RoundKey",
    "ShareCiphertext",
    "check_sizes",
    "read_cts",
    "read_pairs",
    "write_cts",
]


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
CT = struct.Struct(f"<Q{NONCE_BYTES}s{CIPHERTEXT_BYTES}s")
#: Robust mode: mask public key (32) + b-share (33) + mask-key share (33) + tag (16).
ROBUST_CIPHERTEXT_BYTES = KEY_BYTES + 2 * SHARE_BYTES + 16
RCT = struct.Struct(f"<Q{NONCE_BYTES}s{ROBUST_CIPHERTEXT_BYTES}s")

SHARE = struct.Struct(f"<Q{SHARE_BYTES}s")
SEED = struct.Struct(f"<Q{KEY_BYTES}s")
ROUND_KEY = struct.Struct(f"<{KEY_BYTES}s{SIGNATURE_BYTES}s")
NEIGHBOUR_KEY = struct.Struct(f"<Q{KEY_BYTES}s{KEY_BYTES}s{SIGNATURE_BYTES}s")

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
SEED_DTYPE = np.dtype([("peer", "<u8"), ("seed", f"V{KEY_BYTES}")])
assert CT_DTYPE.itemsize == CT.size and ROBUST_CT_DTYPE.itemsize == RCT.size


def check_sizes(*pairs: tuple[bytes, int]) -> None:
    """Each ``(data, size)`` has ``len(data) == size``.

    Raises:
        ValueError: a field of another size (the message cannot be encoded).
    """
    for data, size in pairs:
        if len(data) != size:
            raise ValueError(f"expected a {size}-byte field, got {len(data)} bytes")


def write_cts(
    w: Writer,
    cts: tuple[ShareCiphertext, ...],
    fmt: struct.Struct = CT,
    size: int = CIPHERTEXT_BYTES,
) -> None:
    """A block of share ciphertexts (``fmt``: :data:`CT`, or :data:`RCT` in robust
    mode with ``size`` :data:`ROBUST_CIPHERTEXT_BYTES`)."""
    for c in cts:
        check_sizes((c.nonce, NONCE_BYTES), (c.data, size))
    w.records(fmt, cts)


def read_cts(r: Reader, fmt: struct.Struct = CT) -> tuple[ShareCiphertext, ...]:
    """Inverse of :func:`write_cts`."""
    return tuple(map(ShareCiphertext._make, r.records(fmt, MAX_COHORT)))


def read_pairs(r: Reader, fmt: struct.Struct) -> tuple[tuple[int, bytes], ...]:
    """A block of ``(node id, value)`` records (:data:`SHARE` or :data:`SEED`)."""
    return tuple((int(o), bytes(v)) for o, v in r.records(fmt, MAX_COHORT))
