"""Round overhead: lepton-fed FedAvg vs a minimal plain-Flower Message-API FedAvg app.

Run: ``python benchmarks/round_overhead.py`` (writes ``benchmarks/results/round_overhead.json``;
about 2-3 minutes on 2 cores).

Task (identical for both): sklearn digits, 80/20 stratified split (seed 0), train split IID
over 10 clients, MLP 64-128-128-10, SGD lr 0.1 momentum 0.9, batch 16, 1 local epoch, all
10 clients every round, 5 rounds, central evaluation on the test split after every round.
Both run on Flower's Ray simulation engine through ``run_simulation`` with lepton-fed's
backend config (1 CPU per client, ``num_cpus`` = the machine's cores, so 2 actors here).

Each simulation runs in its own fresh Python process (``--worker``), the two
frameworks alternating order across repeats. Per-round seconds:

* lepton-fed: the ``seconds`` field of ``metrics.jsonl`` (round start to after evaluation);
* plain Flower: the time between successive ``evaluate_fn`` completions (the same span:
  configure, send/receive, aggregate, evaluate).

Round 1 is excluded (it pays for Ray actor start-up in plain Flower). The headline figure
is the median over repeats of (median lepton round / median plain round), rounds 2..N.

After the Ray runs, ``--profile`` (on by default) runs both apps on lepton-fed's in-process
grid (no Ray) to separate framework cost from transport, times lepton-fed's round
components and prints a cProfile of the lepton-fed client/server code.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pickle
import pstats
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from flwr.app import (
    ArrayRecord,
    ConfigRecord,
    Context,
    Message,
    MetricRecord,
    RecordDict,
)
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    backend_config,
    median,
    plain_sgd_epochs,
    print_table,
    quiet_env,
    run_worker,
    timed_server_main,
    write_result,
)

LR, MOMENTUM, BATCH, EPOCHS, HIDDEN, SEED = 0.1, 0.9, 16, 1, (128, 128), 0


def lepton_overrides(clients: int, rounds: int) -> list[str]:
    """The lepton-fed config of this task."""
    return [
        "data=digits",
        "model=mlp",
        f"model.hidden=[{HIDDEN[0]},{HIDDEN[1]}]",
        f"client.lr={LR}",
        f"client.momentum={MOMENTUM}",
        f"client.batch_size={BATCH}",
        f"client.epochs={EPOCHS}",
        f"federation.num_clients={clients}",
        f"federation.clients_per_round={clients}",
        f"federation.rounds={rounds}",
        f"seed={SEED}",
        "device=cpu",
    ]


# --------------------------------------------------------------------------------------
# The minimal plain-Flower app (what a user would write from Flower's quickstart).
# It lives at module level of an importable module so Ray pickles it by reference, as it
# does lepton_fed.client.app.
# --------------------------------------------------------------------------------------

_DATA: dict[
    int, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[np.ndarray]]
] = {}


def digits_split(
    num_parts: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[np.ndarray]]:
    """(X standardised on the train split, y, train idx, test idx, IID parts of train idx).

    Same split and partition as lepton-fed (stratified 80/20 with seed 0; permutation with
    seed 0 dealt into ``num_parts`` shards); cached per process like lepton-fed's.
    """
    if num_parts not in _DATA:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
        from sklearn.preprocessing import StandardScaler

        X, y = load_digits(return_X_y=True)
        tr, te = train_test_split(
            np.arange(len(y)), test_size=0.2, random_state=SEED, stratify=y
        )
        tr, te = np.sort(tr), np.sort(te)
        Xs = StandardScaler().fit(X[tr]).transform(X).astype(np.float32)
        perm = np.random.default_rng(SEED).permutation(len(tr))
        parts = [tr[np.sort(p)] for p in np.array_split(perm, num_parts)]
        _DATA[num_parts] = (Xs, y.astype(np.int64), tr, te, parts)
    return _DATA[num_parts]


def plain_net() -> nn.Module:
    """The MLP of the task (64-128-128-10)."""
    return nn.Sequential(
        nn.Linear(64, HIDDEN[0]),
        nn.ReLU(),
        nn.Linear(HIDDEN[0], HIDDEN[1]),
        nn.ReLU(),
        nn.Linear(HIDDEN[1], 10),
    )


plain_client = ClientApp()


@plain_client.train()
def plain_train(msg: Message, context: Context) -> Message:
    """Train one local epoch on this node's partition; reply weights + num-examples."""
    X, y, _, _, parts = digits_split(int(context.node_config["num-partitions"]))
    rows = parts[int(context.node_config["partition-id"])]
    model = plain_net()
    model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
    cfg = msg.content["config"]
    mean_loss = plain_sgd_epochs(model, X, y, rows, cfg)
    content = RecordDict(
        {
            "arrays": ArrayRecord(model.state_dict()),
            "metrics": MetricRecord(
                {"train-loss": mean_loss, "num-examples": len(rows)}
            ),
        }
    )
    return Message(content, reply_to=msg)


