"""Opacus glue: DP-SGD noise and Poisson sampling drawn from a :class:`NoiseSource`.

Opacus 1.6 takes its randomness from ``torch.Generator`` objects only
(``_generate_noise`` calls ``torch.normal(generator=...)``; the Poisson sampler calls
``torch.rand(generator=...)``), and its ``secure_mode`` needs ``torchcsprng``, which
has no torch 2.x build. No global patch is used; two public seams are:

* **Noise.** ``DPOptimizer.add_noise`` is an overridable method. The classes below
  subclass Opacus's flat-clipping optimizers (``DPOptimizer`` for ``ew``/``hooks``/
  ``functorch``; ``DPOptimizerFastGradientClipping`` for ``ghost``) and override only
  ``add_noise``, drawing ``N(0, (σC)^2)`` from the source. :func:`with_noise_source`
  re-wraps the original optimizer of the one ``PrivacyEngine.make_private`` built, with
  the same constructor arguments (clipping, scaling and the ghost-clipping path are
  Opacus's code, unchanged).
* **Sampling.** :class:`PoissonSampler` subclasses ``UniformWithReplacementSampler``
  and overrides ``__iter__`` to draw its uniforms from the source; it is put into a
  fresh ``DataLoader`` over the same dataset, with the ``DPDataLoader``'s collate
  function (which already yields typed empty batches).

Guarantee: every noise value and every inclusion decision of the round comes from the
source; nothing else in Opacus draws randomness on this path (``rand_on_empty`` is
off). The step counter and the ledger are :mod:`lepton_fed.privacy.dpsgd`'s business.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from opacus.optimizers import DPOptimizer, DPOptimizerFastGradientClipping
from opacus.optimizers.optimizer import _check_processed_flag, _mark_as_processed
from opacus.utils.uniform_sampler import UniformWithReplacementSampler
from torch.utils.data import DataLoader

from lepton_fed.privacy.noise import NoiseSource

__all__ = ["PoissonSampler", "with_noise_source"]


class _SourcedNoise:
    """``add_noise`` drawing from ``self.noise_source`` (mixed into Opacus optimizers)."""

    noise_source: NoiseSource
    params: list[Any]
    noise_multiplier: float
    max_grad_norm: float

    def add_noise(self) -> None:
        """Add ``N(0, (σC)^2)`` to each parameter's clipped sum, as Opacus does.

        One draw of the total size, split over the parameters in order (a draw per
        parameter costs a fixed ~30 µs each); per parameter only if they differ in
        device or dtype.
        """
        # ghost mode's adaptive clipping sets an adjusted σ for the draw only
        sigma = getattr(self, "_adjusted_noise_multiplier", self.noise_multiplier)
        std = float(sigma) * float(self.max_grad_norm)
        refs = [p.summed_grad for p in self.params]
        for ref in refs:
            _check_processed_flag(ref)
        kinds = {(r.device, r.dtype) for r in refs}
        if len(kinds) == 1:
            device, dtype = kinds.pop()
            flat = self.noise_source.gaussian(std, (sum(r.numel() for r in refs),),
                                              device=device, dtype=dtype)
            noises = list(torch.split(flat, [r.numel() for r in refs]))
        else:
            noises = [self.noise_source.gaussian(std, (r.numel(),), device=r.device,
                                                 dtype=r.dtype) for r in refs]
        for p, ref, noise in zip(self.params, refs, noises, strict=True):
            p.grad = (ref + noise.view_as(ref)).view_as(p)
            _mark_as_processed(ref)


class SourcedDPOptimizer(_SourcedNoise, DPOptimizer):  # type: ignore[misc]
    """Opacus's ``DPOptimizer`` with noise from a :class:`NoiseSource`."""


class SourcedFastGradientClippingOptimizer(
    _SourcedNoise, DPOptimizerFastGradientClipping  # type: ignore[misc]
):
    """Opacus's ghost-clipping optimizer with noise from a :class:`NoiseSource`."""


_SOURCED: dict[type, type] = {
    DPOptimizer: SourcedDPOptimizer,
    DPOptimizerFastGradientClipping: SourcedFastGradientClippingOptimizer,
}


class PoissonSampler(UniformWithReplacementSampler):  # type: ignore[misc]
    """Opacus's Poisson batch sampler with uniforms from a :class:`NoiseSource`:
    each example joins each batch independently iff ``u < sample_rate``."""

    def __init__(self, *, num_samples: int, sample_rate: float, source: NoiseSource) -> None:
        super().__init__(num_samples=num_samples, sample_rate=sample_rate, generator=None)
        self.source = source

    def __iter__(self) -> Iterator[list[int]]:
        for _ in range(self.steps):
            mask = self.source.uniform(self.num_samples) < self.sample_rate
            yield mask.nonzero(as_tuple=False).reshape(-1).tolist()


def with_noise_source(
    optimizer: Any, data_loader: Any, source: NoiseSource
) -> tuple[Any, DataLoader[Any]]:
    """``(optimizer, loader)`` equal to Opacus's but drawing from ``source``.

    Args:
        optimizer: the ``DPOptimizer`` (or ghost-clipping one) ``make_private`` built.
        data_loader: the ``DPDataLoader`` it built.
        source: where noise and sampling come from.

    Raises:
        TypeError: an Opacus optimizer class this glue does not cover (distributed,
            per-layer or adaptive clipping).
    """
    cls = _SOURCED.get(type(optimizer))
    if cls is None:
        raise TypeError(f"no noise-source variant of {type(optimizer).__name__}")
    sourced = cls(
        optimizer.original_optimizer,
        noise_multiplier=optimizer.noise_multiplier,
        max_grad_norm=optimizer.max_grad_norm,
        expected_batch_size=optimizer.expected_batch_size,
        loss_reduction=optimizer.loss_reduction,
    )
    sourced.noise_source = source
    sampler = PoissonSampler(num_samples=len(data_loader.dataset),
                             sample_rate=float(data_loader.sample_rate), source=source)
    loader: DataLoader[Any] = DataLoader(
        data_loader.dataset, batch_sampler=sampler, collate_fn=data_loader.collate_fn,
        num_workers=data_loader.num_workers, pin_memory=data_loader.pin_memory,
    )
    return sourced, loader
