"""Empirical privacy auditing: a lower bound on epsilon from ONE training run.

Steinke, Nasr & Jagielski 2023, "Privacy Auditing with One (1) Training Run"
(NeurIPS 2023, arXiv:2305.08846): put m canaries in the training data, each included
independently with probability 1/2; after training, an auditor who sees only the
released model guesses, for the canaries it is most confident about, whether each was
included. If training is (eps, delta)-DP with respect to each canary, the number of
correct guesses among r guesses is dominated by Binomial(r, e^eps / (1 + e^eps)) up to
a delta term (their Theorem 5.2), so many correct guesses REFUTE eps: the largest eps
still refuted at the chosen confidence is a lower bound on the true epsilon.

Guarantee: if the mechanism really is (eps, delta)-DP per example, then
``P[epsilon_lower_bound(...) > eps] <= 1 - confidence`` (over the canaries' coin flips
and the mechanism's noise), whatever the scores are. A bound ABOVE the accounted epsilon
therefore means, at that confidence, that the clipping, the noise or the accountant is
broken. A bound below it proves nothing by itself: one-run audits with black-box scores
are loose (the bound is usually far below the true epsilon).

Also here: :func:`mia_auc`, the area under the ROC curve of a loss-threshold
membership-inference attack (Yeom et al. 2018), and :func:`make_canaries`.

Pure numpy/scipy: no training, no Flower.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "GUESS_FRACTIONS",
    "AuditBound",
    "audit_bound",
    "epsilon_lower_bound",
    "make_canaries",
    "mia_auc",
    "p_value",
]

#: Fractions of the canaries the auditor guesses on (half "in" from the top scores, half
#: "out" from the bottom); each is tested at (1 - confidence) / len(...) (Bonferroni),
#: so reporting the best of them keeps the stated confidence.
GUESS_FRACTIONS: tuple[float, ...] = (0.05, 0.1, 0.2, 0.4, 1.0)


def p_value(m: int, r: int, v: int, eps: float, delta: float) -> float:
    """P[>= v correct of r guesses] for an (eps, delta)-DP mechanism, m canaries.

    Steinke, Nasr & Jagielski 2023, Theorem 5.2 and their reference code: the
    Binomial(r, e^eps/(1+e^eps)) tail plus ``2 m delta`` times the largest average of
    the Binomial's mass just below v.
    """
    from scipy.stats import binom

    if not 0 <= v <= r <= m:
        raise ValueError(f"need 0 <= v <= r <= m; got v={v}, r={r}, m={m}")
    if eps < 0 or not 0 <= delta <= 1:
        raise ValueError(f"need eps >= 0 and delta in [0, 1]; got {eps}, {delta}")
    q = 1.0 / (1.0 + math.exp(-eps))
    beta = float(binom.sf(v - 1, r, q))
    alpha = 0.0
    if v > 0 and delta > 0:
        # alpha = max_i (1/i) P[v - i <= Bin(r, q) < v], i = 1..v
        below = np.cumsum(binom.pmf(np.arange(v - 1, -1, -1), r, q))
        alpha = float(np.max(below / np.arange(1, v + 1)))
    return min(1.0, beta + alpha * delta * 2 * m)


def epsilon_lower_bound(m: int, r: int, v: int, *, delta: float, alpha: float) -> float:
    """The largest eps refuted at level ``alpha`` (p-value < alpha) by v correct of r
    guesses on m canaries; 0.0 when nothing is refuted."""
    if p_value(m, r, v, 0.0, delta) >= alpha:
        return 0.0
    lo, hi = 0.0, 1.0
    while p_value(m, r, v, hi, delta) < alpha:
        lo, hi = hi, hi * 2.0
        if hi > 1e3:
            return lo
    for _ in range(40):
        mid = (lo + hi) / 2.0
        if p_value(m, r, v, mid, delta) < alpha:
            lo = mid
        else:
            hi = mid
    return lo


@dataclass(frozen=True)
class AuditBound:
    """The best lower bound over :data:`GUESS_FRACTIONS` and the guesses behind it."""

    epsilon: float
    """Empirical lower bound on epsilon (valid at ``confidence``)."""
    confidence: float
    canaries: int
    guesses: int
    correct: int


def audit_bound(
    scores: Sequence[float] | np.ndarray, included: Sequence[bool] | np.ndarray, *,
    delta: float, confidence: float = 0.95,
    fractions: Sequence[float] = GUESS_FRACTIONS,
) -> AuditBound:
    """Guess "in" for the highest scores and "out" for the lowest (equal numbers), for
    each fraction of the canaries in ``fractions``, and return the best lower bound.

    Args:
        scores: one membership score per canary (higher = more likely included), from
            the released model only (e.g. minus the canary's loss).
        included: whether each canary really was in the training data.
        delta: the delta of the guarantee being audited.
        confidence: probability that a truly (eps, delta)-DP mechanism yields a bound
            <= eps; each fraction is tested at ``(1 - confidence) / len(fractions)``.
    """
    s = np.asarray(scores, dtype=float)
    inc = np.asarray(included, dtype=bool)
    if s.shape != inc.shape or s.ndim != 1 or s.size == 0:
        raise ValueError("scores and included must be 1-D and of equal, non-zero length")
    if not np.all(np.isfinite(s)):
        raise ValueError("scores must be finite")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1); got {confidence}")
    m = int(s.size)
    alpha = (1.0 - confidence) / len(fractions)
    order = np.argsort(-s, kind="stable")
    tried = []
    for f in fractions:
        k = max(1, int(round(f * m / 2)))
        k = min(k, m // 2) if m >= 2 else 1
        top, bottom = order[:k], order[m - k:] if m > 1 else order[:0]
        v = int(inc[top].sum()) + int((~inc[bottom]).sum())
        r = int(top.size + bottom.size)
        tried.append(AuditBound(epsilon_lower_bound(m, r, v, delta=delta, alpha=alpha),
                                confidence, m, r, v))
    # the best bound; among equal bounds (e.g. all 0) the one with the most guesses
    return max(tried, key=lambda b: (b.epsilon, b.guesses))


def mia_auc(member_scores: np.ndarray, nonmember_scores: np.ndarray) -> float:
    """ROC AUC of a threshold attack: P[member score > non-member score] (ties 1/2).

    With ``score = -loss`` this is the loss-threshold membership-inference attack of
    Yeom et al. 2018; 0.5 = the attacker learns nothing.
    """
    a = np.asarray(member_scores, dtype=float)
    b = np.asarray(nonmember_scores, dtype=float)
    if a.size == 0 or b.size == 0:
        raise ValueError("need at least one member and one non-member score")
    from scipy.stats import rankdata

    ranks = rankdata(np.concatenate([a, b]))
    return float((ranks[: a.size].sum() - a.size * (a.size + 1) / 2) / (a.size * b.size))


def make_canaries(
    X: np.ndarray, num_classes: int, m: int, *, rng: np.random.Generator,
    amplitude: float = 8.0, subspace: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """``m`` canaries in the STANDARDIZED feature space of ``X``.

    Inputs have norm ``amplitude x sqrt(k)`` and lie in the span of the ``k`` lowest-
    variance principal directions of ``X`` (directions the real data barely moves the
    model in, so a canary's own gradient dominates there). Labels are balanced over the
    classes in random order, and the canaries that share a label get mutually
    ORTHOGONAL inputs (a random orthonormal basis per label, while it lasts), so an
    included canary does not pull another canary of its class towards "included".

    Args:
        X: the standardized training rows of the whole federation (the auditor knows
            the data; the canaries are its own).
        num_classes: labels are drawn from ``range(num_classes)``.
        m: number of canaries.
        rng: the auditor's randomness.
        amplitude: scale of a canary relative to a standardized row.
        subspace: k, how many low-variance directions to use (default: half the
            features, at least 1).

    Returns:
        ``(X_canary, y_canary)`` as float32 / int64.
    """
    if m < 1 or num_classes < 1:
        raise ValueError(f"m and num_classes must be >= 1; got {m}, {num_classes}")
    Xc = np.asarray(X, dtype=np.float64).reshape(len(X), -1)
    d = Xc.shape[1]
    k = max(1, min(d, subspace if subspace is not None else d // 2))
    cov = np.cov(Xc, rowvar=False) if len(Xc) > 1 else np.eye(d)
    _, vecs = np.linalg.eigh(np.atleast_2d(cov))
    basis = vecs[:, :k]  # eigh sorts ascending: the k lowest-variance directions
    ys = rng.permutation(np.arange(m) % num_classes)
    z = np.empty((m, k))
    for c in range(num_classes):
        idx = np.flatnonzero(ys == c)
        for start in range(0, idx.size, k):  # a fresh orthonormal basis per k canaries
            chunk = idx[start:start + k]
            q, _ = np.linalg.qr(rng.standard_normal((k, k)))
            z[chunk] = q[:, : chunk.size].T
    xs = amplitude * math.sqrt(k) * z @ basis.T
    return xs.astype(np.float32), ys.astype(np.int64)
