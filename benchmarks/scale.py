"""Scale: round time and memory at 1,000 / 10,000 clients (100 / 1,000 per round) for plain
Flower FedAvg and lepton-fed plain, +DP-SGD, +secure aggregation, +both, in ONE run.

Run: ``python benchmarks/scale.py`` (writes ``benchmarks/results/scale.json``). Options:
``--scales 1000:100,10000:1000`` (clients:per round), ``--rounds 3``, ``--engine
inprocess|ray|both`` (default ``inprocess``), ``--variants``, ``--profile`` (per-client
cost breakdown of the ``both`` variant), ``--make-data FILE --rows N`` (only write the
synthetic data set and exit; ``conf/experiment/scale_10k.yaml`` reads it).

Task (identical for every variant): a synthetic tabular task (scikit-learn
``make_classification``, 20 numeric features, 4 classes, seed 0) with 25 rows per client
(stratified 80/20 split, so ~20 training rows per client at every scale), IID over the
clients, MLP 20-64-64-4, SGD lr 0.5, batch 16, 2 local epochs, central
evaluation on the test split after every round. lepton-fed runs
``conf/experiment/scale_10k.yaml`` with ``privacy``/``secagg`` switched per variant and
the federation size per scale; secure aggregation uses the security-derived k, t
(2^-40 at 5 % colluders).

Engines: ``inprocess`` delivers every message in the benchmark's own process
(:class:`lepton_fed.inprocess.InProcessGrid`, the real ServerApp and ClientApp, no Ray):
framework cost without transport. ``ray`` runs Flower's simulation engine
(``run_simulation``; one actor per core). On a 2-core machine Ray at 10,000 clients /
1,000 per round takes minutes per round for plain Flower alone (38 s/round measured,
../shared/reference/stack-measured.md) and lepton-fed's setup contacts all 10,000 nodes,
so the default runs Ray only at the first scale (``--engine both``).

Every (engine, scale, variant) runs in a fresh process (``_common.run_worker``): round
seconds (round 1 excluded from medians: it pays one-off costs: imports, first-time
work of the nodes sampled), resident memory at the end of every round (in-process: the
process; Ray: the whole process tree, driver + Ray + actors) and the peak. Ratios are
lepton-fed variant / plain Flower at the same engine and scale. Runs also count the
messages the server sends per round, by type (``messages_per_round``: lepton-fed's from
its metrics rows, both engines; plain Flower's in-process only; column
``msgs/round``: median over rounds 2..N, the setup exchange not counted). With secure
aggregation the round keys travel in the setup exchange, so a round is the masked-input
(``train``) and ``query.secagg_unmask`` exchanges: 2 messages per sampled node.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import resource
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    backend_config,
    median,
    plain_sgd_epochs,
    print_table,
    quiet_env,
    run_worker,
    write_result,
)

FEATURES, CLASSES, ROWS_PER_CLIENT, SEED = 20, 4, 25, 0
LR, MOMENTUM, BATCH, EPOCHS, HIDDEN = 0.5, 0.0, 16, 2, (64, 64)
VARIANTS = ("flower", "lepton", "dp", "secagg", "both")
DEFAULT_DATA_DIR = Path(tempfile.gettempdir()) / "lepton-fed-scale"


# ------------------------------------------------------------------------------ data


def make_data(path: str | os.PathLike[str], rows: int, seed: int = SEED) -> Path:
    """Write the synthetic task as CSV (``f0..f19``, label ``y``); reuse an existing file."""
    p = Path(path)
    if p.is_file():
        return p
    from sklearn.datasets import make_classification

    X, y = make_classification(
        n_samples=rows, n_features=FEATURES, n_informative=10, n_redundant=4,
        n_classes=CLASSES, n_clusters_per_class=2, class_sep=1.0, random_state=seed)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_suffix(".tmp")
    header = ",".join([f"f{i}" for i in range(FEATURES)] + ["y"])
    data = np.column_stack([X.astype(np.float32), y])
    np.savetxt(tmp, data, delimiter=",", header=header, comments="",
               fmt=["%.6g"] * FEATURES + ["%d"])
    tmp.replace(p)
    return p


def data_file(clients: int, data_dir: Path = DEFAULT_DATA_DIR) -> Path:
    """The task's file for ``clients`` clients (25 rows each)."""
    rows = ROWS_PER_CLIENT * clients
    return make_data(data_dir / f"synthetic_{rows}.csv", rows)


