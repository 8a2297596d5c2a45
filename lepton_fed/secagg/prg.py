"""Cryptographic PRG: expands a 32-byte seed into a uint32 mask vector in Z_M.

The generator is the ChaCha20 keystream (RFC 8439) with the seed as key, block
counter 0 and an all-zero nonce, read as little-endian uint32 words. Every seed is
single-use by construction (each comes out of HKDF bound to run, round and purpose,
see :mod:`lepton_fed.secagg.keys`), so the fixed nonce never repeats under one key.

Guarantee: for a uniformly random seed the output is computationally
indistinguishable from uniform over Z_M^d (M = 2^bits, bits <= 32; masking the
uint32 words with M-1 keeps them exactly uniform because M divides 2^32). This is
the property Flower's 32-bit-seeded numpy ``RandomState`` lacks (flower #7522).
"""

from __future__ import annotations

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

__all__ = ["SEED_BYTES", "MaskBuffer", "chacha20_keystream", "expand_mask"]

SEED_BYTES = 32
_ZERO_NONCE = bytes(
    16
)  # cryptography's ChaCha20 nonce = 4-byte LE counter || 12-byte nonce


def chacha20_keystream(
    key: bytes, num_bytes: int, *, nonce16: bytes = _ZERO_NONCE
) -> bytes:
    """Raw ChaCha20 keystream (``cryptography``'s 16-byte counter||nonce convention).

    Args:
        key: 32-byte key.
        num_bytes: keystream length.
        nonce16: initial 4-byte little-endian block counter followed by the 12-byte
            RFC 8439 nonce.

    Raises:
        ValueError: wrong key/nonce length or negative length.
    """
    if len(key) != SEED_BYTES:
        raise ValueError(f"ChaCha20 key must be {SEED_BYTES} bytes, got {len(key)}")
    if len(nonce16) != 16:
        raise ValueError("nonce16 must be 16 bytes")
    if num_bytes < 0:
        raise ValueError(f"num_bytes must be >= 0, got {num_bytes}")
    encryptor = Cipher(
        algorithms.ChaCha20(bytes(key), bytes(nonce16)), mode=None
    ).encryptor()
    return encryptor.update(bytes(num_bytes))


def expand_mask(seed: bytes, length: int, *, bits: int = 32) -> np.ndarray:
    """Expands ``seed`` into ``length`` pseudo-random elements of Z_{2^bits}.

    Args:
        seed: 32-byte seed (an HKDF output; never a raw DH secret).
        length: number of elements.
        bits: field size exponent, 1 <= bits <= 32.

    Returns:
        A read-only ``uint32`` array of shape ``(length,)`` (a view on the keystream,
        no copy when ``bits == 32``).

    Raises:
        ValueError: bad seed length, negative length, or ``bits`` out of range.
    """
    if not 1 <= bits <= 32:
        raise ValueError(f"bits must be in [1, 32], got {bits}")
    words = np.frombuffer(chacha20_keystream(seed, 4 * length), dtype="<u4")
    if bits < 32:
        words = words & np.uint32((1 << bits) - 1)
    return words


class MaskBuffer:
    """Reusable buffers for expanding many masks of one length (no allocation per mask).

    ``expand(seed)`` writes ``expand_mask(seed, length, bits=bits)`` into one
    preallocated array (``update_into`` over a preallocated zero block) and returns that
    array, which the next call overwrites. The server expands one mask per contributor
    per round; skipping the two fresh ``4 * length``-byte allocations (and their page
    faults) per mask roughly halves the cost of an expansion at 100k parameters. Not
    thread-safe: use one buffer per thread.
    """

    def __init__(self, length: int, *, bits: int = 32) -> None:
        if length < 0:
            raise ValueError(f"length must be >= 0, got {length}")
        if not 1 <= bits <= 32:
            raise ValueError(f"bits must be in [1, 32], got {bits}")
        self.length = length
        self.bits = bits
        self._zeros = bytes(4 * length)
        self._out = bytearray(4 * length)
        self.words: np.ndarray = np.frombuffer(self._out, dtype="<u4")

    def expand(self, seed: bytes) -> np.ndarray:
        """The mask of ``seed`` (valid until the next call)."""
        if len(seed) != SEED_BYTES:
            raise ValueError(f"ChaCha20 key must be {SEED_BYTES} bytes, got {len(seed)}")
        encryptor = Cipher(algorithms.ChaCha20(seed, _ZERO_NONCE), mode=None).encryptor()
        encryptor.update_into(self._zeros, self._out)
        if self.bits < 32:
            np.bitwise_and(self.words, np.uint32((1 << self.bits) - 1), out=self.words)
        return self.words
