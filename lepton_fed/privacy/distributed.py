"""Distributed DP: the distributed discrete Gaussian mechanism (Kairouz, Liu & Steinke
2021, "The Distributed Discrete Gaussian Mechanism for Federated Learning with Secure
Aggregation", ICML) -- user-level DP that does not trust the server to add noise.

Each node (:func:`encode_update`): clips its update to L2 norm ``c``; rotates it
(:mod:`~lepton_fed.privacy.hadamard`, public seed); scales by ``1/gamma``; rounds to
integers by conditional randomized rounding so the integer vector's L2 norm is at
most ``c_hat`` (:func:`~lepton_fed.privacy.discrete.rounded_norm_bound`); adds its
SHARE of noise, ``N_Z(0, s^2)`` per coordinate from a CSPRNG; and hands the integers
to secure aggregation, which masks them in Z_{2^bits}. The server unmasks only the sum
(:func:`decode_sum`: centred lift, times gamma, inverse rotation): the noise is already
in it, the server adds nothing and cannot remove any (it never sees a share).

Privacy (per round, add/remove one node, node-level): with ``h`` honest shares summed,
Proposition 14 / Theorem 1 of the paper give Renyi DP
``eps(alpha) = min(alpha/2 * l2^2 + tau * d, alpha/2 * (l2 + sqrt(d) * tau)^2)`` with
``l2 = c_hat / (sqrt(h) * s)`` and ``tau = 10 * sum_{k=1}^{h-1} exp(-2 pi^2 s^2 k/(k+1))``.
Both terms are zCDP events (``dp_accounting.ZCDpEvent(rho, xi)``); rounds compose in
dp-accounting's RDP accountant and the smaller of the two epsilons is reported
(:func:`ddg_epsilon`). No amplification by client sampling is claimed.

Who must be trusted: the noise of a round is sized for ``h = min_contributors -
colluders`` honest nodes. The round is abandoned BEFORE unmasking when fewer than
``min_contributors`` masked inputs arrived (:func:`~lepton_fed.server.secure`), so the
server never sees a sum with less noise; up to ``colluders`` nodes that tell the server
their own shares do not weaken it. What voids it: a server that fakes dropouts after
masked inputs arrived to unmask a smaller sum (secure aggregation's own limits apply,
``secagg/README.md``); more colluders than assumed; a node that skips clipping or noise.

Parameters (:func:`plan_distributed`, deterministic, so every node and the server
compute the same gamma and s from the run config): the field is Z_{2^bits} (bits=32:
uploads stay 4 bytes per parameter); gamma is the finest granularity for which a
round's sum of up to ``max_contributors`` vectors wraps around in some coordinate with
probability at most ``2^-wrap_bits`` (:func:`wrap_log2`: sub-Gaussian tails of the
rotated signal, at most one rounding step per node, and the noise); s is then the
smallest share that meets the target epsilon at that gamma. Rounding bias and the
rounding inflation of the sensitivity shrink with gamma; at 32 bits they are negligible.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from lepton_fed.privacy.discrete import (
    conditional_round,
    discrete_gaussian,
    rounded_norm_bound,
)
from lepton_fed.privacy.hadamard import block_size, rotate, unrotate
from lepton_fed.privacy.secure_rng import CryptoRandom

__all__ = ["DEFAULT_BETA", "DistributedPlan", "ddg_epsilon", "decode_sum", "encode_update",
           "plan_distributed", "plan_for_noise", "tau_of", "wrap_log2"]

#: conditional-rounding parameter (the paper's choice): a redraw happens w.p. <= beta
DEFAULT_BETA = math.exp(-0.5)


def tau_of(local_sigma: float, shares: int) -> float:
    """The paper's tau for a sum of ``shares`` discrete Gaussians of std ``local_sigma``."""
    return 10.0 * sum(math.exp(-2.0 * math.pi**2 * local_sigma**2 * k / (k + 1))
                      for k in range(1, shares))


