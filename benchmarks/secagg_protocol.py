"""SecAgg+ protocol cost, in process (no Flower, no Ray): security-derived k vs 3 log2 n.

Run: ``python benchmarks/secagg_protocol.py`` (writes
``benchmarks/results/secagg_protocol.json``; a few minutes on 2 shared cores).
``--sizes``, ``--dims`` and ``--reps N`` (best-of-N, default 3) change the grid;
``--out NAME`` writes ``benchmarks/results/NAME.json`` instead (partial grids).

For n = 50, 200, 1000 clients per round (d = 26k parameters by default), two
parameter choices run in the same process, one after the other:

* ``security``: k and t derived from the default security level (40 bits, 5 %
  colluding, 5 % dropout, 20 correctness bits; ``lepton_fed.secagg.security``);
* ``log``: the previous default, k = 3 ceil(log2 n) rounded up to even and
  t = max(k//2 + 1, ceil(2k/3)) (clients accept it with ``min_security_bits=0``;
  nodes at the default level refuse it). Its security bits are reported too.

One federation is advertised once and runs ``reps`` rounds with
``lepton_fed.secagg.inprocess.simulate_round`` (the adapter's call order), every
client answering. Times are CPU seconds (``time.process_time``), single-threaded,
best of ``reps``:

* client ms/client: masked_input + unmask, summed over clients / n;
* server start ms: start_round (n signature checks, the seed hash, the graph, n
  requests); server agg ms: collect_masked_inputs + collect_unmask;
* round CPU s: every client plus the server, i.e. the round's total compute;
* upload B/client: masked-input reply + unmask reply, per client; download
  B/client: masked-input request (it lists every cohort member's two keys, 64 bytes
  each, plus k signatures) + unmask request;
* plain ms: a plain numpy weighted average of n float32 vectors; PRG ms: n mask
  expansions of d + 1 words (``MaskBuffer``), the part of unmasking no secure
  aggregation with self masks avoids; ratio = server agg / (plain + PRG);
* decode us/reply: the server's reading of one reply, masked input and unmask
  averaged (``records_from_bytes``: the messages' one decoder, without a Python object
  per share), timed again over the round's replies after the round;
* grind us: one graph evaluation as a grinding server would do it (SHA-256 over the
  cohort's keys and the shuffle), the unit of the residual grinding cost (README).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_result  # noqa: E402

from lepton_fed.secagg import (  # noqa: E402
    SecAggParams,
    SecAggServer,
    advertise_all,
    make_clients,
    simulate_round,
)
from lepton_fed.secagg import keys as K  # noqa: E402
from lepton_fed.secagg.graph import neighbour_graph  # noqa: E402
from lepton_fed.secagg.prg import MaskBuffer  # noqa: E402
from lepton_fed.secagg.security import exposure_log2  # noqa: E402
from lepton_fed.secagg.wire import MaskedInputReply, UnmaskReply  # noqa: E402

SIZES = (50, 200, 1000)
DIMS = (26_000,)
CHOICES = ("security", "log")


def log_params(n: int) -> tuple[int, int]:
    """The previous default (k = 3 ceil(log2 n), even, at most n - 1)."""
    k = math.ceil(3 * math.log2(n))
    k = min(n - 1, k + k % 2)
    return k, min(k, max(k // 2 + 1, math.ceil(2 * k / 3)))


def plain_average(xs: list[np.ndarray], ws: list[float]) -> np.ndarray:
    acc = np.zeros_like(xs[0])
    for x, w in zip(xs, ws, strict=True):
        acc += np.float32(w) * x
    return acc / np.float32(sum(ws))


def prg_expansions(seeds: list[bytes], length: int) -> None:
    buf = MaskBuffer(length)
    for s in seeds:
        buf.expand(s)


def cpu_ms(fn: Any, *args: Any) -> float:
    t0 = time.process_time()
    fn(*args)
    return (time.process_time() - t0) * 1e3


def grind_eval_us(n: int, reps: int = 200) -> float:
    """CPU microseconds for one seed hash + graph over n members."""
    rng = np.random.default_rng(n)
    members = [(rng.bytes(32), rng.bytes(32)) for _ in range(n)]
    cohort = list(range(n))
    k = log_params(n)[0]
    t0 = time.process_time()
    for r in range(reps):
        seed = K.graph_seed(run_id=1, round=r + 1, cohort=cohort, members=members)
        neighbour_graph(cohort, seed, run_id=1, round=r + 1, k=k)
    return (time.process_time() - t0) / reps * 1e6


def _count(client: Any, up: dict[str, int], down: dict[str, int],
           sent: dict[str, dict[int, bytes]]) -> None:
    for name in ("masked_input", "unmask"):
        original = getattr(type(client), name)

        def wrapped(req: bytes, *a: Any, _o: Any = original, _n: str = name,
                    **kw: Any) -> bytes:
            out: bytes = _o(client, req, *a, **kw)
            up[_n] += len(out)
            down[_n] += len(req)
            sent[_n][client.node_id] = out
            return out

        setattr(client, name, wrapped)


def decode_us(sent: dict[str, dict[int, bytes]], *, round: int) -> float:
    """CPU microseconds per reply of the server's reader over one round's replies."""
    readers = {"masked_input": MaskedInputReply.records_from_bytes,
               "unmask": UnmaskReply.records_from_bytes}
    count = sum(len(v) for v in sent.values())
    t0 = time.process_time()
    for _ in range(5):
        for name, replies in sent.items():
            read = readers[name]
            for node, data in replies.items():
                read(data, run_id=7, round=round, sender=node)
    return (time.process_time() - t0) / 5 / max(count, 1) * 1e6


def _bits(value: float) -> float | None:
    """None when exposure is impossible (infinite bits; JSON has no infinity)."""
    return None if math.isinf(value) else round(value, 2)


def measure(n: int, d: int, choice: str, reps: int) -> dict[str, Any]:
    if choice == "security":
        params = SecAggParams(rounds=reps)
        policy: dict[str, Any] = {}
    else:
        k0, t0 = log_params(n)
        params = SecAggParams(rounds=reps, neighbours=k0, threshold=t0)
        policy = {"min_security_bits": 0}
    ids = list(range(1000, 1000 + n))
    clients, roster = make_clients(ids, **policy)
    server = SecAggServer(params=params, run_id=7, roster=roster)
    advertise_all(server, clients)
    rng = np.random.default_rng(n * 1000 + d)
    best: dict[str, float] = {}
    up = {"masked_input": 0, "unmask": 0}
    down = {"masked_input": 0, "unmask": 0}
    sent: dict[str, dict[int, bytes]] = {"masked_input": {}, "unmask": {}}
    for c in clients.values():
        _count(c, up, down, sent)
    result = None
    for r in range(1, reps + 1):
        inputs = {
            i: (rng.uniform(-1, 1, d).astype(np.float32), float(rng.uniform(0.05, 1.0)))
            for i in ids
        }
        tm: dict[str, float] = {}
        for key in up:
            up[key] = down[key] = 0
        result = simulate_round(
            server, clients, inputs, round=r, timings=tm, clock=time.process_time
        )
        exact = sum(w * x.astype(np.float64) for x, w in inputs.values())
        if not np.max(np.abs(result.sum - exact)) < result.error_bound[0]:
            raise SystemExit(f"wrong sum at n={n} d={d} {choice}")
        clients_s = tm["client_masked_input"] + tm["client_unmask"]
        server_s = (
            tm["server_start_round"]
            + tm["server_collect_masked"]
            + tm["server_collect_unmask"]
        )
        for key, value in (
            ("client_ms", clients_s / n * 1e3),
            ("client_masked_input_ms", tm["client_masked_input"] / n * 1e3),
            ("server_start_ms", tm["server_start_round"] * 1e3),
            ("server_agg_ms", (tm["server_collect_masked"]
                               + tm["server_collect_unmask"]) * 1e3),
            ("round_cpu_s", clients_s + server_s),
            ("plain_ms", cpu_ms(plain_average, [x for x, _ in inputs.values()],
                                [w for _, w in inputs.values()])),
            ("prg_ms", cpu_ms(prg_expansions, [os.urandom(32) for _ in ids], d + 1)),
            ("decode_us", decode_us(sent, round=r)),
        ):
            best[key] = min(best.get(key, math.inf), value)
    assert result is not None
    k, t = result.neighbours, result.threshold
    upload = sum(up.values()) / n
    download = sum(down.values()) / n
    return {
        "n": n,
        "d": d,
        "choice": choice,
        "k": k,
        "t": t,
        "security_bits": _bits(-exposure_log2(n, k, t, 0.05)),
        **best,
        "ratio": best["server_agg_ms"] / (best["plain_ms"] + best["prg_ms"]),
        "upload_bytes_per_client": upload,
        "upload_bytes_per_param": upload / d,
        "upload_overhead_bytes_per_client": upload - 4 * (d + 1),
        "download_bytes_per_client": download,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    ap.add_argument("--dims", type=int, nargs="+", default=list(DIMS))
    ap.add_argument("--out", default="secagg_protocol",
                    help="name of the JSON file under benchmarks/results/")
    args = ap.parse_args()
    rows = []
    head = (
        f"{'n':>5} {'d':>7} {'choice':8} {'k/t':>6} {'bits':>6} {'client ms':>9} "
        f"{'start ms':>8} {'agg ms':>8} {'round s':>8} {'up B/cl':>9} "
        f"{'overhead':>8} {'down B/cl':>9} {'ratio':>6} {'dec us':>6}"
    )
    print(head)
    print("-" * len(head))
    for d in args.dims:
        for n in args.sizes:
            for choice in CHOICES:
                row = measure(n, d, choice, args.reps)
                rows.append(row)
                print(
                    f"{n:5d} {d:7d} {choice:8} {row['k']:>3}/{row['t']:<2} "
                    f"{row['security_bits'] or math.inf:6.1f} {row['client_ms']:9.2f} "
                    f"{row['server_start_ms']:8.1f} {row['server_agg_ms']:8.1f} "
                    f"{row['round_cpu_s']:8.2f} {row['upload_bytes_per_client']:9.0f} "
                    f"{row['upload_overhead_bytes_per_client']:8.0f} "
                    f"{row['download_bytes_per_client']:9.0f} {row['ratio']:6.2f} "
                    f"{row['decode_us']:6.2f}",
                    flush=True,
                )
    grind = {str(n): grind_eval_us(n) for n in args.sizes}
    print("grind: one seed hash + graph = "
          + ", ".join(f"n={n}: {us:.0f} us" for n, us in grind.items()))
    path = write_result(
        args.out,
        {
            "method": {
                "clock": "time.process_time (CPU), single-threaded, in process",
                "reps": args.reps,
                "best_of": "min over reps, per quantity",
                "choices": {
                    "security": "k, t from SecurityLevel() (40 bits, 5% colluding, "
                    "5% dropout, 20 correctness bits)",
                    "log": "k = 3 ceil(log2 n) even, t = max(k//2+1, ceil(2k/3))",
                },
                "ratio": "server_agg / (plain + prg)",
                "decode_us": "server reader (records_from_bytes) per reply, CPU us",
            },
            "rows": rows,
            "grind_eval_us": grind,
        },
    )
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
