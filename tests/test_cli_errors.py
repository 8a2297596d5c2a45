"""One error format for every ``lepton-fed`` subcommand, through the installed console script.

Bad input to each subcommand must give, on stderr, ``lepton-fed: error: <message>`` (a
config error's problems on indented lines below it, notes in parentheses), nothing else,
and the error's exit code. A missing optional extra names the pip command; an unexpected
exception is one short line (exit 1) unless --debug / LEPTON_FED_DEBUG=1 asks for the
traceback. No Ray, no training: every case fails in its checks.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(sys.executable).with_name("lepton-fed")
PREFIX = "lepton-fed: error: "

pytestmark = pytest.mark.skipif(
    not SCRIPT.is_file(),
    reason=f"console script {SCRIPT} not installed (pip install -e .)",
)


def _env(**extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("LEPTON_FED_DEBUG", "HYDRA_FULL_ERROR")
    }
    env.update(
        FLWR_TELEMETRY_ENABLED="0",
        FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION="1",
        **extra,
    )
    return env


def _cli(
    *argv: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SCRIPT), *argv],
        cwd=cwd,
        env=env or _env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _check_format(p: subprocess.CompletedProcess[str], code: int) -> list[str]:
    """stderr is exactly one formatted error (first line, then indented lines); returns them."""
    assert p.returncode == code, (p.returncode, p.stderr[-2000:])
    lines = p.stderr.rstrip("\n").splitlines()
    assert lines and lines[0].startswith(PREFIX), p.stderr
    assert all(ln.startswith("  ") for ln in lines[1:]), p.stderr
    assert "Traceback" not in p.stderr
    return lines


def _hide(tmp_path: Path, *modules: str) -> dict[str, str]:
    """An environment in which ``modules`` cannot be imported (as if never installed)."""
    site = tmp_path / "hide"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(
        "import sys\n" + "".join(f"sys.modules[{m!r}] = None\n" for m in modules)
    )
    return _env(PYTHONPATH=str(site))


# --- simulate / validate ------------------------------------------------------------


@pytest.mark.parametrize("command", ["simulate", "validate"])
def test_config_problems_are_listed_under_one_line(command, tmp_path):
    p = _cli(command, "model=transformer", "federation.rounds=0", cwd=tmp_path)
    lines = _check_format(p, 2)
    assert lines[0] == PREFIX + "2 configuration problem(s):"
    assert lines[1].startswith("  - model=transformer: unknown option; choose one of")
    assert lines[2] == "  - federation.rounds must be a positive integer, got 0"
    assert not (tmp_path / "outputs").exists()


def test_the_hydra_entry_point_run_directly_reports_the_same_way(tmp_path):
    """``python -m lepton_fed.simulations.run`` (what ``simulate`` wraps) checks the
    overrides before Hydra starts: the same one-format list, no Hydra banner, no run."""
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "lepton_fed.simulations.run",
            "model=transformer",
            "federation.rounds=0",
        ],
        cwd=tmp_path,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    lines = _check_format(p, 2)
    assert lines[0] == PREFIX + "2 configuration problem(s):"
    assert not (tmp_path / "outputs").exists()


def test_validate_ok_prints_to_stdout_only(tmp_path):
    p = _cli("validate", cwd=tmp_path)
    assert p.returncode == 0 and p.stderr == "" and "config OK (1 job(s))" in p.stdout


def test_parquet_without_pyarrow_names_the_extra(tmp_path):
    data = tmp_path / "d.parquet"
    data.write_bytes(b"PAR1")
    p = _cli(
        "validate",
        "data=csv",
        f"data.path={data}",
        "data.label=y",
        cwd=tmp_path,
        env=_hide(tmp_path, "pyarrow"),
    )
    (line,) = _check_format(p, 9)
    assert 'pip install "lepton-fed[parquet]"' in line and "pyarrow" in line


# --- report ---------------------------------------------------------------------------


def test_report_not_a_directory(tmp_path):
    lines = _check_format(_cli("report", str(tmp_path / "nope"), cwd=tmp_path), 2)
    assert "is not a directory" in lines[1]


def test_report_without_runs_and_with_a_corrupt_summary(tmp_path):
    lines = _check_format(_cli("report", str(tmp_path), cwd=tmp_path), 2)
    assert "no run directories" in lines[1]
    (tmp_path / "0").mkdir()
    (tmp_path / "0" / "summary.json").write_text("{not json")
    lines = _check_format(_cli("report", str(tmp_path), cwd=tmp_path), 2)
    assert str(tmp_path / "0" / "summary.json") in lines[1]


# --- export / serve -----------------------------------------------------------------


def test_export_usage_errors(tmp_path):
    (line,) = _check_format(_cli("export", cwd=tmp_path), 2)
    assert line == PREFIX + "export: needs RUN_DIR and --out DIR (or --verify DIR)"
    (line,) = _check_format(
        _cli("export", "--verify", str(tmp_path), "--out", "x", cwd=tmp_path), 2
    )
    assert "--verify takes no RUN_DIR or --out" in line


def test_export_of_a_non_run_directory(tmp_path):
    lines = _check_format(
        _cli("export", str(tmp_path), "--out", str(tmp_path / "art"), cwd=tmp_path), 2
    )
    assert "not a run directory" in "\n".join(lines)
    assert not (tmp_path / "art").exists()


def test_export_verify_of_a_missing_artifact(tmp_path):
    (line,) = _check_format(
        _cli("export", "--verify", str(tmp_path / "art"), cwd=tmp_path), 6
    )
    assert str(tmp_path / "art") in line


def test_export_without_the_serve_extra(tmp_path):
    p = _cli(
        "export",
        str(tmp_path),
        "--out",
        str(tmp_path / "art"),
        cwd=tmp_path,
        env=_hide(tmp_path, "onnxruntime", "onnxscript"),
    )
    (line,) = _check_format(p, 9)
    assert (
        "onnxruntime, onnxscript" in line and 'pip install "lepton-fed[serve]"' in line
    )


def test_serve_refuses_a_missing_artifact_with_a_note(tmp_path):
    lines = _check_format(
        _cli("serve", str(tmp_path / "art"), "--port", "1", cwd=tmp_path), 6
    )
    assert lines[1] == f"  (refusing to serve {tmp_path / 'art'}; nothing was started)"


def test_serve_without_the_serve_extra(tmp_path):
    p = _cli("serve", str(tmp_path), cwd=tmp_path, env=_hide(tmp_path, "fastapi"))
    (line,) = _check_format(p, 9)
    assert line == (
        PREFIX + "lepton-fed serve needs fastapi, which is not installed; "
        'install the extra: pip install "lepton-fed[serve]"'
    )


# --- privacy / dashboard / deploy commands (other modules, same guard) ---------------


def test_privacy_bad_flags(tmp_path):
    lines = _check_format(
        _cli("privacy", "--rounds", "0", "--sigma", "1", cwd=tmp_path), 2
    )
    assert lines[0] == PREFIX + "3 configuration problem(s):"
    assert "  - --rounds=0 is invalid: must be >= 1" in lines


@pytest.mark.parametrize(
    "argv,needle",
    [
        (["model=transformer"], "model=transformer: unknown option"),
        (
            ["privacy=central", "privacy.noise_multiplier=1"],
            "the audit covers privacy=dpsgd",
        ),
    ],
)
def test_audit_config_problems(argv, needle, tmp_path):
    lines = _check_format(_cli("audit", *argv, cwd=tmp_path), 2)
    assert lines[0] == PREFIX + "1 configuration problem(s):" and needle in lines[1]


def test_dashboard_not_a_directory(tmp_path):
    lines = _check_format(_cli("dashboard", str(tmp_path / "nope"), cwd=tmp_path), 2)
    assert "is not a directory" in lines[1]


def test_dashboard_without_the_serve_extra(tmp_path):
    p = _cli("dashboard", str(tmp_path), cwd=tmp_path, env=_hide(tmp_path, "uvicorn"))
    (line,) = _check_format(p, 9)
    assert "lepton-fed dashboard needs uvicorn" in line and "lepton-fed[serve]" in line


@pytest.mark.parametrize(
    "argv,code,needle",
    [
        (["superlink", "{tmp}/nope"], 8, "not a federation (or coordinator) directory"),
        (
            [
                "node",
                "join",
                "--federation",
                "{tmp}/nope",
                "--data",
                "{tmp}/d.csv",
                "--label",
                "y",
            ],
            8,
            "does not exist",
        ),
        (
            ["federation", "init", "{tmp}/f"],
            2,
            "federation init: the following arguments are required",
        ),
        (
            ["run", "--federation", "{tmp}/nope", "privacy=none"],
            8,
            "not a federation (or coordinator) directory",
        ),
    ],
)
def test_deploy_commands(argv, code, needle, tmp_path):
    p = _cli(*[a.format(tmp=tmp_path) for a in argv], cwd=tmp_path)
    assert needle in "\n".join(_check_format(p, code))


# --- the parser itself ----------------------------------------------------------------


def test_unknown_command_and_flag(tmp_path):
    (line,) = _check_format(_cli("transmogrify", cwd=tmp_path), 2)
    assert "invalid choice: 'transmogrify'" in line and line.endswith(
        "(see lepton-fed --help)"
    )
    (line,) = _check_format(_cli("report", str(tmp_path), "--bogus", cwd=tmp_path), 2)
    assert "unrecognized arguments: --bogus" in line


def test_help_is_not_an_error(tmp_path):
    p = _cli("--help", cwd=tmp_path)
    assert (
        p.returncode == 0 and p.stderr == "" and "9 missing optional extra" in p.stdout
    )


# --- unexpected exceptions ----------------------------------------------------------

_BUG = (
    "import sys\n"
    "import lepton_fed.cli.report as r\n"
    "def collect_runs(root):\n"
    "    raise KeyError('a bug')\n"
    "r.collect_runs = collect_runs\n"
    "from lepton_fed.cli.main import main\n"
    "sys.exit(main(sys.argv[1:]))\n"
)


def _buggy(tmp_path: Path, *argv: str, **env: str) -> subprocess.CompletedProcess[str]:
    """The CLI's main() with a bug planted in ``report`` (the guard is what is tested)."""
    return subprocess.run(
        [sys.executable, "-c", _BUG, *argv],
        cwd=tmp_path,
        env=_env(**env),
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_unexpected_error_is_one_line_without_traceback(tmp_path):
    p = _buggy(tmp_path, "report", str(tmp_path))
    (line,) = _check_format(p, 1)
    assert line == (
        PREFIX + "unexpected KeyError: 'a bug' "
        "(rerun with --debug or LEPTON_FED_DEBUG=1 for the traceback)"
    )


@pytest.mark.parametrize("how", ["flag", "env"])
def test_debug_shows_the_traceback(how, tmp_path):
    argv = (
        ["--debug", "report", str(tmp_path)]
        if how == "flag"
        else ["report", str(tmp_path)]
    )
    env = {"LEPTON_FED_DEBUG": "1"} if how == "env" else {}
    p = _buggy(tmp_path, *argv, **env)
    assert p.returncode == 1
    assert (
        "Traceback (most recent call last)" in p.stderr
        and "in collect_runs" in p.stderr
    )
    assert p.stderr.rstrip().splitlines()[-1] == PREFIX + "unexpected KeyError: 'a bug'"


def test_json_summary_needed_by_report_is_the_only_planted_fault(tmp_path):
    # the same command without the planted bug works: the fault above is the bug, not the input
    d = tmp_path / "0"
    d.mkdir()
    (d / "summary.json").write_text(
        json.dumps({"rounds_completed": 1, "final": {"accuracy": 0.5}})
    )
    p = _cli("report", str(tmp_path), cwd=tmp_path)
    assert p.returncode == 0, p.stderr


def test_unexpected_error_inside_the_hydra_task_reaches_the_guard(tmp_path):
    bug = (
        _BUG.replace("lepton_fed.cli.report as r", "lepton_fed.simulation as r")
        .replace("def collect_runs(root):", "def simulate(cfg, run_dir):")
        .replace("r.collect_runs = collect_runs", "r.simulate = simulate")
    )
    p = subprocess.run(
        [sys.executable, "-c", bug, "simulate", "federation.rounds=1",
         f"hydra.run.dir={tmp_path / 'run'}"],
        cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert p.returncode == 1 and "Traceback" not in p.stderr, p.stderr
    # (Hydra itself still writes "Error executing job with overrides: [...]" above it)
    assert p.stderr.rstrip().splitlines()[-1] == (
        PREFIX + "unexpected KeyError: 'a bug' "
        "(rerun with --debug or LEPTON_FED_DEBUG=1 for the traceback)"
    )