# --------------------------------------------------------------- lepton-fed config


def lepton_overrides(variant: str, clients: int, per_round: int, rounds: int,
                     path: Path) -> list[str]:
    """The preset with privacy/secagg per variant and the federation size per scale."""
    ov = ["experiment=scale_10k", f"data.path={path}", f"federation.num_clients={clients}",
          f"federation.clients_per_round={per_round}", f"federation.rounds={rounds}",
          f"model.hidden=[{HIDDEN[0]},{HIDDEN[1]}]", f"client.lr={LR}",
          f"client.momentum={MOMENTUM}", f"client.batch_size={BATCH}",
          f"client.epochs={EPOCHS}", f"seed={SEED}", "device=cpu",
          "observe.tensorboard=false", "observe.progress=false"]
    ov.append("privacy=dpsgd" if variant in ("dp", "both") else "privacy=none")
    ov.append("secagg=on" if variant in ("secagg", "both") else "secagg=off")
    return ov


# ------------------------------------------------- the minimal plain-Flower app
# Module level of an importable module, so Ray pickles it by reference.

from flwr.app import (  # noqa: E402
    ArrayRecord,
    ConfigRecord,
    Context,
    Message,
    MetricRecord,
    RecordDict,
)
from flwr.clientapp import ClientApp  # noqa: E402
from flwr.serverapp import Grid, ServerApp  # noqa: E402
from flwr.serverapp.strategy import FedAvg  # noqa: E402


@lru_cache(maxsize=2)
def plain_split(path: str, parts: int) -> tuple[np.ndarray, np.ndarray, np.ndarray,
                                                list[np.ndarray]]:
    """(X standardised on the train split, y, test idx, IID parts of the train idx):
    the same split and partition as lepton-fed's (stratified 80/20, seed 0; permutation
    with seed 0 dealt into ``parts`` shards); cached per process."""
    import pandas as pd
    from sklearn.model_selection import train_test_split

    df = pd.read_csv(path)
    X = df[[f"f{i}" for i in range(FEATURES)]].to_numpy(np.float32)
    y = df["y"].to_numpy(np.int64)
    tr, te = train_test_split(np.arange(len(y)), test_size=0.2, random_state=SEED, stratify=y)
    tr, te = np.sort(tr), np.sort(te)
    mu, sd = X[tr].mean(0), X[tr].std(0) + 1e-8
    Xs = ((X - mu) / sd).astype(np.float32)
    perm = np.random.default_rng(SEED).permutation(len(tr))
    return Xs, y, te, [tr[np.sort(p)] for p in np.array_split(perm, parts)]


def plain_net() -> Any:
    """MLP 20-64-64-4."""
    from torch import nn

    return nn.Sequential(nn.Linear(FEATURES, HIDDEN[0]), nn.ReLU(),
                         nn.Linear(HIDDEN[0], HIDDEN[1]), nn.ReLU(),
                         nn.Linear(HIDDEN[1], CLASSES))


plain_client = ClientApp()


@plain_client.train()
def plain_train(msg: Message, context: Context) -> Message:
    """One local epoch on this node's partition; reply weights + num-examples."""

    cfg = msg.content["config"]
    X, y, _, parts = plain_split(str(cfg["path"]), int(context.node_config["num-partitions"]))
    rows = parts[int(context.node_config["partition-id"])]
    model = plain_net()
    model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
    mean_loss = plain_sgd_epochs(model, X, y, rows, cfg)
    return Message(RecordDict({
        "arrays": ArrayRecord(model.state_dict()),
        "metrics": MetricRecord({"train-loss": mean_loss,
                                 "num-examples": len(rows)})}), reply_to=msg)


