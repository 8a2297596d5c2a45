"""Read-only access to run directories for the dashboard: discovery under a root, the
rows appended to ``metrics.jsonl`` since a given row (read incrementally, tolerating a
line still being written), ``summary.json`` and the config figures the charts need.

Only directories found under the root are ever read: a run is addressed by its id (its
path relative to the root, as discovered), never by a path the client sends.
"""

from __future__ import annotations

import json
import math
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["MetricsTail", "RunIndex", "run_meta"]

MARKER = "metrics.jsonl"


@dataclass
class MetricsTail:
    """The complete lines of one ``metrics.jsonl``, re-read only past the last offset.

    A file that shrank (a new run rewrote it) is read again from the start.
    """

    path: Path
    rows: list[dict[str, Any]] = field(default_factory=list)
    offset: int = 0

    def refresh(self) -> list[dict[str, Any]]:
        """Every row so far (parsing only what was appended since the last call)."""
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            self.rows, self.offset = [], 0
            return self.rows
        if size < self.offset:
            self.rows, self.offset = [], 0
        if size > self.offset:
            with self.path.open("rb") as f:
                f.seek(self.offset)
                chunk = f.read(size - self.offset)
            end = chunk.rfind(b"\n") + 1  # a line still being written waits
            for line in chunk[:end].splitlines():
                if line.strip():
                    try:
                        row = json.loads(line)
                    except json.JSONDecodeError:
                        continue
                    if isinstance(row, dict):
                        self.rows.append(row)
            self.offset += end
        return self.rows


def _num(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        return None
    return float(v)


def run_meta(run_dir: Path) -> dict[str, Any]:
    """Figures from ``config.yaml`` the page needs (planned rounds, budget, modes)."""
    p = run_dir / "config.yaml"
    if not p.is_file():
        return {}
    from omegaconf import DictConfig, OmegaConf

    try:
        cfg = OmegaConf.load(p)
    except Exception:  # noqa: BLE001 - a config being written: no meta yet
        return {}
    if not isinstance(cfg, DictConfig):
        return {}

    def get(dotted: str) -> Any:
        v = OmegaConf.select(cfg, dotted, default=None)
        return v if isinstance(v, str | int | float | bool) or v is None else str(v)

    return {"rounds_planned": get("federation.rounds"), "num_clients": get("federation.num_clients"),
            "clients_per_round": get("federation.clients_per_round"),
            "privacy": get("privacy.mode"), "epsilon_target": _num(get("privacy.epsilon")),
            "delta": _num(get("privacy.delta")), "secagg": bool(get("secagg.enabled")),
            "strategy": get("strategy.name"), "model": get("model.name"), "data": get("data.name")}


class RunIndex:
    """The run directories under ``root`` (``root`` itself when it is one), rescanned at
    most every ``rescan_s`` seconds so a sweep's new jobs appear."""

    def __init__(self, root: str | Path, *, rescan_s: float = 2.0) -> None:
        self.root = Path(root).resolve()
        self.rescan_s = rescan_s
        self._lock = threading.Lock()
        self._scanned = -math.inf
        self._dirs: dict[str, Path] = {}
        self._tails: dict[str, MetricsTail] = {}
        self._meta: dict[str, tuple[float, dict[str, Any]]] = {}

    def runs(self) -> dict[str, Path]:
        """Run id (path relative to the root, ``.`` for the root) -> directory."""
        with self._lock:
            if time.monotonic() - self._scanned >= self.rescan_s:
                found = sorted({p.parent for p in self.root.rglob(MARKER)},
                               key=lambda d: (len(d.relative_to(self.root).parts), str(d)))
                self._dirs = {(str(d.relative_to(self.root)) or "."): d for d in found}
                self._scanned = time.monotonic()
            return dict(self._dirs)

    @property
    def is_sweep(self) -> bool:
        """More than one run, or runs below the root that is not one itself."""
        runs = self.runs()
        return len(runs) > 1 or (bool(runs) and "." not in runs)

    def dir(self, run_id: str) -> Path | None:
        """The directory of a discovered run, else None."""
        return self.runs().get(run_id)

    def rows(self, run_id: str) -> list[dict[str, Any]]:
        """Every metrics row of the run so far."""
        d = self.dir(run_id)
        if d is None:
            return []
        with self._lock:
            tail = self._tails.setdefault(run_id, MetricsTail(d / MARKER))
            return list(tail.refresh())

    def meta(self, run_id: str) -> dict[str, Any]:
        """:func:`run_meta`, cached while config.yaml is unchanged."""
        d = self.dir(run_id)
        if d is None:
            return {}
        p = d / "config.yaml"
        mtime = p.stat().st_mtime if p.is_file() else -1.0
        cached = self._meta.get(run_id)
        if cached is None or cached[0] != mtime:
            cached = (mtime, run_meta(d))
            self._meta[run_id] = cached
        return cached[1]

    def summary(self, run_id: str) -> dict[str, Any] | None:
        """summary.json, or None while the run goes (or if it is being written)."""
        d = self.dir(run_id)
        p = d / "summary.json" if d is not None else None
        if p is None or not p.is_file():
            return None
        try:
            out = json.loads(p.read_text())
        except (OSError, json.JSONDecodeError):
            return None
        return out if isinstance(out, dict) else None

    def age_s(self, run_id: str) -> float | None:
        """Seconds since metrics.jsonl last changed."""
        d = self.dir(run_id)
        try:
            return time.time() - (d / MARKER).stat().st_mtime if d is not None else None
        except FileNotFoundError:
            return None
