"""Launching a simulation: the one module that talks to Flower's simulation engine.

``flwr.simulation.run_simulation`` is deprecated in flwr 1.42 but runs in-process, which
suits Hydra; moving to ``flwr run`` is a change to this module only.

On several machines (``federation.ray_address=HOST:PORT``, docs/scale.md) the driver
connects to an existing Ray cluster (``ray start --head`` plus ``ray start
--address=...`` on every other machine) before Flower's engine starts, so Flower uses
that cluster instead of starting a local one: its actor pool then spans every node's
CPUs (and GPUs). Every Ray worker of the run gets this driver's ``PYTHONPATH`` and the
simulation bundle's path (``$LEPTON_FED_SIM_BUNDLE``) through Ray's runtime
environment; the bundle directory must be at that path on every machine
(``federation.sim_bundle_dir``: a shared file system), and a virtual node that cannot
find it refuses the run (``DATA_UNAVAILABLE``) rather than fall back to the open policy.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from lepton_fed.config.validate import raise_if, validate
from lepton_fed.errors import RunFailed

__all__ = ["connect_ray", "simulate"]


def _quiet_env() -> None:
    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    os.environ.setdefault("FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION", "1")
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")


def _preflight(cfg: DictConfig) -> None:
    """Load the data and build the model before Ray starts (both are cached for the
    server), so an unusable model is refused in seconds, naming the layer."""
    if cfg.privacy.mode != "dpsgd":
        return
    from lepton_fed.data.federated import federated_split
    from lepton_fed.models import build_model
    from lepton_fed.models.spec import model_spec
    from lepton_fed.privacy.dpsgd import dp_ready

    data = federated_split(cfg).data
    spec = model_spec(cfg.model, num_features=data.num_features,
                      num_classes=data.num_classes, input_shape=data.input_shape)
    dp_ready(build_model(spec), grad_sample_mode=str(cfg.privacy.grad_sample_mode),
             model_name=str(cfg.model.name), num_features=data.num_features)


#: environment every Ray worker of a cluster run gets from the driver
_WORKER_ENV = ("FLWR_TELEMETRY_ENABLED", "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION",
               "RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "RAY_DEDUP_LOGS")


@contextmanager
def _bundle(cfg: DictConfig) -> Iterator[Path]:
    """The simulation bundle, in ``federation.sim_bundle_dir`` when set (a directory
    every machine of a Ray cluster sees at the same path), else a local temp dir."""
    from lepton_fed.sim_bundle import simulation_bundle

    with simulation_bundle(cfg, cfg.federation.get("sim_bundle_dir") or None) as d:
        yield d


def connect_ray(address: str, bundle: str | Path | None = None) -> None:
    """Connect this driver to the Ray cluster at ``address`` (``HOST:PORT`` of ``ray start
    --head``), giving every worker this driver's ``PYTHONPATH``, the quiet Flower/Ray
    settings and the simulation bundle's path. Flower's engine then uses this cluster
    (it starts Ray only when Ray is not initialised) and disconnects at the end."""
    import ray

    from lepton_fed.sim_bundle import SIM_BUNDLE_ENV

    paths = [*sys.path, os.environ.get("PYTHONPATH", "")]
    env = {"PYTHONPATH": os.pathsep.join(dict.fromkeys(p for p in paths if p))}
    env |= {k: os.environ[k] for k in _WORKER_ENV if k in os.environ}
    if bundle is not None:
        env[SIM_BUNDLE_ENV] = str(bundle)
    ray.init(address=address, runtime_env={"env_vars": env}, logging_level=logging.ERROR,
             log_to_driver=True)


@contextmanager
def _node_ledgers(cfg: DictConfig, run_dir: str | Path) -> Iterator[None]:
    """H5: privacy=dpsgd: the virtual nodes keep their ledgers in RUN_DIR/node_ledgers
    (exported as ``$LEPTON_FED_SIM_LEDGERS`` for the block), so a resumed run continues
    every node's spend instead of starting it from zero."""
    from lepton_fed.client.dp import SIM_LEDGERS_ENV
    from lepton_fed.server.checkpoint import NODE_LEDGERS_DIR

    old = os.environ.pop(SIM_LEDGERS_ENV, None)
    if cfg.privacy.mode == "dpsgd":
        d = Path(run_dir) / NODE_LEDGERS_DIR
        d.mkdir(parents=True, exist_ok=True)
        os.environ[SIM_LEDGERS_ENV] = str(d.resolve())
    try:
        yield
    finally:
        os.environ.pop(SIM_LEDGERS_ENV, None)
        if old is not None:
            os.environ[SIM_LEDGERS_ENV] = old


def simulate(cfg: DictConfig, run_dir: str | Path) -> dict[str, Any]:
    """Validate ``cfg``, run it on Flower's Ray simulation engine, return summary.json.

    Raises:
        ConfigError: every config problem, before Ray starts.
        RunFailed: the run could not complete (e.g. no client succeeded in a round).
    """
    raise_if(validate(cfg))
    if cfg.get("resume"):  # H5: continue a checkpointed run, in its own run directory
        from lepton_fed.server.checkpoint import NODE_LEDGERS_DIR, check_resume

        ledgers = Path(str(cfg.resume)) / NODE_LEDGERS_DIR  # DP-SGD: the nodes' spend so far
        check_resume(cfg, node_ledgers_persist=ledgers.is_dir())
        run_dir = str(cfg.resume)
    _preflight(cfg)
    _quiet_env()
    for noisy in ("alembic", "sqlalchemy", "ray", "filelock", "matplotlib", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    flwr_log = logging.getLogger("flwr")
    flwr_log.propagate = False
    flwr_log.setLevel(logging.DEBUG if cfg.log_level == "DEBUG" else logging.ERROR)
    from flwr.simulation import run_simulation

    from lepton_fed.client.app import app as client_app
    from lepton_fed.server.app import make_server_app

    results: dict[str, Any] = {}
    server_app = make_server_app(cfg, run_dir, results)
    fed = cfg.federation
    num_cpus = os.cpu_count() or 1
    backend_config: dict[str, Any] = {
        "client_resources": {"num_cpus": float(fed.num_cpus_per_client),
                             "num_gpus": float(fed.num_gpus_per_client)},
        "init_args": {"num_cpus": num_cpus, "include_dashboard": False,
                      "logging_level": "ERROR", "log_to_driver": True},
    }
    print(f"[lepton-fed] starting the simulation: {fed.num_clients} clients "
          f"({fed.clients_per_round} per round), {fed.rounds} rounds, data={cfg.data.name}, "
          f"model={cfg.model.name}, strategy={cfg.strategy.name}, privacy={cfg.privacy.mode}, "
          f"secagg={'on' if cfg.secagg.enabled else 'off'} -> {run_dir}", flush=True)
    address = fed.get("ray_address")
    # keys, roster and node policy: the nodes', not the server's (and their DP ledgers)
    with _node_ledgers(cfg, run_dir), _bundle(cfg) as bundle:
        if address:
            print(f"[lepton-fed] connecting to the Ray cluster at {address}", flush=True)
            connect_ray(str(address), bundle)
        try:
            run_simulation(
                server_app=server_app, client_app=client_app,
                num_supernodes=int(fed.num_clients), backend_name="ray",
                backend_config=backend_config,
            )
        finally:
            if address:
                import ray

                ray.shutdown()  # disconnects this driver; the cluster keeps running
    if not results:
        summary = Path(run_dir) / "summary.json"
        raise RunFailed(
            f"the simulation ended without a result (see the log above); {summary} not written"
        )
    return results
