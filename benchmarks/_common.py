"""Helpers shared by the benchmark scripts: results JSON, timing, tables, and the one
harness for simulations in fresh worker processes (:func:`run_worker`,
:func:`backend_config`, :func:`quiet_env`, :func:`timed_server_main`,
:func:`wait_quiet`)."""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = ROOT / "benchmarks" / "results"

__all__ = [
    "QUIET_ENV",
    "RESULTS_DIR",
    "ROOT",
    "backend_config",
    "hospital_correct",
    "loadavg",
    "machine",
    "mean_std",
    "median",
    "print_table",
    "quiet_env",
    "run_worker",
    "timed_server_main",
    "timer",
    "wait_quiet",
    "write_result",
]

#: What ``lepton_fed.simulation`` sets before Ray starts (no telemetry, no installs).
QUIET_ENV = {
    "FLWR_TELEMETRY_ENABLED": "0",
    "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
    "RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO": "0",
    "RAY_DEDUP_LOGS": "0",
}


def _git_commit() -> str:
    import subprocess

    try:
        run = {"cwd": ROOT, "capture_output": True, "text": True, "timeout": 10}
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], **run
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], **run
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return (head or "unknown") + ("+dirty" if dirty.stdout.strip() else "")


def machine() -> dict[str, Any]:
    """Where, when and on which commit a figure was measured."""
    return {
        "git_commit": _git_commit(),
        "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "host_cpus": os.cpu_count(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "python": sys.version.split()[0],
    }


def write_result(name: str, payload: dict[str, Any]) -> Path:
    """Write ``benchmarks/results/<name>.json`` (payload plus a ``machine`` block)."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    path.write_text(
        json.dumps({"machine": machine(), **payload}, indent=2, default=float) + "\n"
    )
    return path


@contextmanager
def timer() -> Iterator[dict[str, float]]:
    """``with timer() as t: ...`` then ``t["s"]`` holds the elapsed seconds."""
    out: dict[str, float] = {}
    t0 = time.perf_counter()
    try:
        yield out
    finally:
        out["s"] = time.perf_counter() - t0


def median(xs: Sequence[float]) -> float:
    """Median (NaN for no values)."""
    return float(statistics.median(xs)) if xs else float("nan")


def mean_std(xs: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    if not xs:
        return float("nan"), float("nan")
    return float(statistics.fmean(xs)), float(statistics.stdev(xs)) if len(
        xs
    ) > 1 else 0.0


def print_table(
    headers: Sequence[str], rows: Sequence[Sequence[Any]], title: str = ""
) -> None:
    """A plain-text table; floats get 3 decimals unless already formatted."""
    cells = [[f"{c:.3f}" if isinstance(c, float) else str(c) for c in r] for r in rows]
    widths = [
        max(len(str(h)), *(len(r[i]) for r in cells)) if cells else len(str(h))
        for i, h in enumerate(headers)
    ]
    line = "+" + "+".join("-" * (w + 2) for w in widths) + "+"
    if title:
        print(title)
    print(line)
    print(
        "| "
        + " | ".join(str(h).ljust(w) for h, w in zip(headers, widths, strict=True))
        + " |"
    )
    print(line)
    for r in cells:
        print(
            "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |"
        )
    print(line, flush=True)


def hospital_correct(run_dir: Path, cfg: Any) -> tuple[dict[str, float], Any]:
    """The final model of ``run_dir`` on its held-out split (test-split order):
    accuracy per hospital (silo name -> accuracy) and per-row correctness."""
    import numpy as np
    import torch
    from safetensors.torch import load_file

    from lepton_fed.data.federated import federated_split
    from lepton_fed.models import build_model

    spec = json.loads((run_dir / "preprocess.json").read_text())["model"]
    model = build_model(spec)
    model.load_state_dict(load_file(str(run_dir / "model.safetensors")))
    model.eval()
    held = np.load(run_dir / "heldout.npz")
    X, y = held["X"], held["y"]  # test-split order
    split = federated_split(cfg)
    silo = split.data.silo[split.test_idx]
    names = split.data.silo_names
    with torch.no_grad():
        pred = model(torch.as_tensor(X, dtype=torch.float32)).argmax(1).numpy()
    correct = pred == y
    per = {str(names[s]): float(correct[silo == s].mean()) for s in np.unique(silo)}
    return per, correct


# --------------------------------------------------------------------------------------
# Simulations in fresh worker processes
# --------------------------------------------------------------------------------------


def quiet_env() -> None:
    """Set :data:`QUIET_ENV` (keeping values already set), as lepton-fed's launcher does."""
    for k, v in QUIET_ENV.items():
        os.environ.setdefault(k, v)


