"""Pure privacy math: epsilon <-> noise multiplier for DP-SGD and for central DP.

Nothing here holds state or touches data. Two mechanisms are covered:

* **DP-SGD** (sample-level, one node): ``steps`` compositions of the Poisson-subsampled
  Gaussian mechanism (Abadi et al. 2016), accounted with Renyi DP (Mironov 2017;
  Mironov, Talwar, Zhang 2019, arXiv:1908.10530). The RDP curves come from Opacus
  (``opacus.accountants.analysis.rdp``); the RDP -> (epsilon, delta) conversion is the
  improved bound of Balle et al. 2020 (arXiv:2004.00010, Prop. 12), the one both
  Opacus and Google's ``dp-accounting`` use.
* **Central DP** (user-level, DP-FedAvg, McMahan et al. 2018): each round releases
  the sum (or the fixed-denominator mean) of clipped client updates plus Gaussian
  noise, with no amplification by client sampling. Accounted with Flower's
  ``RdpAccountant`` (backed by ``dp-accounting``).

Every function takes ``accountant="rdp"`` (default) or ``"pld"``: the same mechanisms
accounted with privacy loss distributions (:mod:`lepton_fed.privacy.pld`), 7-10 %
tighter on our settings. A run chooses one with ``privacy.accountant`` (default
``pld``) and uses it for calibration and for its ledger's budget check alike.

Epsilon values are upper bounds: the RDP conversion minimises over the finite set of
orders :data:`DEFAULT_ORDERS`, so a coarser order set can only make epsilon larger;
PLD discretizes pessimistically.

Pinned values. Opacus's own ``tests/accountants_test.py`` pins the first one; the
second is the 144-example, batch-16, 5-round client measured in
``shared/reference/stack-measured.md`` 3(b) (it reported 7.995 for σ = 0.87890625):

>>> round(epsilon_for(noise_multiplier=1.5, sample_rate=0.04, steps=2250,
...                   delta=1e-5), 6)
7.329111
>>> round(epsilon_for(noise_multiplier=0.879, sample_rate=1 / 9, steps=45,
...                   delta=1e-5), 3)
7.994
>>> round(central_epsilon(noise_multiplier=1.0, rounds=1, delta=1e-5), 4)
4.7285
>>> local_schedule(num_examples=144, batch_size=16, epochs=2)
LocalSchedule(sample_rate=0.1111111111111111, steps_per_epoch=9, steps=18)
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable, Sequence
from functools import lru_cache
from typing import NamedTuple

import numpy as np

from lepton_fed.privacy.pld import check_accountant, pld_central_epsilon, pld_epsilon

__all__ = [
    "DEFAULT_ORDERS",
    "LocalSchedule",
    "central_epsilon",
    "central_noise_multiplier_for",
    "epsilon_for",
    "epsilon_for_history",
    "local_schedule",
    "noise_multiplier_for",
]

#: RDP orders: 1.1..10.9 by 0.1, 11..63, and 128..1024 (the same set as
#: ``dp-accounting``'s default; a superset of Opacus's ``RDPAccountant.DEFAULT_ALPHAS``).
DEFAULT_ORDERS: tuple[float, ...] = (
    tuple(1 + x / 10 for x in range(1, 100))
    + tuple(float(a) for a in range(11, 64))
    + (128.0, 256.0, 512.0, 1024.0)
)

_SIGMA_MIN = 1e-3  # below this the search stops: epsilon is astronomically large
_SIGMA_MAX = 1e4  # above this the search stops: the target is below the RDP floor
_RTOL = 1e-6  # relative precision of the calibrated noise multiplier


class LocalSchedule(NamedTuple):
    """What one local DP-SGD round does, as Opacus's ``DPDataLoader`` runs it."""

    sample_rate: float
    """Poisson inclusion probability of each example in each step."""
    steps_per_epoch: int
    """Optimizer steps per epoch (each one is one subsampled Gaussian release)."""
    steps: int
    """``epochs * steps_per_epoch``: the steps the ledger is charged for."""


# --------------------------------------------------------------------- validation


