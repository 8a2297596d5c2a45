"""Partitioners: coverage, disjointness, determinism, skew."""

import numpy as np
import pytest

from lepton_fed.data.partition import (
    dirichlet,
    iid,
    natural,
    partition,
    train_test_indices,
)


def _check_cover(parts, n):
    allidx = np.concatenate(parts)
    assert len(allidx) == n
    assert len(np.unique(allidx)) == n


def test_iid_covers_disjoint_balanced_and_seeded():
    y = np.arange(103) % 3
    parts = iid(y, 10, seed=1)
    _check_cover(parts, 103)
    assert max(map(len, parts)) - min(map(len, parts)) <= 1
    assert all((a == b).all() for a, b in zip(parts, iid(y, 10, seed=1), strict=True))
    assert any((a != b).any() for a, b in zip(parts, iid(y, 10, seed=2), strict=True))


def test_dirichlet_small_alpha_is_skewed_and_min_size_holds():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 10, 2000)
    skew = dirichlet(y, 20, seed=3, alpha=0.1)
    flat = dirichlet(y, 20, seed=3, alpha=100.0)
    _check_cover(skew, 2000)
    assert min(map(len, skew)) >= 2

    def mean_max_share(parts):
        return np.mean([np.bincount(y[p], minlength=10).max() / len(p) for p in parts])

    assert mean_max_share(skew) > 0.5 > mean_max_share(flat)


def test_dirichlet_rejects_bad_alpha_and_too_few_rows():
    with pytest.raises(ValueError, match="alpha"):
        dirichlet(np.zeros(10, int), 2, seed=0, alpha=0)
    with pytest.raises(ValueError, match="cannot give"):
        dirichlet(np.zeros(5, int), 4, seed=0)


def test_natural_groups_by_silo_and_checks_count():
    silo = np.array([0, 0, 1, 2, 2, 2])
    parts = natural(silo, 3)
    assert [p.tolist() for p in parts] == [[0, 1], [2], [3, 4, 5]]
    with pytest.raises(ValueError, match="num_clients must be 3"):
        natural(silo, 4)
    with pytest.raises(ValueError, match="natural silos"):
        partition("natural", y=np.zeros(3, int), silo=None, num_clients=1, seed=0)


def test_train_test_split_stratified_and_fixed():
    y = np.array([0] * 80 + [1] * 20)
    tr, te = train_test_indices(y, None, 0.2, seed=0)
    assert len(te) == 20 and np.bincount(y[te]).tolist() == [16, 4]
    split = np.array(["train", "test"] * 50, dtype=object)
    tr, te = train_test_indices(y, split, 0.2, seed=0)
    assert (split[tr] == "train").all() and len(te) == 50