def backend_config(
    cpus_per_client: float = 1.0, gpus_per_client: float = 0.0
) -> dict[str, Any]:
    """lepton-fed's Ray backend config (``lepton_fed/simulation.py``) for a plain-Flower
    baseline run on the same terms: per-client resources, ``num_cpus`` = this machine's
    cores, no dashboard, errors-only logging."""
    return {
        "client_resources": {
            "num_cpus": float(cpus_per_client),
            "num_gpus": float(gpus_per_client),
        },
        "init_args": {
            "num_cpus": os.cpu_count() or 1,
            "include_dashboard": False,
            "logging_level": "ERROR",
            "log_to_driver": True,
        },
    }


@contextmanager
def timed_server_main(out: dict[str, Any]) -> Iterator[None]:
    """Record ``out["main_start"]``/``out["main_end"]`` (monotonic) around the ServerApp
    body (``run_federation`` as ``lepton_fed.server.app`` calls it) inside the block.

    The one place a benchmark patches the library: the round loop's observers see
    rounds and the summary, not the moment the ServerApp body starts.
    """
    import lepton_fed.server.app as sapp

    orig = sapp.run_federation

    def timed(*a: Any, **k: Any) -> Any:
        out["main_start"] = time.monotonic()
        try:
            return orig(*a, **k)
        finally:
            out["main_end"] = time.monotonic()

    sapp.run_federation = timed
    try:
        yield
    finally:
        sapp.run_federation = orig


def loadavg() -> float:
    """The 1-minute load average, rounded (0.0 where the OS has none)."""
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return 0.0


def run_worker(
    script: str | os.PathLike[str],
    args: Sequence[str],
    *,
    timeout: float = 900.0,
    raise_on_failure: bool = True,
) -> dict[str, Any]:
    """Run ``python SCRIPT --worker ARGS... --result FILE`` in a fresh process.

    The worker writes its figures as JSON to ``FILE``; this adds ``process_wall_s``
    (interpreter start to exit, Ray shut-down included) and ``loadavg_1min`` (before,
    after). The script's folder, the benchmarks folder and the repository root are put
    on ``PYTHONPATH`` so the worker (and Ray's workers) import the script's module and
    ``_common`` by name, as Ray pickles apps defined there by reference.

    Returns:
        The worker's JSON plus the two fields; with ``raise_on_failure=False`` a failed
        worker gives ``{"failed": "exit N", "log_tail": ..., "process_wall_s": ...}``.

    Raises:
        SystemExit: the worker failed (``raise_on_failure``), after printing its log tail.
    """
    script = Path(script).resolve()
    env = {**os.environ, **{k: os.environ.get(k, v) for k, v in QUIET_ENV.items()}}
    here = str(Path(__file__).resolve().parent)
    paths = (str(script.parent), here, str(ROOT), env.get("PYTHONPATH", ""))
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(p for p in paths if p))
    with tempfile.TemporaryDirectory() as d:
        res = Path(d) / "result.json"
        load0 = loadavg()
        t0 = time.monotonic()
        cmd = [sys.executable, str(script), "--worker", *args, "--result", str(res)]
        try:
            proc = subprocess.run(
                cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
            )
            code, log = (
                proc.returncode,
                proc.stdout[-3000:] + "\n" + proc.stderr[-5000:],
            )
        except subprocess.TimeoutExpired as e:
            code, log = -1, f"timed out after {timeout} s: {e}"
        wall = time.monotonic() - t0
        if code != 0 or not res.exists():
            if raise_on_failure:
                sys.stderr.write(log.strip() + "\n")
                raise SystemExit(f"worker {' '.join(args)} failed (exit {code})")
            return {"failed": f"exit {code}", "log_tail": log.strip(),
                    "process_wall_s": wall}  # fmt: skip
        out: dict[str, Any] = json.loads(res.read_text())
    out["process_wall_s"] = wall
    out["loadavg_1min"] = [load0, loadavg()]  # before, after
    return out


