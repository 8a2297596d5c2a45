"""Small helpers shared by the benchmark scripts: results JSON, timing, tables."""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = ROOT / "benchmarks" / "results"

__all__ = [
    "RESULTS_DIR",
    "ROOT",
    "hospital_correct",
    "machine",
    "mean_std",
    "median",
    "print_table",
    "timer",
    "write_result",
]


def _git_commit() -> str:
    import subprocess

    try:
        run = {"cwd": ROOT, "capture_output": True, "text": True, "timeout": 10}
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], **run
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], **run
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return (head or "unknown") + ("+dirty" if dirty.stdout.strip() else "")


def machine() -> dict[str, Any]:
    """Where, when and on which commit a figure was measured."""
    return {
        "git_commit": _git_commit(),
        "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "host_cpus": os.cpu_count(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "python": sys.version.split()[0],
    }


def write_result(name: str, payload: dict[str, Any]) -> Path:
    """Write ``benchmarks/results/<name>.json`` (payload plus a ``machine`` block)."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    path.write_text(
        json.dumps({"machine": machine(), **payload}, indent=2, default=float) + "\n"
    )
    return path


@contextmanager
def timer() -> Iterator[dict[str, float]]:
    """``with timer() as t: ...`` then ``t["s"]`` holds the elapsed seconds."""
    out: dict[str, float] = {}
    t0 = time.perf_counter()
    try:
        yield out
    finally:
        out["s"] = time.perf_counter() - t0


def median(xs: Sequence[float]) -> float:  # noqa: D103
    return float(statistics.median(xs)) if xs else float("nan")


def mean_std(xs: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    if not xs:
        return float("nan"), float("nan")
    return float(statistics.fmean(xs)), float(statistics.stdev(xs)) if len(
        xs
    ) > 1 else 0.0


def print_table(
    headers: Sequence[str], rows: Sequence[Sequence[Any]], title: str = ""
) -> None:
    """A plain-text table; floats get 3 decimals unless already formatted."""
    cells = [[f"{c:.3f}" if isinstance(c, float) else str(c) for c in r] for r in rows]
    widths = [
        max(len(str(h)), *(len(r[i]) for r in cells)) if cells else len(str(h))
        for i, h in enumerate(headers)
    ]
    line = "+" + "+".join("-" * (w + 2) for w in widths) + "+"
    if title:
        print(title)
    print(line)
    print(
        "| "
        + " | ".join(str(h).ljust(w) for h, w in zip(headers, widths, strict=True))
        + " |"
    )
    print(line)
    for r in cells:
        print(
            "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |"
        )
    print(line, flush=True)


def hospital_correct(run_dir: Path, cfg: Any) -> tuple[dict[str, float], Any]:
    """The final model of ``run_dir`` on its held-out split (test-split order):
    accuracy per hospital (silo name -> accuracy) and per-row correctness."""
    import numpy as np
    import torch
    from safetensors.torch import load_file

    from lepton_fed.data.federated import federated_split
    from lepton_fed.models import build_model

    spec = json.loads((run_dir / "preprocess.json").read_text())["model"]
    model = build_model(spec)
    model.load_state_dict(load_file(str(run_dir / "model.safetensors")))
    model.eval()
    held = np.load(run_dir / "heldout.npz")
    X, y = held["X"], held["y"]  # test-split order
    split = federated_split(cfg)
    silo = split.data.silo[split.test_idx]
    names = split.data.silo_names
    with torch.no_grad():
        pred = model(torch.as_tensor(X, dtype=torch.float32)).argmax(1).numpy()
    correct = pred == y
    per = {str(names[s]): float(correct[silo == s].mean()) for s in np.unique(silo)}
    return per, correct