def _finite(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.number):
        raise ValueError(f"{name} must be a number; got {value!r}")
    v = float(value)
    if not math.isfinite(v):
        raise ValueError(f"{name} must be finite; got {value!r}")
    return v


def _check_delta(delta: object) -> float:
    d = _finite("delta", delta)
    if not 0.0 < d < 1.0:
        raise ValueError(f"delta must be in (0, 1); got {delta!r}")
    return d


def _check_epsilon(name: str, epsilon: object) -> float:
    e = _finite(name, epsilon)
    if e <= 0.0:
        raise ValueError(f"{name} must be > 0; got {epsilon!r}")
    return e


def _check_noise_multiplier(noise_multiplier: object) -> float:
    s = _finite("noise_multiplier", noise_multiplier)
    if s <= 0.0:
        raise ValueError(
            f"noise_multiplier must be > 0 (0 means no privacy); got {noise_multiplier!r}"
        )
    return s


def _check_sample_rate(sample_rate: object) -> float:
    q = _finite("sample_rate", sample_rate)
    if not 0.0 < q <= 1.0:
        raise ValueError(f"sample_rate must be in (0, 1]; got {sample_rate!r}")
    return q


def _check_int(name: str, value: object, *, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise ValueError(f"{name} must be an integer; got {value!r}")
    if int(value) < minimum:
        raise ValueError(f"{name} must be >= {minimum}; got {value!r}")
    return int(value)


def _check_orders(orders: Sequence[float] | None) -> tuple[float, ...] | None:
    if orders is None:
        return None
    out = tuple(float(a) for a in orders)
    if not out or any(not math.isfinite(a) or a <= 1.0 for a in out):
        raise ValueError(
            f"orders must be a non-empty list of finite numbers > 1; got {orders!r}"
        )
    return out


# ------------------------------------------------------------------------ DP-SGD

_INT_ORDERS = tuple(a for a in DEFAULT_ORDERS if a == int(a))
_FRAC_ORDERS = tuple(a for a in DEFAULT_ORDERS if a != int(a))


@lru_cache(maxsize=4096)
def _rdp_one_step(
    sample_rate: float, noise_multiplier: float, orders: tuple[float, ...]
) -> np.ndarray:
    """RDP of one Poisson-subsampled Gaussian step at each order (cached, read-only)."""
    from opacus.accountants.analysis.rdp import compute_rdp

    rdp = np.asarray(
        compute_rdp(
            q=sample_rate,
            noise_multiplier=noise_multiplier,
            steps=1,
            orders=list(orders),
        ),
        dtype=float,
    )
    rdp.setflags(write=False)
    return rdp


def _spent(
    rdp: np.ndarray, orders: tuple[float, ...], delta: float
) -> tuple[float, float]:
    """(epsilon, optimal order) from an RDP curve (Balle et al. 2020 conversion)."""
    from opacus.accountants.analysis.rdp import get_privacy_spent

    if not np.any(rdp):
        return 0.0, orders[0]
    with warnings.catch_warnings():
        # "Optimal order is the largest/smallest alpha": still a valid upper bound.
        warnings.simplefilter("ignore", UserWarning)
        eps, best = get_privacy_spent(orders=list(orders), rdp=rdp, delta=delta)
    return max(0.0, float(eps)), float(best)


Pairs = dict[tuple[float, float], int]


def _pairs(history: Iterable[tuple[float, float, int]]) -> Pairs:
    """Validate a history and merge it into {(sigma, q): total steps}."""
    # RDP composes additively, so identical (sigma, q) phases merge.
    out: Pairs = {}
    for item in history:
        if len(item) != 3:
            raise ValueError(
                f"history entries are (noise_multiplier, sample_rate, steps); got {item!r}"
            )
        sigma = _check_noise_multiplier(item[0])
        q = _check_sample_rate(item[1])
        steps = _check_int("steps", item[2], minimum=0)
        if steps:
            out[(sigma, q)] = out.get((sigma, q), 0) + steps
    return out


def _curve(pairs: Pairs, orders: tuple[float, ...]) -> np.ndarray:
    total = np.zeros(len(orders))
    for (sigma, q), steps in pairs.items():
        total = total + steps * _rdp_one_step(q, sigma, orders)
    return total


def _epsilon(pairs: Pairs, delta: float, orders: tuple[float, ...] | None) -> float:
    """Epsilon of merged phases; ``orders=None`` means :data:`DEFAULT_ORDERS`.

    With the default orders the fractional ones (90 of them, ~10x dearer to compute
    than the integer ones) are only evaluated within +-1 of the best integer order.
    epsilon(alpha) is unimodal for the subsampled Gaussian, so this finds the same
    minimum as the full set (the tests check it); any order's value is a valid bound.
    """
    if not pairs:
        return 0.0
    if orders is not None:
        return _spent(_curve(pairs, orders), orders, delta)[0]
    eps, best = _spent(_curve(pairs, _INT_ORDERS), _INT_ORDERS, delta)
    window = tuple(a for a in _FRAC_ORDERS if best - 1 < a < best + 1)
    if window:
        eps = min(eps, _spent(_curve(pairs, window), window, delta)[0])
    return eps


def epsilon_for(
    *,
    noise_multiplier: float,
    sample_rate: float,
    steps: int,
    delta: float,
    orders: Sequence[float] | None = None,
    accountant: str = "rdp",
) -> float:
    """Epsilon spent by ``steps`` DP-SGD steps with Poisson sampling.

    The guarantee is sample-level (ε, δ)-DP under add/remove-one-example adjacency for
    everything derived from the noisy gradients (every model the node releases),
    against anyone who sees those releases, including the server. It holds only if
    sampling really is Poisson with rate ``sample_rate`` (Opacus's ``DPDataLoader``),
    per-example gradients are clipped to the ``max_grad_norm`` the noise is scaled by,
    and the noise is secret and unpredictable (see ``secure_mode`` in the README).

    Args:
        noise_multiplier: noise std divided by the clipping norm (σ), > 0.
        sample_rate: per-step inclusion probability q in (0, 1].
        steps: number of optimizer steps, >= 0.
        delta: target δ in (0, 1).
        orders: RDP orders to optimise over (default :data:`DEFAULT_ORDERS`; RDP only).
        accountant: ``"rdp"`` or ``"pld"``.

    Returns:
        Epsilon (0.0 for zero steps; may be ``inf`` for tiny σ).

    Raises:
        ValueError: an argument is out of range (the message names it).

    Example:
        >>> round(epsilon_for(noise_multiplier=1.0, sample_rate=1.0, steps=1,
        ...                   delta=1e-5), 4)
        4.7285
    """
    return epsilon_for_history(
        [(noise_multiplier, sample_rate, steps)], delta=delta, orders=orders,
        accountant=accountant,
    )


def epsilon_for_history(
    history: Iterable[tuple[float, float, int]],
    *,
    delta: float,
    orders: Sequence[float] | None = None,
    accountant: str = "rdp",
) -> float:
    """Epsilon of a heterogeneous sequence of DP-SGD phases, composed with RDP or PLD.

    Each entry is ``(noise_multiplier, sample_rate, steps)``; the RDP curves add up (or
    the loss distributions convolve) and are converted to one (ε, δ) at the end, which
    is tighter than adding per-phase epsilons. Same guarantee and assumptions as
    :func:`epsilon_for`; all phases must run on the same dataset (the accounting unit
    is one example of it).

    Raises:
        ValueError: an entry, ``delta`` or ``accountant`` is out of range, or
            ``orders`` with the PLD accountant.

    Example:
        >>> h = [(1.0, 0.01, 500), (2.0, 0.02, 300)]
        >>> a = epsilon_for_history(h, delta=1e-5)
        >>> b = epsilon_for_history(h[:1], delta=1e-5) + epsilon_for_history(
        ...     h[1:], delta=1e-5)
        >>> 0 < a < b
        True
    """
    d = _check_delta(delta)
    o = _check_orders(orders)
    if _accountant(accountant, o) == "pld":
        return pld_epsilon(_pairs(history), d)
    return _epsilon(_pairs(history), d, o)


def _accountant(accountant: object, orders: tuple[float, ...] | None) -> str:
    a = check_accountant(accountant)
    if a == "pld" and orders is not None:
        raise ValueError("orders are RDP orders; the PLD accountant takes none")
    return a


def _calibrate(eps_of_sigma: Callable[[float], float], target: float) -> float:
    """Smallest sigma (to relative precision ``_RTOL``) with eps_of_sigma(sigma) <= target."""
    from scipy.optimize import brentq

    hi = 1.0
    while eps_of_sigma(hi) > target:
        hi *= 2.0
        if hi > _SIGMA_MAX:
            raise ValueError(
                f"target_epsilon={target!r} is unreachable: even noise_multiplier="
                f"{_SIGMA_MAX:g} spends more (RDP conversion floor); raise the target, "
                "raise delta or take fewer steps"
            )
    lo = hi / 2.0
    while eps_of_sigma(lo) <= target:
        hi, lo = lo, lo / 2.0
        if lo < _SIGMA_MIN:
            return hi
    # eps is continuous and decreasing in sigma; solve log eps(sigma) = log target.
    log_t = math.log(target)

    def gap(log_sigma: float) -> float:  # clamped so 0 and inf stay finite
        eps = min(max(eps_of_sigma(math.exp(log_sigma)), 1e-300), 1e300)
        return math.log(eps) - log_t

    root = brentq(
        gap,
        math.log(lo),
        math.log(hi),
        xtol=_RTOL,
        rtol=4 * np.finfo(float).eps,
    )
    sigma = min(math.exp(root), hi)
    while eps_of_sigma(sigma) > target:  # land on the safe side of the root
        sigma = min(sigma * (1.0 + _RTOL), hi)
    return float(sigma)


def noise_multiplier_for(
    *,
    target_epsilon: float,
    delta: float,
    sample_rate: float,
    steps: int,
    orders: Sequence[float] | None = None,
    accountant: str = "rdp",
) -> float:
    """Smallest noise multiplier whose DP-SGD run stays within ``target_epsilon``.

    Calibrate once per run, for the whole planned schedule (all rounds x local
    epochs), then keep σ fixed; calibrating per round both costs time and, with a
    per-round target, does not bound the total. Guarantee and assumptions as in
    :func:`epsilon_for`; the result satisfies
    ``epsilon_for(noise_multiplier=result, ..., accountant=accountant) <=
    target_epsilon``, within a relative precision of 1e-6 on σ. Results are cached
    (nodes of one simulation with equal schedules calibrate once).

    Raises:
        ValueError: an argument is out of range, or the target cannot be met with
            σ <= 1e4.

    Example:
        >>> s = noise_multiplier_for(target_epsilon=8.0, delta=1e-5,
        ...                          sample_rate=1 / 9, steps=45)
        >>> round(s, 3)
        0.879
        >>> epsilon_for(noise_multiplier=s, sample_rate=1 / 9, steps=45,
        ...             delta=1e-5) <= 8.0
        True
    """
    t = _check_epsilon("target_epsilon", target_epsilon)
    d = _check_delta(delta)
    q = _check_sample_rate(sample_rate)
    n = _check_int("steps", steps, minimum=1)
    o = _check_orders(orders)
    return _calibrated_sigma(t, d, q, n, o, _accountant(accountant, o))


@lru_cache(maxsize=256)
def _calibrated_sigma(
    t: float, d: float, q: float, n: int, o: tuple[float, ...] | None, accountant: str
) -> float:
    if accountant == "pld":
        return _calibrate(lambda s: pld_epsilon({(s, q): n}, d), t)
    return _calibrate(lambda s: _epsilon({(s, q): n}, d, o), t)


def local_schedule(
    *, num_examples: int, batch_size: int, epochs: int = 1
) -> LocalSchedule:
    """The sampling rate and step count of one local round, exactly as Opacus runs it.

    Opacus's ``DPDataLoader`` uses ``sample_rate = 1 / len(data_loader)``, that is
    ``1 / ceil(n / batch_size)`` for a loader without ``drop_last`` (equal to
    ``batch_size / n`` only when ``batch_size`` divides ``n``), and takes
    ``int(1 / sample_rate)`` steps per epoch, which floating-point rounding makes one
    less than ``ceil(n / batch_size)`` for some sizes (e.g. 93 batches -> 92 steps).
    The ledger must be charged with these numbers, not with ``batch_size / n``.

    Raises:
        ValueError: a non-positive count.
    """
    n = _check_int("num_examples", num_examples, minimum=1)
    b = _check_int("batch_size", batch_size, minimum=1)
    e = _check_int("epochs", epochs, minimum=1)
    q = 1.0 / math.ceil(n / b)
    per_epoch = int(1.0 / q)
    return LocalSchedule(sample_rate=q, steps_per_epoch=per_epoch, steps=e * per_epoch)


# ---------------------------------------------------------------------- central DP


def _central_rdp_accountant(delta: float, population_size: int = 1) -> object:
    from flwr.serverapp import (
        NeighboringRelation,
        PrivacyConfig,
        RdpAccountant,
        SamplingMethod,
    )

    return RdpAccountant(
        PrivacyConfig(
            target_delta=delta,
            population_size=population_size,
            neighboring_relation=NeighboringRelation.ADD_OR_REMOVE_ONE,
            sampling_method=SamplingMethod.NO_AMPLIFICATION,
        )
    )


def central_epsilon(
    *, noise_multiplier: float, rounds: int, delta: float, accountant: str = "rdp"
) -> float:
    """Client-level epsilon of ``rounds`` central-DP (DP-FedAvg) releases.

    Each round releases ``sum_i clip(Δ_i, C) + N(0, (σC)^2 I)`` (or that divided by a
    fixed, public number of clients): a Gaussian mechanism with L2 sensitivity C under
    add/remove-one-client adjacency. No amplification by client sampling is claimed
    (Flower samples without replacement, not Poisson, and the sampling is not secret
    from the server), so this is the bound for a client that takes part in every
    round. Protects each client's whole contribution against anyone who sees the
    released global models, but **not** against the aggregator that adds the noise
    (it sees the un-noised sum). Void if the noise is not added, if C is not enforced
    on every update, or if the mean's denominator depends on who replied.
    ``accountant="rdp"`` uses Flower's ``RdpAccountant``; ``"pld"`` the exact
    composition of Gaussians (one Gaussian of σ/√rounds) through ``dp-accounting``'s PLD.

    Raises:
        ValueError: an argument is out of range.
    """
    s = _check_noise_multiplier(noise_multiplier)
    r = _check_int("rounds", rounds, minimum=0)
    d = _check_delta(delta)
    a = check_accountant(accountant)
    if r == 0:
        return 0.0
    if a == "pld":
        return pld_central_epsilon({s: r}, d)
    from flwr.serverapp import GaussianPrivacyEvent

    acc = _central_rdp_accountant(d)
    acc.compose(  # type: ignore[attr-defined]
        GaussianPrivacyEvent(noise_multiplier=s, sample_size=1, population_size=1), r
    )
    return float(acc.get_epsilon(d))  # type: ignore[attr-defined]


def central_noise_multiplier_for(
    *, target_epsilon: float, delta: float, rounds: int, accountant: str = "rdp"
) -> float:
    """Smallest noise multiplier keeping ``rounds`` central-DP releases within target.

    Same guarantee and assumptions as :func:`central_epsilon`.

    Raises:
        ValueError: an argument is out of range, or the target is unreachable.

    Example:
        >>> z = central_noise_multiplier_for(target_epsilon=4.7285, delta=1e-5, rounds=1)
        >>> round(z, 3)
        1.0
    """
    t = _check_epsilon("target_epsilon", target_epsilon)
    d = _check_delta(delta)
    r = _check_int("rounds", rounds, minimum=1)
    a = check_accountant(accountant)
    return _calibrate(
        lambda z: central_epsilon(noise_multiplier=z, rounds=r, delta=d, accountant=a), t
    )
