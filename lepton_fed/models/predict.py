"""Class probabilities of a model on a feature matrix (shared by server and node evaluation)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

__all__ = ["AUC_BINS", "binned_auc", "predict_proba"]

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
