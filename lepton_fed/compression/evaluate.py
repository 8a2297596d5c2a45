"""Size, latency and accuracy of a compressed model against its fp32 original.

Every function takes a plain ``logits_fn(X: float32[n, d]) -> float[n, classes]``, so
any runtime (torch, ONNX Runtime, ...) can be compared on equal terms. Latency is
wall-clock per call, measured single-threaded (:func:`single_thread`) so numbers are
comparable across runtimes and machines with different core counts.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

__all__ = [
    "LogitsFn",
    "accuracy",
    "compare",
    "latency",
    "single_thread",
]

LogitsFn = Callable[[np.ndarray], np.ndarray]


@contextlib.contextmanager
def single_thread() -> Iterator[None]:
    """Run torch with one intra-op thread inside the block; restore afterwards.

    ONNX Runtime sessions take their thread count at creation instead
    (``intra_op_num_threads=1``).
    """
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def accuracy(
    logits_fn: LogitsFn, X: np.ndarray, y: np.ndarray, batch: int = 1024
) -> float:
    """Share of rows whose arg-max logit equals the label (0.0 on empty input)."""
    X = np.asarray(X, dtype=np.float32)
    y = np.asarray(y).reshape(-1)
    if len(y) == 0:
        return 0.0
    hits = 0
    for i in range(0, len(y), batch):
        pred = np.asarray(logits_fn(X[i : i + batch])).argmax(axis=1)
        hits += int((pred == y[i : i + batch]).sum())
    return hits / len(y)


def latency(
    logits_fn: LogitsFn,
    X: np.ndarray,
    batch: int,
    *,
    warmup: int = 5,
    max_iters: int = 500,
    max_seconds: float = 1.0,
) -> dict[str, float]:
    """Per-call latency of ``logits_fn`` on ``batch`` rows of ``X`` (rows repeat if short).

    Stops after ``max_iters`` calls or ``max_seconds``, whichever comes first (at
    least 5 timed calls).

    Returns:
        ``{"batch", "iters", "p50_us", "p99_us", "mean_us"}``.
    """
    X = np.asarray(X, dtype=np.float32)
    reps = -(-batch // max(1, len(X)))
    xb = np.ascontiguousarray(np.tile(X, (reps, 1))[:batch])
    for _ in range(warmup):
        logits_fn(xb)
    times: list[float] = []
    deadline = time.perf_counter() + max_seconds
    while len(times) < max_iters and (len(times) < 5 or time.perf_counter() < deadline):
        t0 = time.perf_counter()
        logits_fn(xb)
        times.append(time.perf_counter() - t0)
    us = np.asarray(times) * 1e6
    return {
        "batch": int(batch),
        "iters": len(times),
        "p50_us": float(np.percentile(us, 50)),
        "p99_us": float(np.percentile(us, 99)),
        "mean_us": float(us.mean()),
    }


def compare(
    reference: LogitsFn,
    candidate: LogitsFn,
    X: np.ndarray,
    y: np.ndarray,
    *,
    reference_bytes: int,
    candidate_bytes: int,
    batches: tuple[int, ...] = (1, 64),
    max_seconds: float = 0.5,
) -> dict[str, Any]:
    """Accuracy, size and latency of ``candidate`` against ``reference`` on ``(X, y)``.

    Call it inside :func:`single_thread` when ``reference`` is a torch model.

    Returns:
        ``{"accuracy": {"reference", "candidate", "drop"}, "size": {"reference_bytes",
        "candidate_bytes", "ratio"}, "latency": {"reference": {"b1": ..., "b64": ...},
        "candidate": {...}, "speedup": {"b1": ..., "b64": ...}},
        "agreement": share of rows with the same arg-max}``.
    """
    acc_ref = accuracy(reference, X, y)
    acc_cand = accuracy(candidate, X, y)
    sample = np.asarray(X[:1024], dtype=np.float32)
    agree = (
        float(
            (
                np.asarray(reference(sample)).argmax(1)
                == np.asarray(candidate(sample)).argmax(1)
            ).mean()
        )
        if len(sample)
        else 1.0
    )
    lat: dict[str, dict[str, Any]] = {"reference": {}, "candidate": {}, "speedup": {}}
    if len(sample):
        for b in batches:
            key = f"b{b}"
            r = latency(reference, sample, b, max_seconds=max_seconds)
            c = latency(candidate, sample, b, max_seconds=max_seconds)
            lat["reference"][key], lat["candidate"][key] = r, c
            lat["speedup"][key] = r["p50_us"] / max(c["p50_us"], 1e-9)
    return {
        "accuracy": {
            "reference": acc_ref,
            "candidate": acc_cand,
            "drop": acc_ref - acc_cand,
        },
        "agreement": agree,
        "size": {
            "reference_bytes": int(reference_bytes),
            "candidate_bytes": int(candidate_bytes),
            "ratio": candidate_bytes / max(1, reference_bytes),
        },
        "latency": lat,
    }
