"""Post-training pruning: global magnitude (unstructured) and L2 structured (neurons).

Spec strings (the ``compression.prune`` config value and ``--prune``): ``none``,
``magnitude:AMOUNT`` or ``structured:AMOUNT`` with ``0 <= AMOUNT < 1``.

Pruning is done with ``torch.nn.utils.prune`` and made permanent (``prune.remove``),
so the returned model is a plain module with zeros in it. Dense formats (safetensors,
ONNX) store those zeros, so unstructured pruning does not shrink the file by itself;
structured pruning of an MLP additionally *removes* the pruned hidden neurons
(:func:`shrink_mlp`), which shrinks the file and the latency.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass
from typing import Any

from lepton_fed.errors import ConfigError

__all__ = ["PruneReport", "PruneSpec", "parse_prune_spec", "prune_model", "shrink_mlp"]

METHODS = ("none", "magnitude", "structured")


@dataclass(frozen=True)
class PruneSpec:
    """A parsed pruning request."""

    method: str = "none"
    amount: float = 0.0

    def __str__(self) -> str:
        """The spec in its string form (``none`` or ``method:amount``)."""
        return "none" if self.method == "none" else f"{self.method}:{self.amount:g}"


@dataclass
class PruneReport:
    """What pruning did.

    Attributes:
        spec: the request, as a string.
        weights_total: entries in the weight tensors considered.
        weights_zero: of those, entries that are exactly zero afterwards.
        sparsity: ``weights_zero / weights_total``.
        neurons_removed: hidden neurons physically removed (structured, MLP only).
        hidden_after: the MLP's hidden widths after removal, else ``None``.
        note: anything the user should know (e.g. nothing was prunable).
    """

    spec: str
    weights_total: int = 0
    weights_zero: int = 0
    sparsity: float = 0.0
    neurons_removed: int = 0
    hidden_after: list[int] | None = None
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        """The report as a JSON-ready dict of its fields."""
        return asdict(self)


def parse_prune_spec(spec: str | PruneSpec | None) -> PruneSpec:
    """Parse ``none`` / ``magnitude:0.5`` / ``structured:0.3``.

    Raises:
        ConfigError: unknown method, or an amount that is not a number in ``[0, 1)``.
    """
    if spec is None:
        return PruneSpec()
    if isinstance(spec, PruneSpec):
        return spec
    text = str(spec).strip().lower()
    if text in ("", "none", "off"):
        return PruneSpec()
    method, sep, amount_text = text.partition(":")
    if method not in METHODS[1:] or not sep:
        raise ConfigError(
            f"compression.prune={spec!r}: expected 'none', 'magnitude:AMOUNT' or "
            f"'structured:AMOUNT' with 0 <= AMOUNT < 1"
        )
    try:
        amount = float(amount_text)
    except ValueError:
        raise ConfigError(
            f"compression.prune={spec!r}: amount {amount_text!r} is not a number"
        ) from None
    if not 0.0 <= amount < 1.0:
        raise ConfigError(f"compression.prune={spec!r}: amount must be in [0, 1)")
    return PruneSpec(method, amount)


def _weighted_layers(model: Any) -> list[tuple[str, Any]]:
    from torch import nn

    return [
        (name, m)
        for name, m in model.named_modules()
        if isinstance(m, nn.Linear | nn.Conv1d | nn.Conv2d)
    ]


def prune_model(model: Any, spec: str | PruneSpec | None) -> tuple[Any, PruneReport]:
    """Prune a copy of ``model``; the input is left untouched.

    ``magnitude:a`` zeroes the fraction ``a`` of smallest-|w| entries over *all*
    Linear/Conv weights together (global L1-unstructured). ``structured:a`` zeroes, in
    every Linear/Conv layer except the output layer, the fraction ``a`` of output
    neurons/channels with the smallest L2 norm (``ln_structured``, ``n=2, dim=0``); the
    output layer is kept whole so that no class loses its logit. Biases are not pruned.
    For an :class:`~lepton_fed.models.builders.MLP`, structured pruning then removes the
    zeroed neurons exactly (see :func:`shrink_mlp`).

    Returns:
        ``(pruned_model, report)``; the model is in eval mode with pruning permanent.

    Raises:
        ConfigError: a malformed spec.
    """
    import torch
    from torch.nn.utils import prune

    parsed = parse_prune_spec(spec)
    pruned = copy.deepcopy(model).eval()
    layers = _weighted_layers(pruned)
    report = PruneReport(spec=str(parsed))
    if parsed.method == "magnitude" and parsed.amount > 0:
        prune.global_unstructured(
            [(m, "weight") for _, m in layers],
            pruning_method=prune.L1Unstructured,
            amount=parsed.amount,
        )
        for _, m in layers:
            prune.remove(m, "weight")  # type: ignore[no-untyped-call]
    elif parsed.method == "structured" and parsed.amount > 0:
        hidden = layers[:-1]
        if not hidden:
            report.note = (
                "nothing to prune structurally: the model has only its output layer"
            )
        for _, m in hidden:
            prune.ln_structured(m, "weight", amount=parsed.amount, n=2, dim=0)  # type: ignore[no-untyped-call]
            prune.remove(m, "weight")  # type: ignore[no-untyped-call]
        from lepton_fed.models.builders import MLP

        if isinstance(pruned, MLP) and hidden:
            pruned, removed = shrink_mlp(pruned)
            report.neurons_removed = removed
            report.hidden_after = [
                int(m.out_features) for _, m in _weighted_layers(pruned)[:-1]
            ]
    with torch.no_grad():
        weights = [m.weight for _, m in _weighted_layers(pruned)]
        report.weights_total = int(sum(w.numel() for w in weights))
        report.weights_zero = int(sum(int((w == 0).sum()) for w in weights))
    report.sparsity = report.weights_zero / max(1, report.weights_total)
    return pruned, report


def shrink_mlp(model: Any) -> tuple[Any, int]:
    """Remove hidden neurons whose incoming weights are all zero, exactly.

    Such a neuron outputs the constant ``relu(b_j)``; its contribution
    ``W_next[:, j] * relu(b_j)`` is folded into the next layer's bias, so the shrunk
    network computes the same function (up to float rounding). Every hidden layer keeps
    at least one neuron.

    Returns:
        ``(new_mlp, neurons_removed)``; ``new_mlp`` is a fresh MLP in eval mode.
    """
    import torch
    from torch import nn

    from lepton_fed.models.builders import MLP

    linears = [m for m in model.net if isinstance(m, nn.Linear)]
    weights = [m.weight.detach().clone() for m in linears]
    biases = [m.bias.detach().clone() for m in linears]
    removed = 0
    with torch.no_grad():
        for i in range(len(linears) - 1):
            dead = (weights[i] == 0).all(dim=1)
            if bool(dead.all()):
                dead[int(biases[i].argmax())] = False
            if not bool(dead.any()):
                continue
            const = torch.relu(biases[i][dead])
            biases[i + 1] = biases[i + 1] + weights[i + 1][:, dead] @ const
            keep = ~dead
            weights[i], biases[i] = weights[i][keep], biases[i][keep]
            weights[i + 1] = weights[i + 1][:, keep]
            removed += int(dead.sum())
        hidden = [int(w.shape[0]) for w in weights[:-1]]
        out = MLP(int(weights[0].shape[1]), int(weights[-1].shape[0]), hidden).eval()
        for lin, w, b in zip(
            [m for m in out.net if isinstance(m, nn.Linear)],
            weights,
            biases,
            strict=True,
        ):
            lin.weight.copy_(w)
            lin.bias.copy_(b)
    return out, removed
