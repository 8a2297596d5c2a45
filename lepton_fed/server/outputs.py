"""The run directory: config.yaml, metrics.jsonl, summary.json, model.safetensors,
preprocess.json, heldout.npz and plots/*.png (DESIGN.md section 4)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["RunWriter", "plot_metrics"]


def _clean(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: _clean(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_clean(x) for x in v]
    if isinstance(v, np.generic):
        return _clean(v.item())
    return v


class RunWriter:
    """Writes a run directory incrementally, so a crash keeps every finished round."""

    def __init__(self, run_dir: str | Path) -> None:
        self.dir = Path(run_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.metrics_path = self.dir / "metrics.jsonl"
        self.metrics_path.write_text("")

    def config(self, yaml_text: str) -> None:
        """Write ``yaml_text`` (the resolved run config) as ``config.yaml``."""
        (self.dir / "config.yaml").write_text(yaml_text)

    def round(self, row: dict[str, Any]) -> None:
        """Append one round's metrics line (flushed immediately)."""
        with self.metrics_path.open("a") as f:
            f.write(json.dumps(_clean(row)) + "\n")

    def json(self, name: str, obj: Any) -> None:
        """Write ``obj`` as indented JSON to file ``name`` (non-finite floats become null)."""
        (self.dir / name).write_text(json.dumps(_clean(obj), indent=2) + "\n")

    def model(self, state: dict[str, np.ndarray]) -> str:
        """Save final global weights as safetensors; returns the relative path."""
        import torch
        from safetensors.torch import save_file

        save_file({k: torch.as_tensor(np.ascontiguousarray(v)) for k, v in state.items()},
                  str(self.dir / "model.safetensors"))
        return "model.safetensors"

    def heldout(self, X: np.ndarray, y: np.ndarray) -> None:
        """Save held-out test rows as ``heldout.npz``: ``X`` as float32, ``y`` as int64.

        ``X`` is stored as given (the server passes it already scaled).
        """
        np.savez_compressed(self.dir / "heldout.npz", X=X.astype(np.float32), y=y.astype(np.int64))


def plot_metrics(rows: list[dict[str, Any]], out_dir: Path) -> list[str]:
    """loss.png and accuracy.png (and epsilon.png under DP) over rounds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for key in ("loss", "accuracy", "auc", "epsilon"):
        pts = [(r["round"], r[key]) for r in rows if r.get(key) is not None]
        if not pts:
            continue
        fig, ax = plt.subplots(figsize=(5, 3.2))
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o")
        ax.set_xlabel("round")
        ax.set_ylabel(key)
        ax.set_title(f"global model {key}")
        ax.grid(alpha=0.3)
        fig.tight_layout()
        path = out_dir / f"{key}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(str(path.name))
    return written
