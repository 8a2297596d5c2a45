"""GPU clients: clients per second on the GPU vs the CPU, DP-SGD step time, peak GPU memory.

Run on a machine with CUDA: ``python benchmarks/gpu_check.py`` (about 2-4 minutes; writes
``benchmarks/results/gpu_check.json``). Without CUDA it says so, writes the JSON with
``"cuda": false`` and exits 0. ``--devices cpu`` runs every measurement on the CPU only
(a smoke run of the script itself); ``--no-ray`` skips the Ray part.

Measures, each on ``device=cuda`` and ``device=cpu``:

1. **Clients per second**: real federations on the in-process grid (the real ServerApp
   and ClientApp, no Ray: the device's cost without transport): scikit-learn digits,
   ``--clients`` virtual clients, ``--per-round`` per round, 3 rounds, for
   {MLP 64-128-128-10, the small CNN} x {plain SGD, DP-SGD (``privacy=dpsgd``)};
   clients per second = sampled clients / median round time (rounds 2..3).
2. **DP-SGD step time**: one Opacus step (``make_private`` + ``dp_loss_step``, the
   library's own) at batch 64 and 512 for both models, median of 30 steps after 5 warm-up
   steps (``torch.cuda.synchronize`` around each step on the GPU), and the plain SGD step
   for comparison.
3. **Peak GPU memory**: ``torch.cuda.max_memory_allocated`` over parts 1-2, and for each
   DP-SGD step size.
4. **Ray with a shared GPU** (unless ``--no-ray``): a Ray simulation (digits, MLP, DP-SGD,
   ``--ray-clients`` clients, 3 rounds) with ``federation.num_gpus_per_client=0.25``
   (4 virtual clients share the GPU; Ray sizes the actor pool by GPU fraction) against
   ``num_gpus_per_client=0`` on the CPU: median round seconds of each.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import median, print_table, quiet_env, write_result  # noqa: E402

MODELS = {"mlp": ["model=mlp", "model.hidden=[128,128]"], "cnn": ["model=cnn"]}


def _cfg(device: str, model: str, dp: bool, clients: int, per_round: int, rounds: int,
         *extra: str) -> Any:
    from lepton_fed.config import compose

    return compose(["data=digits", *MODELS[model], f"device={device}", *extra,
                    f"federation.num_clients={clients}",
                    f"federation.clients_per_round={per_round}",
                    f"federation.rounds={rounds}", "client.batch_size=16",
                    "observe.tensorboard=false", "observe.progress=false",
                    "privacy=dpsgd" if dp else "privacy=none"])


def clients_per_second(device: str, model: str, dp: bool, clients: int,
                       per_round: int) -> dict[str, Any]:
    """One in-process federation: median round time (rounds 2..3), clients per second."""
    from lepton_fed.client.app import app
    from lepton_fed.inprocess import InProcessGrid
    from lepton_fed.server.outputs import RunWriter
    from lepton_fed.server.rounds import run_federation
    from lepton_fed.sim_bundle import write_bundle

    cfg = _cfg(device, model, dp, clients, per_round, 3)
    rows: list[dict[str, Any]] = []

    class Obs:
        def on_round(self, row: dict[str, Any]) -> None:
            rows.append(row)

        def on_finish(self, summary: dict[str, Any]) -> None:
            pass

    with tempfile.TemporaryDirectory() as d, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        grid = InProcessGrid(app, clients, bundle=write_bundle(Path(d) / "b", cfg))
        summary = run_federation(grid, cfg, RunWriter(Path(d) / "run"), [Obs()])
    secs = median([r["seconds"] for r in rows[1:]])
    return {"device": device, "model": model, "dp": dp, "round_s": secs,
            "clients_per_s": per_round / secs, "summary_device": summary["device"],
            "accuracy": summary["final"].get("accuracy")}


def _sync(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def step_time(device: str, model: str, batch: int, dp: bool, steps: int = 30) -> dict[str, Any]:
    """Median seconds of one (DP-)SGD step on ``device`` (data already on the device)."""
    import torch
    from omegaconf import OmegaConf
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset

    from lepton_fed.data.datasets import load_dataset
    from lepton_fed.models import build_model
    from lepton_fed.models.spec import model_spec
    from lepton_fed.privacy.dpsgd import dp_loss_step, dp_ready, make_private

    data = load_dataset("digits")
    spec_cfg = OmegaConf.create({"name": model, "hidden": [128, 128] if model == "mlp" else None})
    spec = model_spec(spec_cfg, num_features=data.num_features, num_classes=10,
                      input_shape=data.input_shape)
    net = build_model(spec)
    if dp:
        net = dp_ready(net, grad_sample_mode="auto", model_name=model,
                       num_features=data.num_features)
    net = net.to(device)
    n = max(batch * 4, 256)
    g = torch.Generator().manual_seed(0)
    X = torch.randn(n, data.num_features, generator=g)
    y = torch.randint(0, 10, (n,), generator=g)
    opt = torch.optim.SGD(net.parameters(), lr=0.05)
    crit = nn.CrossEntropyLoss()
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    xb, yb = X[:batch].to(device), y[:batch].to(device)
    if dp:
        from lepton_fed.privacy.dpsgd import choose_grad_sample_mode

        mode = choose_grad_sample_mode("auto", model=model, num_features=data.num_features)
        loader = DataLoader(TensorDataset(X, y), batch_size=batch)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            private = make_private(module=net, optimizer=opt, data_loader=loader,
                                   noise_multiplier=1.0, max_grad_norm=1.0,
                                   grad_sample_mode=mode, criterion=crit)

        def one() -> None:
            dp_loss_step(module=private.module, optimizer=private.optimizer, criterion=crit,
                         inputs=xb, targets=yb)
    else:
        def one() -> None:
            opt.zero_grad()
            crit(net(xb), yb).backward()
            opt.step()

    times = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for i in range(steps + 5):
            _sync(device)
            t0 = time.perf_counter()
            one()
            _sync(device)
            if i >= 5:
                times.append(time.perf_counter() - t0)
    out = {"device": device, "model": model, "batch": batch, "dp": dp,
           "step_ms": 1e3 * median(times)}
    if device == "cuda":
        out["peak_gpu_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def ray_shared_gpu(device: str, clients: int) -> dict[str, Any]:
    """A Ray simulation: 4 clients per GPU (``num_gpus_per_client=0.25``), or on the CPU."""
    from lepton_fed.simulation import simulate

    gpus = 0.25 if device == "cuda" else 0.0
    cfg = _cfg(device, "mlp", True, clients, max(2, clients // 5), 3,
               f"federation.num_gpus_per_client={gpus}")
    with tempfile.TemporaryDirectory() as d:
        t0 = time.monotonic()
        summary = simulate(cfg, d)
        wall = time.monotonic() - t0
        rows = [json.loads(x) for x in (Path(d) / "metrics.jsonl").read_text().splitlines()]
    return {"device": device, "num_gpus_per_client": gpus, "wall_s": wall,
            "round_s": median([r["seconds"] for r in rows[1:]]),
            "rounds_completed": summary["rounds_completed"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--devices", default="cuda,cpu")
    ap.add_argument("--clients", type=int, default=100)
    ap.add_argument("--per-round", type=int, default=50)
    ap.add_argument("--ray-clients", type=int, default=40)
    ap.add_argument("--no-ray", action="store_true")
    ap.add_argument("--out", default="gpu_check")
    a = ap.parse_args()
    quiet_env()
    import logging

    import torch

    logging.getLogger("flwr").setLevel(logging.ERROR)
    logging.getLogger("lepton_fed").setLevel(logging.ERROR)
    devices = a.devices.split(",")
    payload: dict[str, Any] = {"cuda": torch.cuda.is_available(), "devices": devices}
    if "cuda" in devices and not torch.cuda.is_available():
        msg = ("no CUDA device here (torch.cuda.is_available() is False): nothing to "
               "measure; run this on a GPU machine, or --devices cpu for a smoke run")
        print(msg)
        payload["skipped"] = msg
        print(f"wrote {write_result(a.out, payload)}")
        return
    if torch.cuda.is_available():
        payload["gpu"] = torch.cuda.get_device_name(0)
        payload["gpu_total_mib"] = torch.cuda.get_device_properties(0).total_memory / 2**20
    torch.set_num_threads(1)  # as a Ray actor with one CPU
    t_all = time.monotonic()
    fed = []
    for model in MODELS:
        for dp in (False, True):
            for dev in devices:
                print(f"federation: {model} dp={dp} on {dev} ...", flush=True)
                fed.append(clients_per_second(dev, model, dp, a.clients, a.per_round))
    steps = []
    for model in MODELS:
        for batch in (64, 512):
            for dp in (False, True):
                for dev in devices:
                    steps.append(step_time(dev, model, batch, dp))
    payload["federation"] = fed
    payload["steps"] = steps
    if torch.cuda.is_available():
        payload["peak_gpu_mib_all"] = torch.cuda.max_memory_allocated() / 2**20
    if not a.no_ray:
        payload["ray"] = []
        for dev in devices:
            print(f"ray: {a.ray_clients} clients on {dev} ...", flush=True)
            try:
                payload["ray"].append(ray_shared_gpu(dev, a.ray_clients))
            except Exception as exc:  # noqa: BLE001 - report it, keep the other figures
                payload["ray"].append({"device": dev, "failed": f"{type(exc).__name__}: {exc}"})
    payload["wall_s"] = time.monotonic() - t_all
    print_table(["model", "DP", "device", "round s", "clients/s", "server device", "acc"],
                [[f["model"], f["dp"], f["device"], f"{f['round_s']:.3f}",
                  f"{f['clients_per_s']:.1f}", f["summary_device"],
                  f"{f['accuracy']:.3f}" if f["accuracy"] is not None else "-"] for f in fed],
                title=f"\nclients per second, in-process ({a.clients} clients, "
                      f"{a.per_round} per round)")
    print_table(["model", "batch", "DP", "device", "step ms", "peak GPU MiB"],
                [[s["model"], s["batch"], s["dp"], s["device"], f"{s['step_ms']:.3f}",
                  f"{s.get('peak_gpu_mib', math.nan):.1f}"] for s in steps],
                title="\nstep time")
    for r in payload.get("ray", []):
        print("ray:", r)
    print(f"\ntotal {payload['wall_s']:.0f} s; wrote {write_result(a.out, payload)}")


if __name__ == "__main__":
    main()
