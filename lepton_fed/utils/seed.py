"""Seeding. ``seed=0`` is a valid seed; per-(round, client) seeds come from hashing."""

from __future__ import annotations

import hashlib
import random

import numpy as np

__all__ = ["derive_seed", "seed_everything"]


def derive_seed(*parts: object) -> int:
    """A 63-bit seed from any parts (run seed, "client", round, partition id...).

    Distinct parts give independent-looking seeds, so each virtual client in each round
    draws its own batches and DP noise (the failure mode this prevents: every client
    drawing identical noise because the model builder re-seeded torch).
    """
    h = hashlib.sha256(repr(parts).encode()).digest()
    return int.from_bytes(h[:8], "little") >> 1


def seed_everything(seed: int) -> None:
    """Seed Python's ``random``, numpy's legacy global RNG and torch."""
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
