"""SecAgg+ protocol cost, in process (no Flower, no Ray): clients, server, bytes.

Run: ``python benchmarks/secagg_protocol.py`` (writes
``benchmarks/results/secagg_protocol.json``; a few minutes on 2 shared cores).
``--quick`` runs n = 10, 50 only, ``--reps N`` sets best-of-N (default 5).

For n = 10, 50, 100, 200 clients per round, d = 26k and 100k parameters, and both
modes (fast: 2 exchanges per round; robust, ``share_keys_first``: 3), one federation
is advertised once and then runs ``reps`` rounds with
``lepton_fed.secagg.inprocess.simulate_round`` (the adapter's call order), every
client answering. Times are CPU seconds (``time.process_time``; steadier than wall
time on a shared machine), single-threaded, best of ``reps``:

* client ms/client: share_keys + masked_input + unmask, summed over clients / n
  (the masked input includes encoding and k + 1 mask expansions);
* server agg ms: the server's aggregation work, i.e. collect_shares (robust) +
  collect_masked_inputs + collect_unmask (sum the masked vectors, rebuild the self
  masks, remove them, decode);
* server start ms: start_round (n round-key signature checks, the graph, requests),
  reported separately;
* plain ms: a plain numpy weighted average of n float32 vectors
  (``acc += w_i * x_i``, float32 accumulator, then ``/ sum(w)``);
* PRG ms: n mask expansions of d + 1 words with the protocol's fastest expander
  (``MaskBuffer``: ChaCha20 into a reused buffer), the part of unmasking no secure
  aggregation with self masks can avoid;
* ratio = server agg / (plain + PRG); ratio incl. start also counts start_round.

The baselines are timed in the same repetition as the protocol round (interleaved),
on fresh vectors like the replies the server reads, and the best of ``reps`` is kept
for each quantity separately.

Bytes uploaded per client per parameter: (masked-input reply + share-keys reply +
unmask reply) / d, averaged over clients; also split into the masked vector and the
rest (shares, commitments, headers). Growth vs n: least-squares slope of server agg
ms against n (ms per additional client) and the log-log exponent.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from lepton_fed.secagg import (
    SecAggServer,
    advertise_all,
    default_params,
    make_clients,
    simulate_round,
)
from lepton_fed.secagg.prg import MaskBuffer

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "secagg_protocol.json"
SIZES = (10, 50, 100, 200)
DIMS = (26_000, 100_000)
MODES = ("fast", "robust")


def plain_average(xs: list[np.ndarray], ws: list[float]) -> np.ndarray:
    acc = np.zeros_like(xs[0])
    for x, w in zip(xs, ws, strict=True):
        acc += np.float32(w) * x
    return acc / np.float32(sum(ws))


def prg_expansions(seeds: list[bytes], length: int) -> None:
    buf = MaskBuffer(length)
    for s in seeds:
        buf.expand(s)


def cpu(fn: Any, *args: Any) -> float:
    t0 = time.process_time()
    fn(*args)
    return time.process_time() - t0


def measure(n: int, d: int, mode: str, reps: int) -> dict[str, Any]:
    robust = mode == "robust"
    params = default_params(num_clients=n, rounds=reps, share_keys_first=robust)
    ids = list(range(1000, 1000 + n))
    clients, roster = make_clients(ids)
    server = SecAggServer(params=params, run_id=7, roster=roster)
    advertise_all(server, clients)
    rng = np.random.default_rng(n * 1000 + d)
    best: dict[str, float] = {}
    sizes: dict[str, float] = {}
    for r in range(1, reps + 1):
        inputs = {
            i: (
                rng.uniform(-1, 1, d).astype(np.float32),
                float(rng.uniform(0.05, 1.0)),
            )
            for i in ids
        }
        tm: dict[str, float] = {}
        # record reply sizes by wrapping the clients' methods for this round
        up: dict[str, int] = {"masked": 0, "shares": 0, "unmask": 0}
        for c in clients.values():
            _count_bytes(c, up)
        result = simulate_round(
            server, clients, inputs, round=r, timings=tm, clock=time.process_time
        )
        for c in clients.values():
            _uncount(c)
        exact = sum(w * x.astype(np.float64) for x, w in inputs.values())
        if not np.max(np.abs(result.sum - exact)) < result.error_bound[0]:
            raise SystemExit(f"wrong sum at n={n} d={d} {mode}")
        client = (
            tm.get("client_share_keys", 0.0)
            + tm["client_masked_input"]
            + tm["client_unmask"]
        ) / n
        agg = (
            tm.get("server_collect_shares", 0.0)
            + tm["server_collect_masked"]
            + tm["server_collect_unmask"]
        )
        xs = [x for x, _ in inputs.values()]
        ws = [w for _, w in inputs.values()]
        plain = cpu(plain_average, xs, ws)
        seeds = [os.urandom(32) for _ in ids]
        prg = cpu(prg_expansions, seeds, d + 1)
        for key, value in (
            ("client", client),
            ("client_masked_input", tm["client_masked_input"] / n),
            ("client_share_keys", tm.get("client_share_keys", 0.0) / n),
            ("client_unmask", tm["client_unmask"] / n),
            ("server_agg", agg),
            ("server_start", tm["server_start_round"]),
            ("server_collect_shares", tm.get("server_collect_shares", 0.0)),
            ("server_collect_masked", tm["server_collect_masked"]),
            ("server_collect_unmask", tm["server_collect_unmask"]),
            ("plain", plain),
            ("prg", prg),
        ):
            best[key] = min(best.get(key, math.inf), value)
        sizes = {k: v / n for k, v in up.items()}
    ms = {k: v * 1e3 for k, v in best.items()}
    k, t = params.for_cohort(n)
    upload = sizes["masked"] + sizes["shares"] + sizes["unmask"]
    vector_bytes = 4 * (d + 1)
    return {
        "n": n,
        "d": d,
        "mode": mode,
        "exchanges_per_round": params.exchanges_per_round,
        "k": k,
        "t": t,
        "ms": ms,
        "ratio": ms["server_agg"] / (ms["plain"] + ms["prg"]),
        "ratio_incl_start": (ms["server_agg"] + ms["server_start"])
        / (ms["plain"] + ms["prg"]),
        "upload_bytes_per_client": upload,
        "upload_bytes_per_param": upload / d,
        "masked_vector_bytes_per_param": vector_bytes / d,
        "other_upload_bytes_per_param": (upload - vector_bytes) / d,
    }


def _count_bytes(client: Any, up: dict[str, int]) -> None:
    for name, key in (
        ("masked_input", "masked"),
        ("share_keys", "shares"),
        ("unmask", "unmask"),
    ):
        original = getattr(type(client), name)

        def wrapped(*a: Any, _o: Any = original, _k: str = key, **kw: Any) -> bytes:
            out = _o(client, *a, **kw)
            up[_k] += len(out)
            return out

        setattr(client, name, wrapped)


def _uncount(client: Any) -> None:
    for name in ("masked_input", "share_keys", "unmask"):
        client.__dict__.pop(name, None)


def growth(rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for mode in MODES:
        for d in DIMS:
            pts = [(r["n"], r["ms"]["server_agg"]) for r in rows if r["mode"] == mode and r["d"] == d]
            if len(pts) < 2:
                continue
            n = np.array([p[0] for p in pts], dtype=float)
            y = np.array([p[1] for p in pts], dtype=float)
            slope, intercept = np.polyfit(n, y, 1)
            exponent = np.polyfit(np.log(n), np.log(y), 1)[0]
            cl = np.array(
                [r["ms"]["client"] for r in rows if r["mode"] == mode and r["d"] == d]
            )
            cl_exp = np.polyfit(np.log(n), np.log(cl), 1)[0]
            out[f"{mode}_{d}"] = {
                "server_ms_per_client": float(slope),
                "server_ms_intercept": float(intercept),
                "server_loglog_exponent": float(exponent),
                "client_loglog_exponent": float(cl_exp),
            }
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="n = 10, 50 only")
    args = ap.parse_args()
    sizes = SIZES[:2] if args.quick else SIZES
    rows = []
    head = (
        f"{'mode':6} {'n':>4} {'d':>7} {'k/t':>6} {'client':>8} {'srv agg':>8} "
        f"{'start':>7} {'plain':>7} {'PRG':>7} {'ratio':>6} {'w/start':>7} "
        f"{'B/param':>8} {'other':>7}"
    )
    print(head)
    print("-" * len(head))
    for mode in MODES:
        for d in DIMS:
            for n in sizes:
                row = measure(n, d, mode, args.reps)
                rows.append(row)
                ms = row["ms"]
                print(
                    f"{mode:6} {n:4d} {d:7d} {row['k']:>3}/{row['t']:<2} "
                    f"{ms['client']:8.2f} {ms['server_agg']:8.2f} {ms['server_start']:7.2f} "
                    f"{ms['plain']:7.2f} {ms['prg']:7.2f} {row['ratio']:6.2f} "
                    f"{row['ratio_incl_start']:7.2f} {row['upload_bytes_per_param']:8.4f} "
                    f"{row['other_upload_bytes_per_param']:7.4f}",
                    flush=True,
                )
    grow = growth(rows)
    print("\ngrowth of server agg time with n (least squares):")
    for key, g in grow.items():
        print(
            f"  {key:14s} {g['server_ms_per_client']:.3f} ms per client, "
            f"log-log exponent {g['server_loglog_exponent']:.2f} "
            f"(client time exponent {g['client_loglog_exponent']:.2f})"
        )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "machine": {
                    "cpus": os.cpu_count(),
                    "platform": platform.platform(),
                    "processor": platform.processor() or platform.machine(),
                    "python": sys.version.split()[0],
                    "numpy": np.__version__,
                    "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                },
                "method": {
                    "clock": "time.process_time (CPU), single-threaded",
                    "reps": args.reps,
                    "best_of": "min over reps, per quantity",
                    "ratio": "server_agg / (plain + prg)",
                },
                "rows": rows,
                "growth": grow,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"\nwrote {RESULTS.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
