"""TensorBoard event files beside ``metrics.jsonl``, written while the run goes.

``tensorboard --logdir RUN_DIR`` (or a sweep directory: each job is one TensorBoard run)
shows every round's scalars (:func:`~lepton_fed.observe.scalars.round_scalars`: evaluation,
federated evaluation, epsilon max and per node, participation, declines and failures by
reason, bytes, seconds) and, at the end, the final figures and the privacy summary as text.

Written with the ``tensorboard`` package's own event writer: one event per round holding
all of the round's scalars (a queue and a background thread; no TensorFlow, no torch).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from lepton_fed.observe.scalars import round_scalars, tag_part

__all__ = ["TensorBoardObserver"]


def _tb() -> Any:
    try:
        # tensorboard ships no type information
        from tensorboard.compat.proto import (  # type: ignore[import-untyped, import-not-found, unused-ignore]
            event_pb2,
            summary_pb2,
            tensor_pb2,
            types_pb2,
        )
        from tensorboard.compat.proto.tensor_shape_pb2 import (  # type: ignore[import-untyped, import-not-found, unused-ignore]
            TensorShapeProto,
        )
        from tensorboard.plugins.text.metadata import (  # type: ignore[import-untyped, import-not-found, unused-ignore]
            create_summary_metadata,
        )
        from tensorboard.summary.writer.event_file_writer import (  # type: ignore[import-untyped, import-not-found, unused-ignore]
            EventFileWriter,
        )
    except ImportError as exc:
        raise ImportError("TensorBoard event files need the 'tensorboard' package "
                          "(pip install 'lepton-fed[observe]')") from exc
    return (event_pb2, summary_pb2, tensor_pb2, types_pb2, TensorShapeProto,
            create_summary_metadata, EventFileWriter)


class TensorBoardObserver:
    """A :class:`~lepton_fed.server.rounds.RoundObserver` writing TensorBoard scalars.

    Events are queued and written by the writer's own thread, which flushes every
    ``flush_secs`` (so a round costs building one small protobuf, not a disk write), and
    at :meth:`on_finish` / :meth:`close`.

    Args:
        log_dir: where the ``events.out.tfevents.*`` file goes (the run directory).
        flush_secs: longest delay before a round's scalars are on disk.
    """

    def __init__(self, log_dir: str | Path, *, flush_secs: float = 2.0) -> None:
        (self._event, self._summary, self._tensor, self._types, self._shape,
         self._text_meta, writer) = _tb()
        self.log_dir = Path(log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._w = writer(str(self.log_dir), max_queue_size=100, flush_secs=flush_secs)
        self._closed = False

    def _write(self, step: int, values: list[Any]) -> None:
        if values:
            self._w.add_event(self._event.Event(wall_time=time.time(), step=step,
                                                summary=self._summary.Summary(value=values)))

    def _scalar(self, tag: str, value: float) -> Any:
        return self._summary.Summary.Value(tag=tag, simple_value=value)

    def _text(self, tag: str, text: str) -> Any:
        tensor = self._tensor.TensorProto(
            dtype=self._types.DT_STRING, string_val=[text.encode()],
            tensor_shape=self._shape(dim=[self._shape.Dim(size=1)]))
        return self._summary.Summary.Value(
            tag=tag, metadata=self._text_meta(display_name=tag, description=""),
            tensor=tensor)

    def on_round(self, row: dict[str, Any]) -> None:
        """Write the row's scalars at step ``row['round']``."""
        if not self._closed:
            self._write(int(row.get("round", 0)),
                        [self._scalar(t, v) for t, v in round_scalars(row).items()])

    def on_finish(self, summary: dict[str, Any]) -> None:
        """Final figures, per-node epsilon and the privacy and nodes blocks as text;
        then close the file."""
        if self._closed:
            return
        step = int(summary.get("rounds_completed") or 0)
        values = []
        final = summary.get("final") or {}
        for key in ("accuracy", "loss", "auc"):
            v = final.get(key)
            if isinstance(v, int | float) and not isinstance(v, bool):
                values.append(self._scalar(f"final/{key}", float(v)))
        privacy = summary.get("privacy") or {}
        for node, eps in (privacy.get("per_client") or {}).items():
            if isinstance(eps, int | float):
                values.append(self._scalar(f"final/epsilon/{tag_part(node)}", float(eps)))
        for key in ("privacy", "nodes"):
            block = summary.get(key) or {}
            values.append(self._text(key, "```\n" + json.dumps(block, indent=2) + "\n```"))
        self._write(step, values)
        self.close()

    def close(self) -> None:
        """Flush and close the event file (idempotent)."""
        if not self._closed:
            self._closed = True
            self._w.close()
