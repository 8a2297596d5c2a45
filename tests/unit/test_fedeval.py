"""Federated evaluation arithmetic: sums from nodes give the pooled figures exactly (binned
AUC within the bin width), in the clear and through the secure-aggregation encoding."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from lepton_fed.client.evaluate import eval_sums
from lepton_fed.models.predict import (
    binned_auc,
    eval_from_mean,
    eval_vector,
    predict_proba,
)
from lepton_fed.server.fedeval import combine


def _nodes(rng, k=4):
    model = torch.nn.Sequential(torch.nn.Linear(5, 2))
    out = []
    for _ in range(k):
        n = int(rng.integers(20, 80))
        X = rng.normal(size=(n, 5)).astype(np.float32)
        y = (X[:, 0] + rng.normal(0, 1, n) > 0).astype(np.int64)
        out.append((X, y))
    return model, out


def test_node_sums_combine_to_the_pooled_figures():
    rng = np.random.default_rng(0)
    model, nodes = _nodes(rng)
    sums = [eval_sums(model, X, y) for X, y in nodes]
    fed = combine(sums)  # MetricRecord-like mappings
    X = np.concatenate([x for x, _ in nodes])
    y = np.concatenate([t for _, t in nodes])
    p = predict_proba(model, X)
    assert fed["n"] == len(y)
    assert fed["accuracy"] == pytest.approx(float(np.mean(p.argmax(1) == y)))
    assert fed["loss"] == pytest.approx(float(-np.mean(np.log(p[np.arange(len(y)), y]))), rel=1e-5)
    assert fed["auc"] == pytest.approx(roc_auc_score(y, p[:, 1]), abs=0.02)


def test_binned_auc_is_exact_without_shared_bins():
    neg = np.array([3, 0, 1, 0])
    pos = np.array([0, 2, 0, 4])
    scores = np.r_[[0.1] * 3, [0.6], [0.3] * 2, [0.9] * 4]
    labels = np.r_[[0] * 4, [1] * 6]
    assert binned_auc(neg, pos) == pytest.approx(roc_auc_score(labels, scores))
    assert binned_auc(np.zeros(4), pos) is None


@pytest.mark.parametrize("scale", [1.0, 0.1, 10.0])
def test_secure_encoding_recovers_the_weighted_figures(scale):
    rng = np.random.default_rng(1)
    model, nodes = _nodes(rng, 5)
    sums = [eval_sums(model, X, y) for X, y in nodes]
    vecs = [eval_vector(s, scale=scale, binary=True) for s in sums]
    assert all(v.min() >= 0 and v.max() <= scale for v in vecs)
    w = np.array([s["eval-n"] for s in sums]) / 10_000  # weights inside the masked vector
    mean = sum(wi * v for wi, v in zip(w, vecs, strict=True)) / w.sum()
    got = eval_from_mean(mean, scale=scale, n=w.sum() * 10_000)
    want = combine(sums)
    assert got["n"] == want["n"]
    assert got["accuracy"] == pytest.approx(want["accuracy"])
    assert got["loss"] == pytest.approx(want["loss"], rel=1e-6)
    assert got["auc"] == pytest.approx(want["auc"], abs=1e-9)
