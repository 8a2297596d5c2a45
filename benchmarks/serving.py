"""Serving benchmark: int8 artifact vs fp32 torch, and HTTP throughput.

Run: ``python benchmarks/serving.py`` (writes ``benchmarks/results/serving.json``).

1. Artifact: for a ~1.1M-parameter MLP (64 -> 1024 -> 1024 -> 10) trained briefly on
   digits, and for the default small models, export a signed artifact with
   ``export_artifact`` and report size ratio, accuracy drop and single-thread latency
   p50/p99 at batch 1 and 64 for fp32 torch, fp32 ONNX Runtime, and each int8 candidate
   (all measured in the same process by the export itself; ONNX graphs take raw rows,
   their input stage included). ``input_stage``: the stage's own cost, A/B against
   the bare int8 graph and against numpy scaling in front of it (:func:`bench_input_stage`).
2. HTTP: serve an artifact with ``python -m lepton_fed.cli.serve`` (uvicorn, 1 worker),
   then a separate load-generating process (``loadgen`` sub-command: keep-alive
   http.client connections in threads) sends batch-1 ``/predict`` requests, bounded by a
   request count or a time limit, and reports req/s, latency p50/p99 and errors.

Targets: int8/fp32 size <= 0.3; accuracy drop <= 0.5 point; int8 >= 3x faster than
fp32 torch at batch 64 on the 1M MLP; HTTP >= 1,000 req/s with p99 <= 20 ms.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "serving.json"
sys.path.insert(0, str(ROOT / "tests"))
from run_dirs import write_run_dir  # noqa: E402  (shared with the export tests)

MODELS = [
    # name, dataset, spec extras, epochs
    ("mlp_1m", "digits", {"name": "mlp", "hidden": [1024, 1024]}, 5),
    ("mlp_default", "breast_cancer", {"name": "mlp", "hidden": [64, 64]}, 20),
    ("logreg", "breast_cancer", {"name": "logreg"}, 20),
    ("mlp_digits", "digits", {"name": "mlp", "hidden": [64, 64]}, 10),
    ("cnn", "digits", {"name": "cnn"}, 5),
]


#: summary.json of the benchmark's run directories (trained centrally, no federation).
SUMMARY = {
    "rounds_completed": 0,
    "num_clients": 1,
    "final": {},
    "privacy": {"mode": "none", "epsilon": None, "delta": None},
    "secagg": {"enabled": False},
}


def write_run(
    path: Path, dataset: str, extras: dict[str, Any], epochs: int
) -> list[dict]:
    """Train centrally (a stand-in for a finished federation) and write a run dir;
    returns the raw held-out rows."""
    lr = 1e-3 if extras.get("hidden") == [1024, 1024] else 1e-2
    run = write_run_dir(
        path, dataset, extras, epochs=epochs, batch_size=64, lr=lr, shuffle=True,
        summary=SUMMARY,
    )  # fmt: skip
    return run["raw_rows"]


def bench_artifact(name: str, run: Path, art: Path, seconds: float) -> dict[str, Any]:
    """Export one artifact and collect its numbers (plus fp32 ONNX Runtime latency)."""
    from lepton_fed.serving import export_artifact

    t0 = time.perf_counter()
    export_artifact(run, art, latency_seconds=seconds)
    export_s = time.perf_counter() - t0
    m = json.loads((art / "manifest.json").read_text())
    ev = m["evaluation"]
    from lepton_fed.serving.runtime import load_backend

    fp32 = load_backend(
        "torch", "fp32", (art / "model.fp32.safetensors").read_bytes(), m["model"]
    )
    n_params = sum(p.numel() for p in fp32.model.parameters())
    lat = ev["latency_us"]
    acc = ev["accuracy"]

    def brief(d: dict[str, Any]) -> dict[str, float]:
        return {k: round(v["p50_us"], 1) for k, v in d.items()} | {
            f"{k}_p99": round(v["p99_us"], 1) for k, v in d.items()
        }

    cands = {
        c["method"]: {
            "accuracy": c["accuracy"],
            "bytes": c["bytes"],
            "latency_us": brief(c.get("latency", {})),
            "speedup_b64_vs_fp32_torch": lat["fp32_torch"]["b64"]["p50_us"]
            / c["latency"]["b64"]["p50_us"]
            if "latency" in c
            else None,
            "rejected": c.get("rejected"),
        }
        for c in m["quantization"]["candidates"]
    }
    return {
        "params": int(n_params),
        "export_seconds": round(export_s, 2),
        "served": m["runtime"],
        "accuracy": acc,
        "accuracy_drop_points": 100 * (acc["fp32"] - acc["served"]),
        "size_bytes": ev["size_bytes"],
        "latency_us": {
            "fp32_torch": brief(lat["fp32_torch"]),
            "fp32_onnxruntime": brief(lat["fp32_onnxruntime"] or {}),
            "served": brief(lat["served"]),
        },
        "speedup_b1": lat["speedup_b1"],
        "speedup_b64": lat["speedup_b64"],
        "candidates": cands,
    }


def bench_input_stage(art: Path, rows: list[dict], seconds: float) -> dict[str, Any]:
    """What the in-graph input stage costs, measured A/B in one process.

    Re-quantizes the artifact's fp32 reference with the served method (so the int8
    graph is the one served, minus its stage) and times, single-threaded, on the same
    rows: the bare int8 graph on pre-scaled rows, the old serving path (numpy scaling +
    bare graph, format 1) and the served graph on raw rows (format 2). Rounds alternate
    so machine noise hits all three alike; each figure is the best p50 over 3 rounds.
    """
    from lepton_fed.compression.evaluate import latency
    from lepton_fed.compression.quantize import (
        export_onnx,
        quantize_onnx_dynamic,
        quantize_onnx_static,
    )
    from lepton_fed.data.preprocess import Preprocessor
    from lepton_fed.serving.input_stage import InputLayout, add_input_stage
    from lepton_fed.serving.runtime import OrtBackend, load_backend

    m = json.loads((art / "manifest.json").read_text())
    method = m["runtime"]["method"]
    if m["runtime"]["engine"] != "onnxruntime" or method not in (
        "dynamic",
        "dynamic-linear",
        "static",
    ):
        return {"skipped": f"served {m['runtime']['engine']} {method}"}
    pre = Preprocessor.from_dict(json.loads((art / "preprocess.json").read_text()))
    X = pre.encode_rows(rows)
    Xs = pre.scaler.transform(X)
    ref = load_backend(
        "torch", "fp32", (art / "model.fp32.safetensors").read_bytes(), m["model"]
    )
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = export_onnx(ref.model, X.shape[1], Path(tmp) / "fp32.onnx")
        core = (
            quantize_onnx_dynamic(
                fp32, Path(tmp) / "q.onnx", linear_only=method == "dynamic-linear"
            )
            if method.startswith("dynamic")
            else quantize_onnx_static(fp32, Path(tmp) / "q.onnx", Xs[:256])
        ).path
        staged = add_input_stage(core, pre, Path(tmp) / "staged.onnx")
        bare = OrtBackend(core)
        graph = OrtBackend(staged, layout=InputLayout.of(pre))
        paths = {
            "bare_int8_on_scaled_rows": (bare, Xs),
            "format1_numpy_scaling_plus_graph": (
                lambda x: bare(pre.scaler.transform(x)),
                X,
            ),
            "format2_graph_with_stage_on_raw_rows": (graph, X),
        }
        best: dict[str, dict[str, float]] = {k: {} for k in paths}
        for _ in range(3):
            for name, (fn, data) in paths.items():
                for b in (1, 64):
                    p50 = latency(fn, data, b, max_seconds=seconds / 3)["p50_us"]
                    key = f"b{b}_p50_us"
                    best[name][key] = round(min(best[name].get(key, 1e18), p50), 2)
    return {"method": method, **best}


# --- HTTP ---------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def loadgen(
    port: int, bodies: list[bytes], requests: int, seconds: float, conc: int
) -> dict:
    """Send batch-1 POST /predict over ``conc`` keep-alive connections (one per thread)."""
    lock = threading.Lock()
    state = {"sent": 0, "errors": 0}
    lat: list[float] = []

    def worker(seed: int) -> None:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        hdr = {"Content-Type": "application/json"}
        i = seed
        mine: list[float] = []
        while time.perf_counter() < deadline:
            with lock:
                if state["sent"] >= requests:
                    break
                state["sent"] += 1
            body = bodies[i % len(bodies)]
            i += conc
            t = time.perf_counter()
            try:
                c.request("POST", "/predict", body, hdr)
                r = c.getresponse()
                payload = r.read()
                ok = r.status == 200 and payload.startswith(b'{"prediction"')
            except (OSError, http.client.HTTPException):
                ok = False
                c.close()
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            mine.append(time.perf_counter() - t)
            if not ok:
                with lock:
                    state["errors"] += 1
        with lock:
            lat.extend(mine)

    # warm-up (not counted)
    c = http.client.HTTPConnection("127.0.0.1", port)
    for b in bodies[:200]:
        c.request("POST", "/predict", b, {"Content-Type": "application/json"})
        c.getresponse().read()
    c.close()
    t0 = time.perf_counter()
    deadline = t0 + seconds
    cpu0 = time.process_time()
    threads = [threading.Thread(target=worker, args=(k,)) for k in range(conc)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    ms = np.asarray(lat) * 1e3
    return {
        "requests": len(lat),
        "concurrency": conc,
        "wall_seconds": round(wall, 3),
        "req_per_s": round(len(lat) / wall, 1),
        "p50_ms": round(float(np.percentile(ms, 50)), 3),
        "p99_ms": round(float(np.percentile(ms, 99)), 3),
        "max_ms": round(float(ms.max()), 3),
        "errors": state["errors"],
        "loadgen_cpu_seconds": round(time.process_time() - cpu0, 2),
    }


def bench_http(
    art: Path, rows: list[dict], requests: int, seconds: float, conc: int
) -> dict[str, Any]:
    """Start the server subprocess, run the load generator subprocess, stop the server."""
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    server = subprocess.Popen(
        [sys.executable, "-m", "lepton_fed.cli.serve", str(art), "--port", str(port),
         "--log-level", "warning"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while True:
            if server.poll() is not None:
                raise RuntimeError(
                    f"server exited: {server.stdout.read() if server.stdout else ''}"
                )
            try:
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                c.request("GET", "/health")
                if c.getresponse().status == 200:
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
            json.dump([{"row": r} for r in rows[:256]], f)
        out = subprocess.run(
            [sys.executable, __file__, "loadgen", "--port", str(port), "--bodies", f.name,
             "--requests", str(requests), "--seconds", str(seconds), "--concurrency", str(conc)],
            env=env, capture_output=True, text=True, check=True,
        )  # fmt: skip
        os.unlink(f.name)
        return json.loads(out.stdout.strip().splitlines()[-1])
    finally:
        server.terminate()  # our own child, by its handle
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()


def main() -> int:
    """Run both benchmarks and write ``benchmarks/results/serving.json``."""
    p = argparse.ArgumentParser(description=__doc__)
    sub = p.add_subparsers(dest="cmd")
    lg = sub.add_parser("loadgen")
    lg.add_argument("--port", type=int, required=True)
    lg.add_argument("--bodies", required=True)
    lg.add_argument("--requests", type=int, default=5000)
    lg.add_argument("--seconds", type=float, default=20.0)
    lg.add_argument("--concurrency", type=int, default=4)
    p.add_argument("--latency-seconds", type=float, default=2.0)
    p.add_argument("--requests", type=int, default=5000)
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--concurrency", type=int, default=4)
    p.add_argument("--models", default=",".join(m[0] for m in MODELS))
    args = p.parse_args()
    if args.cmd == "loadgen":
        bodies = [
            json.dumps(b).encode() for b in json.loads(Path(args.bodies).read_text())
        ]
        print(
            json.dumps(
                loadgen(
                    args.port, bodies, args.requests, args.seconds, args.concurrency
                )
            )
        )
        return 0

    from importlib import metadata

    wanted = set(args.models.split(","))
    results: dict[str, Any] = {
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "load_avg_start": os.getloadavg(),
        },
        "versions": {
            n: metadata.version(n)
            for n in ("torch", "onnxruntime", "uvicorn", "fastapi")
        },
        "artifacts": {},
        "http": {},
    }
    os.environ.setdefault(
        "LEPTON_FED_HOME", tempfile.mkdtemp(prefix="lepton-bench-home-")
    )
    with tempfile.TemporaryDirectory(prefix="lepton-bench-") as tmp:
        rows_by_model = {}
        for name, dataset, extras, epochs in MODELS:
            if name not in wanted:
                continue
            run = Path(tmp) / f"run_{name}"
            rows_by_model[name] = write_run(run, dataset, extras, epochs)
            r = bench_artifact(
                name, run, Path(tmp) / f"art_{name}", args.latency_seconds
            )
            r["input_stage"] = bench_input_stage(
                Path(tmp) / f"art_{name}", rows_by_model[name], args.latency_seconds
            )
            results["artifacts"][name] = r
            print(f"[artifact] {name}: {json.dumps(r)}", flush=True)
        for name in ("mlp_default", "mlp_1m"):
            if name in rows_by_model:
                h = bench_http(
                    Path(tmp) / f"art_{name}", rows_by_model[name],
                    args.requests, args.seconds, args.concurrency,
                )  # fmt: skip
                results["http"][name] = h
                print(f"[http] {name}: {json.dumps(h)}", flush=True)
    big = results["artifacts"].get("mlp_1m")
    http_main = results["http"].get("mlp_default") or results["http"].get("mlp_1m")
    targets: dict[str, Any] = {}
    if big:
        dyn = big["candidates"].get("dynamic", {})
        targets["size_ratio_le_0.3"] = {
            "value": big["size_bytes"]["ratio_served_vs_fp32"],
            "met": big["size_bytes"]["ratio_served_vs_fp32"] <= 0.3,
        }
        targets["accuracy_drop_le_0.5_points"] = {
            "value": big["accuracy_drop_points"],
            "met": big["accuracy_drop_points"] <= 0.5,
        }
        targets["int8_ge_3x_fp32_torch_at_b64"] = {
            "served": big["speedup_b64"],
            "dynamic": dyn.get("speedup_b64_vs_fp32_torch"),
            "met": big["speedup_b64"] >= 3.0,
        }
    if http_main:
        targets["http_ge_1000_req_s"] = {
            "value": http_main["req_per_s"],
            "met": http_main["req_per_s"] >= 1000,
        }
        targets["http_p99_le_20_ms"] = {
            "value": http_main["p99_ms"],
            "met": http_main["p99_ms"] <= 20,
        }
        targets["http_zero_errors"] = {
            "value": http_main["errors"],
            "met": http_main["errors"] == 0,
        }
    results["targets"] = targets
    results["machine"]["load_avg_end"] = os.getloadavg()
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(targets, indent=2))
    print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
