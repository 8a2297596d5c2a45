"""One local round on one node: (model, rows, settings[, DP]) -> trained model + metrics.

The proximal term of FedProx is applied as a separate decoupled step after each
optimizer step (``w -= lr * mu * (w - w_global)``). That is the proximal gradient step,
and -- unlike adding the term to the loss -- it stays correct under DP-SGD, where Opacus
replaces ``p.grad`` by the clipped, noised sum of per-sample gradients (the proximal
step uses only public values, so it is post-processing and costs no privacy).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

__all__ = ["DPSettings", "LocalResult", "train_local"]


@dataclass(frozen=True)
class DPSettings:
    """DP-SGD settings for one local round (sigma is fixed for the whole run).

    ``secure_mode``: floating-point-attack-hardened noise (deployment).
    ``reproducible``: seed the DP noise and Poisson sampling from ``train_local``'s
    ``seed`` (research simulations only: whoever knows the seed can remove the noise).
    ``batch_size``, ``epochs``, ``lr``: the schedule the node's ledger reserved
    (:func:`lepton_fed.privacy.auto.choice_for`: the user's values, or the DP rule's
    for the ones left null); when set they replace ``train_local``'s arguments, so the
    round trains exactly the schedule that was paid for.
    """

    noise_multiplier: float
    max_grad_norm: float
    grad_sample_mode: str = "ew"
    secure_mode: bool = False
    reproducible: bool = False
    batch_size: int | None = None
    epochs: int | None = None
    lr: float | None = None


@dataclass
class LocalResult:
    """What a local round did: mean training loss, optimizer steps, examples held."""

    loss: float
    steps: int
    num_examples: int
    sample_rate: float


def _optimizer(model: nn.Module, name: str, lr: float, momentum: float) -> torch.optim.Optimizer:
    if name == "adam":
        return torch.optim.Adam(model.parameters(), lr=lr)
    return torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)


def train_local(
    model: nn.Module,
    X: np.ndarray,
    y: np.ndarray,
    *,
    epochs: int | None,
    batch_size: int | None,
    lr: float | None,
    momentum: float | None = 0.0,
    optimizer: str = "sgd",
    proximal_mu: float = 0.0,
    device: str = "cpu",
    seed: int = 0,
    dp: DPSettings | None = None,
) -> LocalResult:
    """Train ``model`` in place on ``(X, y)``.

    Without DP, batches are shuffled with a generator seeded from ``seed`` (and the
    global torch RNG, e.g. for dropout, is seeded from it). With DP, Opacus's Poisson
    sampling (rate ``1/ceil(n/batch_size)``) and noise come from OS entropy and
    ``seed`` touches nothing random at all, unless ``dp.reproducible`` (simulation
    only) derives them from ``seed``. The caller records ``steps`` and
    ``sample_rate`` in the node's ledger.

    ``epochs``, ``batch_size``, ``lr`` may be None (the config's ``null`` = auto): under
    DP they come from ``dp`` (the DP rule's choice); without DP they take the plain
    defaults :data:`lepton_fed.privacy.auto.PLAIN` (1 epoch, batch 16, lr 0.05).
    """
    from lepton_fed.privacy.auto import PLAIN

    def pick(name: str, given: Any) -> Any:
        from_dp = getattr(dp, name, None) if dp is not None else None
        if from_dp is not None:
            return from_dp
        return given if given is not None else PLAIN[name]

    epochs, batch_size, lr = pick("epochs", epochs), pick("batch_size", batch_size), pick("lr", lr)
    momentum = float(momentum or 0.0)
    n = len(y)
    bs = min(batch_size, n)
    gen = torch.Generator().manual_seed(seed)
    if dp is None or dp.reproducible:
        torch.manual_seed(seed)
    ds = TensorDataset(torch.as_tensor(X, dtype=torch.float32), torch.as_tensor(y, dtype=torch.long))
    loader: DataLoader[tuple[torch.Tensor, ...]] = DataLoader(ds, batch_size=bs, shuffle=True, generator=gen)
    model.to(device)
    model.train()
    opt = _optimizer(model, optimizer, lr, momentum)
    anchors = (
        [p.detach().clone() for p in model.parameters()] if proximal_mu > 0 else None
    )

    def proximal_step() -> None:
        if anchors is not None:
            with torch.no_grad():
                for p, a in zip(model.parameters(), anchors, strict=True):
                    p.sub_(lr * proximal_mu * (p - a.to(p.device)))

    criterion = nn.CrossEntropyLoss()
    total, count = 0.0, 0
    if dp is not None:
        from lepton_fed.privacy.dpsgd import dp_loss_step, make_private

        private = make_private(
            module=model, optimizer=opt, data_loader=loader,
            noise_multiplier=dp.noise_multiplier, max_grad_norm=dp.max_grad_norm,
            grad_sample_mode=dp.grad_sample_mode, secure_mode=dp.secure_mode,
            reproducible=dp.reproducible, seed=seed if dp.reproducible else None,
            criterion=criterion,
        )
        with warnings.catch_warnings():
            # benign with ghost clipping on a first layer whose inputs need no grad
            warnings.filterwarnings("ignore", message="Full backward hook is firing")
            for _ in range(epochs):
                for xb, yb in private.data_loader:
                    total += dp_loss_step(module=private.module,
                                          optimizer=private.optimizer,
                                          criterion=criterion, inputs=xb.to(device),
                                          targets=yb.to(device))
                    count += len(yb)
                    proximal_step()
        _strip_opacus(private.module)
        return LocalResult(loss=total / max(count, 1) if count else math.nan,
                           steps=private.steps_taken, num_examples=n,
                           sample_rate=private.sample_rate)
    steps = 0
    for _ in range(epochs):
        for xb, yb in loader:
            xb, yb = xb.to(device), yb.to(device)
            opt.zero_grad()
            loss = criterion(model(xb), yb)
            loss.backward()
            opt.step()
            steps += 1
            proximal_step()
            total += float(loss.item()) * len(yb)
            count += len(yb)
    return LocalResult(
        loss=total / max(count, 1) if count else math.nan,
        steps=steps,
        num_examples=n,
        sample_rate=bs / n,
    )


def _strip_opacus(net: nn.Module) -> None:
    """Remove Opacus hooks so the wrapped module can be reused/serialised."""
    remove = getattr(net, "_close", None)
    if callable(remove):
        remove()
