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
        summary = run_federation(grid, cfg, RunWriter(run_dir))
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
        assert isinstance(cfg, DictConfig)
        raise_if(validate(cfg))
    else:
        cfg = precheck(str(rc.get("config-overrides", "")).split())[0]
    run_dir = str(rc.get("run-dir", "outputs/federation"))
    run_federation(grid, cfg, RunWriter(run_dir))
