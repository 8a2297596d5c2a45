"""DP-SGD cost per Opacus grad_sample mode vs plain SGD, one local epoch.

Run: ``python benchmarks/dp_modes.py [--reps 15] [--threads 1]``
(writes ``benchmarks/results/dp_modes.json``).

Data: scikit-learn digits (8x8, 10 classes), 1437-example train split (the other
360 are the test split), features scaled to [0, 1]. Two shard sizes: 144 examples
(one client of a 10-client split) and the full 1437. Batch 16 (Poisson expected
batch for DP). Models: the MLP 64-128-128-10 and the small CNN
(``build_model({"name": "cnn", "num_features": 64, "num_classes": 10})``).

Rows (timed interleaved, one epoch of each in turn, so a shared host's background
load hits them alike; the ratio is the median of per-turn ratios): ``plain`` (no DP:
shuffled batches, plain SGD step), then each ``grad_sample_mode`` through
:func:`lepton_fed.privacy.make_private` + :func:`lepton_fed.privacy.dp_loss_step`
(σ=1.0, C=1.0) with the default noise source (ChaCha20 CSPRNG keyed from OS entropy,
one Box-Muller normal per value), then ``secure_mode(ew)``: the same CSPRNG with
floating-point-attack-hardened noise (sum of 4 normals per value), and
``reproducible(ew)``: seeded torch generators (research simulations only), the
cheapest possible source, to show what the CSPRNG costs. Per row: median and min
epoch time over ``--reps`` epochs after one warm-up epoch, the ratio to ``plain``
measured in the same run, and the one-off ``make_private`` setup time. Also timed:
σ calibration for the whole run (:func:`noise_multiplier_for` vs Opacus's
``get_noise_multiplier``), once per run.
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

from _common import machine, print_table, time_interleaved, write_result  # noqa: E402

MODES = ("hooks", "functorch", "ew", "ghost")
BATCH = 16
SIGMA = 1.0
CLIP = 1.0
MODELS = {
    "mlp": {"name": "mlp", "num_features": 64, "num_classes": 10, "hidden": [128, 128]},
    "cnn": {"name": "cnn", "num_features": 64, "num_classes": 10},
}


def digits_train() -> tuple[Any, Any]:
    """The 1437-example digits train split as float32/int64 tensors."""
    import torch
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    X, y = load_digits(return_X_y=True)
    Xtr, _, ytr, _ = train_test_split(X, y, test_size=360, random_state=0, stratify=y)
    return torch.tensor(Xtr / 16.0, dtype=torch.float32), torch.tensor(ytr)


def bench_plain(spec: dict[str, Any], X: Any, y: Any) -> dict[str, Any]:
    import torch
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset

    from lepton_fed.models import build_model

    torch.manual_seed(0)
    model = build_model(spec)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    loader = DataLoader(TensorDataset(X, y), batch_size=BATCH, shuffle=True)
    crit = nn.CrossEntropyLoss()

    def epoch() -> None:
        for xb, yb in loader:
            opt.zero_grad()
            crit(model(xb), yb).backward()
            opt.step()

    return {"epoch": epoch, "setup_s": 0.0, "steps": len(loader)}


def bench_dp(
    spec: dict[str, Any],
    X: Any,
    y: Any,
    mode: str,
    *,
    secure_mode: bool = False,
    reproducible: bool = False,
) -> dict[str, Any]:
    import torch
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset

    from lepton_fed.models import build_model
    from lepton_fed.privacy import dp_loss_step, make_private

    torch.manual_seed(0)
    model = build_model(spec)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    crit = nn.CrossEntropyLoss()
    t0 = time.perf_counter()
    private = make_private(
        module=model,
        optimizer=opt,
        data_loader=DataLoader(TensorDataset(X, y), batch_size=BATCH),
        noise_multiplier=SIGMA,
        max_grad_norm=CLIP,
        grad_sample_mode=mode,
        secure_mode=secure_mode,
        reproducible=reproducible,
        seed=1 if reproducible else None,
        criterion=crit,
    )
    setup = time.perf_counter() - t0

    def epoch() -> None:
        for xb, yb in private.data_loader:
            dp_loss_step(
                module=private.module,
                optimizer=private.optimizer,
                criterion=crit,
                inputs=xb,
                targets=yb,
            )

    return {
        "epoch": epoch,
        "setup_s": setup,
        "steps": private.steps_per_epoch,
    }


def bench_calibration(reps: int) -> dict[str, Any]:
    """σ for a 5-round, 1-epoch, 144-example, batch-16 client at ε=8, δ=1e-5."""
    from opacus.accountants.utils import get_noise_multiplier

    from lepton_fed.privacy import analysis, local_schedule, noise_multiplier_for

    sch = local_schedule(num_examples=144, batch_size=BATCH, epochs=1)
    kw = {"sample_rate": sch.sample_rate, "steps": 5 * sch.steps}
    ours, theirs = [], []
    sigma = opacus_sigma = float("nan")
    for _ in range(reps):
        analysis._rdp_one_step.cache_clear()  # time a cold calibration, as a new run does
        t0 = time.perf_counter()
        sigma = noise_multiplier_for(target_epsilon=8.0, delta=1e-5, **kw)
        ours.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            opacus_sigma = get_noise_multiplier(
                target_epsilon=8.0, target_delta=1e-5, accountant="rdp", **kw
            )
        theirs.append(time.perf_counter() - t0)
    return {
        "setting": "eps=8, delta=1e-5, q=1/9, 45 steps",
        "lepton_fed_noise_multiplier_for_s": statistics.median(ours),
        "lepton_fed_sigma": sigma,
        "opacus_get_noise_multiplier_s": statistics.median(theirs),
        "opacus_sigma": opacus_sigma,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=15, help="timed epochs per row")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    args = ap.parse_args()

    import opacus
    import torch

    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", message="Full backward hook is firing")
    from lepton_fed.privacy import ReproducibleNoiseWarning

    warnings.simplefilter("ignore", ReproducibleNoiseWarning)  # the reproducible(ew) row
    Xall, yall = digits_train()
    shards = {"144": (Xall[:144], yall[:144]), "1437": (Xall, yall)}

    rows: list[dict[str, Any]] = []
    for model_name, spec in MODELS.items():
        for shard, (X, y) in shards.items():
            built = {"plain": bench_plain(spec, X, y)}
            for mode in MODES:
                built[mode] = bench_dp(spec, X, y, mode)
            built["secure_mode(ew)"] = bench_dp(spec, X, y, "ew", secure_mode=True)
            built["reproducible(ew)"] = bench_dp(spec, X, y, "ew", reproducible=True)
            times = time_interleaved(
                {k: v["epoch"] for k, v in built.items()}, args.reps
            )
            for variant, r in built.items():
                ts = times[variant]
                ratios = [t / p for t, p in zip(ts, times["plain"], strict=True)]
                rows.append(
                    {
                        "model": model_name,
                        "examples": int(shard),
                        "variant": variant,
                        "steps_per_epoch": r["steps"],
                        "epoch_ms_median": 1e3 * statistics.median(ts),
                        "epoch_ms_min": 1e3 * min(ts),
                        "ratio_vs_plain": statistics.median(ratios),
                        "setup_ms": 1e3 * r["setup_s"],
                    }
                )
    calibration = bench_calibration(3)

    print_table(
        [
            "model",
            "n",
            "variant",
            "steps",
            "ms/epoch med",
            "ms/epoch min",
            "x plain",
            "setup ms",
        ],
        [
            [
                r["model"],
                r["examples"],
                r["variant"],
                r["steps_per_epoch"],
                f"{r['epoch_ms_median']:.1f}",
                f"{r['epoch_ms_min']:.1f}",
                f"{r['ratio_vs_plain']:.2f}",
                f"{r['setup_ms']:.1f}",
            ]
            for r in rows
        ],
        title=f"One local epoch, batch {BATCH}, sigma {SIGMA}, clip {CLIP}, "
        f"{args.threads} thread(s), median of {args.reps}",
    )
    print(
        "sigma calibration (once per run): lepton-fed {:.3f} s (sigma {:.4f}); "
        "opacus get_noise_multiplier {:.3f} s (sigma {:.4f})".format(
            calibration["lepton_fed_noise_multiplier_for_s"],
            calibration["lepton_fed_sigma"],
            calibration["opacus_get_noise_multiplier_s"],
            calibration["opacus_sigma"],
        )
    )
    path = write_result(
        "dp_modes",
        {
            "settings": {
                "batch_size": BATCH,
                "noise_multiplier": SIGMA,
                "max_grad_norm": CLIP,
                "reps": args.reps,
                "torch_threads": args.threads,
                "torch": torch.__version__,
                "opacus": opacus.__version__,
                "models": MODELS,
            },
            "rows": rows,
            "noise_sources": {
                "default": "ChaCha20 CSPRNG keyed from os.urandom, one Box-Muller normal",
                "secure_mode(ew)": "same CSPRNG, fp-attack-hardened (4 normals/value)",
                "reproducible(ew)": "seeded torch generators (simulation only)",
            },
            "calibration": calibration,
            "env": machine(),
        },
    )
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
