"""Seeded partitioners: which training rows each client holds. Pure functions over labels."""

from __future__ import annotations

import numpy as np

__all__ = ["PARTITIONERS", "dirichlet", "iid", "natural", "partition", "train_test_indices"]


def iid(y: np.ndarray, num_clients: int, seed: int) -> list[np.ndarray]:
    """Shuffle and deal the rows into ``num_clients`` near-equal shards."""
    perm = np.random.default_rng(seed).permutation(len(y))
    return [np.sort(s) for s in np.array_split(perm, num_clients)]


def dirichlet(
    y: np.ndarray, num_clients: int, seed: int, alpha: float = 0.5, min_size: int = 2
) -> list[np.ndarray]:
    """Label-skewed split: each class is spread over clients by Dirichlet(alpha) shares.

    Smaller ``alpha`` gives more skew. Re-draws (up to 100 times) until every client
    has at least ``min_size`` rows, then falls back to moving rows from the largest
    client so the guarantee always holds.
    """
    if alpha <= 0:
        raise ValueError(f"partition.alpha must be > 0, got {alpha}")
    if len(y) < num_clients * min_size:
        raise ValueError(f"{len(y)} rows cannot give {num_clients} clients {min_size} rows each")
    rng = np.random.default_rng(seed)
    classes = np.unique(y)
    for _ in range(100):
        parts: list[list[int]] = [[] for _ in range(num_clients)]
        for c in classes:
            idx = rng.permutation(np.flatnonzero(y == c))
            props = rng.dirichlet(np.full(num_clients, alpha))
            cuts = (np.cumsum(props)[:-1] * len(idx)).astype(int)
            for k, chunk in enumerate(np.split(idx, cuts)):
                parts[k] += chunk.tolist()
        if min(len(p) for p in parts) >= min_size:
            break
    for k in range(num_clients):
        while len(parts[k]) < min_size:
            big = max(range(num_clients), key=lambda j: len(parts[j]))
            parts[k].append(parts[big].pop())
    return [np.sort(np.asarray(p, dtype=np.int64)) for p in parts]


def natural(silo: np.ndarray | None, num_clients: int) -> list[np.ndarray]:
    """One client per natural silo (hospital, branch): rows are grouped by ``silo`` id.

    Raises:
        ValueError: the data has no silos, or their number differs from ``num_clients``.
    """
    if silo is None:
        raise ValueError("partition=natural needs a dataset with natural silos")
    ids = np.unique(silo)
    if len(ids) != num_clients:
        raise ValueError(
            f"partition=natural: the data has {len(ids)} silos, so "
            f"federation.num_clients must be {len(ids)} (got {num_clients})"
        )
    return [np.flatnonzero(silo == s) for s in ids]


PARTITIONERS = ("dirichlet", "iid", "natural")


def partition(
    name: str,
    *,
    y: np.ndarray,
    silo: np.ndarray | None,
    num_clients: int,
    seed: int,
    alpha: float = 0.5,
) -> list[np.ndarray]:
    """Dispatch to a partitioner by name; indices are into ``y``."""
    if name == "iid":
        return iid(y, num_clients, seed)
    if name == "dirichlet":
        return dirichlet(y, num_clients, seed, alpha)
    if name == "natural":
        return natural(silo, num_clients)
    raise ValueError(f"unknown partition {name!r}; choose one of {list(PARTITIONERS)}")


def train_test_indices(
    y: np.ndarray, split: np.ndarray | None, test_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Fixed split when the data has one, else a seeded stratified split."""
    if split is not None:
        return np.flatnonzero(split == "train"), np.flatnonzero(split == "test")
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(y))
    counts = np.bincount(y)
    strat = y if counts[counts > 0].min() >= 2 else None
    tr, te = train_test_split(idx, test_size=test_fraction, random_state=seed, stratify=strat)
    return np.sort(tr), np.sort(te)