def run_plain(grid: Grid, path: str, clients: int, per_round: int, rounds: int,
              on_round: Any) -> dict[str, Any]:
    """FedAvg.start with central evaluation; ``on_round(rnd)`` after each evaluation."""
    import torch
    from torch import nn

    X, y, te, _ = plain_split(path, clients)
    stamps: list[float] = []
    accs: list[float] = []

    def evaluate_fn(rnd: int, arrays: ArrayRecord) -> MetricRecord:
        model = plain_net()
        model.load_state_dict(arrays.to_torch_state_dict())
        model.eval()
        with torch.no_grad():
            logits = model(torch.from_numpy(X[te]))
            loss = float(nn.functional.cross_entropy(logits, torch.from_numpy(y[te])))
            acc = float((logits.argmax(1).numpy() == y[te]).mean())
        accs.append(acc)
        stamps.append(time.monotonic())
        on_round(rnd)
        return MetricRecord({"accuracy": acc, "loss": loss})

    torch.manual_seed(SEED)
    FedAvg(fraction_train=per_round / clients, fraction_evaluate=0.0,
           min_train_nodes=per_round, min_available_nodes=clients).start(
        grid=grid, initial_arrays=ArrayRecord(plain_net().state_dict()), num_rounds=rounds,
        evaluate_fn=evaluate_fn,
        train_config=ConfigRecord({"lr": LR, "momentum": MOMENTUM, "batch-size": BATCH,
                                   "epochs": EPOCHS, "path": path}))
    return {"round_seconds": [b - a for a, b in zip(stamps, stamps[1:], strict=False)],
            "accuracy": accs[1:]}


# ------------------------------------------------------------------------- memory


def _rss_tree() -> int:
    """Resident bytes of this process and all its descendants (Ray's included), from
    /proc (Linux)."""
    parent: dict[int, int] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    parent[int(d)] = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
    tree, frontier = {os.getpid()}, [os.getpid()]
    while frontier:
        p = frontier.pop()
        kids = [c for c, pp in parent.items() if pp == p and c not in tree]
        tree.update(kids)
        frontier += kids
    total = 0
    for pid in tree:
        try:
            with open(f"/proc/{pid}/statm") as f:
                total += int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError, IndexError):
            continue
    return total


class _Sampler:
    """Samples the process tree's RSS every ``every`` s (the tree's peak)."""

    def __init__(self, every: float = 0.5) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, args=(every,), daemon=True)
        self._t.start()

    def _run(self, every: float) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, _rss_tree())
            self._stop.wait(every)

    def stop(self) -> int:
        self._stop.set()
        self._t.join()
        return self.peak


@contextmanager
def _observe_lepton(observer: Any) -> Iterator[None]:
    """Add ``observer`` to the observers of the ServerApp body (``lepton_fed.server.app``
    calls ``run_federation``): the round rows without the run directory."""
    import lepton_fed.server.app as sapp

    orig = sapp.run_federation

    def wrapped(grid: Any, cfg: Any, writer: Any, observers: Any = (), **kw: Any) -> Any:
        return orig(grid, cfg, writer, [*observers, observer], **kw)

    sapp.run_federation = wrapped
    try:
        yield
    finally:
        sapp.run_federation = orig


# ------------------------------------------------------------------------ workers


