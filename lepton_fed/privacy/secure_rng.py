"""A cryptographically secure random source for DP noise and Poisson sampling.

:class:`CryptoRandom` is a stream cipher keystream (ChaCha20, or AES-256-CTR where the
OpenSSL build lacks ChaCha20, e.g. in FIPS mode) from the ``cryptography`` package,
keyed with 256 bits from ``os.urandom`` and re-keyed from ``os.urandom`` every
:data:`REKEY_BYTES`. It replaces ``torchcsprng``, which Opacus's ``secure_mode`` needs
and which has no build for torch 2.x.

Guarantees:

* **Unpredictable.** Nothing about the output depends on a seed, a config, the time
  or the process: a party that knows all of those (the server, other members) and
  sees any amount of output cannot predict further output or recover earlier output
  unless it breaks the cipher. No constructor takes a key or a seed.
* **Exact uniforms.** :meth:`CryptoRandom.uniform` returns ``k / 2**53`` for ``k``
  uniform on ``[0, 2**53)`` (the top 53 bits of a keystream word), so ``u < q`` is a
  Bernoulli(q) draw exact up to rounding ``q`` to a multiple of ``2**-53``.
* **Normals.** :meth:`CryptoRandom.standard_normal` is Box-Muller on those uniforms in
  float64 (``u1`` taken in ``(0, 1]`` so the log is finite); its tail is cut at
  ``sqrt(2 * 53 * ln 2) ~= 8.57`` (probability ~1e-17 per draw for the exact normal).
  :meth:`CryptoRandom.fp_safe_normal` is the sum of ``2n = 4`` such normals divided by
  ``sqrt(2n) = 2``: Opacus's ``secure_mode`` recipe (``opacus.optimizers.optimizer.
  _generate_noise``), which defeats the floating-point attacks on a single Gaussian
  sample (Mironov 2012; arXiv:2107.10138 section 5.1; arXiv:2112.05307): the attack
  cost grows from about ``2**53`` to ``2**159``.

Thread safety: one instance must not be shared between threads without a lock
(the keystream position is state). Forked processes must build their own instance
(a copied instance would repeat the parent's keystream); :meth:`CryptoRandom.random_bytes`
re-keys automatically when it notices that the process id changed.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable

import torch
from cryptography.hazmat.primitives.ciphers import CipherContext

__all__ = ["REKEY_BYTES", "CryptoRandom"]

#: Keystream bytes drawn under one key before a fresh key is taken from the OS
#: (1 GiB: far below ChaCha20's 2**32-block counter and AES-CTR's birthday bound).
REKEY_BYTES = 1 << 30

_MASK53 = (1 << 53) - 1
_TWO_M53 = 2.0**-53
#: Values per keystream call: keeps the temporaries of one chunk in cache (measured:
#: 200k normals in one piece took 4x longer than in 32k chunks on a loaded host).
_CHUNK = 32768
_ZEROS = memoryview(bytes(8 * _CHUNK))


def _encryptor(key: bytes, nonce: bytes, cipher: str) -> CipherContext:
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    if cipher == "chacha20":
        return Cipher(algorithms.ChaCha20(key, nonce), mode=None).encryptor()
    return Cipher(algorithms.AES(key), modes.CTR(nonce)).encryptor()


def _fresh_nonce(cipher: str) -> bytes:
    """A 16-byte nonce / initial counter block for a fresh key.

    ChaCha20 (cryptography/OpenSSL layout): a 4-byte little-endian block counter,
    started at 0 so that 2**32 blocks (256 GiB) fit before it would overflow (a random
    start could overflow after a few bytes), then a 12-byte random nonce. AES-CTR: a
    random 128-bit counter block (incremented modulo 2**128, no overflow error).
    """
    return bytes(4) + os.urandom(12) if cipher == "chacha20" else os.urandom(16)


def _default_cipher() -> str:
    from cryptography.exceptions import UnsupportedAlgorithm

    try:
        _encryptor(bytes(32), bytes(16), "chacha20")
    except UnsupportedAlgorithm:  # pragma: no cover - FIPS-mode OpenSSL only
        return "aes256-ctr"
    return "chacha20"


class CryptoRandom:
    """Keystream-based CSPRNG keyed from ``os.urandom`` (see the module docstring).

    Args:
        cipher: ``"chacha20"``, ``"aes256-ctr"`` or ``None`` (ChaCha20 where the
            OpenSSL build offers it, else AES-256-CTR).

    Raises:
        ValueError: an unknown cipher name.
    """

    CIPHERS = ("chacha20", "aes256-ctr")

    def __init__(self, cipher: str | None = None) -> None:
        if cipher is not None and cipher not in self.CIPHERS:
            raise ValueError(f"cipher must be one of {list(self.CIPHERS)}; got {cipher!r}")
        self.cipher = cipher or _default_cipher()
        self._rekey()

    def _rekey(self) -> None:
        self._enc = _encryptor(os.urandom(32), _fresh_nonce(self.cipher), self.cipher)
        self._used = 0
        self._pid = os.getpid()

    def random_bytes(self, n: int) -> bytes:
        """``n`` keystream bytes (``n >= 0``)."""
        if n < 0:
            raise ValueError(f"n must be >= 0; got {n}")
        return b"".join(self._keystream(_ZEROS[: min(n - i, len(_ZEROS))])
                        for i in range(0, n, len(_ZEROS)))

    def _keystream(self, zeros: memoryview) -> bytes:
        if self._used + len(zeros) > REKEY_BYTES or os.getpid() != self._pid:
            self._rekey()
        self._used += len(zeros)
        return self._enc.update(zeros)

    def _words53(self, n: int) -> torch.Tensor:
        """``n <= _CHUNK`` integers uniform on ``[0, 2**53)`` (int64)."""
        raw = torch.frombuffer(bytearray(self._keystream(_ZEROS[: 8 * n])), dtype=torch.int64)
        return (raw >> 11) & _MASK53  # the word's top 53 bits (mask undoes sign fill)

    def _uniform_chunk(self, n: int) -> torch.Tensor:
        return self._words53(n).to(torch.float64).mul_(_TWO_M53)

    def _normal_chunk(self, n: int) -> torch.Tensor:
        pairs = (n + 1) // 2
        u = self._uniform_chunk(2 * pairs)
        r = torch.log1p(u[:pairs].neg()).mul_(-2.0).sqrt_()  # ln(1 - u), 1 - u in (0, 1]
        theta = u[pairs:].mul_(2.0 * math.pi)
        return torch.cat((r * torch.cos(theta), r * torch.sin(theta)))[:n]

    def _fp_safe_chunk(self, n: int) -> torch.Tensor:
        return self._normal_chunk(4 * n).view(4, n).sum(dim=0).mul_(0.5)

    def _fill(self, n: int, chunk: int, draw: Callable[[int], torch.Tensor]) -> torch.Tensor:
        out = torch.empty(n, dtype=torch.float64)
        for i in range(0, n, chunk):
            m = min(chunk, n - i)
            out[i : i + m] = draw(m)
        return out

    def uniform(self, n: int) -> torch.Tensor:
        """``n`` float64 values ``k / 2**53``, ``k`` uniform on ``[0, 2**53)``."""
        return self._fill(n, _CHUNK, self._uniform_chunk)

    def standard_normal(self, n: int) -> torch.Tensor:
        """``n`` float64 N(0, 1) draws (Box-Muller, both outputs used)."""
        return self._fill(n, _CHUNK, self._normal_chunk)

    def fp_safe_normal(self, n: int) -> torch.Tensor:
        """``n`` float64 N(0, 1) draws hardened against floating-point attacks.

        Each value is ``(z1 + z2 + z3 + z4) / 2`` for four independent
        :meth:`standard_normal` draws (Opacus's ``secure_mode`` recipe, n = 2), 4x the
        cost of :meth:`standard_normal`.
        """
        return self._fill(n, _CHUNK // 4, self._fp_safe_chunk)
