"""The BUILT wheel, installed in a fresh venv, gives a working `lepton-fed` (issue 14).

Builds the wheel from a clean copy of the build inputs (so a stale build/ folder in the
checkout cannot leak into it), installs it with its dependencies the way the README does
(torch pinned in the same pip command), and runs a 2-round simulation from a directory
outside the repository, so nothing can come from the source tree.
"""

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BUILD_INPUTS = ("pyproject.toml", "README.md", "lepton_fed", "strategies", "simulations", "conf")
PIP_ENV = {"PIP_DISABLE_PIP_VERSION_CHECK": "1"}


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "LEPTON_FED_CONF")}
    env.update(PIP_ENV, FLWR_TELEMETRY_ENABLED="0", FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION="1",
               RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO="0")
    return env


def _run(cmd: list[str], cwd: Path, timeout: int) -> subprocess.CompletedProcess[str]:
    out = subprocess.run([str(c) for c in cmd], cwd=cwd, env=_env(), capture_output=True,
                         text=True, timeout=timeout)
    assert out.returncode == 0, f"{cmd[:4]} failed:\n{(out.stdout + out.stderr)[-4000:]}"
    return out


def _conf_files(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*.yaml")
            if p.relative_to(root).parts[0] != "local"}


@pytest.mark.integration
def test_built_wheel_installs_and_simulates(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for name in BUILD_INPUTS:
        path = REPO / name
        if path.is_dir():
            shutil.copytree(path, src / name,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(path, src / name)
    shutil.rmtree(src / "conf" / "local", ignore_errors=True)  # a user's own, never shipped
    dist = tmp_path / "dist"
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", dist, src],
         cwd=tmp_path, timeout=300)
    (wheel,) = dist.glob("lepton_fed-*.whl")

    venv = tmp_path / "venv"
    try:
        _run([sys.executable, "-m", "venv", venv], cwd=tmp_path, timeout=120)
        py = venv / "bin" / "python"
        t0 = time.perf_counter()
        _run([py, "-m", "pip", "install", "-q", "--no-compile", f"{wheel}[serve]", "torch==2.13.0"],
             cwd=tmp_path, timeout=1200)
        print(f"fresh-venv install of the wheel: {time.perf_counter() - t0:.1f} s")

        site = Path(_run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                         cwd=tmp_path, timeout=60).stdout.strip())
        # Only lepton_fed at the top level: no generic `strategies`, `simulations` or `conf`.
        for generic in ("strategies", "simulations", "conf"):
            assert not (site / generic).exists(), f"the wheel installed a top-level {generic}/"
            assert not (site / f"{generic}.py").exists()
        assert (site / "lepton_fed" / "conf" / "config.yaml").is_file()
        assert _conf_files(site / "lepton_fed" / "conf") == _conf_files(REPO / "conf")
        for pkg in ("strategies", "simulations"):
            shipped = {p.name for p in (site / "lepton_fed" / pkg).glob("*.py")}
            assert shipped == {p.name for p in (REPO / pkg).glob("*.py")}, pkg

        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()
        where = _run([py, "-c", "import lepton_fed.strategies as s, lepton_fed.config as c; "
                      "print(s.__file__); print(c.conf_dir())"], cwd=elsewhere, timeout=120)
        strategies_file, conf = where.stdout.split()
        assert Path(strategies_file).is_relative_to(site)
        assert Path(conf) == site / "lepton_fed" / "conf"

        run_dir = tmp_path / "run"
        out = _run([venv / "bin" / "lepton-fed", "simulate", "federation.rounds=2",
                    f"hydra.run.dir={run_dir}"], cwd=elsewhere, timeout=600)
        assert "round 2/2" in out.stdout + out.stderr
        summary = json.loads((run_dir / "summary.json").read_text())
        assert summary["rounds_completed"] == 2
    finally:
        shutil.rmtree(venv, ignore_errors=True)  # ~2 GB (torch); keep tmp_path small
