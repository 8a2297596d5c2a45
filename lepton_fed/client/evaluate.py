"""Local evaluation of the global model on the node's held-out rows, as SUMS.

A node replies with counts and sums only (examples, correct predictions, summed
cross-entropy, and for binary tasks a histogram of the positive-class score per true
class), so the server can form federation-wide accuracy, loss and a binned AUC by adding
replies -- no prediction or row leaves the node.
"""

from __future__ import annotations

import numpy as np
import torch

from lepton_fed.models.predict import AUC_BINS, predict_proba

__all__ = ["EvalSums", "eval_sums"]


class EvalSums(dict[str, float | list[float]]):
    """``{"eval-n", "eval-correct", "eval-loss-sum"[, "eval-hist-neg", "eval-hist-pos"]}``."""


@torch.no_grad()
def eval_sums(model: torch.nn.Module, X: np.ndarray, y: np.ndarray, device: str = "cpu") -> EvalSums:
    """Sums over the held-out rows ``X, y`` (empty when the node holds none out)."""
    out = EvalSums({"eval-n": float(len(y)), "eval-correct": 0.0, "eval-loss-sum": 0.0})
    if len(y) == 0:
        return out
    p = predict_proba(model, X, device)
    out["eval-correct"] = float(np.sum(p.argmax(1) == y))
    out["eval-loss-sum"] = float(-np.sum(np.log(p[np.arange(len(y)), y] + 1e-12)))
    if p.shape[1] == 2:
        edges = np.linspace(0.0, 1.0, AUC_BINS + 1)
        out["eval-hist-neg"] = np.histogram(p[y == 0, 1], edges)[0].astype(float).tolist()
        out["eval-hist-pos"] = np.histogram(p[y == 1, 1], edges)[0].astype(float).tolist()
    return out