def plain_evaluate(arrays: ArrayRecord, num_parts: int) -> dict[str, float]:
    """Accuracy/loss of ``arrays`` on the test split (central evaluation)."""
    X, y, _, te, _ = digits_split(num_parts)
    model = plain_net()
    model.load_state_dict(arrays.to_torch_state_dict())
    model.eval()
    with torch.no_grad():
        logits = model(torch.from_numpy(X[te]))
        loss = float(nn.functional.cross_entropy(logits, torch.from_numpy(y[te])))
        acc = float((logits.argmax(1).numpy() == y[te]).mean())
    return {"accuracy": acc, "loss": loss}


def run_plain_strategy(grid: Grid, clients: int, rounds: int) -> dict[str, Any]:
    """FedAvg.start with central evaluation; returns boundaries and accuracies."""
    stamps: list[float] = []
    accs: list[float] = []

    def evaluate_fn(rnd: int, arrays: ArrayRecord) -> MetricRecord:
        ev = plain_evaluate(arrays, clients)
        accs.append(ev["accuracy"])
        stamps.append(time.monotonic())
        return MetricRecord(ev)

    torch.manual_seed(SEED)
    strategy = FedAvg(
        fraction_train=1.0,
        fraction_evaluate=0.0,
        min_train_nodes=clients,
        min_available_nodes=clients,
    )
    strategy.start(
        grid=grid,
        initial_arrays=ArrayRecord(plain_net().state_dict()),
        num_rounds=rounds,
        evaluate_fn=evaluate_fn,
        train_config=ConfigRecord(
            {"lr": LR, "momentum": MOMENTUM, "batch-size": BATCH, "epochs": EPOCHS}
        ),
    )
    return {
        "round_seconds": [b - a for a, b in zip(stamps, stamps[1:], strict=False)],
        "accuracy": accs[1:],
    }


