"""The Flower ServerApp: wiring only. The round loop lives in :mod:`.rounds`."""

from __future__ import annotations

from pathlib import Path

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp
from omegaconf import DictConfig, OmegaConf

from lepton_fed.server.outputs import RunWriter
from lepton_fed.server.rounds import run_federation

__all__ = ["app", "make_server_app"]


def make_server_app(cfg: DictConfig, run_dir: str | Path, results: dict | None = None) -> ServerApp:
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
    """Deployment entry: the config travels as YAML in the run config."""
    cfg = OmegaConf.create(str(context.run_config["config-yaml"]))
    assert isinstance(cfg, DictConfig)
    run_dir = str(context.run_config.get("run-dir", "outputs/federation"))
    run_federation(grid, cfg, RunWriter(run_dir))
