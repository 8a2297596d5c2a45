"""Centralized evaluation of a global model on held-out rows."""

from __future__ import annotations

import numpy as np
from torch import nn

from lepton_fed.models.predict import predict_proba

__all__ = ["evaluate_model", "predict_proba"]


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