def ddg_epsilon(*, sensitivity: float, local_sigma: float, honest: int, max_shares: int,
                dim: int, rounds: int, delta: float) -> float:
    """Epsilon of ``rounds`` releases of a sum carrying at least ``honest`` (and at most
    ``max_shares``) noise shares ``N_Z(0, local_sigma^2)``, for an integer input of L2
    norm <= ``sensitivity`` (all in integer units). dp-accounting's RDP accountant
    composes the paper's per-round zCDP bounds."""
    import importlib

    # dp_accounting ships no type information; imported dynamically (typed Any)
    dpa: Any = importlib.import_module("dp_accounting")
    rdp: Any = importlib.import_module("dp_accounting.rdp")
    l2 = sensitivity / (math.sqrt(honest) * local_sigma)
    tau = tau_of(local_sigma, max(honest, max_shares))
    events = [dpa.ZCDpEvent(rho=l2 * l2 / 2.0, xi=tau * dim),
              dpa.ZCDpEvent(rho=(l2 + math.sqrt(dim) * tau) ** 2 / 2.0)]
    best = math.inf
    for ev in events:
        acc = rdp.RdpAccountant()
        acc.compose(dpa.SelfComposedDpEvent(ev, rounds))
        best = min(best, float(acc.get_epsilon(delta)))
    return best


def wrap_log2(*, gamma: float, local_sigma: float, clip: float, dim: int,
              max_contributors: int, bits: int) -> float:
    """log2 of a bound on P[some coordinate of one round's sum leaves (-2^(bits-1),
    2^(bits-1))] (then the centred lift would decode it wrongly).

    Per coordinate the sum is (rotated signal) + (rounding, |.| <= 1 per node) + noise;
    the signal is sub-Gaussian with proxy ``(n c / gamma)^2 / P`` (||sum|| <= n c, P the
    rotation's block size) and the noise with ``n s^2``, so with margin ``2^(bits-1) - n``
    the union over d coordinates gives ``2 d exp(-margin^2 / (2 v))``.
    """
    n = max_contributors
    margin = 2.0 ** (bits - 1) - n
    if margin <= 0:
        return 0.0
    v = (n * clip / gamma) ** 2 / block_size(dim) + n * local_sigma**2
    ln_p = math.log(2.0 * dim) - margin * margin / (2.0 * v)
    return min(0.0, ln_p / math.log(2.0))


@dataclass(frozen=True)
class DistributedPlan:
    """Everything a node and the server need for one run (see the module docstring).

    Attributes (integer units are those of the field; ``gamma`` converts):
        epsilon, delta, rounds: the achieved epsilon (<= the target) over ``rounds``
            releases, at ``delta``.
        clip: L2 bound c of an update (model units).
        dim: number of parameters d.
        min_contributors: rounds with fewer masked inputs are abandoned before unmasking.
        max_contributors: the cohort size (most vectors ever summed).
        colluders: contributors assumed to reveal their own shares to the server.
        honest: ``min_contributors - colluders``: shares the noise is sized for.
        bits: field size exponent.
        gamma: granularity (model units per integer step).
        local_sigma: each node's noise share std (integer units).
        rounded_norm: c_hat, the sensitivity after rounding (integer units).
        beta: conditional-rounding parameter.
        wrap_log2: the bound :func:`wrap_log2` on one round's wrap-around probability.
    """

    epsilon: float
    delta: float
    rounds: int
    clip: float
    dim: int
    min_contributors: int
    max_contributors: int
    colluders: int
    honest: int
    bits: int
    gamma: float
    local_sigma: float
    rounded_norm: float
    beta: float
    wrap_log2: float

    @property
    def central_std(self) -> float:
        """Std of the noise in the sum of ``honest`` shares, in model units."""
        return math.sqrt(self.honest) * self.local_sigma * self.gamma

    @property
    def noise_multiplier(self) -> float:
        """``central_std / clip``: the continuous-Gaussian noise multiplier it matches."""
        return self.central_std / self.clip

    def epsilon_after(self, releases: int) -> float:
        """Epsilon after ``releases`` rounds were unmasked (0 for none)."""
        if releases <= 0:
            return 0.0
        return ddg_epsilon(sensitivity=self.rounded_norm, local_sigma=self.local_sigma,
                           honest=self.honest, max_shares=self.max_contributors, dim=self.dim,
                           rounds=releases, delta=self.delta)

    def to_dict(self) -> dict[str, Any]:
        """The plan as JSON-ready values (summary.json, ``lepton-fed privacy``)."""
        return asdict(self) | {"central_std": self.central_std,
                               "noise_multiplier": self.noise_multiplier}


