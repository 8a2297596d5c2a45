"""DP-SGD for one local round on one node: model checks and an Opacus wrap whose noise
and Poisson sampling come from OS entropy (:mod:`lepton_fed.privacy.noise`).

The node's :class:`~lepton_fed.privacy.accounting.PrivacyLedger` does the accounting;
the Opacus engine built here is thrown away after the round (its own accountant is
not used, and ``make_private_with_epsilon``'s per-call σ search, 0.56 s per client
per round, is avoided: σ is calibrated once per run with
:func:`~lepton_fed.privacy.analysis.noise_multiplier_for`).

Typical round (see the package README for the full client sketch)::

    private = make_private(module=model, optimizer=opt, data_loader=loader,
                           noise_multiplier=sigma, max_grad_norm=1.0)
    for _ in range(epochs):
        for x, y in private.data_loader:
            dp_loss_step(module=private.module, optimizer=private.optimizer,
                         criterion=criterion, inputs=x, targets=y)
    ledger.record(private.event(round=server_round, run_id=run_id))
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any, NamedTuple

import torch
from torch import nn

from lepton_fed.errors import IncompatibleModelError
from lepton_fed.privacy.analysis import (
    _check_int,
    _check_noise_multiplier,
    _finite,
    local_schedule,
)
from lepton_fed.privacy.noise import ReproducibleNoiseWarning, noise_source

if TYPE_CHECKING:
    from torch.utils.data import DataLoader

    from lepton_fed.privacy.accounting import PrivacyEvent

__all__ = [
    "GRAD_SAMPLE_MODES",
    "InsecureRNGWarning",
    "PrivateTraining",
    "ReproducibleNoiseWarning",
    "choose_grad_sample_mode",
    "dp_loss_step",
    "dp_ready",
    "local_schedule",
    "make_private",
    "validate_model",
]

#: Opacus per-sample-gradient engines. ``ew`` (torch ExpandedWeights) was fastest on
#: our small MLP/CNN; ``ghost`` is fast gradient clipping (no per-sample gradients
#: materialised); ``hooks`` supports most layers; ``functorch`` supports any layer.
GRAD_SAMPLE_MODES = ("ew", "functorch", "ghost", "hooks")

# Layer types torch's ExpandedWeights (grad_sample_mode="ew") can differentiate.
_EW_TYPES: tuple[type[nn.Module], ...] = (
    nn.Linear,
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
    nn.Embedding,
    nn.GroupNorm,
    nn.InstanceNorm1d,
    nn.InstanceNorm2d,
    nn.InstanceNorm3d,
    nn.LayerNorm,
)
_STEP_COUNTER = "_lepton_fed_steps"


class InsecureRNGWarning(UserWarning):
    """DP-SGD runs in a deployment without ``secure_mode``.

    The noise is still unpredictable (a CSPRNG keyed from the OS), but each value is a
    single Gaussian draw, which is open to floating-point attacks on its low-order
    bits (Mironov 2012; arXiv:2107.10138, arXiv:2112.05307). Turn this into an error
    with ``warnings.simplefilter("error", InsecureRNGWarning)`` to refuse such runs.
    """


# --------------------------------------------------------------------- validation


def _problems(model: nn.Module, grad_sample_mode: str | None) -> list[str]:
    """Every reason Opacus would refuse ``model``, each naming the layer."""
    from opacus.utils.module_utils import trainable_modules
    from opacus.validators import ModuleValidator

    out: list[str] = []
    for name, m in trainable_modules(model):
        label = f"layer {name or '<root>'!r} ({type(m).__name__})"
        check = ModuleValidator.VALIDATORS.get(type(m))
        for err in check(m) if check is not None else []:
            out.append(f"{label}: {err}")
        if check is None and any(True for _ in m.buffers(recurse=False)):
            out.append(
                f"{label}: a trainable layer with buffers (running statistics are "
                "computed from all examples together, so they would leak without noise)"
            )
        if grad_sample_mode == "ew" and not isinstance(m, _EW_TYPES):
            out.append(
                f"{label}: grad_sample_mode='ew' (torch ExpandedWeights) cannot "
                "compute its per-sample gradients; use 'hooks' or 'functorch'"
            )
    return out


def validate_model(
    model: nn.Module, *, grad_sample_mode: str | None = None
) -> tuple[nn.Module, list[str]]:
    """Make ``model`` usable with DP-SGD, or say precisely why it cannot be.

    Fixes what Opacus can fix (BatchNorm -> GroupNorm, InstanceNorm running stats,
    LSTM/GRU/MultiheadAttention -> Opacus's DP layers; a model in eval mode is put in
    training mode) on a *copy*, and warns with the list of changes. Layers that mix
    examples in a batch (BatchNorm statistics) would break per-example clipping, so
    the DP guarantee is void unless they are replaced.

    Call this once where the global model is built (server and clients must agree on
    the architecture: a fix changes the parameter set), not inside a round.

    Args:
        model: the model to check.
        grad_sample_mode: if given, also check that this Opacus mode supports every
            trainable layer (only ``"ew"`` has a restricted layer set).

    Returns:
        ``(model, changes)``: the model to train (the same object when nothing had
        to change) and one human-readable line per change.

    Raises:
        IncompatibleModelError: a layer cannot be fixed; the message names it.
        ValueError: unknown ``grad_sample_mode``.
    """
    from opacus.validators import ModuleValidator

    if grad_sample_mode is not None and grad_sample_mode not in GRAD_SAMPLE_MODES:
        raise ValueError(
            f"grad_sample_mode must be one of {list(GRAD_SAMPLE_MODES)}; got {grad_sample_mode!r}"
        )
    changes: list[str] = []
    if not model.training:
        model.train()
        changes.append("model: switched to training mode (Opacus requires it)")
    if _problems(model, None):
        before = {n: type(m).__name__ for n, m in model.named_modules()}
        fixed = ModuleValidator.fix(model)
        after = dict(fixed.named_modules())
        for n, t in before.items():
            if n in after and type(after[n]).__name__ != t:
                changes.append(
                    f"layer {n or '<root>'!r}: {t} -> {type(after[n]).__name__} "
                    "(Opacus-compatible replacement; parameters re-initialised)"
                )
        model = fixed
    remaining = _problems(model, grad_sample_mode)
    if remaining:
        raise IncompatibleModelError(
            "model cannot be trained with DP-SGD:\n  - " + "\n  - ".join(remaining)
        )
    if changes:
        warnings.warn(
            "validate_model changed the model for DP-SGD: " + "; ".join(changes),
            UserWarning,
            stacklevel=2,
        )
    return model, changes


# ------------------------------------------------------------------ make_private


class PrivateTraining(NamedTuple):
    """What :func:`make_private` returns; unpacks as ``(module, optimizer, data_loader)``."""

    module: nn.Module
    """Opacus-wrapped model (shares parameters with the original)."""
    optimizer: Any
    """Opacus ``DPOptimizer``: clips per-example gradients and adds the noise."""
    data_loader: Any
    """Poisson-sampling loader (:class:`~lepton_fed.privacy.opacus_noise.PoissonSampler`)."""

    @property
    def noise_multiplier(self) -> float:
        """σ of this round."""
        return float(self.optimizer.noise_multiplier)

    @property
    def sample_rate(self) -> float:
        """Poisson rate the loader really uses (``1/ceil(n/batch)``)."""
        return float(self.data_loader.batch_sampler.sample_rate)

    @property
    def steps_per_epoch(self) -> int:
        """Batches (optimizer steps) per pass over the loader."""
        return len(self.data_loader)

    @property
    def steps_taken(self) -> int:
        """Noisy optimizer steps actually taken so far (each one spends privacy)."""
        return int(getattr(self.optimizer, _STEP_COUNTER, 0))

    def event(
        self, *, round: int | None = None, run_id: str | None = None
    ) -> PrivacyEvent:
        """The ledger event for what this round actually did.

        Raises:
            ValueError: no step was taken (nothing to record).
        """
        from lepton_fed.privacy.accounting import PrivacyEvent

        return PrivacyEvent(
            noise_multiplier=self.noise_multiplier,
            sample_rate=self.sample_rate,
            steps=self.steps_taken,
            round=round,
            run_id=run_id,
        )


def _count_step(optimizer: Any) -> None:
    setattr(optimizer, _STEP_COUNTER, getattr(optimizer, _STEP_COUNTER, 0) + 1)


def make_private(
    *,
    module: nn.Module,
    optimizer: torch.optim.Optimizer,
    data_loader: DataLoader[Any],
    noise_multiplier: float,
    max_grad_norm: float,
    grad_sample_mode: str = "ew",
    secure_mode: bool = False,
    reproducible: bool = False,
    seed: int | None = None,
    deployment: bool = False,
    criterion: nn.Module | None = None,
) -> PrivateTraining:
    """Wrap model, optimizer and loader for one local round of DP-SGD.

    Guarantee (with the ledger charged for :meth:`PrivateTraining.event`): every
    step is a Poisson-subsampled Gaussian mechanism, so the models this node releases
    are sample-level (ε, δ)-DP for its dataset against the server and everyone
    downstream. Assumptions: the loader's dataset is the node's whole dataset (the
    accounting unit); every step goes through the returned optimizer (use
    :func:`dp_loss_step`, which also keeps empty Poisson batches noisy); the model
    has no layer that mixes examples (:func:`validate_model`). Void if steps are
    taken but not recorded, if the data is reused outside DP-SGD (e.g. a non-private
    warm start or metrics computed on it and sent), or if the noise is predictable.

    Randomness (:mod:`lepton_fed.privacy.noise`): by default the noise and the
    Poisson sampling come from a CSPRNG keyed from ``os.urandom``; no seed, config
    value or global torch state influences them, so the server cannot regenerate the
    noise. ``secure_mode=True`` also hardens each noise value against
    floating-point attacks (Opacus's ``secure_mode`` recipe, 4 draws per value).
    ``reproducible=True`` (research simulations only) derives both from ``seed``
    instead and warns :class:`ReproducibleNoiseWarning`: derive ``seed`` per (run
    seed, round, client) *after* building the model, or clients share noise.

    Args:
        module: the model (in training mode, Opacus-compatible).
        optimizer: an optimizer over ``module``'s parameters.
        data_loader: a loader over the node's dataset; its ``batch_size`` sets the
            expected batch (``sample_rate = 1/len(data_loader)``); shuffling and
            sampler are replaced by Poisson sampling.
        noise_multiplier: σ (> 0), fixed for the run.
        max_grad_norm: per-example L2 clipping norm C (> 0).
        grad_sample_mode: one of :data:`GRAD_SAMPLE_MODES`.
        secure_mode: floating-point-attack-hardened noise (deployment).
        reproducible: seed noise and sampling from ``seed`` (simulation only; the
            privacy guarantee is void against anyone who knows the seed).
        seed: non-negative integer; required with ``reproducible`` and refused
            without it.
        deployment: this is a real federation, not a simulation: ``reproducible`` is
            refused, and a missing ``secure_mode`` warns (:class:`InsecureRNGWarning`).
        criterion: the loss; only ``ghost`` mode uses it here (default
            ``nn.CrossEntropyLoss()``); pass the same one to :func:`dp_loss_step`.

    Returns:
        :class:`PrivateTraining` ``(module, optimizer, data_loader)``.

    Raises:
        ValueError: an argument is out of range, or the randomness settings conflict
            (see :func:`lepton_fed.privacy.noise.noise_source`).
        IncompatibleModelError: a layer Opacus (or the chosen mode) cannot handle.
    """
    from opacus import PrivacyEngine
    from opacus.validators.errors import UnsupportedError

    from lepton_fed.privacy.opacus_noise import with_noise_source

    sigma = _check_noise_multiplier(noise_multiplier)
    clip = _finite("max_grad_norm", max_grad_norm)
    if clip <= 0:
        raise ValueError(f"max_grad_norm must be > 0; got {max_grad_norm!r}")
    if grad_sample_mode not in GRAD_SAMPLE_MODES:
        raise ValueError(
            f"grad_sample_mode must be one of {list(GRAD_SAMPLE_MODES)}; got {grad_sample_mode!r}"
        )
    if seed is not None:
        seed = _check_int("seed", seed, minimum=0)
    problems = _problems(module, grad_sample_mode)
    if problems:
        raise IncompatibleModelError(
            "model cannot be trained with DP-SGD (see lepton_fed.privacy.dpsgd."
            "validate_model):\n  - " + "\n  - ".join(problems)
        )
    device = next(module.parameters()).device
    source = noise_source(secure_mode=secure_mode, reproducible=reproducible, seed=seed,
                          device=device, deployment=deployment)
    if deployment and not secure_mode:
        warnings.warn(
            "DP-SGD is running in a deployment with secure_mode=False: the noise is "
            "unpredictable (OS-keyed CSPRNG) but each value is a single Gaussian draw, "
            "open to floating-point attacks on its low-order bits. Set "
            "privacy.secure_mode=true for production.",
            InsecureRNGWarning,
            stacklevel=2,
        )
    with warnings.catch_warnings():
        # Opacus's own secure_mode needs torchcsprng; our noise source replaces it, so
        # its "Secure RNG turned off" warning does not apply.
        warnings.filterwarnings("ignore", message="Secure RNG turned off")
        engine = PrivacyEngine(accountant="rdp", secure_mode=False)
    try:
        out = engine.make_private(
            module=module,
            optimizer=optimizer,
            data_loader=data_loader,
            criterion=criterion if criterion is not None else nn.CrossEntropyLoss(),
            noise_multiplier=sigma,
            max_grad_norm=clip,
            poisson_sampling=True,
            grad_sample_mode=grad_sample_mode,
        )
    except (UnsupportedError, NotImplementedError) as e:
        raise IncompatibleModelError(f"Opacus refused the model: {e}") from e
    dp_module = out[0]
    # Same optimizer class and arguments, same loader, but every draw from `source`
    # (Opacus's engine accountant hook stays on the discarded optimizer: our ledger
    # accounts, from the step counter attached here).
    dp_optimizer, dp_loader = with_noise_source(out[1], out[-1], source)
    setattr(dp_optimizer, _STEP_COUNTER, 0)
    dp_optimizer.attach_step_hook(_count_step)
    return PrivateTraining(dp_module, dp_optimizer, dp_loader)


def dp_loss_step(
    *,
    module: nn.Module,
    optimizer: Any,
    criterion: nn.Module,
    inputs: torch.Tensor,
    targets: torch.Tensor,
) -> float:
    """One DP-SGD step on one Poisson batch, right for every ``grad_sample_mode``.

    * ``ghost`` mode needs the loss wrapped by Opacus (two backward passes); this does it.
    * An **empty** Poisson batch still takes a noise-only step: skipping it (or, in
      ``ew`` mode, crashing on it) would make the released model reveal that the
      batch was empty, which the privacy analysis does not allow for.

    ``criterion`` must average over the batch (``reduction="mean"``, Opacus's default).

    Returns:
        The summed loss over the batch's examples (0.0 for an empty batch): divide
        the round's total by the examples seen for a mean training loss.
    """
    from opacus.optimizers import DPOptimizerFastGradientClipping
    from opacus.utils.fast_gradient_clipping_utils import DPLossFastGradientClipping

    ghost = isinstance(optimizer, DPOptimizerFastGradientClipping)
    n = int(targets.shape[0])
    optimizer.zero_grad(set_to_none=True)
    if n == 0:
        for p in optimizer.params:
            if ghost:
                p.grad = torch.zeros_like(p)
            else:
                p.grad_sample = torch.zeros(
                    (0, *p.shape), dtype=p.dtype, device=p.device
                )
        optimizer.step()
        return 0.0
    outputs = module(inputs)
    if ghost:
        loss: Any = DPLossFastGradientClipping(
            module, optimizer, criterion, optimizer.loss_reduction
        )(outputs, targets)
    else:
        loss = criterion(outputs, targets)
    loss.backward()
    optimizer.step()
    return float(loss.item()) * n


def choose_grad_sample_mode(mode: str, *, model: str, num_features: int) -> str:
    """Resolve ``privacy.grad_sample_mode=auto`` by model family, from measurements here
    (benchmarks/dp_modes.py, benchmarks/privacy_utility.py; all modes give the same
    accuracy, they differ only in speed):

    - ``ew`` for narrow MLPs and the CNN (digits MLP 64-128-128: ew 3.4x plain, ghost
      4.3x, hooks 4.1x, functorch 7.6x; small CNN: ew 2.5x, ghost 3.7x);
    - ``ghost`` (fast gradient clipping) for logistic regression and any model whose
      input is wide (>= 256 features): it never materialises per-example gradients
      (MNIST MLP 784-128-10: ghost 2.5 s vs ew 11.7 s; digits logreg ~3x faster).
    """
    if mode != "auto":
        return mode
    return "ghost" if model == "logreg" or num_features >= 256 else "ew"


def dp_ready(
    model: nn.Module, *, grad_sample_mode: str, model_name: str, num_features: int
) -> nn.Module:
    """The run's model made DP-SGD-ready (server and clients call it alike).

    Resolves ``auto`` with :func:`choose_grad_sample_mode`, then
    :func:`validate_model`: fixable layers are replaced (with a warning), others raise
    :class:`~lepton_fed.errors.IncompatibleModelError` naming the layer.
    """
    mode = choose_grad_sample_mode(grad_sample_mode, model=model_name,
                                   num_features=num_features)
    fixed, _ = validate_model(model, grad_sample_mode=mode)
    return fixed

