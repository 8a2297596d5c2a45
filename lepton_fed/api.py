"""Running lepton-fed from Python: compose a config and run a federation without Hydra's
command line (``docs/api.md`` shows every entry point of the root package).

:func:`simulate` runs the same ServerApp round loop and ClientApp handlers as
``lepton-fed simulate`` and writes the same run directory; ``in_process=True`` delivers
Flower messages to the ClientApp directly in this process instead of through Ray (no
worker processes: seconds instead of tens of seconds for small runs).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import tempfile
from collections.abc import Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

__all__ = ["compose", "simulate"]


def compose(overrides: Sequence[str] = (), *, deployment: bool = False) -> DictConfig:
    """The composed, validated config: ``conf/config.yaml`` with Hydra ``overrides``.

    Args:
        overrides: ``key=value`` and ``group=option`` strings, as on the command line
            (``["model=logreg", "federation.rounds=3", "experiment=dp_strict"]``).
        deployment: validate for a real federation (stricter: e.g. seeded DP noise is
            refused).

    Raises:
        ConfigError: every problem at once (unknown keys named, with the settings that
            exist), before anything runs.
    """
    from lepton_fed.config.compose import precheck

    if isinstance(overrides, str):
        raise TypeError("overrides must be a list of strings, not one string")
    return precheck(list(overrides), deployment=deployment)[0]


def _default_run_dir() -> Path:
    """``outputs/DATE/TIME`` under the working directory, as the command line uses."""
    now = datetime.now()
    base = Path("outputs") / now.strftime("%Y-%m-%d") / now.strftime("%H-%M-%S")
    d, k = base, 1
    while d.exists():
        d, k = base.with_name(f"{base.name}-{k}"), k + 1
    return d


@contextlib.contextmanager
def _quiet(enabled: bool) -> Iterator[None]:
    """No progress lines on stdout and no Flower INFO logs inside the block."""
    if not enabled:
        yield
        return
    flwr = logging.getLogger("flwr")
    level = flwr.level
    flwr.setLevel(logging.WARNING)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        flwr.setLevel(level)


def _in_process(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    from lepton_fed.client.app import app as client_app
    from lepton_fed.inprocess import InProcessGrid
    from lepton_fed.server.outputs import RunWriter
    from lepton_fed.server.rounds import run_federation
    from lepton_fed.sim_bundle import write_bundle

    with tempfile.TemporaryDirectory(prefix="lepton-fed-sim-") as bundle:
        write_bundle(
            bundle, cfg
        )  # the nodes' keys, roster and policy: not the server's
        grid = InProcessGrid(client_app, int(cfg.federation.num_clients), bundle=bundle)
        return run_federation(grid, cfg, RunWriter(run_dir))


def simulate(
    overrides: Sequence[str] = (),
    *,
    run_dir: str | os.PathLike[str] | None = None,
    in_process: bool = False,
    config: DictConfig | None = None,
    quiet: bool = False,
) -> dict[str, Any]:
    """Run a simulated federation and return its summary (``summary.json``).

    Args:
        overrides: Hydra overrides, as for ``lepton-fed simulate`` (ignored when
            ``config`` is given).
        run_dir: where the run directory goes (``summary.json``, ``metrics.jsonl``,
            ``model.safetensors``, ``preprocess.json``, ``heldout.npz``...); default
            ``outputs/DATE/TIME`` under the working directory.
        in_process: run every virtual node in this process (no Ray): the same round
            loop, client handlers, secure aggregation and DP-SGD, faster to start.
            ``False`` uses Flower's Ray simulation engine, as the command line does.
        config: an already composed config (:func:`compose`); it is validated again.
        quiet: print no per-round progress (the summary and the run directory hold
            everything).

    Returns:
        The run summary (rounds completed, final metrics, privacy, secure aggregation,
        bytes, wall time), as written to ``run_dir/summary.json``.

    Raises:
        ConfigError: every config problem, before anything runs.
        RunFailed: the run could not complete (e.g. no client succeeded in a round).
    """
    from lepton_fed.config.compose import precheck
    from lepton_fed.config.validate import raise_if, validate

    engine = "in-process" if in_process else "ray"
    if config is None:
        cfg = precheck(list(overrides), engine=engine)[0]
    else:
        if not isinstance(config, DictConfig):
            raise TypeError(
                f"config must be a DictConfig (see compose()), not {type(config)}"
            )
        raise_if(validate(config, engine=engine))
        cfg = config
    out = Path(run_dir) if run_dir is not None else _default_run_dir()
    out.mkdir(parents=True, exist_ok=True)
    with _quiet(quiet):
        if in_process:
            return _in_process(cfg, out)
        from lepton_fed.simulation import simulate as on_ray

        return on_ray(cfg, out)
