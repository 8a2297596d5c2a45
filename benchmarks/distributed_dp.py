"""Distributed DP (privacy=distributed) vs central DP vs no DP on digits; round time and
upload vs plain secure aggregation.

Run: ``python benchmarks/distributed_dp.py [--rounds 30] [--seeds 0,1,2] [--quick]``
(writes ``benchmarks/results/distributed_dp.json``; ``--quick``: one seed, 10 rounds,
``distributed_dp_quick.json``). ``--append --modes NAME... --seeds ...`` adds seeds to
some modes of an existing ``distributed_dp.json`` (same rounds and clip, checked) and
recomputes their figures; ``setup.seeds_per_mode`` lists each mode's seeds.

Every point is an in-process federation (:class:`lepton_fed.inprocess.InProcessGrid`:
the real ServerApp round loop and ClientApp handlers, no Ray): digits, logistic
regression, 100 clients IID, 20 sampled per round, FedAvg. Modes:

* ``none``: no DP, no secure aggregation; ``none+secagg``: no DP, secure aggregation.
* ``central``: clients clip to ``privacy.clip``, the server adds Gaussian noise to the
  sum (``accountant=rdp``, the same accounting family as distributed), secagg off.
* ``distributed``: clients clip, rotate, round, add discrete Gaussian shares; secure
  aggregation (32-bit field); noise sized for 20 contributors with 1 colluder assumed
  (``secagg.colluding_fraction=0.05``), so its noise is sqrt(20/19) = 1.026x central's
  at the same epsilon before the (small) discretization cost.

Both DP modes: (epsilon, 1e-5) user-level over all rounds, no sampling amplification.
Reported: final test accuracy (server-side held-out split) mean and std over seeds,
the noise multiplier each mode used, mean round seconds (rounds 2..R: round 1 includes
the key advertisement) and bytes uploaded per client per round.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import RESULTS_DIR, print_table, run_figures, write_result  # noqa: E402

BASE = ["data=digits", "model=logreg", "federation.num_clients=100",
        "federation.clients_per_round=20", "client.epochs=5", "client.lr=0.1",
        "evaluation.server_data=true"]
EPSILONS = (1.0, 3.0, 8.0)


def _modes(clip: float, colluding: float | None = None) -> dict[str, list[str]]:
    out = {"none": ["privacy=none"], "none+secagg": ["privacy=none", "secagg=on"]}
    extra = [] if colluding is None else [f"secagg.colluding_fraction={colluding}"]
    for e in EPSILONS:
        out[f"central eps={e:g}"] = ["privacy=central", f"privacy.epsilon={e}",
                                     f"privacy.clip={clip}", "privacy.accountant=rdp"]
        out[f"distributed eps={e:g}"] = ["privacy=distributed", "secagg=on",
                                         f"privacy.epsilon={e}", f"privacy.clip={clip}",
                                         *extra]
    return out


def run_one(overrides: list[str], policy: str | None = None) -> dict[str, Any]:
    from lepton_fed.client.app import app
    from lepton_fed.config import compose
    from lepton_fed.inprocess import InProcessGrid
    from lepton_fed.server.outputs import RunWriter
    from lepton_fed.server.rounds import run_federation

    cfg = compose(overrides)
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        n = int(cfg.federation.num_clients)
        confs = None if policy is None else [
            {"partition-id": i, "num-partitions": n, "policy": policy} for i in range(n)]
        s = run_federation(InProcessGrid(app, n, node_configs=confs), cfg, RunWriter(Path(d)))
        wall = time.perf_counter() - t0
        rows = [json.loads(x) for x in (Path(d) / "metrics.jsonl").read_text().splitlines()]
    return {
        "accuracy": s["final"]["accuracy"],
        **run_figures(s, rows, wall),
    }


def micro(dims: tuple[int, ...] = (650, 100_000, 1_000_000)) -> dict[str, Any]:
    """CPU seconds of the distributed-DP steps alone, per node and per round, against
    plain secure aggregation's masked input, and the noise the decoded sum carries vs
    central DP's at the same epsilon (20 contributors, 1 colluder assumed)."""
    import numpy as np

    from lepton_fed.privacy.central import add_gaussian_noise
    from lepton_fed.privacy.distributed import (
        decode_sum,
        encode_update,
        plan_distributed,
    )
    from lepton_fed.privacy.noise import OSNoise
    from lepton_fed.privacy.secure_rng import CryptoRandom
    from lepton_fed.secagg import (
        SecAggServer,
        advertise_all,
        default_params,
        make_clients,
    )
    from lepton_fed.secagg.inprocess import simulate_round

    rng, out = CryptoRandom(), {}
    for d in dims:
        t0 = time.process_time()
        plan = plan_distributed(epsilon=3.0, delta=1e-5, rounds=20, clip=1.0, dim=d,
                                min_contributors=20, max_contributors=20, colluders=1)
        t_plan = time.process_time() - t0
        x = np.random.default_rng(0).normal(size=d)
        x /= np.linalg.norm(x)
        t0 = time.process_time()
        vecs = [encode_update(x, plan, 5, rng) for _ in range(3)]
        t_enc = (time.process_time() - t0) / 3
        field = np.mod(np.sum([vecs[0]] * 20, axis=0), 2**32).astype(np.uint32)
        t0 = time.process_time()
        decode_sum(field, plan, 5)
        t_dec = time.process_time() - t0
        row: dict[str, Any] = {"plan_s": t_plan, "encode_s_per_node": t_enc,
                               "decode_s": t_dec, "bytes_per_param": 4.0,
                               "gamma": plan.gamma, "wrap_log2": plan.wrap_log2}
        if d <= 100_000:  # one secure round of 5 nodes, float vs integer inputs
            ids = list(range(1, 6))
            for kind in ("plain", "integers"):
                clients, roster = make_clients(ids, min_security_bits=0)
                server = SecAggServer(params=default_params(num_clients=5, rounds=1,
                                                            security_bits=0),
                                      run_id=9, roster=roster)
                advertise_all(server, clients)
                inputs: dict[int, Any] = {
                    i: (np.clip(x, -1, 1), 0.5) if kind == "plain" else vecs[0] for i in ids}
                tm: dict[str, float] = {}
                simulate_round(server, clients, inputs, round=1, timings=tm,
                               clock=time.process_time)
                row[f"secagg_masked_input_s_per_node_{kind}"] = tm["client_masked_input"] / 5
        out[str(d)] = row
    # the decoded sum's error vs central DP's noise, same epsilon, same sum
    d = 650
    plan = plan_distributed(epsilon=3.0, delta=1e-5, rounds=20, clip=1.0, dim=d,
                            min_contributors=20, max_contributors=20, colluders=1)
    xs = [v / max(1.0, float(np.linalg.norm(v)))
          for v in np.random.default_rng(1).normal(size=(20, d)) * 0.1]
    exact = np.sum(xs, axis=0)
    dist = [decode_sum(np.mod(np.sum([encode_update(v, plan, 7, rng) for v in xs], axis=0),
                              2**32).astype(np.uint32), plan, 7) - exact for _ in range(30)]
    cen = [add_gaussian_noise(exact, noise_multiplier=plan.noise_multiplier, clip=1.0,
                              rng=OSNoise()) - exact for _ in range(30)]
    out["noise_std_ratio_distributed_over_central"] = float(np.std(dist) / np.std(cen))
    out["noise_std_ratio_expected"] = float(np.sqrt(20 / 19))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--clip", type=float, default=1.0)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--micro", action="store_true", help="only the per-step costs")
    ap.add_argument("--modes", nargs="*", default=None, help="subset of the mode names")
    ap.add_argument("--colluding-fraction", type=float, default=None,
                    help="secagg.colluding_fraction for the distributed modes (default: "
                         "the config's 0.05, i.e. 1 of 20 shares not counted)")
    ap.add_argument("--out", default=None, help="results/<out>.json (not with --append)")
    ap.add_argument("--append", action="store_true",
                    help="add --seeds to --modes of the existing distributed_dp.json")
    args = ap.parse_args()
    if args.micro:
        res = micro()
        print(json.dumps(res, indent=1))
        write_result("distributed_dp_micro", res)
        return
    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    rounds = 10 if args.quick else args.rounds
    seeds = [0] if args.quick else [int(s) for s in args.seeds.split(",")]
    results: dict[str, Any] = {}
    setup: dict[str, Any] = {"base": BASE, "rounds": rounds, "seeds": seeds,
                             "clip": args.clip, "delta": 1e-5}
    if args.append:
        old = json.loads((RESULTS_DIR / "distributed_dp.json").read_text())
        setup = old["setup"]
        if (setup["rounds"], setup["clip"]) != (rounds, args.clip):
            raise SystemExit(f"--append: distributed_dp.json has rounds={setup['rounds']} "
                             f"clip={setup['clip']}; pass the same --rounds and --clip")
        per_mode = setup.setdefault("seeds_per_mode", {})
        for name, v in old["results"].items():
            known = per_mode.setdefault(name, list(setup["seeds"]))
            for r, sd in zip(v["runs"], known, strict=True):
                r.setdefault("seed", sd)
        results = old["results"]
    policy = None
    if args.colluding_fraction is not None:  # the nodes must assume it too (their policy)
        from omegaconf import OmegaConf

        from lepton_fed.config.paths import conf_dir

        pol = OmegaConf.load(conf_dir() / "node_policy" / "open.yaml")
        pol.colluding_fraction = args.colluding_fraction
        policy = str(Path(tempfile.mkdtemp()) / "node_policy.yaml")
        OmegaConf.save(pol, policy)
    for name, ov in _modes(args.clip, args.colluding_fraction).items():
        if args.modes and name not in args.modes:
            continue
        prev = results.get(name, {}).get("runs", []) if args.append else []
        if any(r.get("seed") in seeds for r in prev):
            raise SystemExit(f"--append: {name} already has some of seeds {seeds}")
        runs = prev + [run_one(BASE + ov + [f"federation.rounds={rounds}", f"seed={s}"],
                               policy if name.startswith("distributed") else None)
                       | {"seed": s} for s in seeds]
        if args.append:
            setup["seeds_per_mode"][name] = [r["seed"] for r in runs]
        acc = [r["accuracy"] for r in runs]
        results[name] = {
            "accuracy_mean": statistics.mean(acc),
            "accuracy_std": statistics.pstdev(acc),
            "runs": runs,
            **{k: statistics.mean(r[k] for r in runs)
               for k in ("round_seconds", "upload_per_client")},
            "noise_multiplier": runs[0]["noise_multiplier"],
            "epsilon": runs[0]["epsilon"],
            "wrap_log2": runs[0]["wrap_log2"],
        }
        print(f"{name}: acc {results[name]['accuracy_mean']:.4f} "
              f"+- {results[name]['accuracy_std']:.4f}", flush=True)
    table = [[k, f"{v['accuracy_mean']:.4f} +- {v['accuracy_std']:.4f}",
              "" if v["noise_multiplier"] is None else f"{v['noise_multiplier']:.3f}",
              f"{v['round_seconds']:.3f}", f"{v['upload_per_client']:.0f}"]
             for k, v in results.items()]
    print_table(["mode", "accuracy", "noise mult.", "round s", "bytes up/client"], table)
    if args.colluding_fraction is not None:
        setup["colluding_fraction"] = args.colluding_fraction
    name = args.out or ("distributed_dp_quick" if args.quick else "distributed_dp")
    if args.append and args.out:
        raise SystemExit("--append writes distributed_dp.json; drop --out")
    write_result(name, {"setup": setup, "results": results})


if __name__ == "__main__":
    main()
