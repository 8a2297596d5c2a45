"""What server and nodes agree on for SECURE FEDERATED EVALUATION.

Evaluation under secure aggregation is a separate protocol run next to training's: its
own run id (:func:`eval_run_id`, so no round key or message of one run is valid in the
other), its own round numbers, and a node-side state of its own. Each node masks
``eval_vector(sums, scale=EVAL_CLIP, binary=...)`` (:mod:`lepton_fed.models.predict`:
accuracy, capped mean loss and, for binary tasks, normalised score histograms, every
entry in ``[0, EVAL_CLIP]``) with weight ``min(1, eval-n / max_weight)``; the server
learns only the weighted sum over the contributors, hence the federation's
example-weighted figures and nothing per node.
"""

from __future__ import annotations

import hashlib

from lepton_fed.models.predict import AUC_BINS

__all__ = ["EVAL_CLIP", "eval_dim", "eval_run_id", "eval_weight"]

#: every entry of an evaluation vector lies in [0, EVAL_CLIP] (the eval run's clip)
EVAL_CLIP = 1.0


def eval_dim(binary: bool) -> int:
    """Length of the evaluation vector: accuracy, loss (+ two score histograms)."""
    return 2 + (2 * AUC_BINS if binary else 0)


def eval_weight(num_examples: float, max_weight: float) -> float:
    """``min(1, eval-n / max_weight)``: a node's weight (example-weighted figures are
    exact while no node holds out more than ``max_weight`` rows).

    Raises:
        ValueError: ``max_weight`` not positive.
    """
    if not max_weight > 0:
        raise ValueError(f"max_weight must be positive, got {max_weight}")
    return min(1.0, max(0.0, float(num_examples)) / float(max_weight))


def eval_run_id(run_id: int) -> int:
    """The evaluation protocol run's id, derived from the training run's (never equal)."""
    h = hashlib.sha256(b"lepton-fed secagg evaluation\x00" + int(run_id).to_bytes(8, "little"))
    out = int.from_bytes(h.digest()[:8], "little") >> 2
    return out if out != run_id else out ^ 1
