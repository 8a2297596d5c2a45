"""Where DP randomness comes from: one policy for DP-SGD and central DP.

Every random draw a DP guarantee rests on (DP-SGD's Poisson sampling and Gaussian
noise, central DP's noise on the sum) comes from a :class:`NoiseSource`:

========================  ==================================================  ==========
source (``.name``)        randomness                                          when
========================  ==================================================  ==========
:class:`OSNoise`          :class:`~lepton_fed.privacy.secure_rng.CryptoRandom`  default
``"os"``                  (keyed from ``os.urandom``), one Box-Muller normal
                          per value
:class:`SecureNoise`      the same CSPRNG, noise hardened against floating-    ``secure_mode``
``"secure"``              point attacks (Opacus's sum-of-4 recipe)
:class:`SeededNoise`      torch generators seeded from a given seed             ``reproducible``
``"seeded"``              (research opt-in, simulation only)
========================  ==================================================  ==========

Guarantee: with :class:`OSNoise` and :class:`SecureNoise` nothing the server, a member
or the config chooses (``cfg.seed``, round, client id, the global torch seed) has any
influence on the draws, so a party that knows all of them cannot regenerate the noise
and subtract it. :class:`SeededNoise` voids exactly that: anyone who knows the seed
and its derivation (the server, with ``cfg.seed`` and the round/partition ids) can
regenerate the noise and recover the clipped-gradient sum; it exists only for
bit-for-bit reproducible research simulations and warns
(:class:`ReproducibleNoiseWarning`) every time one is built.

Note why the default is not a torch generator seeded from the OS: torch's CPU
generator (MT19937) keeps only the low 32 bits of a seed, so a 2**32 search over
seeds would find it.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
import torch

from lepton_fed.privacy.secure_rng import CryptoRandom

__all__ = [
    "NoiseSource",
    "OSNoise",
    "ReproducibleNoiseWarning",
    "SecureNoise",
    "SeededNoise",
    "check_noise_config",
    "noise_source",
]

REPRODUCIBLE_RISK = (
    "privacy.reproducible=true: DP noise and Poisson sampling are seeded from the run's "
    "seed, so anyone who knows the config (the server, every member) can regenerate "
    "the noise and subtract it, recovering clipped gradient sums / the exact aggregate. "
    "The reported epsilon means NOTHING against them. Use it only for reproducible "
    "research simulations, never with real data or real nodes."
)


class ReproducibleNoiseWarning(UserWarning):
    """DP randomness is seeded (``reproducible=True``): the privacy guarantee is void
    against anyone who knows the seed. Simulation only."""


class NoiseSource(Protocol):
    """Random draws for one DP mechanism instance (one client round, one release)."""

    name: str

    def gaussian(
        self, std: float, shape: Sequence[int], *, device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> torch.Tensor:
        """``N(0, std**2)`` draws of ``shape`` on ``device`` as ``dtype``."""
        ...

    def uniform(self, n: int) -> torch.Tensor:
        """``n`` float64 uniforms on ``[0, 1)`` (CPU), for Poisson sampling."""
        ...


class OSNoise:
    """Default: CSPRNG keyed from the OS; one Box-Muller normal per value."""

    name = "os"

    def __init__(self) -> None:
        self.rng = CryptoRandom()

    def _normals(self, n: int) -> torch.Tensor:
        return self.rng.standard_normal(n)

    def gaussian(
        self, std: float, shape: Sequence[int], *, device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> torch.Tensor:
        """``N(0, std**2)`` draws of ``shape`` on ``device`` as ``dtype``.

        Drawn as float64 normals from the OS-keyed CSPRNG and scaled on CPU, then cast.
        """
        n = math.prod(shape)
        z = self._normals(n).mul_(float(std)).view(tuple(shape))
        return z.to(device=device, dtype=dtype)

    def uniform(self, n: int) -> torch.Tensor:
        """``n`` float64 CSPRNG uniforms on ``[0, 1)`` (CPU), for Poisson sampling."""
        return self.rng.uniform(n)


class SecureNoise(OSNoise):
    """``secure_mode``: the OS-keyed CSPRNG with floating-point-attack-hardened normals
    (:meth:`~lepton_fed.privacy.secure_rng.CryptoRandom.fp_safe_normal`, 4x the draws)."""

    name = "secure"

    def _normals(self, n: int) -> torch.Tensor:
        return self.rng.fp_safe_normal(n)


class SeededNoise:
    """``reproducible``: two independent torch generators (noise on ``device``,
    sampling on CPU) derived from ``seed``. Predictable by design; warns on creation.

    Args:
        seed: a non-negative integer (derive it per round and client, *after*
            building the model, so that the model builder's seeding cannot make
            clients share noise).
        device: where the noise is drawn (the model's device).
    """

    name = "seeded"

    def __init__(self, seed: int, device: torch.device | str = "cpu") -> None:
        if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
            raise ValueError(f"seed must be a non-negative integer; got {seed!r}")
        warnings.warn(REPRODUCIBLE_RISK, ReproducibleNoiseWarning, stacklevel=2)
        noise_ss, sample_ss = np.random.SeedSequence(int(seed)).spawn(2)
        self.device = torch.device(device)
        self.noise_gen = torch.Generator(device=self.device)
        self.noise_gen.manual_seed(int(noise_ss.generate_state(1, np.uint64)[0]))
        self.sample_gen = torch.Generator()
        self.sample_gen.manual_seed(int(sample_ss.generate_state(1, np.uint64)[0]))

    def gaussian(
        self, std: float, shape: Sequence[int], *, device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> torch.Tensor:
        """``N(0, std**2)`` draws of ``shape`` as ``dtype``, moved to ``device``.

        Drawn from the seeded generator on this source's device: predictable from the seed.
        """
        z = torch.normal(0.0, float(std), size=tuple(shape), device=self.device,
                         generator=self.noise_gen, dtype=dtype)
        return z.to(device=device)

    def uniform(self, n: int) -> torch.Tensor:
        """``n`` float64 uniforms on ``[0, 1)`` from the seeded CPU generator (predictable)."""
        return torch.rand(n, generator=self.sample_gen, dtype=torch.float64)


def noise_source(
    *, secure_mode: bool = False, reproducible: bool = False, seed: int | None = None,
    device: torch.device | str = "cpu", deployment: bool = False,
) -> NoiseSource:
    """The source the settings ask for (see the module table).

    Raises:
        ValueError: ``secure_mode`` with ``reproducible``; ``reproducible`` without a
            seed or in a deployment; a seed without ``reproducible`` (it would be
            silently ignored, so it is refused instead).
    """
    if reproducible and secure_mode:
        raise ValueError("reproducible=True and secure_mode=True exclude each other "
                         "(seeded noise is predictable)")
    if reproducible and deployment:
        raise ValueError("reproducible=True is for simulations only; a deployment must "
                         "draw DP noise from OS entropy")
    if reproducible:
        if seed is None:
            raise ValueError("reproducible=True needs a seed")
        return SeededNoise(seed, device)
    if seed is not None:
        raise ValueError("a seed was given but reproducible=False: DP noise never uses a "
                         "seed unless reproducible=True (research simulations only)")
    return SecureNoise() if secure_mode else OSNoise()


def check_noise_config(cfg: Any, *, deployment: bool = False) -> list[str]:
    """Problems with ``cfg.privacy``'s noise settings, one full sentence each.

    Checks ``privacy.secure_mode`` and ``privacy.reproducible`` (absent = false) are
    booleans, not both true, and that ``reproducible`` is not used in a deployment
    (``deployment=True``: a real node or server).
    """
    pr = cfg.privacy
    out: list[str] = []
    secure, repro = pr.get("secure_mode", False), pr.get("reproducible", False)
    for key, value in (("secure_mode", secure), ("reproducible", repro)):
        if not isinstance(value, bool):
            out.append(f"privacy.{key} must be true or false, got {value!r}")
    if secure is True and repro is True:
        out.append("privacy.reproducible=true and privacy.secure_mode=true exclude each "
                   "other: reproducible seeds the DP noise, secure_mode needs it "
                   "unpredictable; choose one")
    if deployment and repro is True:
        out.append("privacy.reproducible=true is for simulations only: a real node or "
                   "server must draw DP noise from OS entropy; set privacy.reproducible=false")
    return out