def worker(kind: str, engine: str, clients: int, per_round: int, rounds: int,
           data_dir: Path, result: Path) -> None:
    """One simulation; writes round seconds, RSS per round and peaks to ``result``."""
    import logging

    quiet_env()
    logging.getLogger("flwr").setLevel(logging.ERROR)
    import torch

    torch.set_num_threads(1)  # as a Ray actor with num_cpus=1 (lepton-fed sets it per round)
    path = data_file(clients, data_dir)
    out: dict[str, Any] = {"kind": kind, "engine": engine, "clients": clients,
                           "per_round": per_round}
    rss: list[float] = []
    stamps: list[tuple[float, float]] = []  # (wall, CPU of this process) at each round end
    tree = engine == "ray"

    def on_round(_: Any = None) -> None:
        stamps.append((time.monotonic(), time.process_time()))
        rss.append((_rss_tree() if tree else _rss_self()) / 2**20)

    sampler = _Sampler() if tree else None
    t0 = time.monotonic()
    if kind == "flower":
        out |= _run_flower(engine, str(path), clients, per_round, rounds, on_round)
    else:
        out |= _run_lepton(kind, engine, path, clients, per_round, rounds, on_round)
    out["wall_s"] = time.monotonic() - t0
    if kind == "flower":  # its evaluate_fn also runs at round 0
        rss, stamps = rss[1:], stamps[1:]
    out["rss_mib_per_round"] = rss
    # rounds 2..N from one round's end to the next (the same span for every variant)
    out["round_wall_s"] = [b[0] - a[0] for a, b in zip(stamps, stamps[1:], strict=False)]
    out["round_cpu_s"] = [b[1] - a[1] for a, b in zip(stamps, stamps[1:], strict=False)]
    out["peak_rss_mib"] = (sampler.stop() / 2**20 if sampler is not None else
                           resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    result.write_text(json.dumps(out))


def _message_counts(seen: list[Any]) -> dict[str, int]:
    """Messages the plain-Flower app's server sent since the last round end, by type
    (in-process: every delivered request got the reply ``seen`` holds; lepton-fed's
    rows list their own exchanges)."""
    out: dict[str, int] = defaultdict(int)
    for m in seen:
        out[m.metadata.message_type] += 1
    return dict(sorted(out.items()))


def _round_messages(r: dict[str, Any]) -> str:
    """Median over rounds 2..N of the messages per round (setup excluded), '-' if unknown."""
    per = [sum(v for k, v in c.items() if k != "query.setup")
           for c in r.get("messages_per_round", [])[1:]]
    return f"{median(per):.0f}" if per else "-"


def _rss_self() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _run_flower(engine: str, path: str, clients: int, per_round: int, rounds: int,
                on_round: Any) -> dict[str, Any]:
    import scale as mod  # importable name: Ray pickles the app by reference

    if engine == "inprocess":
        from lepton_fed.inprocess import InProcessGrid

        grid = InProcessGrid(mod.plain_client, clients)

        counts: list[dict[str, int]] = []

        def at_round_end(rnd: int) -> None:
            counts.append(_message_counts(grid.seen))
            grid.seen.clear()  # the grid's own audit log of replies: harness, not Flower
            on_round(rnd)

        res = mod.run_plain(grid, path, clients, per_round, rounds, at_round_end)
        return res | {"messages_per_round": counts[1:]}  # [0]: the round-0 evaluation
    from flwr.simulation import run_simulation

    got: dict[str, Any] = {}
    server = ServerApp()

    @server.main()
    def main(grid: Grid, context: Context) -> None:
        got.update(mod.run_plain(grid, path, clients, per_round, rounds, on_round))

    run_simulation(server_app=server, client_app=mod.plain_client, num_supernodes=clients,
                   backend_name="ray", backend_config=backend_config())
    return got


class _Rows:
    def __init__(self, on_round: Any) -> None:
        self.rows: list[dict[str, Any]] = []
        self.on_round_cb = on_round

    def on_round(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        self.on_round_cb()

    def on_finish(self, summary: dict[str, Any]) -> None:
        self.summary = summary


def _run_lepton(kind: str, engine: str, path: Path, clients: int, per_round: int,
                rounds: int, on_round: Any) -> dict[str, Any]:
    from lepton_fed.config import compose
    from lepton_fed.config.validate import raise_if, validate

    cfg = compose(lepton_overrides(kind, clients, per_round, rounds, path))
    raise_if(validate(cfg))
    obs = _Rows(on_round)
    t_setup = time.monotonic()
    with tempfile.TemporaryDirectory() as d:
        if engine == "inprocess":
            from lepton_fed.client.app import app
            from lepton_fed.inprocess import InProcessGrid
            from lepton_fed.server.outputs import RunWriter
            from lepton_fed.server.rounds import run_federation
            from lepton_fed.sim_bundle import write_bundle

            bundle = write_bundle(Path(d) / "bundle", cfg)
            grid = InProcessGrid(app, clients, bundle=bundle)

            def at_round_end() -> None:
                grid.seen.clear()  # the grid's own audit log of replies: harness only
                on_round()

            obs.on_round_cb = at_round_end
            t_setup = time.monotonic()
            run_federation(grid, cfg, RunWriter(Path(d) / "run"), [obs])
            import pickle

            states = [len(pickle.dumps(c.state)) for c in grid.contexts.values()]
            touched = [b for b in states if b > min(states)]
            state_info = {"node_state_bytes_max": max(states),
                          "node_state_bytes_mean_sampled": float(np.mean(touched or states)),
                          "node_state_bytes_total": int(sum(states))}
        else:
            from lepton_fed.simulation import simulate

            with _observe_lepton(obs):
                simulate(cfg, Path(d) / "run")
    total = time.monotonic() - t_setup
    secs = [r["seconds"] for r in obs.rows]
    s0 = obs.rows[0]
    info = {"round_seconds": secs, "accuracy": [r.get("accuracy") for r in obs.rows],
            "setup_s": total - sum(secs), "bytes_up_per_client": [
                r["bytes_up"] / max(r["clients"], 1) for r in obs.rows],
            "bytes_down_per_client": [r["bytes_down"] / max(r["clients"], 1) for r in obs.rows]}
    if "secagg" in s0:
        info["secagg"] = {k: s0["secagg"].get(k) for k in (
            "neighbours", "threshold", "security_bits", "correctness_bits")}
    info["epsilon"] = obs.rows[-1].get("epsilon")
    # the run's own exchange log (both engines): messages sent per round, by type
    info["messages_per_round"] = [{e["type"]: e["sent"] for e in r.get("exchanges", [])}
                                  for r in obs.rows]
    if engine == "inprocess":
        info |= state_info
    return info


# ------------------------------------------------------------------------ profile


def _timed(acc: dict[str, list[float]], obj: Any, name: str, label: str,
           patched: list[tuple[Any, str, Any]], missing: list[str]) -> None:
    orig = getattr(obj, name, None)
    if orig is None:
        missing.append(f"{getattr(obj, '__name__', obj)}.{name}")
        return
    patched.append((obj, name, orig))

    def timed(*a: Any, **k: Any) -> Any:
        t0 = time.thread_time()  # CPU time: steadier than wall time on a shared machine
        try:
            return orig(*a, **k)
        finally:
            acc[label].append(time.thread_time() - t0)

    setattr(obj, name, timed)


#: (module, attribute, label): what the breakdown times. Inner parts are timed where
#: they are looked up, so each label is one component (nested inside "client: train
#: handler" unless it says server).
COMPONENTS = [
    ("lepton_fed.client.app", "_train", "client: train handler (whole)"),
    ("lepton_fed.client.app", "_secagg_step", "client: advertise/unmask handler (whole)"),
    ("lepton_fed.client.app", "_policy_decline", "client: policy check of the request"),
    ("lepton_fed.client.node", "parse_config", "client: config parsing (cached)"),
    ("lepton_fed.client.round", "node_data", "client: data loading (node_data)"),
    ("lepton_fed.client.round", "build_model", "client: build_model"),
    ("lepton_fed.client.round", "from_array_record", "client: message -> arrays"),
    ("lepton_fed.privacy.dpsgd", "dp_ready", "client: dp_ready (Opacus validation)"),
    ("lepton_fed.client.dp", "reserve_dp_round", "client: ledger reserve (DP)"),
    ("lepton_fed.client.dp", "record_round", "client: ledger settle + epsilon (DP)"),
    ("lepton_fed.client.round", "train_local", "client: train_local (incl. Opacus)"),
    ("lepton_fed.privacy.dpsgd", "make_private", "client: Opacus make_private"),
    ("lepton_fed.client.secure", "load_client", "client: secagg state load"),
    ("lepton_fed.client.secure", "save_client", "client: secagg state save"),
    ("lepton_fed.secagg.client.steps", "verified_peer_keys", "client: Ed25519 checks of neighbours"),
    ("lepton_fed.secagg.client.steps", "open_round", "client: request checks (cohort hash, graph)"),
    ("lepton_fed.secagg.client.steps", "split_secret", "client: Shamir split"),
    ("lepton_fed.secagg.client.steps", "apply_masks", "client: mask expansion"),
    ("lepton_fed.secagg.client.steps", "seal_share", "client: share encryption"),
    ("lepton_fed.secagg.client.SecAggClient", "advertise", "client: advertise (key pairs, signatures)"),
    ("lepton_fed.secagg.client.SecAggClient", "unmask", "client: unmask reply"),
    ("lepton_fed.server.secure.SecureAggregator", "round", "server: secure round (whole, incl. clients)"),
    ("lepton_fed.secagg.server.SecAggServer", "start_round", "server: secagg start_round"),
    ("lepton_fed.secagg.server.SecAggServer", "collect_masked_inputs", "server: secagg sum of masked inputs"),
    ("lepton_fed.secagg.server.SecAggServer", "collect_unmask", "server: secagg unmask (Shamir, masks)"),
    ("lepton_fed.secagg.server.SecAggServer", "collect_advertisements", "server: secagg adverts"),
    ("lepton_fed.server.rounds._Run", "train_messages", "server: train messages"),
    ("lepton_fed.server.rounds._Run", "evaluate", "server: evaluation"),
    ("lepton_fed.server.checkpoint", "save", "server: checkpoint"),
]


def _resolve(path: str) -> Any:
    import importlib

    parts = path.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for p in parts[i:]:
            obj = getattr(obj, p)
        return obj
    raise ImportError(path)


def _profiled_run(clients: int, per_round: int, rounds: int, data_dir: Path, variant: str,
                  timers: bool) -> dict[str, Any]:
    """One in-process run; from round 2 on either wrapped timers + serialisation
    (``timers``) or cProfile (never both: cProfile inflates what the timers measure)."""
    import pickle

    import torch

    from lepton_fed.client.app import app
    from lepton_fed.config import compose
    from lepton_fed.inprocess import InProcessGrid
    from lepton_fed.server.outputs import RunWriter
    from lepton_fed.server.rounds import run_federation
    from lepton_fed.sim_bundle import write_bundle

    torch.set_num_threads(1)
    path = data_file(clients, data_dir)
    cfg = compose(lepton_overrides(variant, clients, per_round, rounds, path))
    acc: dict[str, list[float]] = defaultdict(list)
    patched: list[tuple[Any, str, Any]] = []
    missing: list[str] = []
    if timers:
        for mod, name, label in COMPONENTS:
            _timed(acc, _resolve(mod), name, label, patched, missing)
    ser: dict[str, list[float]] = defaultdict(list)
    prof = cProfile.Profile()
    on = {"steady": False}
    rows: list[dict[str, Any]] = []

    grids: list[Any] = []

    class Obs:
        def on_round(self, row: dict[str, Any]) -> None:
            rows.append(row)
            grids[0].seen.clear()  # the grid's own audit log of replies: harness only
            if row["round"] == 1:  # from round 2 on: steady state
                for v in acc.values():
                    v.clear()
                on["steady"] = True
                if not timers:
                    prof.enable()

        def on_finish(self, summary: dict[str, Any]) -> None:
            prof.disable()

    try:
        with tempfile.TemporaryDirectory() as d:
            grid = InProcessGrid(app, clients, bundle=write_bundle(Path(d) / "bundle", cfg))
            grids.append(grid)
            orig = grid._deliver

            def pickled(what: str, obj: Any) -> None:
                """What moving ``obj`` to a Ray actor and back costs (CPU ms, bytes)."""
                t0 = time.thread_time()
                blob = pickle.dumps(obj)
                pickle.loads(blob)
                ser[f"{what}: pickle+unpickle ms"].append(1e3 * (time.thread_time() - t0))
                ser[f"{what}: bytes"].append(len(blob))

            def deliver(msg: Message) -> Message | None:
                ctx = grid.contexts[msg.metadata.dst_node_id]
                measure = timers and on["steady"]
                if measure:
                    pickled("request+context", (msg, ctx))
                r = orig(msg)
                if measure and r is not None:
                    pickled("reply+context", (r, ctx))
                    ser["context: bytes"].append(len(pickle.dumps(ctx)))
                return r

            grid._deliver = deliver  # type: ignore[method-assign]
            run_federation(grid, cfg, RunWriter(Path(d) / "run"), [Obs()])
    finally:
        for obj, name, orig_fn in reversed(patched):
            setattr(obj, name, orig_fn)
    steady = rounds - 1
    out: dict[str, Any] = {"round_seconds": [r["seconds"] for r in rows]}
    if timers:
        out["components"] = {
            label: {"calls_per_round": len(v) / steady,
                    "ms_per_call": 1e3 * float(np.mean(v)) if v else 0.0,
                    "ms_per_client": 1e3 * float(np.sum(v)) / (steady * per_round)}
            for label, v in acc.items()}
        out["not_timed"] = missing
        out["serialisation"] = {k: float(np.mean(v)) for k, v in ser.items()}
        return out
    st = pstats.Stats(prof)
    top = []
    root = str(Path(__file__).resolve().parents[1]) + "/"
    for (fname, _line, func), (_cc, nc, tt, ct, _callers) in st.stats.items():  # type: ignore[attr-defined]
        if "lepton_fed" in fname and "inprocess.py" not in fname:
            top.append({"where": f"{fname.split(root)[-1]}:{func}", "calls": nc,
                        "cum_ms_per_client": 1e3 * ct / (steady * per_round),
                        "own_ms_per_client": 1e3 * tt / (steady * per_round)})
    top.sort(key=lambda r: -r["cum_ms_per_client"])
    out["cprofile_top"] = top[:40]
    return out


def profile(clients: int, per_round: int, rounds: int, data_dir: Path,
            variant: str = "both") -> dict[str, Any]:
    """In-process, rounds 2..N: per-call timers of the components and what Flower's Ray
    backend would pickle per task (the message and the node's Context, both ways); then
    a separate run under cProfile (lepton_fed functions, cumulative)."""
    timed = _profiled_run(clients, per_round, rounds, data_dir, variant, timers=True)
    prof = _profiled_run(clients, per_round, rounds, data_dir, variant, timers=False)
    return {"variant": variant, "clients": clients, "per_round": per_round, "rounds": rounds,
            "round_seconds_timed_run": timed["round_seconds"],
            "round_seconds_cprofile_run": prof["round_seconds"],
            "components": timed["components"], "not_timed": timed["not_timed"],
            "serialisation": timed["serialisation"], "cprofile_top": prof["cprofile_top"]}


# --------------------------------------------------------------------------- main


def _scales(text: str) -> list[tuple[int, int]]:
    out = []
    for part in text.split(","):
        a, b = part.split(":")
        out.append((int(a), int(b)))
    return out


def main() -> None:  # noqa: C901 - one report
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--scales", default="1000:100,10000:1000")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--engine", choices=["inprocess", "ray", "both"], default="inprocess")
    ap.add_argument("--ray-scales", default="1000:100",
                    help="scales run on Ray with --engine ray/both")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--ray-variants", default=None,
                    help="variants on Ray at scales above 1,000 clients (default: --variants)")
    ap.add_argument("--profile", action="store_true", help="per-client cost breakdown")
    ap.add_argument("--profile-scale", default="10000:1000")
    ap.add_argument("--profile-only", action="store_true")
    ap.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    ap.add_argument("--make-data", type=Path, help="write the synthetic data set and exit")
    ap.add_argument("--rows", type=int, default=ROWS_PER_CLIENT * 10_000)
    ap.add_argument("--out", default="scale")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.make_data:
        print(make_data(a.make_data, a.rows))
        return
    if a.worker:
        kind, engine, n, k = a.worker.split(":")
        worker(kind, engine, int(n), int(k), a.rounds, a.data_dir, a.result)
        return
    variants = a.variants.split(",")
    runs: list[dict[str, Any]] = []
    plan = []
    if not a.profile_only:
        if a.engine in ("inprocess", "both"):
            plan += [("inprocess", n, k) for n, k in _scales(a.scales)]
        if a.engine in ("ray", "both"):
            plan += [("ray", n, k) for n, k in _scales(a.ray_scales)]
    for engine, n, k in plan:
        data_file(n, a.data_dir)
        todo = (a.ray_variants.split(",") if engine == "ray" and n > 1000 and a.ray_variants
                else variants)
        for v in todo:
            print(f"{engine} {n} clients / {k} per round: {v} ...", flush=True)
            r = run_worker(__file__, [f"{v}:{engine}:{n}:{k}", "--rounds", str(a.rounds),
                                      "--data-dir", str(a.data_dir)],
                           timeout=7200, raise_on_failure=False)
            r.setdefault("kind", v)
            r.setdefault("engine", engine)
            r.setdefault("clients", n)
            r.setdefault("per_round", k)
            runs.append(r)
            if "failed" in r:
                print(f"  FAILED: {r['log_tail'][-1500:]}", flush=True)
            else:
                print(f"  rounds {[round(x, 2) for x in r['round_seconds']]} s (CPU r2+: "
                      f"{[round(x, 2) for x in r['round_cpu_s']]}), peak "
                      f"{r['peak_rss_mib']:.0f} MiB", flush=True)
    table, ratios = [], {}
    for engine, n, k in plan:
        group = [r for r in runs if (r["engine"], r["clients"]) == (engine, n)
                 and "failed" not in r]
        base = next((r for r in group if r["kind"] == "flower"), None)
        for r in group:
            wall, cpu = median(r["round_wall_s"]), median(r["round_cpu_s"])
            rw = wall / median(base["round_wall_s"]) if base else float("nan")
            rc = cpu / median(base["round_cpu_s"]) if base else float("nan")
            # in-process, CPU time is the steadier figure; on Ray the driver's CPU is not
            # the round's, so wall time
            ratios[f"{engine}/{n}/{r['kind']}"] = {"wall": rw, "cpu": rc}
            table.append([engine, f"{n}/{k}", r["kind"], f"{wall:.2f}", f"{rw:.2f}x",
                          f"{cpu:.2f}" if engine == "inprocess" else "-",
                          f"{rc:.2f}x" if engine == "inprocess" else "-",
                          f"{r['round_seconds'][0]:.1f}", f"{r.get('setup_s', 0.0):.1f}",
                          f"{r['peak_rss_mib']:.0f}",
                          " ".join(f"{x:.0f}" for x in r["rss_mib_per_round"]),
                          f"{np.mean(r.get('bytes_up_per_client', [0])[1:] or [0]) / 1024:.1f}",
                          _round_messages(r)])
    if table:
        print_table(["engine", "clients/round", "variant", "round wall s (r2+)", "vs Flower",
                     "round CPU s", "vs Flower", "round 1 s", "setup s", "peak MiB",
                     "RSS MiB at each round end", "up KiB/client", "msgs/round"], table,
                    title="\nround time and memory (one run; medians over rounds 2..N)")
    payload: dict[str, Any] = {
        "task": {"data": f"synthetic make_classification, {FEATURES} features, {CLASSES} "
                         f"classes, {ROWS_PER_CLIENT} rows per client (80/20)",
                 "model": f"MLP {FEATURES}-{HIDDEN[0]}-{HIDDEN[1]}-{CLASSES}",
                 "rounds": a.rounds, "optimizer": f"SGD lr {LR} momentum {MOMENTUM}, "
                                                  f"batch {BATCH}, {EPOCHS} epoch",
                 "preset": "conf/experiment/scale_10k.yaml",
                 "backend_config": backend_config()},
        "runs": runs, "ratios": ratios}
    if a.profile or a.profile_only:
        n, k = _scales(a.profile_scale)[0]
        print(f"\nprofile: both, in-process, {n} clients / {k} per round ...", flush=True)
        prof = profile(n, k, max(a.rounds, 3), a.data_dir)
        payload["profile"] = prof
        print_table(["component (rounds 2+)", "calls/round", "ms/call", "ms per client"],
                    [[lab, f"{v['calls_per_round']:.0f}", f"{v['ms_per_call']:.3f}",
                      f"{v['ms_per_client']:.3f}"] for lab, v in prof["components"].items()],
                    title="\nper-client cost breakdown (in-process, wrapped timers)")
        print_table(["serialisation (as Ray pickles a task)", "mean"],
                    [[k2, f"{v:.3f}"] for k2, v in prof["serialisation"].items()])
        print_table(["cProfile: lepton_fed function", "calls", "cum ms/client", "own ms/client"],
                    [[t["where"], t["calls"], f"{t['cum_ms_per_client']:.3f}",
                      f"{t['own_ms_per_client']:.3f}"] for t in prof["cprofile_top"][:25]])
    path = write_result(a.out, payload)
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