def make_plain_server(clients: int, rounds: int, out: dict[str, Any]) -> ServerApp:
    """The plain-Flower ServerApp; timings and accuracies go into ``out``."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        out["main_start"] = time.monotonic()
        out.update(run_plain_strategy(grid, clients, rounds))
        out["main_end"] = time.monotonic()

    return app


# --------------------------------------------------------------------------------------
# Workers: one simulation per fresh process
# --------------------------------------------------------------------------------------


def worker(kind: str, clients: int, rounds: int, result: Path) -> None:
    """Run one Ray simulation of ``kind`` and write its timings to ``result``."""
    import logging

    t_proc = time.monotonic()
    quiet_env()
    out: dict[str, Any] = {"kind": kind}
    import flwr.simulation  # noqa: F401  (imports Ray: both workers pay it before t0)

    if kind == "lepton":
        from lepton_fed.config import compose
        from lepton_fed.simulation import simulate

        cfg = compose(lepton_overrides(clients, rounds))
        with tempfile.TemporaryDirectory() as d, timed_server_main(out):
            t0 = time.monotonic()
            summary = simulate(cfg, d)
            t1 = time.monotonic()
            out["sim_wall_s"] = t1 - t0
            rows = [
                json.loads(s)
                for s in (Path(d) / "metrics.jsonl").read_text().splitlines()
            ]
        out["round_seconds"] = [r["seconds"] for r in rows]
        out["accuracy"] = [r["accuracy"] for r in rows]
        out["final_accuracy"] = summary["final"]["accuracy"]
    else:
        import round_overhead as mod  # importable name, so Ray pickles the app by reference
        from flwr.simulation import run_simulation

        flwr_log = logging.getLogger("flwr")  # the same log level lepton-fed sets
        flwr_log.propagate = False
        flwr_log.setLevel(logging.WARNING)
        t0 = time.monotonic()
        run_simulation(
            server_app=mod.make_plain_server(clients, rounds, out),
            client_app=mod.plain_client,
            num_supernodes=clients,
            backend_name="ray",
            backend_config=backend_config(),
        )
        t1 = time.monotonic()
        out["sim_wall_s"] = t1 - t0
        out["final_accuracy"] = out["accuracy"][-1]
    # phases of the run_simulation call: before the ServerApp body starts (Ray start-up,
    # config checks), the body (setup + all rounds + final outputs), after it (shutdown)
    ms, me = out.pop("main_start"), out.pop("main_end")
    out["phases_s"] = {
        "before_main": ms - t0,
        "main": me - ms,
        "after_main": t1 - me,
        "main_outside_rounds": me - ms - sum(out["round_seconds"]),
    }
    out["worker_s"] = time.monotonic() - t_proc
    result.write_text(json.dumps(out))


def run_kind(kind: str, clients: int, rounds: int) -> dict[str, Any]:
    """One worker process of ``kind`` (see :func:`_common.run_worker`)."""
    return run_worker(
        __file__, [kind, "--clients", str(clients), "--rounds", str(rounds)]
    )


# --------------------------------------------------------------------------------------
# Profiling on the in-process grid (no Ray)
# --------------------------------------------------------------------------------------


class _TimedGrid:
    """Wraps InProcessGrid._deliver to time each client handler call."""

    def __init__(self, grid: Any) -> None:
        self.client_s: list[float] = []
        orig = grid._deliver

        def deliver(msg: Message) -> Message | None:
            t0 = time.perf_counter()
            r = orig(msg)
            if msg.metadata.message_type == "train":
                self.client_s.append(time.perf_counter() - t0)
            return r

        grid._deliver = deliver


def _lepton_inprocess(
    clients: int, rounds: int, profiler: cProfile.Profile | None = None
) -> dict[str, Any]:
    from lepton_fed.client.app import app
    from lepton_fed.config import compose
    from lepton_fed.inprocess import InProcessGrid
    from lepton_fed.server.outputs import RunWriter
    from lepton_fed.server.rounds import run_federation

    cfg = compose(lepton_overrides(clients, rounds))
    grid = InProcessGrid(app, clients)
    tg = _TimedGrid(grid)
    with tempfile.TemporaryDirectory() as d:
        if profiler:
            profiler.enable()
        t0 = time.monotonic()
        run_federation(grid, cfg, RunWriter(d))
        wall = time.monotonic() - t0
        if profiler:
            profiler.disable()
        rows = [
            json.loads(s) for s in (Path(d) / "metrics.jsonl").read_text().splitlines()
        ]
    ctx_bytes = len(pickle.dumps(grid.contexts[1]))
    return {
        "round_seconds": [r["seconds"] for r in rows],
        "client_s": tg.client_s,
        "wall_s": wall,
        "context_pickle_bytes": ctx_bytes,
    }


def _plain_inprocess(clients: int, rounds: int) -> dict[str, Any]:
    from lepton_fed.inprocess import InProcessGrid

    grid = InProcessGrid(plain_client, clients)
    tg = _TimedGrid(grid)
    t0 = time.monotonic()
    out = run_plain_strategy(grid, clients, rounds)
    out["wall_s"] = time.monotonic() - t0
    out["client_s"] = tg.client_s
    out["context_pickle_bytes"] = len(pickle.dumps(grid.contexts[1]))
    return out


def _components(clients: int, rounds: int) -> dict[str, dict[str, float]]:
    """Wrap lepton-fed's round components (patching module attributes, benchmark-only)."""
    import lepton_fed.client.app as capp
    import lepton_fed.client.node as cnode
    import lepton_fed.client.round as cround
    import lepton_fed.server.rounds as srounds
    from lepton_fed.server.outputs import RunWriter

    acc: dict[str, list[float]] = defaultdict(list)
    patched: list[tuple[Any, str, Any]] = []

    missing: list[str] = []

    def wrap(obj: Any, name: str, label: str) -> None:
        orig = getattr(obj, name, None)
        if orig is None:  # renamed in the library: say so instead of failing the run
            missing.append(f"{getattr(obj, '__name__', obj)}.{name}")
            return
        patched.append((obj, name, orig))

        def timed(*a: Any, **k: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return orig(*a, **k)
            finally:
                acc[label].append(time.perf_counter() - t0)

        setattr(obj, name, timed)

    cfg_prop = cnode.NodeState.cfg
    patched.append((cnode.NodeState, "cfg", cfg_prop))

    def cfg_timed(self: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return cfg_prop.fget(self)
        finally:
            acc["client: NodeState.cfg (OmegaConf.create of the run YAML)"].append(
                time.perf_counter() - t0
            )

    cnode.NodeState.cfg = property(cfg_timed)  # type: ignore[assignment]
    wrap(capp, "run_train_round", "client: run_train_round (whole local round)")
    wrap(cround, "node_data", "client: node_data (this node's rows)")
    wrap(cround, "model_spec", "client: model_spec")
    wrap(cround, "build_model", "client: build_model")
    wrap(cround, "from_array_record", "client: from_array_record")
    wrap(cround, "set_state", "client: set_state")
    wrap(cround, "resolve_device", "client: resolve_device")
    wrap(cround, "train_local", "client: train_local (SGD epoch)")
    wrap(cround, "get_state", "client: get_state")
    wrap(cround, "flatten_state", "client: flatten_state (x2)")
    wrap(cround, "unflatten_state", "client: unflatten_state")
    wrap(cround, "to_array_record", "client: to_array_record")
    wrap(srounds, "to_array_record", "server: to_array_record")
    wrap(srounds, "exchange", "server: exchange (all clients, incl. client work)")
    wrap(srounds, "decode_replies", "server: decode_replies")
    wrap(srounds, "from_array_record", "server: from_array_record")
    wrap(srounds, "set_state", "server: set_state")
    wrap(srounds, "evaluate_model", "server: evaluate_model")
    wrap(RunWriter, "round", "server: RunWriter.round (metrics.jsonl)")
    from lepton_fed import strategies

    wrap(strategies.FedAvg, "configure_train", "server: strategy.configure_train")
    wrap(strategies.FedAvg, "aggregate_train", "server: strategy.aggregate_train")
    try:
        res = _lepton_inprocess(clients, rounds)
    finally:
        for obj, name, orig in reversed(patched):
            setattr(obj, name, orig)
    # per-round cost over rounds 2..N: drop the first `clients` client calls and the
    # first server call of each component (round 1 and the setup pay one-off costs)
    out: dict[str, dict[str, float]] = {}
    for label, xs in acc.items():
        per_round = len(xs) / max(rounds, 1)
        skip = int(round(per_round)) if per_round >= 1 else 0
        tail = xs[skip:] if len(xs) > skip else xs
        out[label] = {
            "calls_per_round": per_round,
            "ms_per_call": 1e3 * float(np.mean(tail)),
            "ms_per_round": 1e3 * float(np.mean(tail)) * per_round,
        }
    out["_round_seconds"] = {"median_r2+": median(res["round_seconds"][1:])}
    if missing:
        print(f"warning: not timed (no such attribute): {', '.join(missing)}")
        out["_not_timed"] = {m: 0.0 for m in missing}
    return out


def profile(clients: int, rounds: int, repeats: int) -> dict[str, Any]:
    """In-process comparison, component timings, and a cProfile of lepton-fed."""
    torch.set_num_threads(1)  # as in a Ray actor with num_cpus=1 (OMP_NUM_THREADS=1)
    _lepton_inprocess(clients, 2)  # warm imports and caches
    _plain_inprocess(clients, 2)
    lep, pla = [], []
    for _ in range(repeats):
        lep.append(_lepton_inprocess(clients, rounds))
        pla.append(_plain_inprocess(clients, rounds))
    lep_r = median([median(r["round_seconds"][1:]) for r in lep])
    pla_r = median([median(r["round_seconds"][1:]) for r in pla])
    lep_c = median([x for r in lep for x in r["client_s"][clients:]])
    pla_c = median([x for r in pla for x in r["client_s"][clients:]])
    inproc = {
        "lepton_round_s": lep_r,
        "plain_round_s": pla_r,
        "ratio": lep_r / pla_r,
        "lepton_client_handler_ms": 1e3 * lep_c,
        "plain_client_handler_ms": 1e3 * pla_c,
        "lepton_context_pickle_bytes": lep[0]["context_pickle_bytes"],
        "plain_context_pickle_bytes": pla[0]["context_pickle_bytes"],
    }
    comps = _components(clients, rounds)
    prof = cProfile.Profile()
    _lepton_inprocess(clients, rounds, prof)
    st = pstats.Stats(prof)
    top = []
    for (fname, _line, func), (_cc, nc, _tt, ct, _callers) in st.stats.items():  # type: ignore[attr-defined]
        if (
            "lepton_fed" in fname or "/strategies/" in fname
        ) and "inprocess.py" not in fname:
            root = str(Path(__file__).resolve().parents[1]) + "/"
            rel = fname.split(root)[-1] if root in fname else fname
            top.append(
                {
                    "where": f"{rel}:{func}",
                    "calls": nc,
                    "cum_ms_per_round": 1e3 * ct / rounds,
                }
            )
    top.sort(key=lambda r: -r["cum_ms_per_round"])
    return {"inprocess": inproc, "components": comps, "cprofile_top": top[:25]}


# --------------------------------------------------------------------------------------


def main() -> None:
    """Ray runs (alternating frameworks), then the in-process profile; write JSON."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--repeats",
        type=int,
        default=3,
        help="Ray runs per framework (alternating order)",
    )
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--clients", type=int, default=10)
    ap.add_argument(
        "--no-profile", action="store_true", help="skip the in-process profile"
    )
    ap.add_argument(
        "--profile-only", action="store_true", help="only the in-process profile"
    )
    ap.add_argument("--out", default="round_overhead", help="results/<out>.json")
    ap.add_argument("--worker", choices=["lepton", "plain"], help=argparse.SUPPRESS)
    ap.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        worker(a.worker, a.clients, a.rounds, a.result)
        return

    payload: dict[str, Any] = {
        "task": {
            "dataset": "sklearn digits, 80/20 stratified (seed 0), IID over clients",
            "model": "MLP 64-128-128-10",
            "clients": a.clients,
            "clients_per_round": a.clients,
            "rounds": a.rounds,
            "optimizer": f"SGD lr {LR} momentum {MOMENTUM}, batch {BATCH}, {EPOCHS} epoch",
            "lepton_overrides": lepton_overrides(a.clients, a.rounds),
            "backend_config": backend_config(),
        }
    }
    if not a.profile_only:
        runs: list[dict[str, Any]] = []
        ratios = []
        for i in range(a.repeats):
            order = ["lepton", "plain"] if i % 2 == 0 else ["plain", "lepton"]
            got = {}
            for kind in order:
                print(f"repeat {i + 1}/{a.repeats}: {kind} ...", flush=True)
                got[kind] = run_kind(kind, a.clients, a.rounds)
            lr_, pr_ = (
                median(got["lepton"]["round_seconds"][1:]),
                median(got["plain"]["round_seconds"][1:]),
            )
            ratios.append(lr_ / pr_)
            runs.append(
                {
                    "repeat": i + 1,
                    "order": order,
                    **got,
                    "lepton_median_round_s": lr_,
                    "plain_median_round_s": pr_,
                    "ratio": lr_ / pr_,
                }
            )
        rows = []
        for r in runs:
            for kind in ("lepton", "plain"):
                g = r[kind]
                rows.append(
                    [
                        r["repeat"],
                        kind,
                        " ".join(f"{s:.3f}" for s in g["round_seconds"]),
                        median(g["round_seconds"][1:]),
                        g["sim_wall_s"],
                        g["process_wall_s"],
                        g["final_accuracy"],
                        "/".join(map(str, g["loadavg_1min"])),
                    ]
                )
        print_table(
            [
                "rep",
                "framework",
                "round seconds 1..N",
                "median r2..N",
                "sim wall s",
                "process wall s",
                "final acc",
                "load before/after",
            ],
            rows,
            title="\nRay simulation (run_simulation)",
        )
        pooled_l = [x for r in runs for x in r["lepton"]["round_seconds"][1:]]
        pooled_p = [x for r in runs for x in r["plain"]["round_seconds"][1:]]
        summary = {
            "ratio_median": median(ratios),
            "ratios": ratios,
            # mean over every round 2..N of every repeat: steadier than medians, because
            # round times are quantised by Flower's 0.1 s polling loops
            "ratio_pooled_rounds": float(np.mean(pooled_l) / np.mean(pooled_p)),
            "lepton_round_s_mean": float(np.mean(pooled_l)),
            "plain_round_s_mean": float(np.mean(pooled_p)),
            "lepton_round_s_median": median([r["lepton_median_round_s"] for r in runs]),
            "plain_round_s_median": median([r["plain_median_round_s"] for r in runs]),
            "lepton_sim_wall_s_median": median(
                [r["lepton"]["sim_wall_s"] for r in runs]
            ),
            "plain_sim_wall_s_median": median([r["plain"]["sim_wall_s"] for r in runs]),
            "lepton_process_wall_s_median": median(
                [r["lepton"]["process_wall_s"] for r in runs]
            ),
            "plain_process_wall_s_median": median(
                [r["plain"]["process_wall_s"] for r in runs]
            ),
            "target_ratio": 1.1,
        }
        summary["meets_target"] = summary["ratio_median"] <= 1.1
        print(
            f"median round (r2..{a.rounds}): lepton {summary['lepton_round_s_median']:.3f} s, "
            f"plain {summary['plain_round_s_median']:.3f} s; ratio lepton/plain "
            f"{summary['ratio_median']:.2f}x (per repeat: {', '.join(f'{x:.2f}' for x in ratios)}; "
            f"target <= 1.1x); mean over all rounds 2..N: {summary['ratio_pooled_rounds']:.2f}x "
            f"(means {summary['lepton_round_s_mean']:.3f} / {summary['plain_round_s_mean']:.3f} s)"
        )
        for kind in ("lepton", "plain"):
            ph = {
                k: median([r[kind]["phases_s"][k] for r in runs])
                for k in runs[0][kind]["phases_s"]
            }
            summary[f"{kind}_phases_s_median"] = ph
            print(
                f"{kind} phases (median s): before ServerApp body {ph['before_main']:.2f}, body "
                f"{ph['main']:.2f} (outside the rounds {ph['main_outside_rounds']:.2f}), "
                f"after body {ph['after_main']:.2f}"
            )
        print(
            f"whole run (run_simulation call), median: lepton {summary['lepton_sim_wall_s_median']:.1f} s, "
            f"plain {summary['plain_sim_wall_s_median']:.1f} s; process incl. interpreter and Ray "
            f"shutdown: {summary['lepton_process_wall_s_median']:.1f} / "
            f"{summary['plain_process_wall_s_median']:.1f} s"
        )
        payload |= {"ray": {"summary": summary, "runs": runs}}
    if not a.no_profile:
        print("\nin-process profile (no Ray) ...", flush=True)
        prof = profile(a.clients, a.rounds, repeats=3)
        ip = prof["inprocess"]
        print_table(
            ["in-process (no Ray)", "lepton-fed", "plain Flower"],
            [
                [
                    "median round s (r2..N)",
                    f"{ip['lepton_round_s']:.4f}",
                    f"{ip['plain_round_s']:.4f}",
                ],
                [
                    "client train handler ms (median)",
                    f"{ip['lepton_client_handler_ms']:.2f}",
                    f"{ip['plain_client_handler_ms']:.2f}",
                ],
                [
                    "pickled node Context bytes",
                    ip["lepton_context_pickle_bytes"],
                    ip["plain_context_pickle_bytes"],
                ],
            ],
            title=f"\nin-process grid: ratio {ip['ratio']:.2f}x",
        )
        comps = prof["components"]
        crow = [
            [
                k,
                f"{v['calls_per_round']:.0f}",
                f"{v['ms_per_call']:.3f}",
                f"{v['ms_per_round']:.2f}",
            ]
            for k, v in comps.items()
            if not k.startswith("_")
        ]
        print_table(
            [
                "lepton-fed component (rounds 2..N)",
                "calls/round",
                "ms/call",
                "ms/round",
            ],
            crow,
            title="\nlepton-fed round components (in-process, wrapped timers)",
        )
        print_table(
            ["cProfile: lepton_fed / strategies function", "calls", "cum ms/round"],
            [
                [t["where"], t["calls"], f"{t['cum_ms_per_round']:.2f}"]
                for t in prof["cprofile_top"][:15]
            ],
            title="\ncProfile of one in-process lepton-fed run (cumulative, includes round 1)",
        )
        payload["profile"] = prof
    path = write_result(a.out, payload)
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
