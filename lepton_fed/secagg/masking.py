"""Mask arithmetic in Z_{2^bits} on uint32 vectors, shared by client and server.

Sign convention (Bonawitz et al. 2017): for a pair {u, v} with seed s_uv, the node
with the smaller id adds PRG(s_uv) and the other subtracts it, so the two masks cancel
in the sum. Every node also adds its self mask PRG(seed(b_u)). All arithmetic wraps
modulo 2^32 (numpy uint32); for bits < 32 callers reduce with ``& (2^bits - 1)`` at
the end, which is consistent because 2^bits divides 2^32.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from lepton_fed.secagg.prg import MaskBuffer, expand_mask

__all__ = ["apply_masks", "pairwise_sign"]


def pairwise_sign(*, owner: int, peer: int) -> int:
    """+1 if ``owner`` adds the pairwise mask it shares with ``peer``, else -1."""
    return 1 if owner < peer else -1


def _accumulate(y: np.ndarray, jobs: Sequence[tuple[bytes, int]], bits: int) -> None:
    if len(jobs) == 1:
        seed, sign = jobs[0]
        mask = expand_mask(seed, y.size, bits=bits)
        if sign > 0:
            np.add(y, mask, out=y)
        else:
            np.subtract(y, mask, out=y)
        return
    buf = MaskBuffer(y.size, bits=bits)
    for seed, sign in jobs:
        mask = buf.expand(seed)
        if sign > 0:
            np.add(y, mask, out=y)
        else:
            np.subtract(y, mask, out=y)


def apply_masks(
    y: np.ndarray, jobs: Sequence[tuple[bytes, int]], *, bits: int, workers: int = 1
) -> None:
    """``y += sum(sign * PRG(seed))`` over ``jobs`` in place, optionally on threads.

    With ``workers > 1`` each thread accumulates its share of the jobs into its own
    buffer (one extra vector per thread), then the buffers are added to ``y``.
    """
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if workers == 1 or len(jobs) < 2 * workers:
        _accumulate(y, jobs, bits)
        return
    chunks = [jobs[w::workers] for w in range(workers)]

    def run(chunk: Sequence[tuple[bytes, int]]) -> np.ndarray:
        acc = np.zeros_like(y)
        _accumulate(acc, chunk, bits)
        return acc

    with ThreadPoolExecutor(max_workers=workers) as pool:
        for acc in pool.map(run, chunks):
            np.add(y, acc, out=y)
