"""Randomized Hadamard rotation of any length (distributed DP's flattening step).

:func:`rotate` maps a vector of length d to a vector of the SAME length d by an
orthogonal transform (so L2 norms are kept and no padding inflates the upload): with
P the largest power of two <= d, it applies ``H_P D_1 / sqrt(P)`` to the first P
coordinates, then ``H_P D_2 / sqrt(P)`` to the last P (the blocks overlap when d is
not a power of two; every coordinate is in at least one), where H_P is the Walsh-
Hadamard matrix and D_1, D_2 are diagonal random signs from a PUBLIC seed (the server
must invert the rotation: nothing about it is secret, and privacy never depends on it).
:func:`unrotate` is its exact inverse (up to float64 round-off).

Flatness (what the rotation is for): for a fixed x and random signs, every coordinate
of ``rotate(x)`` is a Rademacher sum, hence sub-Gaussian with variance proxy
``||x||^2 / P`` (< 2 ||x||^2 / d), so a clipped update spreads evenly over the
coordinates and the modular sum wraps around only with the probability that
:mod:`lepton_fed.privacy.distributed` bounds. Cost: O(d log d), float64.
"""

from __future__ import annotations

import numpy as np

__all__ = ["block_size", "fwht", "rotate", "unrotate"]


def block_size(d: int) -> int:
    """P: the largest power of two <= d (d >= 1)."""
    if d < 1:
        raise ValueError(f"dimension must be >= 1, got {d}")
    return 1 << (int(d).bit_length() - 1)


def fwht(x: np.ndarray) -> np.ndarray:
    """Normalized Walsh-Hadamard transform ``H x / sqrt(len(x))`` of a float vector whose
    length is a power of two (its own inverse)."""
    n = x.shape[0]
    if n & (n - 1):
        raise ValueError(f"length must be a power of two, got {n}")
    y = np.array(x, dtype=np.float64)
    h = 1
    while h < n:
        y = y.reshape(-1, 2, h)
        y = np.stack((y[:, 0] + y[:, 1], y[:, 0] - y[:, 1]), axis=1)
        h *= 2
    out: np.ndarray = y.reshape(n) / np.sqrt(n)
    return out


def _signs(seed: int, d: int) -> tuple[np.ndarray, np.ndarray]:
    """D_1, D_2 as +-1 float vectors of length P, from the public ``seed``."""
    p = block_size(d)
    bits = np.random.default_rng(np.random.SeedSequence(int(seed))).integers(0, 2, size=(2, p))
    signs = 1.0 - 2.0 * bits.astype(np.float64)
    return signs[0], signs[1]


def rotate(x: np.ndarray, seed: int) -> np.ndarray:
    """The rotated copy of the 1-D vector ``x`` (same length, same L2 norm)."""
    v = np.array(x, dtype=np.float64)
    if v.ndim != 1:
        raise ValueError("rotate takes a 1-D vector")
    d = v.shape[0]
    p = block_size(d)
    s1, s2 = _signs(seed, d)
    v[:p] = fwht(s1 * v[:p])
    if p != d:
        v[d - p:] = fwht(s2 * v[d - p:])
    return v


def unrotate(y: np.ndarray, seed: int) -> np.ndarray:
    """The inverse of :func:`rotate` with the same ``seed``."""
    v = np.array(y, dtype=np.float64)
    if v.ndim != 1:
        raise ValueError("unrotate takes a 1-D vector")
    d = v.shape[0]
    p = block_size(d)
    s1, s2 = _signs(seed, d)
    if p != d:
        v[d - p:] = s2 * fwht(v[d - p:])
    v[:p] = s1 * fwht(v[:p])
    return v
