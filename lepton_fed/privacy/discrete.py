"""Integer-valued randomness for distributed DP: discrete Gaussian noise and conditional
randomized rounding, both drawn from :class:`~lepton_fed.privacy.secure_rng.CryptoRandom`
(ChaCha20 keyed from ``os.urandom``: nothing in a config, a seed or the server's view
predicts it).

* :func:`discrete_gaussian`: ``N_Z(0, sigma^2)``, P(x) proportional to
  ``exp(-x^2 / (2 sigma^2))`` on the integers, by rejection from a discrete Laplace
  (Canonne, Kamath & Steinke 2020, "The Discrete Gaussian for Differential Privacy",
  Algorithm 3, with t = floor(sigma) + 1). The Bernoulli and geometric draws use
  float64 arithmetic on 53-bit uniforms, so probabilities are exact up to float64
  rounding (not the exact rational sampler of the paper); the OUTPUT is an integer, so
  the floating-point attacks on continuous Gaussian samples (Mironov 2012) have no
  low-order bits to read. ``N_Z(0, sigma^2)`` is sub-Gaussian with variance proxy
  sigma^2 and its variance is at most sigma^2 (same paper).
* :func:`conditional_round`: each coordinate rounded down or up at random
  (unbiased), redrawn until the rounded vector's L2 norm is at most a bound (Kairouz,
  Liu & Steinke 2021, section 4.1); the norm test is exact integer arithmetic, so the
  bound -- the sensitivity the noise is sized for -- always holds.
"""

from __future__ import annotations

import math

import numpy as np

from lepton_fed.privacy.secure_rng import CryptoRandom

__all__ = ["RoundingFailed", "conditional_round", "discrete_gaussian", "rounded_norm_bound"]


class RoundingFailed(RuntimeError):
    """Conditional rounding found no rounding within the norm bound (the input's norm
    exceeded what the bound was computed for)."""


def _uniform(rng: CryptoRandom, n: int) -> np.ndarray:
    return rng.uniform(n).numpy()


def discrete_gaussian(n: int, sigma: float, rng: CryptoRandom) -> np.ndarray:
    """``n`` independent draws of ``N_Z(0, sigma^2)`` (int64).

    Raises:
        ValueError: ``sigma`` not positive and finite, or ``n < 0``.
    """
    if not (math.isfinite(sigma) and sigma > 0):
        raise ValueError(f"sigma must be positive and finite, got {sigma}")
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    t = math.floor(sigma) + 1
    out = np.empty(n, dtype=np.int64)
    todo = np.arange(n)
    var = sigma * sigma
    while todo.size:
        m = todo.size
        u = _uniform(rng, 3 * m)
        # geometric G = floor(-t ln U), U in (0, 1]: P(G >= k) = exp(-k / t)
        g1 = np.floor(-t * np.log1p(-u[:m]))
        g2 = np.floor(-t * np.log1p(-u[m:2 * m]))
        y = g1 - g2  # discrete Laplace, P(y) ~ exp(-|y| / t)
        accept = u[2 * m:] < np.exp(-((np.abs(y) - var / t) ** 2) / (2.0 * var))
        out[todo[accept]] = y[accept].astype(np.int64)
        todo = todo[~accept]
    return out


def rounded_norm_bound(norm: float, dim: int, beta: float) -> float:
    """L2 bound that conditional rounding enforces on a vector of L2 norm <= ``norm``
    in ``dim`` coordinates (Kairouz, Liu & Steinke 2021, Theorem 1 / Proposition 22):
    ``min(norm + sqrt(d), sqrt(norm^2 + d/4 + sqrt(2 ln(1/beta)) (norm + sqrt(d)/2)))``.
    Unconditional rounding already meets the first; with ``beta > 0`` a rounding meets
    the second with probability >= 1 - beta, so redraws are rare.

    Raises:
        ValueError: ``norm`` negative, ``dim < 1`` or ``beta`` outside [0, 1).
    """
    if not (norm >= 0 and dim >= 1 and 0 <= beta < 1):
        raise ValueError("need norm >= 0, dim >= 1 and 0 <= beta < 1")
    first = norm + math.sqrt(dim)
    if beta == 0:
        return first
    sq = norm * norm + dim / 4.0 + math.sqrt(2.0 * math.log(1.0 / beta)) * (
        norm + math.sqrt(dim) / 2.0)
    return min(first, math.sqrt(sq))


def _norm_sq_at_most(v: np.ndarray, bound: float) -> bool:
    """Exact ``sum(v^2) <= bound^2`` for an int64 vector (float64 screen, then Python
    integers when the float result is within its round-off of the bound)."""
    approx = float(np.dot(v.astype(np.float64), v.astype(np.float64)))
    b2 = bound * bound
    if approx < b2 * (1 - 1e-9):
        return True
    if approx > b2 * (1 + 1e-9):
        return False
    exact = sum(int(x) * int(x) for x in v.tolist())
    return exact <= math.floor(b2)


def conditional_round(x: np.ndarray, bound: float, rng: CryptoRandom,
                      max_tries: int = 1000) -> np.ndarray:
    """Randomized rounding of ``x`` to integers (E[result] = x coordinate-wise before
    conditioning), redrawn until ``||result||_2 <= bound``.

    Raises:
        RoundingFailed: no draw met the bound in ``max_tries`` (the caller's input was
            larger than the norm the bound was computed for).
        ValueError: non-finite input.
    """
    v = np.asarray(x, dtype=np.float64)
    if not np.all(np.isfinite(v)):
        raise ValueError("non_finite_input: cannot round NaN or infinity")
    low = np.floor(v)
    frac = v - low
    base = low.astype(np.int64)
    for _ in range(max_tries):
        r = base + (_uniform(rng, v.size) < frac).astype(np.int64)
        if _norm_sq_at_most(r, bound):
            return r
    raise RoundingFailed("conditional rounding: no rounding within the norm bound")
