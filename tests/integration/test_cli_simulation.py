"""The README's commands, run as a user runs them: real Ray simulations via the CLI."""

import csv
import json
import os
import re
import subprocess
import sys

import pytest

CLI = [sys.executable, "-m", "lepton_fed.cli.main"]


def _cli(*args, cwd, timeout=240):
    env = dict(os.environ, FLWR_TELEMETRY_ENABLED="0", PYTHONUNBUFFERED="1")
    return subprocess.run(
        [*CLI, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


def test_bad_config_reports_everything_before_ray(tmp_path):
    # how fast the refusal comes is a figure: benchmarks/refusal_time.py
    out = _cli(
        "simulate",
        "model=transformer",
        "federation.rounds=0",
        "strategy=krum",
        "secagg=on",
        cwd=tmp_path,
    )
    assert out.returncode == 2
    assert "3 configuration problem(s)" in out.stderr
    assert "choose one of ['cnn', 'logreg', 'mlp']" in out.stderr
    # nothing started: no launch line, no Ray output, no run directory
    assert "starting the simulation" not in out.stdout
    assert not re.search(r"\bray\b", (out.stdout + out.stderr).lower())
    assert not (tmp_path / "outputs").exists()


@pytest.mark.integration
def test_simulate_three_clients_on_ray(tmp_path):
    run_dir = tmp_path / "run"
    out = _cli(
        "simulate",
        "federation.num_clients=3",
        "federation.clients_per_round=3",
        "federation.rounds=2",
        f"hydra.run.dir={run_dir}",
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "[lepton-fed] round 2/2" in out.stdout and "test accuracy" in out.stdout
    for f in (
        "config.yaml",
        "metrics.jsonl",
        "summary.json",
        "model.safetensors",
        "plots/accuracy.png",
        "plots/loss.png",
    ):
        assert (run_dir / f).exists(), f
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["rounds_completed"] == 2 and summary["final"]["accuracy"] > 0.8


@pytest.mark.integration
def test_sweep_then_report(tmp_path):
    sweep = tmp_path / "sweep"
    out = _cli(
        "simulate",
        "-m",
        "model=logreg,mlp",
        "federation.num_clients=3",
        "federation.clients_per_round=3",
        "federation.rounds=1",
        f"hydra.sweep.dir={sweep}",
        cwd=tmp_path,
        timeout=400,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    rep = _cli("report", str(sweep), cwd=tmp_path)
    assert rep.returncode == 0, rep.stderr
    rows = list(csv.DictReader((sweep / "report.csv").open()))
    assert sorted(r["overrides"].split()[0] for r in rows) == [
        "model=logreg",
        "model=mlp",
    ]
    assert all(float(r["accuracy"]) > 0.5 for r in rows)
    assert (sweep / "report.md").exists() and (
        sweep / "report.png"
    ).stat().st_size > 1000


@pytest.mark.integration
def test_secure_aggregation_with_central_dp_on_ray(tmp_path):
    run_dir = tmp_path / "run"
    out = _cli(
        "simulate",
        "secagg=on",
        "privacy=central",
        "privacy.noise_multiplier=0.3",
        "federation.num_clients=4",
        "federation.clients_per_round=4",
        "federation.rounds=2",
        f"hydra.run.dir={run_dir}",
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["secagg"]["enabled"] and summary["rounds_completed"] == 2
    assert [r["contributors"] for r in summary["secagg"]["rounds"]] == [4, 4]
    assert summary["privacy"]["mode"] == "central" and summary["privacy"]["epsilon"] > 0
