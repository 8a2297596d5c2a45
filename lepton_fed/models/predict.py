"""Class probabilities of a model on a feature matrix (shared by server and node evaluation)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = ["AUC_BINS", "EVAL_LOSS_CAP", "binned_auc", "eval_from_mean", "eval_vector",
           "predict_proba"]

#: bins of the positive-class score histogram that federated evaluation sums (binary tasks)
AUC_BINS = 64


@torch.no_grad()
def predict_proba(model: nn.Module, X: np.ndarray, device: str = "cpu", batch: int = 4096) -> np.ndarray:
    """Class probabilities, shape (n, num_classes)."""
    model.eval()
    model.to(device)
    outs = []
    for i in range(0, len(X), batch):
        xb = torch.as_tensor(X[i : i + batch], dtype=torch.float32, device=device)
        outs.append(torch.softmax(model(xb), dim=1).cpu().numpy())
    return np.concatenate(outs) if outs else np.zeros((0, 0))


def binned_auc(hist_neg: np.ndarray, hist_pos: np.ndarray) -> float | None:
    """AUC from score histograms (ties within a bin count one half), or None if a class
    is absent. Exact when no two scores of different classes share a bin."""
    neg, pos = np.asarray(hist_neg, float), np.asarray(hist_pos, float)
    n_neg, n_pos = neg.sum(), pos.sum()
    if n_neg == 0 or n_pos == 0:
        return None
    below = np.concatenate([[0.0], np.cumsum(neg)[:-1]])
    return float(np.sum(pos * (below + 0.5 * neg)) / (n_neg * n_pos))


#: per-example loss is capped at this value inside a securely aggregated evaluation vector
EVAL_LOSS_CAP = 20.0


def eval_vector(sums: Mapping[str, Any], *, scale: float, binary: bool) -> np.ndarray:
    """A node's evaluation sums as a vector whose every entry is in ``[0, scale]``, for
    secure aggregation (weighted by the node's example count):
    ``scale * [accuracy, mean loss / cap, score histogram neg / n, pos / n]``.

    The securely aggregated weighted mean of these vectors gives the federation's
    example-weighted accuracy and (capped) loss, and histograms proportional to the
    summed ones (enough for the binned AUC): :func:`eval_from_mean`.
    """
    n = float(sums.get("eval-n", 0.0))
    size = 2 + (2 * AUC_BINS if binary else 0)
    vec = np.zeros(size)
    if n <= 0:
        return vec
    vec[0] = float(sums["eval-correct"]) / n
    vec[1] = min(float(sums["eval-loss-sum"]) / n, EVAL_LOSS_CAP) / EVAL_LOSS_CAP
    if binary and "eval-hist-neg" in sums:
        vec[2:2 + AUC_BINS] = np.asarray(sums["eval-hist-neg"], float) / n
        vec[2 + AUC_BINS:] = np.asarray(sums["eval-hist-pos"], float) / n
    return np.clip(vec, 0.0, 1.0) * scale


def eval_from_mean(mean: np.ndarray, *, scale: float, n: float) -> dict[str, Any]:
    """Federation-wide figures from the weighted mean of :func:`eval_vector` vectors."""
    m = np.asarray(mean, float) / scale
    out: dict[str, Any] = {"accuracy": float(m[0]), "loss": float(m[1]) * EVAL_LOSS_CAP,
                           "n": int(round(n))}
    if m.size == 2 + 2 * AUC_BINS:
        out["auc"] = binned_auc(np.maximum(m[2:2 + AUC_BINS], 0.0),
                                np.maximum(m[2 + AUC_BINS:], 0.0))
    return out
