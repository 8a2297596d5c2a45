"""``lepton-fed run --federation DIR [overrides]``: one training run on a running federation.

1. The experiment is composed and validated (:func:`lepton_fed.config.compose.precheck`)
   before anything is sent: a config error is reported here, not by a node.
2. A code-free app project is written (``pyproject.toml`` naming
   ``lepton_fed.server.app:app`` / ``lepton_fed.client.app:app``), so it works from an
   installed wheel and is exactly the package nodes accept as *pinned*.
3. ``flwr run <app> lepton --stream`` submits it to the SuperLink over loopback TLS with
   run config ``config-yaml`` (the resolved config) and ``run-dir`` (a new absolute
   directory), and streams the ServerApp's log.
4. ``flwr run`` exits 0 even when the ServerApp fails, so the run's final status is read
   from the SuperLink, and ``run-dir/summary.json`` must exist: otherwise this exits
   non-zero (:class:`lepton_fed.errors.RunFailed`).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from lepton_fed.deploy.layout import DeployError
from lepton_fed.errors import RunFailed

__all__ = ["APP_PYPROJECT", "submit_run", "write_app"]

APP_PYPROJECT = """\
[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "lepton-fed-app"
version = "{version}"
description = "lepton-fed pinned app: no code; nodes run their installed lepton-fed"
license = "Apache-2.0"
dependencies = []

[tool.flwr.app]
publisher = "lepton-fed"

[tool.flwr.app.components]
serverapp = "lepton_fed.server.app:app"
clientapp = "lepton_fed.client.app:app"

[tool.flwr.app.config]
config-overrides = ""
config-yaml = ""
run-dir = ""
"""
_STARTED = re.compile(r"Successfully started run (\d+)")


def write_app(directory: Path) -> Path:
    """Write the code-free app project into ``directory``; returns it."""
    from lepton_fed import __version__

    directory.mkdir(parents=True, exist_ok=True)
    (directory / "pyproject.toml").write_text(APP_PYPROJECT.format(version=__version__),
                                              encoding="utf-8")
    return directory


def _with_node_defaults(overrides: Sequence[str], n_nodes: int) -> list[str]:
    """Default ``num_clients`` to the federation's size, ``clients_per_round`` to all of them."""
    given = dict(o.lstrip("+~").split("=", 1) for o in overrides if "=" in o)
    num = given.get("federation.num_clients", str(n_nodes))
    extra = [] if "federation.num_clients" in given else [f"federation.num_clients={num}"]
    if "federation.clients_per_round" not in given:
        extra.append(f"federation.clients_per_round={num}")
    return [*extra, *overrides]


def submit_run(
    directory: str | os.PathLike[str],
    overrides: Sequence[str],
    *,
    run_dir: Path | None = None,
    out: Callable[[str], None] = print,
    finish_timeout: float = 60.0,
) -> dict[str, Any]:
    """Submit one run and wait for it; returns ``{run_id, run_dir, status}``.

    Raises:
        ConfigError: the overrides do not compose/validate (nothing was submitted).
        DeployError: the SuperLink is not running, the run directory exists, ``flwr`` failed.
        RunFailed: the run ended in any state but finished:completed, or left no summary.
    """
    import json

    import httpx
    import tomli_w
    from omegaconf import OmegaConf

    from lepton_fed.config.compose import precheck
    from lepton_fed.deploy import control
    from lepton_fed.deploy.procs import tool, tool_env
    from lepton_fed.deploy.superlink import (
        CONNECTION,
        coordinator_files,
        flwr_home,
        superlink_info,
    )

    co = coordinator_files(directory)
    fed = json.loads(co.federation_json.read_text(encoding="utf-8"))
    cfg = precheck(_with_node_defaults(overrides, len(fed["nodes"])))[0]
    if int(cfg.federation.num_clients) > len(fed["nodes"]):
        raise DeployError(f"federation.num_clients={cfg.federation.num_clients} but federation "
                          f"{fed['name']!r} has {len(fed['nodes'])} nodes")
    address = superlink_info(co)["control"]
    client = control.connect(address, co.ca_cert)
    try:
        control.wait_ready(client, timeout=3.0, alive=lambda: True)
    except DeployError:
        raise DeployError(f"no SuperLink answers at {address}: start it with "
                          f"`lepton-fed superlink {co.root}`") from None
    run_dir = (run_dir or Path("outputs") / "federation" / time.strftime("%Y%m%d-%H%M%S")).resolve()
    if run_dir.exists() and any(run_dir.iterdir()):
        raise DeployError(f"run directory {run_dir} already exists and is not empty")
    run_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="lepton-fed-app-") as tmp:
        app = write_app(Path(tmp) / "app")
        rc_file = Path(tmp) / "run-config.toml"
        rc_file.write_text(tomli_w.dumps({"config-yaml": OmegaConf.to_yaml(cfg, resolve=True),
                                          "run-dir": str(run_dir)}), encoding="utf-8")
        argv = [tool("flwr"), "run", str(app), CONNECTION, "--stream", "--run-config", str(rc_file)]
        env = tool_env(FLWR_HOME=str(flwr_home(co)))
        run_id = _stream(argv, env, out)
    if run_id is None:
        raise DeployError("`flwr run` did not start a run (see its output above)")
    deadline = time.monotonic() + finish_timeout
    while True:
        try:
            state = control.run_state(client, run_id)
        except httpx.HTTPError as e:
            if time.monotonic() > deadline:
                raise DeployError(f"lost the SuperLink at {address} while reading the status of run "
                                  f"{run_id} ({e}); check `lepton-fed superlink` and its logs") from None
            time.sleep(1.0)
            continue
        if state.status == "finished" or time.monotonic() > deadline:
            break
        time.sleep(1.0)
    client.close()
    result = {"run_id": run_id, "run_dir": str(run_dir),
              "status": f"{state.status}:{state.sub_status}"}
    if not state.ok:
        raise RunFailed(f"run {run_id} ended {state.status}:{state.sub_status or '?'}"
                        + (f" ({state.details})" if state.details else "") + f"; outputs in {run_dir}")
    if not (run_dir / "summary.json").is_file():
        raise RunFailed(f"run {run_id} finished but wrote no {run_dir / 'summary.json'}")
    out(f"run {run_id} completed; outputs in {run_dir}")
    return result


def _stream(argv: list[str], env: dict[str, str], out: Callable[[str], None]) -> int | None:
    """Run ``flwr run``, echoing its output; the run id it printed (None if none)."""
    run_id = None
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
                          text=True, bufsize=1) as p:
        assert p.stdout is not None
        try:
            for line in p.stdout:
                sys.stdout.write(line)
                if run_id is None and (m := _STARTED.search(line)):
                    run_id = int(m.group(1))
        except KeyboardInterrupt:
            p.terminate()
            raise
        p.wait()
    if p.returncode != 0 and run_id is None:
        out(f"`flwr run` exited with code {p.returncode}")
    return run_id
