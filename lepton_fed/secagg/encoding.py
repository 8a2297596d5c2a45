"""Fixed-point encoding of ``[weight * delta, weight]`` into Z_M, M = 2^bits.

Scale and overflow (checked at construction): with n = ``max_contributors`` and
B = floor((2^(bits-1) - 1) / n), every coordinate is encoded as a signed integer in
[-B, B] (value coordinates: ``round(weight * delta * B / clip)``; weight coordinate:
``round(weight * B)``), so the sum of n encodings lies in [-(2^(bits-1) - 1),
2^(bits-1) - 1] and decodes without wrap-around. A custom ``scale`` is accepted only
if ``ceil(scale * clip) <= B``.

Rounding is stochastic (floor(x + u), u uniform in [0, 1) on a 2^-32 grid), so each
encoded coordinate is unbiased up to 2^-32 of a step and off by less than one step.

Quantization error bound, per coordinate, for the decoded sum of c <= n contributions:
``|decoded_sum - exact_sum| < c / scale`` (= c * clip / B with the default scale) and
``|decoded_weight - exact_weight| < c / B``. With bits=32, n=c=100, clip=1 this is
< 4.7e-6; the typical (random-walk) error is about sqrt(c) / (2 * scale).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from lepton_fed.secagg.prg import SEED_BYTES, expand_mask

__all__ = ["FieldEncoding"]

_CLIP_TOLERANCE = 1e-6  # relative slack for float round-off in the caller's clipping


@dataclass(frozen=True, kw_only=True)
class FieldEncoding:
    """Encoding of clipped, weighted updates into Z_{2^bits}.

    Args:
        clip: every coordinate of ``delta`` lies in [-clip, clip].
        max_contributors: most vectors that will ever be summed (the round's cohort).
        bits: field size exponent, 2 <= bits <= 32.
        scale: value-coordinate scale; default ``B / clip``.

    Raises:
        ValueError: non-positive clip or contributors, bits out of range, or
            parameters under which a sum of ``max_contributors`` encodings could
            overflow Z_M.
    """

    clip: float
    max_contributors: int
    bits: int = 32
    scale: float | None = None
    bound: int = field(init=False)
    value_scale: float = field(init=False)

    def __post_init__(self) -> None:
        if not (math.isfinite(self.clip) and self.clip > 0):
            raise ValueError(f"clip must be a positive finite number, got {self.clip}")
        if self.max_contributors < 1:
            raise ValueError(
                f"max_contributors must be >= 1, got {self.max_contributors}"
            )
        if not 2 <= self.bits <= 32:
            raise ValueError(f"bits must be in [2, 32], got {self.bits}")
        bound = (2 ** (self.bits - 1) - 1) // self.max_contributors
        if bound < 1:
            raise ValueError(
                f"overflow possible: {self.max_contributors} contributors do not fit in "
                f"a {self.bits}-bit field"
            )
        scale = bound / self.clip if self.scale is None else float(self.scale)
        if not (math.isfinite(scale) and scale > 0):
            raise ValueError(
                f"scale must be a positive finite number, got {self.scale}"
            )
        if self.scale is not None and math.ceil(scale * self.clip) > bound:
            raise ValueError(
                f"overflow possible: scale {scale} * clip {self.clip} exceeds the per-"
                f"contributor bound {bound} for {self.max_contributors} contributors "
                f"in a {self.bits}-bit field"
            )
        object.__setattr__(self, "bound", bound)
        object.__setattr__(self, "value_scale", scale)

    @property
    def modulus(self) -> int:
        """M = 2^bits."""
        return 1 << self.bits

    @property
    def weight_scale(self) -> float:
        """Scale of the weight coordinate (weights lie in [0, 1])."""
        return float(self.bound)

    def error_bound(self, contributors: int | None = None) -> tuple[float, float]:
        """Worst-case absolute error of a decoded sum, per coordinate.

        Returns:
            ``(value_bound, weight_bound)``: strict upper bounds on the error of each
            summed value coordinate and of the summed weight, for ``contributors``
            vectors (default ``max_contributors``).
        """
        c = self.max_contributors if contributors is None else contributors
        return c / self.value_scale, c / self.weight_scale

    def encode(
        self,
        delta: np.ndarray,
        weight: float,
        *,
        rng_bytes: Callable[[int], bytes] = os.urandom,
    ) -> np.ndarray:
        """Encodes ``[weight * delta, weight]`` as ``uint32`` elements of Z_M.

        Args:
            delta: 1-D float array with every coordinate in [-clip, clip] (a relative
                slack of 1e-6 absorbs float round-off; the values are then clamped).
            weight: normalized example count in [0, 1]; it travels inside the vector
                (last coordinate) so the server never sees it alone.
            rng_bytes: randomness for stochastic rounding (32 bytes are drawn).

        Returns:
            ``uint32`` array of length ``len(delta) + 1``.

        Raises:
            ValueError: non-finite values, a coordinate beyond the clip, a weight
                outside [0, 1], or a non 1-D delta. The message starts with a code
                (``input_not_vector``, ``weight_out_of_range``, ``non_finite_input``,
                ``input_exceeds_clip``) and never contains a value, a position or a
                count derived from the input.
        """
        x = np.asarray(delta)
        if x.ndim != 1:
            raise ValueError("input_not_vector: delta must be a 1-D array")
        w = float(weight)
        if not (math.isfinite(w) and 0.0 <= w <= 1.0):
            raise ValueError("weight_out_of_range: the weight must be in [0, 1]")
        x = x.astype(np.float64, copy=True)
        if not np.isfinite(x).all():
            raise ValueError("non_finite_input: delta contains NaN or infinity")
        peak = float(np.max(np.abs(x))) if x.size else 0.0
        if peak > self.clip * (1 + _CLIP_TOLERANCE):
            raise ValueError(
                "input_exceeds_clip: a coordinate of delta exceeds the clip bound; "
                "clip the update before encoding"
            )
        np.clip(x, -self.clip, self.clip, out=x)
        d = x.size
        uniform = expand_mask(rng_bytes(SEED_BYTES), d + 1).astype(np.float64)
        uniform *= 2.0**-32
        limit = self.bound  # also absorbs float round-off of scale * clip
        x *= w * self.value_scale
        x += uniform[:d]
        np.floor(x, out=x)
        np.clip(x, -limit, limit, out=x)
        out = np.empty(d + 1, dtype=np.uint32)
        out[:d] = x.astype(np.int64).astype(np.uint32)
        out[d] = np.uint32(
            min(self.bound, math.floor(w * self.weight_scale + uniform[d]))
        )
        self.reduce(out)
        return out

    def reduce(self, y: np.ndarray) -> None:
        """Reduces a ``uint32`` vector mod M in place (nothing to do when M = 2^32)."""
        if self.bits < 32:
            y &= np.uint32(self.modulus - 1)

    def decode(self, total: np.ndarray) -> tuple[np.ndarray, float]:
        """Decodes a sum of encodings (mod M) to ``(sum of weight*delta, sum of weight)``.

        Args:
            total: ``uint32`` array of length d + 1, the unmasked sum mod M.

        Returns:
            float64 array of shape (d,) and the total weight.

        Raises:
            ValueError: wrong dtype/shape or an element outside Z_M.
        """
        s = np.asarray(total)
        if s.ndim != 1 or s.size < 1 or s.dtype != np.uint32:
            raise ValueError("total must be a non-empty 1-D uint32 array")
        if self.bits < 32 and int(s.max()) >= self.modulus:
            raise ValueError("total has elements outside Z_M")
        if self.bits == 32:
            signed: np.ndarray = s.view(
                np.int32
            )  # two's complement = centred lift, no copy
        else:
            half = self.modulus // 2
            signed = s.astype(np.int64)
            signed[signed >= half] -= self.modulus
        values = signed[:-1] / self.value_scale
        return values, float(signed[-1]) / self.weight_scale