def _check(epsilon: float, delta: float, rounds: int, clip: float, dim: int, nmin: int,
           nmax: int, colluders: int, bits: int, beta: float) -> None:
    problems = []
    if not (math.isfinite(epsilon) and epsilon > 0):
        problems.append(f"epsilon must be > 0, got {epsilon}")
    if not 0 < delta < 1:
        problems.append(f"delta must be in (0, 1), got {delta}")
    if rounds < 1:
        problems.append(f"rounds must be >= 1, got {rounds}")
    if not (math.isfinite(clip) and clip > 0):
        problems.append(f"clip must be > 0, got {clip}")
    if dim < 1:
        problems.append(f"dim must be >= 1, got {dim}")
    if not 1 <= nmin <= nmax:
        problems.append(f"need 1 <= min_contributors ({nmin}) <= max_contributors ({nmax})")
    if not 0 <= colluders < nmin:
        problems.append(f"colluders ({colluders}) must be in [0, min_contributors)")
    if not 8 <= bits <= 32:
        problems.append(f"bits must be in [8, 32], got {bits}")
    if not 0 <= beta < 1:
        problems.append(f"beta must be in [0, 1), got {beta}")
    if problems:
        raise ValueError("; ".join(problems))


def _smallest_sigma(target: float, f: Any) -> float:
    """The smallest s (to 1e-9 relative) with f(s) <= target, f decreasing."""
    lo, hi = 1e-3, 1.0
    while f(hi) > target:
        lo, hi = hi, hi * 2.0
        if hi > 1e300:
            raise ValueError("no noise level reaches the target epsilon")
    while hi - lo > 1e-9 * hi:
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if f(mid) > target else (lo, mid)
    return hi


def plan_distributed(*, epsilon: float, delta: float, rounds: int, clip: float, dim: int,
                     min_contributors: int, max_contributors: int, colluders: int = 0,
                     bits: int = 32, beta: float = DEFAULT_BETA,
                     wrap_bits: float = 40.0) -> DistributedPlan:
    """The plan meeting ``epsilon`` over ``rounds`` releases with wrap-around probability
    <= ``2^-wrap_bits`` per round (module docstring: how gamma and s are chosen).

    Raises:
        ValueError: a parameter out of range (all problems named), or a field too small
            for the cohort, dimension and target.
    """
    _check(epsilon, delta, rounds, clip, dim, min_contributors, max_contributors, colluders,
           bits, beta)
    h, n = min_contributors - colluders, max_contributors
    margin = 2.0 ** (bits - 1) - n
    if margin <= 0:
        raise ValueError(f"a {bits}-bit field cannot hold the sum of {n} vectors")
    k2 = 2.0 * (math.log(2.0 * dim) + wrap_bits * math.log(2.0))
    signal = (n * clip) ** 2 / block_size(dim)

    def eps_at(gamma: float, s: float) -> float:
        return ddg_epsilon(sensitivity=rounded_norm_bound(clip / gamma, dim, beta),
                           local_sigma=s, honest=h, max_shares=n, dim=dim, rounds=rounds,
                           delta=delta)

    # start from the continuous Gaussian's noise (tau -> 0, no rounding inflation)
    sigma = clip * _smallest_sigma(epsilon, lambda z: ddg_epsilon(
        sensitivity=1.0, local_sigma=z, honest=1, max_shares=1, dim=dim, rounds=rounds,
        delta=delta)) / math.sqrt(h)
    gamma = math.sqrt(k2 * (signal + n * sigma**2)) / margin
    for _ in range(60):
        s = _smallest_sigma(epsilon, lambda s_, g=gamma: eps_at(g, s_))
        wl = wrap_log2(gamma=gamma, local_sigma=s, clip=clip, dim=dim, max_contributors=n,
                       bits=bits)
        if wl <= -wrap_bits:
            return DistributedPlan(
                epsilon=eps_at(gamma, s), delta=delta, rounds=rounds, clip=clip, dim=dim,
                min_contributors=min_contributors, max_contributors=n, colluders=colluders,
                honest=h, bits=bits, gamma=gamma, local_sigma=s,
                rounded_norm=rounded_norm_bound(clip / gamma, dim, beta), beta=beta,
                wrap_log2=wl)
        new = math.sqrt(k2 * (signal + n * (s * gamma) ** 2)) / margin
        gamma = max(new, gamma * 1.001)
    raise ValueError(
        f"no granularity meets a 2^-{wrap_bits:g} wrap-around bound in a {bits}-bit field "
        f"for {n} contributors and {dim} parameters; use more bits or fewer parameters")


