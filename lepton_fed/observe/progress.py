"""A progress bar with ETA over a run's rounds (rich), for a person at a terminal.

Off when the output is not a terminal (CI, a log file, ``| tee``) or when asked to be
quiet; then it costs nothing. The round loop's own per-round lines keep printing above
the bar.
"""

from __future__ import annotations

import atexit
import sys
import time
from typing import IO, Any

__all__ = ["ProgressObserver", "eta_seconds"]


def eta_seconds(round_seconds: float, done: int, total: int) -> float | None:
    """Seconds left if the remaining rounds take as long as the ``done`` finished ones,
    which took ``round_seconds`` together (None before the first round)."""
    if done <= 0 or total <= 0:
        return None
    return max(0.0, round_seconds / done * max(0, total - done))


def _clock(s: float | None) -> str:
    if s is None:
        return "-:--:--"
    s = int(round(s))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


class ProgressObserver:
    """A :class:`~lepton_fed.server.rounds.RoundObserver` drawing ``rounds k/N`` with the
    last accuracy and epsilon, the elapsed time and an ETA.

    Args:
        total_rounds: ``federation.rounds``.
        enabled: True/False to force; None: on when ``file`` is a terminal.
        file: where to draw (default ``sys.stdout``).
        min_interval_s: redraw at most this often (rounds faster than that are drawn
            when the next one comes, the last one always).
    """

    def __init__(self, total_rounds: int, *, enabled: bool | None = None,
                 file: IO[str] | None = None, min_interval_s: float = 0.25) -> None:
        stream = file if file is not None else sys.stdout
        if enabled is None:
            enabled = bool(getattr(stream, "isatty", lambda: False)())
        self.total = int(total_rounds)
        self.enabled = enabled
        self.t0 = time.monotonic()
        self.done = 0
        self.round_seconds = 0.0
        self.min_interval_s = min_interval_s
        self._drawn = -float("inf")
        self._p: Any = None
        if not enabled:
            return
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        self._p = Progress(
            TextColumn("[bold]rounds"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[figures]}"),
            TextColumn("elapsed {task.fields[elapsed]} · ETA {task.fields[eta]}"),
            console=Console(file=stream, force_terminal=True), auto_refresh=False,
            redirect_stdout=stream is sys.stdout, redirect_stderr=False)
        self._task = self._p.add_task("rounds", total=self.total, figures="",
                                      elapsed=_clock(0), eta=_clock(None))
        self._p.start()
        self._p.refresh()
        atexit.register(self.close)

    def on_round(self, row: dict[str, Any]) -> None:
        """Advance to ``row['round']`` and redraw."""
        self.done = int(row.get("round", self.done + 1))
        secs = row.get("seconds")
        if isinstance(secs, int | float):
            self.round_seconds += float(secs)
        if self._p is None:
            return
        elapsed = time.monotonic() - self.t0
        figs = []
        if isinstance(row.get("accuracy"), int | float):
            figs.append(f"acc {row['accuracy']:.3f}")
        if isinstance(row.get("epsilon"), int | float):
            figs.append(f"eps {row['epsilon']:.2f}")
        self._p.update(self._task, completed=min(self.done, self.total),
                       figures=" ".join(figs), elapsed=_clock(elapsed),
                       eta=_clock(eta_seconds(self.round_seconds, self.done, self.total)))
        now = time.monotonic()
        if now - self._drawn >= self.min_interval_s or self.done >= self.total:
            self._drawn = now
            self._p.refresh()

    def on_finish(self, summary: dict[str, Any]) -> None:
        """Stop drawing (the bar stays on screen at its last state)."""
        self.close()

    def close(self) -> None:
        """Draw the last state and stop the live display (idempotent)."""
        if self._p is not None:
            p, self._p = self._p, None
            p.refresh()
            p.stop()
