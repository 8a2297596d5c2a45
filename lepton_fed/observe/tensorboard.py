"""TensorBoard event files beside ``metrics.jsonl``, written while the run goes.

``tensorboard --logdir RUN_DIR`` (or a sweep directory: each job is one TensorBoard run)
shows every round's scalars (:func:`~lepton_fed.observe.scalars.round_scalars`: evaluation,
federated evaluation, epsilon max and per node, participation, declines and failures by
reason, bytes, seconds) and, at the end, the final figures and the privacy summary as text.
Needs the ``tensorboard`` package (torch's writer uses it).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lepton_fed.observe.scalars import round_scalars, tag_part

__all__ = ["TensorBoardObserver"]


def _writer(log_dir: Path, flush_secs: float) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as exc:  # torch's writer imports the tensorboard package
        raise ImportError(
            "TensorBoard event files need the 'tensorboard' package "
            "(pip install 'lepton-fed[observe]')") from exc
    return SummaryWriter(log_dir=str(log_dir), flush_secs=flush_secs)


class TensorBoardObserver:
    """A :class:`~lepton_fed.server.rounds.RoundObserver` writing TensorBoard scalars.

    Events are queued by the writer and flushed by its own thread every ``flush_secs``
    (so a round costs a few microseconds per scalar, not a disk write), and at
    :meth:`on_finish` / :meth:`close`.

    Args:
        log_dir: where the ``events.out.tfevents.*`` file goes (the run directory).
        flush_secs: longest delay before a round's scalars are on disk.
    """

    def __init__(self, log_dir: str | Path, *, flush_secs: float = 2.0) -> None:
        self.log_dir = Path(log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._w = _writer(self.log_dir, flush_secs)
        self._closed = False

    def on_round(self, row: dict[str, Any]) -> None:
        """Write the row's scalars at step ``row['round']``."""
        if self._closed:
            return
        step = int(row.get("round", 0))
        for tag, value in round_scalars(row).items():
            self._w.add_scalar(tag, value, step)

    def on_finish(self, summary: dict[str, Any]) -> None:
        """Final figures, per-node epsilon and the privacy block; then close the file."""
        if self._closed:
            return
        step = int(summary.get("rounds_completed") or 0)
        final = summary.get("final") or {}
        for key in ("accuracy", "loss", "auc"):
            v = final.get(key)
            if isinstance(v, int | float):
                self._w.add_scalar(f"final/{key}", float(v), step)
        privacy = summary.get("privacy") or {}
        for node, eps in (privacy.get("per_client") or {}).items():
            if isinstance(eps, int | float):
                self._w.add_scalar(f"final/epsilon/{tag_part(node)}", float(eps), step)
        self._w.add_text("privacy", "```\n" + json.dumps(privacy, indent=2) + "\n```", step)
        nodes = summary.get("nodes") or {}
        self._w.add_text("nodes", "```\n" + json.dumps(nodes, indent=2) + "\n```", step)
        self.close()

    def close(self) -> None:
        """Flush and close the event file (idempotent)."""
        if not self._closed:
            self._closed = True
            self._w.close()