def plan_for_noise(*, noise_multiplier: float, delta: float, rounds: int, clip: float,
                   dim: int, min_contributors: int, max_contributors: int, colluders: int = 0,
                   bits: int = 32, beta: float = DEFAULT_BETA,
                   wrap_bits: float = 40.0) -> DistributedPlan:
    """The plan whose ``honest`` shares sum to noise std ``noise_multiplier * clip`` (at
    the finest granularity meeting the wrap-around bound), with the epsilon it spends
    over ``rounds`` releases (for planning: ``lepton-fed privacy --mode distributed``).

    Raises:
        ValueError: a parameter out of range, or a field too small.
    """
    _check(1.0, delta, rounds, clip, dim, min_contributors, max_contributors, colluders,
           bits, beta)
    if not (math.isfinite(noise_multiplier) and noise_multiplier > 0):
        raise ValueError(f"noise_multiplier must be > 0, got {noise_multiplier}")
    h, n = min_contributors - colluders, max_contributors
    margin = 2.0 ** (bits - 1) - n
    if margin <= 0:
        raise ValueError(f"a {bits}-bit field cannot hold the sum of {n} vectors")
    sigma = noise_multiplier * clip / math.sqrt(h)
    k2 = 2.0 * (math.log(2.0 * dim) + wrap_bits * math.log(2.0))
    gamma = math.sqrt(k2 * ((n * clip) ** 2 / block_size(dim) + n * sigma**2)) / margin
    wl = wrap_log2(gamma=gamma, local_sigma=sigma / gamma, clip=clip, dim=dim,
                   max_contributors=n, bits=bits)
    if wl > -wrap_bits:  # float round-off only: the formula solves the bound exactly
        gamma *= 1.0 + 1e-9
        wl = wrap_log2(gamma=gamma, local_sigma=sigma / gamma, clip=clip, dim=dim,
                       max_contributors=n, bits=bits)
    cn = rounded_norm_bound(clip / gamma, dim, beta)
    eps = ddg_epsilon(sensitivity=cn, local_sigma=sigma / gamma, honest=h, max_shares=n,
                      dim=dim, rounds=rounds, delta=delta)
    return DistributedPlan(epsilon=eps, delta=delta, rounds=rounds, clip=clip, dim=dim,
                           min_contributors=min_contributors, max_contributors=n,
                           colluders=colluders, honest=h, bits=bits, gamma=gamma,
                           local_sigma=sigma / gamma, rounded_norm=cn, beta=beta,
                           wrap_log2=wl)


def encode_update(delta: np.ndarray, plan: DistributedPlan, rotation_seed: int,
                  rng: CryptoRandom) -> np.ndarray:
    """A node's integer vector: clip, rotate, scale, conditionally round, add its
    noise share (int64, before reduction mod 2^bits).

    Raises:
        ValueError: wrong length or non-finite entries.
        RoundingFailed: (practically never) no rounding within the bound.
    """
    from lepton_fed.privacy.central import clip_update

    x = np.asarray(delta, dtype=np.float64)
    if x.ndim != 1 or x.size != plan.dim:
        raise ValueError(f"update must be a vector of {plan.dim} values")
    clipped, _ = clip_update(x, clip=plan.clip)
    scaled = rotate(clipped, rotation_seed) / plan.gamma
    out = conditional_round(scaled, plan.rounded_norm, rng)
    out += discrete_gaussian(plan.dim, plan.local_sigma, rng)
    return out


def decode_sum(field_sum: np.ndarray, plan: DistributedPlan, rotation_seed: int) -> np.ndarray:
    """The noisy sum of clipped updates (model units) from the unmasked field sum of
    the nodes' integer vectors (its first ``dim`` elements, values in Z_{2^bits})."""
    s = np.asarray(field_sum)[: plan.dim].astype(np.int64)
    half = 1 << (plan.bits - 1)
    s = np.where(s >= half, s - (1 << plan.bits), s)  # centred lift
    return unrotate(s.astype(np.float64) * plan.gamma, rotation_seed)
