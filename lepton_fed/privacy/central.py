"""Central (user-level) DP, DP-FedAvg style: client-side clipping, server-side noise.

Each sampled client clips its update ``Δ_i`` to L2 norm ``C`` (:func:`clip_update`);
the server adds ``N(0, (σC)^2 I)`` to the **sum** of the clipped updates
(:func:`add_gaussian_noise`), then divides by the *planned* number of clients ``m``
(fixed and public, never the number that actually replied). Noise on the sum works
when the server only ever sees the sum (secure aggregation), and equals Flower's
``std = σC/m`` on the mean. :class:`CentralAccountant` composes the rounds with RDP or
PLD (McMahan et al. 2018, "Learning Differentially Private Recurrent Language Models").

Guarantee: client-level (ε, δ)-DP, add/remove-one-client adjacency, for the sequence
of released global models, against anyone who sees them (other clients, model users).
**Not** against the aggregator: it sees the exact un-noised sum before adding noise
(and, without secure aggregation, every clipped update). Void if a client skips
clipping, if the noise is omitted or predictable, or if the mean's denominator is the
reply count. No amplification by client sampling is claimed.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from lepton_fed.privacy.analysis import (
    _central_rdp_accountant,
    _check_delta,
    _check_epsilon,
    _check_int,
    _check_noise_multiplier,
    _finite,
)

if TYPE_CHECKING:
    from lepton_fed.privacy.noise import NoiseSource

__all__ = ["CentralAccountant", "add_gaussian_noise", "clip_update"]

# The "/rdp" suffix dates from when RDP was the only accountant; the state (σ and m per
# round) is accountant-neutral, and kept under this name so stored states still load.
MECHANISM = "central/gaussian-sum/no-amplification/rdp"
STATE_VERSION = 1
_STATE_KEYS = frozenset({"version", "mechanism", "delta", "population_size", "rounds"})


def _check_clip(clip: object) -> float:
    c = _finite("clip", clip)
    if c <= 0:
        raise ValueError(f"clip must be > 0; got {clip!r}")
    return c


def clip_update(vec: np.ndarray, *, clip: float) -> tuple[np.ndarray, float]:
    """Flat L2 clipping of one client's update: ``Δ · min(1, C / ‖Δ‖₂)``.

    This bounds each client's contribution to the sum by ``C``, the sensitivity the
    server's noise is calibrated to. It must run on the client (or inside the secure
    aggregation boundary) for every update; a client that skips it voids the
    guarantee for everyone. Non-finite updates are refused rather than clipped
    (a NaN norm would silently pass through ``min``).

    Args:
        vec: the flattened update (any float dtype; the result keeps it).
        clip: the clipping norm C > 0.

    Returns:
        ``(clipped, norm)`` where ``norm`` is the L2 norm *before* clipping (report it
        only through a private channel: it is a raw function of the client's data).

    Raises:
        ValueError: non-finite entries, a non-1-D input, or ``clip <= 0``.

    Example:
        >>> v, n = clip_update(np.array([3.0, 4.0]), clip=1.0)
        >>> v.tolist(), n
        ([0.6000000000000001, 0.8], 5.0)
    """
    c = _check_clip(clip)
    a = np.asarray(vec)
    if a.ndim != 1 or not np.issubdtype(a.dtype, np.floating):
        raise ValueError(
            f"vec must be a 1-D float array; got shape {a.shape}, dtype {a.dtype}"
        )
    if not np.all(np.isfinite(a)):
        raise ValueError(
            "vec has non-finite entries; refusing to clip (the norm is undefined)"
        )
    a64 = a.astype(np.float64, copy=False)
    norm = float(np.sqrt(np.sum(a64 * a64)))  # no BLAS: its threads stall under load
    if norm <= c:
        return a.copy(), norm
    return (a.astype(np.float64) * (c / norm)).astype(a.dtype, copy=False), norm


def add_gaussian_noise(
    total: np.ndarray,
    *,
    noise_multiplier: float,
    clip: float,
    rng: NoiseSource | np.random.Generator,
) -> np.ndarray:
    """Add ``N(0, (noise_multiplier·clip)^2)`` to each entry of a sum of clipped updates.

    The L2 sensitivity of a sum of updates clipped to ``clip`` under add/remove-one
    client is ``clip``, so this is the Gaussian mechanism with noise multiplier σ.
    Add it exactly once per round, to the sum (divide by the planned client count
    afterwards). ``rng`` must be secret and unpredictable in deployment: pass a
    :class:`~lepton_fed.privacy.noise.NoiseSource` (``OSNoise()``: CSPRNG keyed from
    the OS; ``SecureNoise()``: also hardened against floating-point attacks, Mironov
    2012). A numpy ``Generator`` is accepted for research code and tests only (PCG64
    is not a CSPRNG and its float Gaussians are not hardened).

    Returns:
        A new float64 array (``total`` is not modified).

    Raises:
        ValueError: ``noise_multiplier <= 0``, ``clip <= 0`` or non-finite ``total``.
    """
    sigma = _check_noise_multiplier(noise_multiplier)
    c = _check_clip(clip)
    is_source = callable(getattr(rng, "gaussian", None)) and callable(
        getattr(rng, "uniform", None))
    if not (is_source or isinstance(rng, np.random.Generator)):
        raise ValueError(
            f"rng must be a NoiseSource or a numpy Generator; got {type(rng).__name__}")
    t = np.asarray(total, dtype=np.float64)
    if not np.all(np.isfinite(t)):
        raise ValueError("total has non-finite entries")
    if isinstance(rng, np.random.Generator):
        return t + rng.normal(0.0, sigma * c, size=t.shape)
    import torch

    noisy: np.ndarray = t + rng.gaussian(sigma * c, t.shape, dtype=torch.float64).numpy()
    return noisy


class CentralAccountant:
    """Client-level privacy spent by central-DP rounds, composed with RDP or PLD.

    RDP: Flower's ``RdpAccountant`` (``dp-accounting`` backend) with
    ``NO_AMPLIFICATION`` and ``ADD_OR_REMOVE_ONE``. PLD: the exact composition of the
    rounds' Gaussian mechanisms (:func:`~lepton_fed.privacy.pld.pld_central_epsilon`).
    Either way every round counts in full, which is exact for a client that takes part
    in every round and an upper bound for the others. Guarantee and assumptions: see
    the module docstring.

    Args:
        delta: target δ in (0, 1) at which :attr:`epsilon` is reported.
        population_size: number of clients in the federation (metadata here: no
            amplification is claimed; it bounds ``num_clients`` per round).
        accountant: ``"rdp"`` or ``"pld"``: the one :attr:`epsilon` and
            :meth:`can_afford` use (:meth:`epsilon_with` gives either).
    """

    def __init__(
        self, *, delta: float, population_size: int, accountant: str = "rdp"
    ) -> None:
        from lepton_fed.privacy.pld import check_accountant

        self.accountant = check_accountant(accountant)
        self.delta = _check_delta(delta)
        self.population_size = _check_int("population_size", population_size, minimum=1)
        self._rounds: list[tuple[float, int]] = []
        self._acc: Any = _central_rdp_accountant(self.delta, self.population_size)

    def _event(self, noise_multiplier: float, num_clients: int) -> Any:
        from flwr.serverapp import GaussianPrivacyEvent

        sigma = _check_noise_multiplier(noise_multiplier)
        m = _check_int("num_clients", num_clients, minimum=1)
        if m > self.population_size:
            raise ValueError(
                f"num_clients={m} exceeds population_size={self.population_size}"
            )
        return GaussianPrivacyEvent(
            noise_multiplier=sigma, sample_size=m, population_size=self.population_size
        )

    def step(self, *, noise_multiplier: float, num_clients: int) -> None:
        """Account one released round (call it when the noisy model is released)."""
        event = self._event(noise_multiplier, num_clients)
        self._acc.compose(event)
        self._rounds.append((float(noise_multiplier), int(num_clients)))

    @property
    def rounds(self) -> int:
        """Rounds accounted so far."""
        return len(self._rounds)

    @property
    def epsilon(self) -> float:
        """Epsilon spent so far at :attr:`delta` with :attr:`accountant` (0.0 before
        the first round)."""
        return self.epsilon_with(self.accountant)

    def epsilon_with(self, accountant: str) -> float:
        """Epsilon spent so far at :attr:`delta` with ``accountant`` (``rdp``/``pld``)."""
        from lepton_fed.privacy.pld import check_accountant, pld_central_epsilon

        if not self._rounds:
            return 0.0
        if check_accountant(accountant) == "pld":
            by_sigma: dict[float, int] = {}
            for s, _m in self._rounds:
                by_sigma[s] = by_sigma.get(s, 0) + 1
            return pld_central_epsilon(by_sigma, self.delta)
        return float(self._acc.get_epsilon(self.delta))

    def projected_epsilon(self, *, noise_multiplier: float, num_clients: int) -> float:
        """Epsilon after one more round with these parameters (state unchanged)."""
        tmp = CentralAccountant(delta=self.delta, population_size=self.population_size,
                                accountant=self.accountant)
        tmp.load_state_dict(self.state_dict())
        tmp.step(noise_multiplier=noise_multiplier, num_clients=num_clients)
        return tmp.epsilon

    def can_afford(
        self, *, noise_multiplier: float, num_clients: int, target_epsilon: float
    ) -> bool:
        """Whether one more round keeps epsilon within ``target_epsilon`` (1e-9 rel. tol.)."""
        t = _check_epsilon("target_epsilon", target_epsilon)
        eps = self.projected_epsilon(
            noise_multiplier=noise_multiplier, num_clients=num_clients
        )
        return eps <= t * (1.0 + 1e-9)

    def state_dict(self) -> dict[str, Any]:
        """JSON-ready state: mechanism, version, δ, population and per-round σ/m."""
        return {
            "version": STATE_VERSION,
            "mechanism": MECHANISM,
            "delta": self.delta,
            "population_size": self.population_size,
            "rounds": [[s, m] for s, m in self._rounds],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` output; δ and population must match.

        Raises:
            ValueError: wrong version/mechanism/keys, mismatched δ or population,
                or an invalid round.
        """
        if not isinstance(state, dict) or set(state) != _STATE_KEYS:
            got = sorted(state) if isinstance(state, dict) else type(state).__name__
            raise ValueError(
                f"central accountant state must have keys {sorted(_STATE_KEYS)}; got {got}"
            )
        if state["version"] != STATE_VERSION or state["mechanism"] != MECHANISM:
            raise ValueError(
                f"central accountant state is {state['mechanism']!r} v{state['version']!r}; "
                f"expected {MECHANISM!r} v{STATE_VERSION}"
            )
        if not math.isclose(float(state["delta"]), self.delta, rel_tol=0, abs_tol=0):
            raise ValueError(
                f"state delta={state['delta']!r} does not match delta={self.delta!r}"
            )
        if state["population_size"] != self.population_size:
            raise ValueError(
                f"state population_size={state['population_size']!r} does not match "
                f"{self.population_size}"
            )
        rounds = state["rounds"]
        if not isinstance(rounds, list) or any(
            not isinstance(r, list | tuple) or len(r) != 2 for r in rounds
        ):
            raise ValueError(
                "state rounds must be a list of [noise_multiplier, num_clients]"
            )
        acc = _central_rdp_accountant(self.delta, self.population_size)
        parsed: list[tuple[float, int]] = []
        for s, m in rounds:
            acc.compose(self._event(s, m))  # type: ignore[attr-defined]
            parsed.append((float(s), int(m)))
        self._acc, self._rounds = acc, parsed
