"""The observers a run's config asks for (``observe`` config block).

``observe`` keys (all optional; absent = the default):

- ``tensorboard``: ``auto`` (default: event files when the ``tensorboard`` package is
  installed), ``true`` (required), ``false``;
- ``metrics_port``: Prometheus ``/metrics`` port on the coordinator; null (default) = off;
- ``metrics_addr``: interface it binds (default ``127.0.0.1``);
- ``progress``: ``auto`` (default: a progress bar when stdout is a terminal), ``true``,
  ``false``.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lepton_fed.errors import ConfigError

__all__ = ["check_observe_config", "close_observers", "observers_for"]

log = logging.getLogger(__name__)

_KEYS = frozenset({"tensorboard", "metrics_port", "metrics_addr", "progress"})
_TRI = ("auto", "true", "false")


def _block(cfg: Any) -> Mapping[str, Any]:
    ob = cfg.get("observe") if hasattr(cfg, "get") else None
    if ob is None:
        return {}
    if hasattr(ob, "items"):
        return dict(ob.items())
    return {"_invalid": ob}


def _tri(v: Any) -> str:
    return str(v).lower() if v is not None else "auto"


def check_observe_config(cfg: Any) -> list[str]:
    """Every problem of the ``observe`` block, each naming its key (empty: fine)."""
    ob = _block(cfg)
    if "_invalid" in ob:
        return [f"observe must be a mapping; got {ob['_invalid']!r}"]
    out = [f"observe.{k}: unknown key; known keys are {sorted(_KEYS)}"
           for k in sorted(set(ob) - _KEYS)]
    for k in ("tensorboard", "progress"):
        if k in ob and _tri(ob[k]) not in _TRI:
            out.append(f"observe.{k}={ob[k]!r}: must be one of auto, true, false")
    port = ob.get("metrics_port")
    if port is not None and (isinstance(port, bool) or not isinstance(port, int)
                             or not 0 <= port <= 65535):
        out.append(f"observe.metrics_port={port!r}: must be an integer port in "
                   "0..65535, or null for no metrics endpoint")
    addr = ob.get("metrics_addr")
    if addr is not None and (not isinstance(addr, str) or not addr.strip()):
        out.append(f"observe.metrics_addr={addr!r}: must be a host address such as "
                   "127.0.0.1")
    return out


def observers_for(cfg: Any, run_dir: str | Path, *, quiet: bool = False) -> list[Any]:
    """TensorBoard, Prometheus and progress observers as ``cfg.observe`` asks.

    Args:
        cfg: the run's composed config (``federation.rounds``, ``privacy``, ``observe``).
        run_dir: the run directory (TensorBoard's event file goes there).
        quiet: no progress bar whatever ``observe.progress`` says.

    Raises:
        ConfigError: a bad ``observe`` block, or ``tensorboard: true`` without the package.
        OSError: the metrics port is taken by another process.
    """
    problems = check_observe_config(cfg)
    if problems:
        raise ConfigError(problems)
    ob = _block(cfg)
    rounds = int(cfg.federation.rounds)
    out: list[Any] = []
    tb = _tri(ob.get("tensorboard"))
    have_tb = importlib.util.find_spec("tensorboard") is not None
    if tb == "true" and not have_tb:
        raise ConfigError("observe.tensorboard=true needs the 'tensorboard' package "
                          "(pip install 'lepton-fed[observe]'); or set it to auto/false")
    if tb == "true" or (tb == "auto" and have_tb):
        from lepton_fed.observe.tensorboard import TensorBoardObserver

        out.append(TensorBoardObserver(run_dir))
    port = ob.get("metrics_port")
    if port is not None:
        from lepton_fed.observe.prometheus import CoordinatorMetrics

        priv = cfg.get("privacy") or {}
        target = priv.get("epsilon") if hasattr(priv, "get") else None
        metrics = CoordinatorMetrics(
            int(port), addr=str(ob.get("metrics_addr") or "127.0.0.1"),
            rounds_planned=rounds,
            epsilon_target=float(target) if target is not None else None,
            info={"privacy": str(priv.get("mode", "")) if hasattr(priv, "get") else "",
                  "secagg": str(bool(cfg.get("secagg", {}).get("enabled", False))).lower(),
                  "strategy": str(cfg.get("strategy", {}).get("name", ""))})
        log.info("Prometheus metrics on http://%s:%d/metrics",
                 ob.get("metrics_addr") or "127.0.0.1", metrics.port)
        out.append(metrics)
    progress = _tri(ob.get("progress"))
    if not quiet and progress != "false":
        from lepton_fed.observe.progress import ProgressObserver

        out.append(ProgressObserver(rounds, enabled=True if progress == "true" else None))
    return out


def close_observers(observers: list[Any]) -> None:
    """Close what a run that ended WITHOUT ``on_finish`` (an exception) left open: the
    TensorBoard file (flushed) and the progress bar. A Prometheus endpoint keeps serving
    the run's last figures until the process ends or the next run takes the port."""
    for o in observers:
        close = getattr(o, "close", None)
        if callable(close):
            close()