def wait_quiet(
    threshold: float, poll_s: float = 10.0, max_wait_s: float = 300.0
) -> dict[str, Any]:
    """Wait until the 1-minute load average is below ``threshold`` (or give up).

    Returns:
        ``{"threshold", "waited_s", "quiet_at_start", "samples_1min"}``.
    """
    t0 = time.monotonic()
    samples = [loadavg()]
    while samples[-1] >= threshold and time.monotonic() - t0 < max_wait_s:
        print(f"  load {samples[-1]:.2f} >= {threshold}: waiting "
              f"({time.monotonic() - t0:.0f}/{max_wait_s:.0f} s)", flush=True)  # fmt: skip
        time.sleep(poll_s)
        samples.append(loadavg())
    return {"threshold": threshold, "waited_s": round(time.monotonic() - t0, 1),
            "quiet_at_start": samples[-1] < threshold, "samples_1min": samples}  # fmt: skip


def plain_sgd_epochs(model: Any, X: Any, y: Any, rows: Any, cfg: Any) -> float:
    """The plain-Flower baselines' local training: SGD with momentum over ``X[rows]`` for
    ``cfg["epochs"]`` epochs; returns the example-weighted mean training loss."""
    import torch
    from torch import nn

    opt = torch.optim.SGD(
        model.parameters(), lr=float(cfg["lr"]), momentum=float(cfg["momentum"])
    )
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(
            torch.from_numpy(X[rows]), torch.from_numpy(y[rows])
        ),
        batch_size=int(cfg["batch-size"]),
        shuffle=True,
    )
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    total = 0.0
    for _ in range(int(cfg["epochs"])):
        for xb, yb in loader:
            opt.zero_grad()
            loss = loss_fn(model(xb), yb)
            loss.backward()
            opt.step()
            total += float(loss.item()) * len(yb)
    return total / max(len(rows), 1)


def time_interleaved(runners: dict[str, Any], reps: int) -> dict[str, list[float]]:
    """Seconds per call for each runner: one warm-up call each, then ``reps`` turns in
    which every runner runs once back to back (the host is shared, so neighbours in
    time see the same background load; compare them pairwise, per turn)."""
    for run in runners.values():
        run()
    out: dict[str, list[float]] = {k: [] for k in runners}
    for _ in range(reps):
        for name, run in runners.items():
            t0 = time.perf_counter()
            run()
            out[name].append(time.perf_counter() - t0)
    return out


def run_figures(
    summary: dict[str, Any], rows: list[dict[str, Any]], wall: float
) -> dict[str, Any]:
    """A DP run's figures from its summary and metrics rows: rounds, mean round seconds
    and upload per client (rounds 2..R: round 1 includes the setup), the noise
    multiplier and epsilon (the distributed-DP plan's when there is one), wrap-around."""
    later = rows[1:] or rows
    ddp = (rows[-1].get("secagg") or {}).get("distributed_dp") or {}
    privacy = summary["privacy"]
    return {
        "rounds": summary["rounds_completed"],
        "round_seconds": statistics.mean(r["seconds"] for r in later),
        "upload_per_client": statistics.mean(
            r["bytes_up"] / max(r["clients"], 1) for r in later
        ),
        "noise_multiplier": ddp.get(
            "noise_multiplier", privacy.get("noise_multiplier")
        ),
        "epsilon": ddp.get("epsilon", privacy.get("epsilon")),
        "wrap_log2": ddp.get("wrap_log2"),
        "wall_s": wall,
    }
