"""DP-SGD round time vs non-private round time, in real Ray simulations.

Run: ``python benchmarks/dp_round_time.py [--reps 2] [--wait-quiet 300] [--no-profile]``
(writes ``benchmarks/results/dp_round_time.json``; ~4-6 minutes on 2 cores).

Task: scikit-learn digits, MLP 64-128-128-10 (``model.hidden=[128,128]``), 10 clients
IID, all 10 sampled every round, batch 16, 1 local epoch, SGD (lr 0.05, momentum 0.9),
6 rounds, seed 0, CPU. Variants: ``privacy=none`` and ``privacy=dpsgd``
(epsilon 3, delta 1e-5, clip 1.0) with each ``privacy.grad_sample_mode``
(``ew`` -- the default --, ``hooks``, ``functorch``, ``ghost``).

Each simulation is :func:`lepton_fed.simulation.simulate` (Flower's Ray engine, 1 CPU per
client, as ``lepton-fed simulate`` runs it) in its own fresh Python process, so no Ray or
torch state leaks between variants. Per-round seconds are the ``seconds`` field of
``metrics.jsonl`` (round start to after the server's evaluation); round 1 is excluded
(Ray actor start-up, and the once-per-run sigma calibration and dataset fingerprint).
Variants run in alternating order (repetition 1 in order, repetition 2 reversed, ...).
The headline per mode is the median over repetitions of
``median(DP round s, rounds 2..6) / median(plain round s, rounds 2..6)`` from the same
repetition. Target: <= 1.5x for ``ew``.

The 1-minute load average is checked before timing (warning above 1.5: other jobs are
distorting the numbers) and recorded before/after every simulation; ``--wait-quiet S``
waits up to S seconds for it to drop below 1.5 first.

Then (``--profile``, on by default) the same federation runs in-process
(:class:`lepton_fed.inprocess.InProcessGrid`, no Ray) under cProfile, DP (``ew``, or
``--profile-modes``) and plain, and prints the DP-specific costs per client round:
Opacus wrap (``make_private``), DP-SGD steps (per-sample gradients, clipping, noise),
privacy accounting (budget check, ledger record, epsilon), one-off costs (sigma
calibration, dataset fingerprint). cProfile inflates Python-heavy code; the
un-profiled in-process times are reported alongside.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import json
import logging
import os
import pstats
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import ROOT, median, print_table, write_result  # noqa: E402

MODES = ("ew", "hooks", "functorch", "ghost")
VARIANTS = ("none", *MODES)
LOAD_WARN = 1.5
EPSILON, DELTA, CLIP = 3.0, 1e-5, 1.0


def overrides(variant: str, rounds: int) -> list[str]:
    """The lepton-fed config of one variant (``none`` or a grad_sample_mode)."""
    base = [
        "data=digits", "partition=iid", "model=mlp", "model.hidden=[128,128]",
        "strategy=fedavg", "federation.num_clients=10", "federation.clients_per_round=10",
        f"federation.rounds={rounds}", "client.batch_size=16", "client.epochs=1",
        "client.lr=0.05", "client.momentum=0.9", "client.optimizer=sgd",
        "seed=0", "device=cpu",
    ]
    if variant == "none":
        return [*base, "privacy=none"]
    return [*base, "privacy=dpsgd", f"privacy.epsilon={EPSILON}", f"privacy.delta={DELTA}",
            f"privacy.max_grad_norm={CLIP}", f"privacy.grad_sample_mode={variant}"]


# ------------------------------------------------------------------ Ray simulations


def worker(variant: str, rounds: int, result: Path) -> None:
    """One real Ray simulation (runs in a fresh process)."""
    warnings.filterwarnings("ignore")
    from lepton_fed.config import compose
    from lepton_fed.simulation import simulate

    cfg = compose(overrides(variant, rounds))
    with tempfile.TemporaryDirectory() as d:
        t0 = time.monotonic()
        with contextlib.redirect_stdout(io.StringIO()):
            summary = simulate(cfg, d)
        wall = time.monotonic() - t0
        rows = [json.loads(s) for s in (Path(d) / "metrics.jsonl").read_text().splitlines()]
    result.write_text(json.dumps({
        "variant": variant,
        "round_seconds": [r["seconds"] for r in rows],
        "final_accuracy": summary["final"]["accuracy"],
        "epsilon": (summary.get("privacy") or {}).get("epsilon"),
        "failures": summary.get("failures"),
        "sim_wall_s": wall,
    }))


def run_worker(variant: str, rounds: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as d:
        res = Path(d) / "r.json"
        load0 = os.getloadavg()[0]
        t0 = time.monotonic()
        proc = subprocess.run(
            [sys.executable, __file__, "--worker", variant, "--rounds", str(rounds),
             "--result", str(res)],
            cwd=ROOT, capture_output=True, text=True, timeout=900,
        )
        wall = time.monotonic() - t0
        if proc.returncode != 0 or not res.exists():
            sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-4000:])
            raise SystemExit(f"{variant} worker failed (exit {proc.returncode})")
        out = json.loads(res.read_text())
    out["process_wall_s"] = wall
    out["loadavg_1min"] = [round(load0, 2), round(os.getloadavg()[0], 2)]  # before, after
    return out


def wait_quiet(max_s: float) -> float:
    """Wait up to ``max_s`` seconds for the 1-minute load to fall below LOAD_WARN."""
    t0 = time.monotonic()
    while os.getloadavg()[0] > LOAD_WARN and time.monotonic() - t0 < max_s:
        time.sleep(10)
    return time.monotonic() - t0


# ------------------------------------------------------------------ profile (no Ray)

# (label, file suffix, function name, once-per-run?) -- DP-specific costs of a client round
DP_FUNCS: list[tuple[str, str, str, bool]] = [
    ("client round (ClientApp train handler)", "lepton_fed/client/app.py", "train", False),
    ("  local training (train_local)", "lepton_fed/client/train.py", "train_local", False),
    ("    make_private (Opacus wrap, OS-keyed CSPRNG noise source)", "lepton_fed/privacy/dpsgd.py",
     "make_private", False),
    ("      opacus PrivacyEngine.make_private", "opacus/privacy_engine.py", "make_private",
     False),
    ("    DP-SGD steps (dp_loss_step)", "lepton_fed/privacy/dpsgd.py", "dp_loss_step", False),
    ("      backward (incl. per-sample gradients)", "torch/_tensor.py", "backward", False),
    ("      DPOptimizer.step (clip + noise + SGD)", "opacus/optimizers/optimizer.py", "step",
     False),
    ("        clip_and_accumulate", "opacus/optimizers/optimizer.py", "clip_and_accumulate",
     False),
    ("        add_noise", "opacus/optimizers/optimizer.py", "add_noise", False),
    ("        DPOptimizer.zero_grad", "opacus/optimizers/optimizer.py", "zero_grad", False),
    ("    Poisson batches (DataLoader.__next__)", "torch/utils/data/dataloader.py", "__next__",
     False),
    ("    _strip_opacus (remove hooks)", "lepton_fed/client/train.py", "_strip_opacus", False),
    ("  accounting: reserve (budget check + pending record)", "lepton_fed/client/dp.py",
     "reserve_dp_round", False),
    ("    sigma calibration (noise_multiplier_for)", "lepton_fed/privacy/analysis.py",
     "noise_multiplier_for", True),
    ("  accounting: record_round (settle + epsilon)", "lepton_fed/client/dp.py",
     "record_round", False),
    ("  accounting: PrivacyLedger.epsilon (all calls)", "lepton_fed/privacy/ledger.py",
     "epsilon", False),
    ("  accounting: ledger (de)serialisation", "lepton_fed/privacy/ledger.py",
     "from_bytes", False),
    ("", "lepton_fed/privacy/ledger.py", "to_bytes", False),
    ("  dataset_fingerprint", "lepton_fed/privacy/fingerprint.py", "dataset_fingerprint",
     True),
]
PLAIN_FUNCS = DP_FUNCS[:2] + [
    ("    backward", "torch/_tensor.py", "backward", False),
    ("    optimizer step (torch SGD)", "torch/optim/sgd.py", "step", False),
]


def _lookup(st: pstats.Stats, suffix: str, name: str) -> tuple[int, float]:
    calls, cum = 0, 0.0
    for (fname, _line, func), (_cc, nc, _tt, ct, _callers) in st.stats.items():  # type: ignore[attr-defined]
        if func == name and fname.replace("\\", "/").endswith(suffix):
            calls += nc
            cum += ct
    return calls, cum


def inprocess(variant: str, rounds: int, profile: bool) -> dict[str, Any]:
    """One in-process federation (optionally under cProfile)."""
    from lepton_fed.client.app import app
    from lepton_fed.config import compose
    from lepton_fed.inprocess import InProcessGrid
    from lepton_fed.server.outputs import RunWriter
    from lepton_fed.server.rounds import run_federation

    cfg = compose(overrides(variant, rounds))
    prof = cProfile.Profile() if profile else None
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        if prof:
            prof.enable()
        with contextlib.redirect_stdout(io.StringIO()):
            summary = run_federation(InProcessGrid(app, 10), cfg, RunWriter(d))
        if prof:
            prof.disable()
        wall = time.perf_counter() - t0
        rows = [json.loads(s) for s in (Path(d) / "metrics.jsonl").read_text().splitlines()]
    out: dict[str, Any] = {"variant": variant, "wall_s": wall,
                           "round_seconds": [r["seconds"] for r in rows],
                           "final_accuracy": summary["final"]["accuracy"]}
    if prof:
        out["stats"] = pstats.Stats(prof)
    return out


def component_times(variant: str, rounds: int) -> dict[str, Any]:
    """Un-profiled wall time of the DP pieces of a client round (perf_counter wrappers
    around the library functions, installed and removed here; no cProfile distortion)."""
    import lepton_fed.client.dp as cdp
    import lepton_fed.client.round as cround
    import lepton_fed.privacy.dpsgd as dpsgd

    targets = [(cround, "train_local", "train_local (local training, all)"),
               (dpsgd, "make_private", "make_private (Opacus wrap)"),
               (dpsgd, "dp_loss_step", "DP-SGD steps (dp_loss_step)"),
               (cdp, "reserve_dp_round", "accounting: reserve (budget check, incl. sigma "
                "calibration in round 1)"),
               (cdp, "record_round", "accounting: record_round (settle)")]
    acc: dict[str, list[float]] = {label: [] for _m, _n, label in targets}
    saved = []
    for mod, name, label in targets:
        orig = getattr(mod, name)
        saved.append((mod, name, orig))

        def wrapped(*a: Any, _f: Any = orig, _l: str = label, **k: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return _f(*a, **k)
            finally:
                acc[_l].append(time.perf_counter() - t0)

        setattr(mod, name, wrapped)
    try:
        res = inprocess(variant, rounds, False)
    finally:
        for mod, name, orig in saved:
            setattr(mod, name, orig)
    client_rounds = 10 * rounds
    return {"round_seconds": res["round_seconds"],
            "ms_per_client_round": {k: 1e3 * sum(v) / client_rounds for k, v in acc.items()
                                    if v},
            "calls": {k: len(v) for k, v in acc.items() if v}}


def profile_section(rounds: int, modes: list[str]) -> dict[str, Any]:
    client_rounds = 10 * rounds
    # warm-up: imports, dataset and split caches, torch kernels
    inprocess("none", 2, False)
    inprocess(modes[0], 2, False)
    timing = {v: inprocess(v, rounds, False) for v in ("none", *modes)}
    plain_prof = inprocess("none", rounds, True)
    ps = plain_prof["stats"]
    plain_rows = []
    for label, suffix, name, _once in PLAIN_FUNCS:
        n, cum = _lookup(ps, suffix, name)
        plain_rows.append({"what": label.strip(), "calls": n,
                           "ms_per_client_round": 1e3 * cum / client_rounds})
    out: dict[str, Any] = {
        "client_rounds": client_rounds,
        "inprocess_unprofiled": {
            v: {"round_s_median_2_on": median(t["round_seconds"][1:]),
                "wall_s": t["wall_s"], "final_accuracy": t["final_accuracy"]}
            for v, t in timing.items()},
        "plain_profile": plain_rows, "dp_profile": {},
    }
    plain_med = out["inprocess_unprofiled"]["none"]["round_s_median_2_on"]
    print(f"\nIn-process (no Ray), un-profiled, median round s (rounds 2..{rounds}): " + ", ".join(
        f"{v} {r['round_s_median_2_on']:.3f} ({r['round_s_median_2_on'] / plain_med:.2f}x)"
        for v, r in out["inprocess_unprofiled"].items()))
    plain_train = plain_rows[1]["ms_per_client_round"]
    comp = {v: component_times(v, rounds) for v in ("none", *modes)}
    out["components_unprofiled"] = comp
    labels = list(dict.fromkeys(k for c in comp.values() for k in c["ms_per_client_round"]))
    print_table(["un-profiled, ms per client round", *comp],
                [[lab, *[f"{c['ms_per_client_round'][lab]:.2f}"
                         if lab in c["ms_per_client_round"] else "-" for c in comp.values()]]
                 for lab in labels],
                title=f"\nDP pieces timed without cProfile (in-process, {client_rounds} client "
                "rounds incl. round 1; the whole-step split below comes from cProfile, which "
                "inflates torch's Python dispatch several-fold, plain code included)")
    for mode in modes:
        prof = inprocess(mode, rounds, True)
        st = prof["stats"]
        rows, table = [], []
        total_round = None
        for label, suffix, name, once in DP_FUNCS:
            n, cum = _lookup(st, suffix, name)
            if not label:  # continuation row: add to the previous one
                rows[-1]["calls"] += n
                rows[-1]["cum_s"] += cum
                continue
            rows.append({"what": label.strip(), "indent": label, "calls": n, "cum_s": cum,
                         "once_per_run": once})
        for r in rows:
            per = 1e3 * r["cum_s"] / client_rounds
            r["ms_per_client_round"] = per
            if total_round is None:
                total_round = per
            r["pct_of_client_round"] = 100 * per / total_round if total_round else 0.0
            table.append([r["indent"] + (" [once/run]" if r["once_per_run"] else ""),
                          r["calls"], f"{per:.2f}", f"{r['pct_of_client_round']:.0f}%"])
        print_table(["DP cost (cProfile, in-process)", "calls", "ms/client round", "% of round"],
                    table, title=f"\nDP-specific costs per client round, grad_sample_mode={mode} "
                    f"({client_rounds} client rounds; plain client round "
                    f"{plain_rows[0]['ms_per_client_round']:.2f} ms, plain train_local "
                    f"{plain_train:.2f} ms)")
        # the raw top of the profile restricted to DP code
        top = []
        for (fname, line, func), (_cc, nc, _tt, ct, _c) in st.stats.items():  # type: ignore[attr-defined]
            f = fname.replace("\\", "/")
            if "/opacus/" in f or "lepton_fed/privacy/" in f or f.endswith("lepton_fed/client/dp.py"):
                top.append((ct, nc, f"{f.split('site-packages/')[-1].split(str(ROOT) + '/')[-1]}:{line}({func})"))
        top.sort(reverse=True)
        print(f"Top DP-code functions by cumulative time ({mode}), ms per client round:")
        for ct, nc, where in top[:15]:
            print(f"  {1e3 * ct / client_rounds:8.2f}  {nc:6d} calls  {where}")
        out["dp_profile"][mode] = {
            "rows": [{k: v for k, v in r.items() if k != "indent"} for r in rows],
            "top_dp_functions": [{"ms_per_client_round": 1e3 * ct / client_rounds,
                                  "calls": nc, "function": w} for ct, nc, w in top[:25]],
        }
    return out


# ------------------------------------------------------------------------------ main


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=2, help="repetitions of every variant")
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--wait-quiet", type=float, default=0.0,
                    help=f"wait up to this many seconds for 1-min load < {LOAD_WARN}")
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--profile", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--profile-modes", default="ew")
    ap.add_argument("--worker", choices=VARIANTS, help=argparse.SUPPRESS)
    ap.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args.worker, args.rounds, args.result)
        return 0

    warnings.filterwarnings("ignore")
    logging.getLogger("lepton_fed").setLevel(logging.ERROR)
    modes = [m for m in args.modes.split(",") if m]
    variants = ["none", *modes]
    waited = wait_quiet(args.wait_quiet) if args.wait_quiet > 0 else 0.0
    load_start = os.getloadavg()
    warn = None
    if load_start[0] > LOAD_WARN:
        warn = (f"WARNING: 1-minute load average {load_start[0]:.2f} > {LOAD_WARN} before "
                f"timing: other jobs are distorting these numbers")
        print(warn, flush=True)
    print(f"load average before timing: {load_start[0]:.2f} {load_start[1]:.2f} "
          f"{load_start[2]:.2f} (waited {waited:.0f} s); {os.cpu_count()} cores", flush=True)

    t_all = time.monotonic()
    runs: list[dict[str, Any]] = []
    for rep in range(args.reps):
        order = variants if rep % 2 == 0 else variants[::-1]
        for v in order:
            r = run_worker(v, args.rounds) | {"rep": rep}
            runs.append(r)
            rs = r["round_seconds"]
            print(f"  rep {rep + 1} {v:9s} rounds 2..{args.rounds}: "
                  + " ".join(f"{s:.3f}" for s in rs[1:])
                  + f"  (round 1 {rs[0]:.2f} s, sim {r['sim_wall_s']:.1f} s, "
                  f"acc {r['final_accuracy']:.3f}, load {r['loadavg_1min'][0]:.2f}"
                  f"->{r['loadavg_1min'][1]:.2f})", flush=True)
    load_end = os.getloadavg()

    def med(v: str, rep: int | None = None) -> float:
        xs = [s for r in runs if r["variant"] == v and (rep is None or r["rep"] == rep)
              for s in r["round_seconds"][1:]]
        return median(xs)

    summary: dict[str, Any] = {}
    rows = []
    for v in variants:
        per_rep = [med(v, k) / med("none", k) for k in range(args.reps)]
        allr = [s for r in runs if r["variant"] == v for s in r["round_seconds"][1:]]
        summary[v] = {
            "round_s_median": med(v), "round_s_min": min(allr),
            "ratio_vs_plain_median": median(per_rep), "ratio_per_rep": per_rep,
            "round1_s_median": median([r["round_seconds"][0] for r in runs
                                       if r["variant"] == v]),
            "sim_wall_s_median": median([r["sim_wall_s"] for r in runs if r["variant"] == v]),
            "final_accuracy": [r["final_accuracy"] for r in runs if r["variant"] == v],
            "epsilon": [r["epsilon"] for r in runs if r["variant"] == v],
        }
        s = summary[v]
        rows.append([v + (" (default)" if v == "ew" else ""), f"{s['round_s_median']:.3f}",
                     f"{s['round_s_min']:.3f}", f"{s['ratio_vs_plain_median']:.2f}x",
                     " ".join(f"{x:.2f}" for x in per_rep), f"{s['round1_s_median']:.2f}",
                     f"{s['sim_wall_s_median']:.1f}",
                     f"{median(s['final_accuracy']):.3f}"])
    print_table(["variant", "round s med", "round s min", "DP/plain (med)", "per rep",
                 "round 1 s", "sim s", "acc"], rows,
                title=f"\nReal Ray simulations: digits MLP 64-128-128-10, 10 clients, batch 16, "
                f"1 epoch, rounds 2..{args.rounds}, {args.reps} rep(s), eps={EPSILON:g}")
    target = None
    if "ew" in summary:
        ratio = summary["ew"]["ratio_vs_plain_median"]
        target = {"mode": "ew", "max_ratio": 1.5, "ratio": ratio, "met": ratio <= 1.5}
        print(f"TARGET ew DP/plain round time <= 1.5x: {ratio:.2f}x "
              f"({'met' if ratio <= 1.5 else 'MISSED'})")
    print(f"load average: before {load_start[0]:.2f}, after {load_end[0]:.2f}"
          + (f"  <- {warn}" if warn else ""))
    ray_wall = time.monotonic() - t_all

    prof = None
    if args.profile:
        pmodes = [m for m in args.profile_modes.split(",") if m]
        prof = profile_section(args.rounds, pmodes)

    import opacus
    import torch

    path = write_result("dp_round_time", {
        "settings": {"overrides": {v: overrides(v, args.rounds) for v in variants},
                     "reps": args.reps, "rounds": args.rounds, "timed_rounds": f"2..{args.rounds}",
                     "order": "alternating (even reps in order, odd reps reversed)",
                     "engine": "flwr Ray simulation via lepton_fed.simulation.simulate, "
                               "one fresh process per simulation",
                     "torch": torch.__version__, "opacus": opacus.__version__},
        "load": {"start": load_start, "end": load_end, "waited_s": waited,
                 "warn_threshold": LOAD_WARN, "warning": warn},
        "summary": summary, "target": target, "runs": runs, "ray_section_wall_s": ray_wall,
        "profile": prof,
    })
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
