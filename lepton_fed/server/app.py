"""The Flower ServerApp: wiring only. The round loop lives in :mod:`.rounds`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp
from omegaconf import DictConfig, OmegaConf

from lepton_fed.server.outputs import RunWriter
from lepton_fed.server.rounds import run_federation

__all__ = ["app", "make_server_app"]


def make_server_app(cfg: DictConfig, run_dir: str | Path, results: dict[str, Any] | None = None) -> ServerApp:
    """A ServerApp bound to a composed config and a run directory (simulation)."""
    server = ServerApp()

    @server.main()
    def main(grid: Grid, context: Context) -> None:
        summary = _observed_run(grid, cfg, Path(run_dir), quiet=False)
        if results is not None:
            results.update(summary)

    return server


app = ServerApp()


@app.main()
def _deployed(grid: Grid, context: Context) -> None:
    """Entry for Flower's own runtime (``flwr run``, a SuperLink).

    The run config carries either ``config-yaml`` (a full resolved config) or
    ``config-overrides`` (Hydra overrides, space-separated, composed from ``conf/``),
    plus ``run-dir``. Every config problem is reported before any node is contacted.
    """
    from lepton_fed.config.compose import precheck
    from lepton_fed.config.validate import raise_if, validate

    rc = context.run_config
    if str(rc.get("config-yaml", "")).strip():
        cfg = OmegaConf.create(str(rc["config-yaml"]))
        if not isinstance(cfg, DictConfig):
            from lepton_fed.errors import ConfigError

            raise ConfigError("run config 'config-yaml' must hold a mapping")
        raise_if(validate(cfg, deployment=True))
    else:
        cfg = precheck(str(rc.get("config-overrides", "")).split(), deployment=True)[0]
    _observed_run(grid, cfg, _run_dir(str(rc.get("run-dir", "")), grid), quiet=True)


def _observed_run(grid: Grid, cfg: DictConfig, run_dir: Path, *, quiet: bool) -> dict[str, Any]:
    """The round loop with the observers ``cfg.observe`` asks for (TensorBoard, Prometheus,
    progress), closed whatever happens."""
    from lepton_fed.observe import close_observers, observers_for

    observers = observers_for(cfg, run_dir, quiet=quiet)
    try:
        return run_federation(grid, cfg, RunWriter(run_dir), observers)
    finally:
        close_observers(observers)


def _run_dir(requested: str, grid: Grid) -> Path:
    """The requested directory, or a new one per run: ``outputs/federation/<time>-<run id>``
    (never a directory an earlier run wrote)."""
    if requested.strip():
        return Path(requested)
    import time

    run = getattr(grid, "run", None)
    rid = getattr(run, "run_id", None) or 0
    return Path("outputs") / "federation" / f"{time.strftime('%Y%m%d-%H%M%S')}-{rid}"
