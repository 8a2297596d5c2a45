"""Update-codec benchmark: bytes on the wire vs reconstruction error, on real updates.

Run: ``python benchmarks/update_codecs.py`` (writes ``benchmarks/results/update_codecs.json``).

The update vectors are real: a model (the default MLP [64, 64] on breast_cancer, and
an MLP [128, 128] on digits) is trained for one local epoch from the current global
weights, ``delta = w_local - w_global`` (flattened in state_dict order), for
``ROUNDS`` consecutive rounds of a single simulated client. The codecs are pure numpy.

Reported per codec: bytes ratio vs float32, relative L2 error ``||d' - d|| / ||d||``
of one round, the relative error of the *sum* over rounds (what error feedback
repairs), encode/decode time, and the held-out accuracy after applying the decoded
updates instead of the exact ones. This is open-loop: every round still trains from
the exact weights, so it isolates the codec's error from its feedback on training.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "update_codecs.json"
ROUNDS = 10


def real_updates(dataset: str, hidden: list[int]) -> dict[str, Any]:
    """Train one client for ROUNDS rounds of one epoch; return its update vectors."""
    import torch

    from lepton_fed.data.datasets import load_dataset
    from lepton_fed.data.preprocess import FeatureStats, Scaler
    from lepton_fed.models import build_model, flatten_state, get_state, set_state
    from lepton_fed.models.params import unflatten_state

    torch.manual_seed(0)
    data = load_dataset(dataset)
    idx = np.random.default_rng(0).permutation(len(data.y))
    tr, te = idx[: int(0.8 * len(idx))], idx[int(0.8 * len(idx)) :]
    scaler = Scaler.from_stats([FeatureStats.of(data.X[tr])])
    Xtr, ytr = (
        torch.from_numpy(scaler.transform(data.X[tr])),
        torch.from_numpy(data.y[tr]),
    )
    Xte, yte = scaler.transform(data.X[te]), data.y[te]
    spec = {
        "name": "mlp",
        "num_features": data.num_features,
        "num_classes": data.num_classes,
        "hidden": hidden,
    }
    model = build_model(spec)
    like = get_state(model)
    w0 = flatten_state(like)
    updates = []
    w = w0.copy()
    for _ in range(ROUNDS):
        set_state(model, unflatten_state(w, like))
        opt = torch.optim.SGD(model.parameters(), lr=0.05)
        for i in range(0, len(Xtr), 32):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(
                model(Xtr[i : i + 32]), ytr[i : i + 32]
            ).backward()
            opt.step()
        d = flatten_state(get_state(model)) - w
        updates.append(d)
        w = w + d

    def acc(weights: np.ndarray) -> float:
        set_state(model, unflatten_state(weights, like))
        with torch.no_grad():
            pred = model(torch.from_numpy(Xte)).argmax(1).numpy()
        return float((pred == yte).mean())

    return {"w0": w0, "updates": updates, "accuracy": acc, "params": int(w0.size)}


def rel(a: np.ndarray, b: np.ndarray) -> float:
    """Relative L2 error of ``a`` against ``b``."""
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def bench(case: dict[str, Any]) -> dict[str, Any]:
    """Every codec on one sequence of updates."""
    from lepton_fed.compression.update import Int8Codec, TopKCodec

    updates, w0, acc = case["updates"], case["w0"], case["accuracy"]
    n = case["params"]
    fp32_bytes = 4 * n
    exact_sum = np.sum(updates, axis=0)
    out: dict[str, Any] = {
        "params": n,
        "rounds": ROUNDS,
        "fp32_bytes_per_update": fp32_bytes,
        "accuracy_exact": acc(w0 + exact_sum),
        "codecs": {},
    }
    rng = np.random.default_rng(0)
    for bs in (64, 256, 1024):
        codec = Int8Codec(bs)
        t0 = time.perf_counter()
        payloads = [codec.encode(u, rng) for u in updates]
        t1 = time.perf_counter()
        decoded = [codec.decode(p) for p in payloads]
        t2 = time.perf_counter()
        # unbiasedness, empirically: the mean of 200 decodes of the last update
        mean = np.mean(
            [codec.decode(codec.encode(updates[-1], rng)) for _ in range(200)], 0
        )
        out["codecs"][f"int8_b{bs}"] = {
            "bytes_ratio": codec.nbytes(payloads[0]) / fp32_bytes,
            "rel_error_one_round": float(
                np.mean([rel(d, u) for d, u in zip(decoded, updates, strict=True)])
            ),
            "rel_error_sum": rel(np.sum(decoded, 0), exact_sum),
            "rel_error_mean_of_200": rel(mean, updates[-1]),
            "encode_ms": 1e3 * (t1 - t0) / ROUNDS,
            "decode_ms": 1e3 * (t2 - t1) / ROUNDS,
            "accuracy": acc(w0 + np.sum(decoded, 0)),
        }
    for frac in (0.01, 0.05, 0.1, 0.25):
        codec = TopKCodec(frac)
        for ef in (True, False):
            residual = None
            decoded, t_enc, t_dec = [], 0.0, 0.0
            for u in updates:
                t0 = time.perf_counter()
                payload, new_res = codec.encode(u, residual)
                t1 = time.perf_counter()
                decoded.append(codec.decode(payload))
                t_dec += time.perf_counter() - t1
                t_enc += t1 - t0
                residual = new_res if ef else None
            key = f"topk_{frac:g}" + ("" if ef else "_no_error_feedback")
            out["codecs"][key] = {
                "bytes_ratio": codec.nbytes(payload) / fp32_bytes,
                "rel_error_one_round": rel(decoded[0], updates[0]),
                "rel_error_sum": rel(np.sum(decoded, 0), exact_sum),
                "encode_ms": 1e3 * t_enc / ROUNDS,
                "decode_ms": 1e3 * t_dec / ROUNDS,
                "accuracy": acc(w0 + np.sum(decoded, 0)),
            }
    return out


def main() -> int:
    """Run the benchmark and write the JSON results."""
    results = {
        "default_mlp_breast_cancer": bench(real_updates("breast_cancer", [64, 64])),
        "mlp_128x128_digits": bench(real_updates("digits", [128, 128])),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    for name, r in results.items():
        print(f"{name}: {r['params']} params, exact accuracy {r['accuracy_exact']:.4f}")
        for codec, c in r["codecs"].items():
            print(
                f"  {codec:32s} bytes {c['bytes_ratio']:.4f}  err1 "
                f"{c['rel_error_one_round']:.4f}  errsum {c['rel_error_sum']:.4f}  "
                f"acc {c['accuracy']:.4f}"
            )
    print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
