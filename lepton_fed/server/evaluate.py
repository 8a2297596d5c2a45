"""Centralized evaluation of a global model on held-out rows."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

__all__ = ["evaluate_model", "predict_proba"]


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


def evaluate_model(model: nn.Module, X: np.ndarray, y: np.ndarray, device: str = "cpu") -> dict[str, float]:
    """``loss`` (cross-entropy), ``accuracy``, and ``auc`` for binary tasks."""
    p = predict_proba(model, X, device)
    eps = 1e-12
    loss = float(-np.mean(np.log(p[np.arange(len(y)), y] + eps)))
    out = {"loss": loss, "accuracy": float(np.mean(p.argmax(1) == y))}
    if p.shape[1] == 2 and len(np.unique(y)) == 2:
        from sklearn.metrics import roc_auc_score

        out["auc"] = float(roc_auc_score(y, p[:, 1]))
    return out
