"""Cost of unpredictable DP noise: per DP-SGD step, seeded vs OS CSPRNG vs secure_mode.

Run: ``python benchmarks/secure_noise.py [--reps 15] [--threads 1] [--device cpu]``
(writes ``benchmarks/results/secure_noise.json``, or ``secure_noise_<device>.json``
for a device other than cpu).

Three noise sources (:mod:`lepton_fed.privacy.noise`), all through the real
:func:`lepton_fed.privacy.make_private` + :func:`lepton_fed.privacy.dp_loss_step`:

* ``seeded``: ``privacy.reproducible=true``: torch generators (what Opacus does
  without ``secure_mode``; predictable, simulation only), the reference;
* ``default``: CSPRNG (ChaCha20 keyed from ``os.urandom``), one Box-Muller normal
  per value, Poisson uniforms from the same stream;
* ``secure_mode``: the same CSPRNG, each value the sum of 4 normals / 2 (Opacus's
  floating-point-attack-hardened recipe).

Part 1, noise only: the time to draw one step's noise for every parameter of the
model (one draw of the total size, as ``add_noise`` does), median over ``--reps``.
Part 2, whole steps: one local epoch (Poisson batches of expected size 16, σ=1,
C=1, ``ew`` mode) per source, timed interleaved (one epoch of each in turn, so a
shared host's load hits them alike); per-step time = epoch time / steps; ratios are
medians of per-turn ratios, all measured in this one run.

Models: digits MLP 64-128-128-10 (26k parameters, the project's default family),
the small CNN on 8x8 digits, and an MNIST-width MLP 784-256-10 (204k parameters) on
synthetic inputs (timing does not depend on the values).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import print_table, time_interleaved, write_result  # noqa: E402

BATCH = 16
SIGMA = 1.0
CLIP = 1.0
SOURCES = ("seeded", "default", "secure_mode")
MODELS: dict[str, dict[str, Any]] = {
    "mlp64-128-128-10": {"name": "mlp", "num_features": 64, "num_classes": 10,
                         "hidden": [128, 128]},
    "cnn8x8": {"name": "cnn", "num_features": 64, "num_classes": 10},
    "mlp784-256-10": {"name": "mlp", "num_features": 784, "num_classes": 10,
                      "hidden": [256]},
}
EXAMPLES = 400


def _source_kwargs(source: str) -> dict[str, Any]:
    if source == "seeded":
        return {"reproducible": True, "seed": 1}
    return {"secure_mode": source == "secure_mode"}


def _make_source(source: str, device: str) -> Any:
    from lepton_fed.privacy.noise import noise_source

    return noise_source(device=device, **_source_kwargs(source))


def bench_noise_only(spec: dict[str, Any], reps: int, device: str) -> dict[str, float]:
    """Median ms to draw one step's noise for every parameter, per source."""
    import torch

    from lepton_fed.models import build_model

    size = sum(p.numel() for p in build_model(spec).parameters())
    out = {}
    for source in SOURCES:
        src = _make_source(source, device)
        ts = []
        for _ in range(reps + 1):
            t0 = time.perf_counter()
            # one draw for all parameters, as add_noise does
            src.gaussian(SIGMA * CLIP, (size,), device=device, dtype=torch.float32)
            if device != "cpu":
                torch.cuda.synchronize()
            ts.append(time.perf_counter() - t0)
        out[source] = 1e3 * statistics.median(ts[1:])
    return out


def build_epoch(spec: dict[str, Any], source: str, device: str) -> tuple[Any, int]:
    """A closure running one DP-SGD epoch with ``source``, and its step count."""
    import torch
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset

    from lepton_fed.models import build_model
    from lepton_fed.privacy import dp_loss_step, make_private

    torch.manual_seed(0)
    nf = int(spec["num_features"])
    X = torch.rand(EXAMPLES, nf)
    y = torch.randint(0, int(spec["num_classes"]), (EXAMPLES,))
    model = build_model(spec).to(device)
    private = make_private(
        module=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.05),
        data_loader=DataLoader(TensorDataset(X, y), batch_size=BATCH),
        noise_multiplier=SIGMA, max_grad_norm=CLIP, grad_sample_mode="ew",
        **_source_kwargs(source),
    )
    crit = nn.CrossEntropyLoss()

    def epoch() -> None:
        for xb, yb in private.data_loader:
            dp_loss_step(module=private.module, optimizer=private.optimizer,
                         criterion=crit, inputs=xb.to(device), targets=yb.to(device))
        if device != "cpu":
            torch.cuda.synchronize()

    return epoch, private.steps_per_epoch


def _ratio(a: list[float], b: list[float]) -> float:
    """Median of per-turn ratios (each pair timed back to back)."""
    return statistics.median(x / y for x, y in zip(a, b, strict=True))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=15, help="timed epochs / draws per row")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", message="Full backward hook is firing")
    warnings.filterwarnings("ignore", category=UserWarning, module="lepton_fed")

    rows: list[dict[str, Any]] = []
    for name, spec in MODELS.items():
        from lepton_fed.models import build_model

        params = sum(p.numel() for p in build_model(spec).parameters())
        noise_ms = bench_noise_only(spec, args.reps, args.device)
        built = {s: build_epoch(spec, s, args.device) for s in SOURCES}
        steps = built["seeded"][1]
        times = time_interleaved({s: b[0] for s, b in built.items()}, args.reps)

        for s in SOURCES:
            rows.append({
                "model": name, "params": params, "source": s, "steps_per_epoch": steps,
                "noise_ms_per_step": noise_ms[s],
                "step_ms_median": 1e3 * statistics.median(times[s]) / steps,
                "step_ratio_vs_seeded": _ratio(times[s], times["seeded"]),
                "step_ratio_vs_default": _ratio(times[s], times["default"]),
            })

    print_table(
        ["model", "params", "source", "noise ms/step", "ms/step (median)", "x seeded",
         "x default"],
        [[r["model"], r["params"], r["source"], f"{r['noise_ms_per_step']:.3f}",
          f"{r['step_ms_median']:.2f}", f"{r['step_ratio_vs_seeded']:.2f}",
          f"{r['step_ratio_vs_default']:.2f}"] for r in rows],
        title=f"DP-SGD step cost by noise source ({args.device}, ew, batch {BATCH}, "
              f"{args.threads} thread(s), median of {args.reps})",
    )
    name = "secure_noise" if args.device == "cpu" else f"secure_noise_{args.device}"
    path = write_result(name, {
        "settings": {"reps": args.reps, "threads": args.threads, "device": args.device,
                     "batch": BATCH, "sigma": SIGMA, "clip": CLIP, "examples": EXAMPLES,
                     "grad_sample_mode": "ew"},
        "rows": rows,
    })
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
