"""Secure aggregation in real Ray simulations: lepton-fed vs Flower 1.42's legacy SecAgg+.

Run: ``python benchmarks/secagg_simulation.py`` (n = 10, 50, 100, 200; ~10-20 minutes on 2
cores; writes ``benchmarks/results/secagg_simulation.json``). ``--quick`` runs n = 10, 50
only; ``--sizes 10 --rounds 2 --no-wait`` is a smoke test.

Task (the same for all four apps): sklearn digits through lepton-fed's own data path
(``federated_split``: stratified 80/20, seed 0, train split IID over n clients, pooled
standardisation), lepton-fed's MLP 64-128-128-10 (26,122 parameters), SGD with lepton-fed's
default client settings (lr 0.05, momentum 0.9), batch 16, 1 local epoch, every client
sampled every round, central evaluation on the test split after every round.

Apps, each in a fresh Python process (Ray isolated), all through ``run_simulation`` with
lepton-fed's backend config (1 CPU per client, ``num_cpus`` = the machine's cores):

* ``lepton-plain``: ``lepton_fed.simulation.simulate`` with ``secagg=off``;
* ``lepton-secagg``: the same with ``secagg=on`` (k and t derived from the default
  security level, ``default_params``; the nodes use the simulation bundle's roster when
  the launcher provides one);
* ``flower-plain``: a minimal legacy Flower app written here: ``NumPyClient`` training the
  same model on the same partition (lepton-fed's ``train_local``, same seeds), legacy
  ``flwr.server.strategy.FedAvg`` in ``DefaultWorkflow`` with a ``LegacyContext``;
* ``flower-secagg``: the same plus ``SecAggPlusWorkflow`` and ``secaggplus_mod``, with
  ``num_shares = k + 1`` (Flower counts the node itself among its shares; ours does not)
  and ``reconstruction_threshold = t`` for our (k, t) at this n.

Per-round seconds: lepton-fed, the ``seconds`` field of ``metrics.jsonl`` (round start to
after the central evaluation); Flower, the time between successive ``evaluate_fn`` calls
(round 0's evaluation runs before round 1), i.e. the same span. Round 1 is reported
separately (Ray actor start-up; our key advertisement); the headline is the median of
rounds 2..R. Upload: ours from ``bytes_up`` in ``metrics.jsonl``; Flower's measured on
the server by wrapping ``grid.send_and_receive`` and summing the replies' payload bytes
(array bytes, bytes/str lengths including each element of a list of bytes, 8 bytes per
scalar). Each exchange is also timed (lepton-fed by wrapping its ``_exchange`` helpers;
benchmark-only patches of module attributes, nothing in the library changes).

Before the first run the script waits (``--wait``, on by default) until the 1-minute load
average is below ``--quiet-load`` (polled every 30 s, at most ``--max-wait`` s), and it
records the load average before and after every run.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    RESULTS_DIR,
    ROOT,
    median,
    print_table,
    timed_server_main,
    write_result,
)

KINDS = ("lepton-plain", "lepton-secagg", "flower-plain", "flower-secagg")
SEED, BATCH, EPOCHS, HIDDEN = 0, 16, 1, (128, 128)


def lepton_overrides(n: int, rounds: int, secagg: bool = False) -> list[str]:
    """The lepton-fed config of this task (lr/momentum: lepton-fed's client defaults)."""
    return [
        "data=digits",
        "model=mlp",
        f"model.hidden=[{HIDDEN[0]},{HIDDEN[1]}]",
        f"client.batch_size={BATCH}",
        f"client.epochs={EPOCHS}",
        f"federation.num_clients={n}",
        f"federation.clients_per_round={n}",
        f"federation.rounds={rounds}",
        f"seed={SEED}",
        "device=cpu",
        f"secagg={'on' if secagg else 'off'}",
    ]


def secagg_kt(n: int, rounds: int) -> tuple[int, int]:
    """Our (k, t) for a full cohort of n: ``default_params(...).for_cohort(n)``."""
    from lepton_fed.secagg import default_params

    return default_params(num_clients=n, rounds=rounds).for_cohort(n)


# --------------------------------------------------------------------------------------
# The minimal legacy Flower app (module level of an importable module, so Ray pickles it
# by reference). It reuses lepton-fed's data, model and local-training helpers so the
# task is identical; only the federation and aggregation are Flower's.
# --------------------------------------------------------------------------------------

_TASK: dict[int, dict[str, Any]] = {}


def task(n: int) -> dict[str, Any]:
    """cfg, split, pooled scaler, model spec and scaled test set for n clients (cached)."""
    if n not in _TASK:
        from lepton_fed.config import compose
        from lepton_fed.data.federated import federated_split
        from lepton_fed.data.preprocess import FeatureStats, Scaler
        from lepton_fed.models.spec import model_spec

        cfg = compose(lepton_overrides(n, 4))
        split = federated_split(cfg)
        data = split.data
        # lepton-fed's scaler: pooled mean/std from every client's feature sums
        scaler = Scaler.from_stats([FeatureStats.of(split.client(i).X) for i in range(n)])
        spec = model_spec(cfg.model, num_features=data.num_features,
                          num_classes=data.num_classes, input_shape=data.input_shape)
        test = split.test()
        _TASK[n] = {"cfg": cfg, "split": split, "scaler": scaler, "spec": spec,
                    "Xte": scaler.transform(test.X), "yte": test.y}
    return _TASK[n]


def initial_ndarrays(n: int) -> list[np.ndarray]:
    """The initial global model, built as lepton-fed builds it (seeded, then built)."""
    from lepton_fed.models import build_model, get_state
    from lepton_fed.utils.seed import seed_everything

    seed_everything(SEED)
    return list(get_state(build_model(task(n)["spec"])).values())


def _digits_client_cls() -> type:
    from flwr.client import NumPyClient

    class DigitsClient(NumPyClient):
        """Train the MLP one epoch on partition ``pid`` with lepton-fed's train_local."""

        def __init__(self, pid: int, n: int) -> None:
            self.pid, self.n = pid, n

        def get_parameters(self, config: dict[str, Any]) -> list[np.ndarray]:
            return initial_ndarrays(self.n)

        def fit(self, parameters: list[np.ndarray], config: dict[str, Any]
                ) -> tuple[list[np.ndarray], int, dict[str, Any]]:
            import torch

            from lepton_fed.client.train import train_local
            from lepton_fed.models import build_model, get_state, set_state
            from lepton_fed.utils.seed import derive_seed

            torch.set_num_threads(1)  # as lepton-fed's client (1 CPU per client)
            t = task(self.n)
            cfg = t["cfg"]
            data = t["split"].client(self.pid)
            model = build_model(t["spec"])
            keys = list(get_state(model).keys())
            set_state(model, dict(zip(keys, parameters, strict=True)))
            rnd = int(config["server-round"])
            res = train_local(
                model, t["scaler"].transform(data.X), data.y, epochs=cfg.client.epochs,
                batch_size=cfg.client.batch_size, lr=cfg.client.lr,
                momentum=cfg.client.momentum, optimizer=cfg.client.optimizer,
                device="cpu", seed=derive_seed(cfg.seed, "train", rnd, self.pid),
            )
            loss = float(res.loss) if math.isfinite(res.loss) else 0.0
            return list(get_state(model).values()), int(len(data.y)), {"train-loss": loss}

    return DigitsClient


def client_fn(context: Any) -> Any:
    """Legacy client_fn: one NumPyClient per node, on partition ``partition-id``."""
    nc = context.node_config
    return _digits_client_cls()(int(nc["partition-id"]), int(nc["num-partitions"])).to_client()


def _client_apps() -> tuple[Any, Any]:
    from flwr.client import ClientApp
    from flwr.client.mod import secaggplus_mod

    return ClientApp(client_fn=client_fn), ClientApp(client_fn=client_fn, mods=[secaggplus_mod])


flower_plain_client, flower_secagg_client = _client_apps()


def make_flower_server(n: int, rounds: int, secagg: bool, out: dict[str, Any]) -> Any:
    """Legacy ServerApp: FedAvg in DefaultWorkflow, optionally with SecAggPlusWorkflow."""
    from flwr.common import ndarrays_to_parameters
    from flwr.server import LegacyContext, ServerApp, ServerConfig
    from flwr.server.strategy import FedAvg
    from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow

    app = ServerApp()

    @app.main()
    def main(grid: Any, context: Any) -> None:
        from lepton_fed.utils.records import content_bytes

        out["main_start"] = time.monotonic()
        calls: list[dict[str, Any]] = []
        orig = grid.send_and_receive

        def send_and_receive(messages: Any, *a: Any, **k: Any) -> Any:
            msgs = list(messages)
            t0 = time.monotonic()
            replies = list(orig(msgs, *a, **k))
            ok = [r for r in replies if not r.has_error()]
            calls.append({
                "t_end": time.monotonic(), "s": time.monotonic() - t0,
                "type": msgs[0].metadata.message_type if msgs else "",
                "sent": len(msgs), "ok": len(ok), "errors": len(replies) - len(ok),
                "bytes_down": sum(content_bytes(m.content) for m in msgs),
                "bytes_up": sum(content_bytes(r.content) for r in ok),
                "bytes_up_max": max((content_bytes(r.content) for r in ok), default=0),
            })
            return replies

        grid.send_and_receive = send_and_receive  # benchmark-only instance patch
        stamps: list[float] = []
        accs: list[float] = []
        t = task(n)

        def evaluate_fn(rnd: int, params: list[np.ndarray], config: dict[str, Any]
                        ) -> tuple[float, dict[str, Any]]:
            from lepton_fed.models import build_model, get_state, set_state
            from lepton_fed.server.evaluate import evaluate_model

            model = build_model(t["spec"])
            keys = list(get_state(model).keys())
            set_state(model, dict(zip(keys, params, strict=True)))
            ev = evaluate_model(model, t["Xte"], t["yte"], "cpu")
            accs.append(ev["accuracy"])
            stamps.append(time.monotonic())
            return ev["loss"], {"accuracy": ev["accuracy"]}

        strategy = FedAvg(
            fraction_fit=1.0, fraction_evaluate=0.0, min_fit_clients=n,
            min_evaluate_clients=0, min_available_clients=n, evaluate_fn=evaluate_fn,
            on_fit_config_fn=lambda rnd: {"server-round": rnd},
            initial_parameters=ndarrays_to_parameters(initial_ndarrays(n)),
        )
        ctx = LegacyContext(context=context, config=ServerConfig(num_rounds=rounds),
                            strategy=strategy)
        fit_wf = None
        if secagg:
            k, thr = secagg_kt(n, rounds)
            out["flower_num_shares"], out["flower_threshold"] = k + 1, thr
            fit_wf = SecAggPlusWorkflow(num_shares=k + 1, reconstruction_threshold=thr)
        DefaultWorkflow(fit_workflow=fit_wf)(grid, ctx)
        out["main_end"] = time.monotonic()
        # stamps[0] is round 0's evaluation; round r spans stamps[r-1]..stamps[r]
        out["round_seconds"] = [b - a for a, b in zip(stamps, stamps[1:], strict=False)]
        out["accuracy"] = accs[1:]
        per_round: list[list[dict[str, Any]]] = [[] for _ in range(len(stamps) - 1)]
        for c in calls:
            for r in range(len(stamps) - 1):
                if stamps[r] < c["t_end"] <= stamps[r + 1]:
                    per_round[r].append({k: v for k, v in c.items() if k != "t_end"})
        out["exchanges"] = per_round
        out["bytes_up"] = [sum(c["bytes_up"] for c in pr) for pr in per_round]
        out["clients"] = [max((c["ok"] for c in pr), default=0) for pr in per_round]

    return app


def backend_config() -> dict[str, Any]:
    """A copy of lepton_fed/simulation.py's backend config (1 CPU per client)."""
    return {
        "client_resources": {"num_cpus": 1.0, "num_gpus": 0.0},
        "init_args": {"num_cpus": os.cpu_count() or 1, "include_dashboard": False,
                      "logging_level": "ERROR", "log_to_driver": True},
    }


# --------------------------------------------------------------------------------------
# Workers: one simulation per fresh process
# --------------------------------------------------------------------------------------


def _lepton_worker(n: int, rounds: int, secagg: bool, out: dict[str, Any]) -> None:
    """One lepton-fed Ray simulation; per-exchange timings come from the run's own
    metrics rows (``exchanges``) and summary (``setup_exchange``)."""
    from lepton_fed.config import compose
    from lepton_fed.simulation import simulate

    cfg = compose(lepton_overrides(n, rounds, secagg))
    with tempfile.TemporaryDirectory() as d, timed_server_main(out):
        out["t0"] = time.monotonic()
        summary = simulate(cfg, d)
        out["t1"] = time.monotonic()
        rows = [json.loads(s) for s in (Path(d) / "metrics.jsonl").read_text().splitlines()]
    out["round_seconds"] = [r["seconds"] for r in rows]
    out["accuracy"] = [r["accuracy"] for r in rows]
    out["bytes_up"] = [r["bytes_up"] for r in rows]
    out["clients"] = [r["clients"] for r in rows]
    out["secagg_rounds"] = [r.get("secagg") for r in rows]
    out["exchanges"] = [[{"s": e["seconds"], "type": e["type"], "sent": e["sent"],
                          "ok": e["answered"], "bytes_up": e["bytes_up"]}
                         for e in r.get("exchanges", [])] for r in rows]
    setup = summary.get("setup_exchange")
    out["setup_exchange"] = [] if not setup else [
        {"s": setup["seconds"], "type": setup["type"], "sent": setup["sent"],
         "ok": setup["answered"], "bytes_up": setup["bytes_up"]}]
    out["final_accuracy"] = summary["final"]["accuracy"]
    out["secagg_summary"] = {k: v for k, v in summary.get("secagg", {}).items() if k != "rounds"}


def worker(kind: str, n: int, rounds: int, result: Path) -> None:
    """Run one Ray simulation of ``kind`` and write its timings to ``result``."""
    import logging

    t_proc = time.monotonic()
    for k, v in (("FLWR_TELEMETRY_ENABLED", "0"),
                 ("FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION", "1"),
                 ("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0"), ("RAY_DEDUP_LOGS", "0")):
        os.environ.setdefault(k, v)
    out: dict[str, Any] = {"kind": kind, "n": n, "rounds": rounds}
    import flwr.simulation  # noqa: F401  (imports Ray before t0, for every kind)

    if kind.startswith("lepton"):
        _lepton_worker(n, rounds, kind == "lepton-secagg", out)
    else:
        import secagg_simulation as mod  # importable name: Ray pickles the apps by reference
        from flwr.simulation import run_simulation

        flwr_log = logging.getLogger("flwr")  # the level lepton-fed's simulate() sets
        flwr_log.propagate = False
        flwr_log.setLevel(logging.ERROR)
        mod.task(n)  # the server's data, as lepton-fed loads its split before round 1
        secagg = kind == "flower-secagg"
        out["t0"] = time.monotonic()
        run_simulation(server_app=mod.make_flower_server(n, rounds, secagg, out),
                       client_app=mod.flower_secagg_client if secagg else mod.flower_plain_client,
                       num_supernodes=n, backend_name="ray", backend_config=backend_config())
        out["t1"] = time.monotonic()
        if "round_seconds" not in out or len(out["round_seconds"]) < rounds:
            raise SystemExit(f"{kind}: the ServerApp did not finish its {rounds} rounds")
        out["final_accuracy"] = out["accuracy"][-1]
    t0, t1 = out.pop("t0"), out.pop("t1")
    ms, me = out.pop("main_start", t0), out.pop("main_end", t1)
    out["phases_s"] = {"before_main": ms - t0, "main": me - ms, "after_main": t1 - me,
                       "main_outside_rounds": me - ms - sum(out["round_seconds"])}
    out["sim_wall_s"] = t1 - t0
    out["worker_s"] = time.monotonic() - t_proc
    result.write_text(json.dumps(out, default=float))


def run_worker(kind: str, n: int, rounds: int, timeout: float) -> dict[str, Any]:
    """Launch one worker process; add its process wall time and the load averages."""
    with tempfile.TemporaryDirectory() as d:
        res = Path(d) / "r.json"
        env = dict(os.environ)
        here = str(Path(__file__).resolve().parent)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (here, str(ROOT), env.get("PYTHONPATH", "")) if p)
        load0 = os.getloadavg()
        t0 = time.monotonic()
        proc = subprocess.run(
            [sys.executable, __file__, "--worker", kind, "--sizes", str(n),
             "--rounds", str(rounds), "--result", str(res)],
            cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env,
        )
        wall = time.monotonic() - t0
        if proc.returncode != 0 or not res.exists():
            tail = (proc.stdout[-3000:] + "\n" + proc.stderr[-5000:]).strip()
            return {"kind": kind, "n": n, "failed": f"exit {proc.returncode}",
                    "log_tail": tail, "process_wall_s": wall}
        out = json.loads(res.read_text())
    out["process_wall_s"] = wall
    out["loadavg_before"] = [round(x, 2) for x in load0]
    out["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    return out


def wait_quiet(threshold: float, poll_s: float, max_wait_s: float) -> dict[str, Any]:
    """Wait until the 1-minute load average is below ``threshold`` (or give up)."""
    t0 = time.monotonic()
    samples = [round(os.getloadavg()[0], 2)]
    while samples[-1] >= threshold and time.monotonic() - t0 < max_wait_s:
        print(f"  load {samples[-1]:.2f} >= {threshold}: waiting "
              f"({time.monotonic() - t0:.0f}/{max_wait_s:.0f} s)", flush=True)
        time.sleep(poll_s)
        samples.append(round(os.getloadavg()[0], 2))
    quiet = samples[-1] < threshold
    return {"threshold": threshold, "waited_s": round(time.monotonic() - t0, 1),
            "quiet_at_start": quiet, "gave_up": not quiet, "samples_1min": samples,
            "loadavg_at_start": [round(x, 2) for x in os.getloadavg()]}


# --------------------------------------------------------------------------------------
# Analysis
# --------------------------------------------------------------------------------------


def _fit_line(xs: list[float], ys: list[float]) -> dict[str, float]:
    """Least squares y = a + b x, R^2, and the log-log exponent over the same points."""
    x, y = np.asarray(xs, float), np.asarray(ys, float)
    b, a = np.polyfit(x, y, 1)
    pred = a + b * x
    ss = float(np.sum((y - y.mean()) ** 2))
    r2 = 1.0 - float(np.sum((y - pred) ** 2)) / ss if ss > 0 else 1.0
    expo = float(np.polyfit(np.log(x), np.log(y), 1)[0]) if np.all(y > 0) else float("nan")
    return {"a_s": float(a), "b_s_per_client": float(b), "r2": r2, "loglog_exponent": expo,
            "max_rel_residual": float(np.max(np.abs(y - pred) / y))}


def summarize(runs: dict[str, dict[int, dict[str, Any]]], sizes: list[int], d: int
              ) -> dict[str, Any]:
    """Per size: seconds per round, ratios, upload; growth of ours with n."""
    per_n: dict[int, dict[str, Any]] = {}
    for n in sizes:
        row: dict[str, Any] = {"n": n}
        for kind in KINDS:
            r = runs.get(kind, {}).get(n)
            if r is None or "failed" in r:
                continue
            rs = r["round_seconds"]
            row[kind] = {
                "round1_s": rs[0],
                "median_r2plus_s": median(rs[1:]) if len(rs) > 1 else float("nan"),
                "mean_r2plus_s": float(np.mean(rs[1:])) if len(rs) > 1 else float("nan"),
                "rounds_s": rs,
                "final_accuracy": r["final_accuracy"],
                "up_bytes_per_client_round1": r["bytes_up"][0] / n,
                "up_bytes_per_client_r2plus": float(np.mean(r["bytes_up"][1:])) / n
                if len(rs) > 1 else float("nan"),
                "up_bytes_per_client_all_rounds": sum(r["bytes_up"]) / n / len(rs),
                "sim_wall_s": r["sim_wall_s"],
                "process_wall_s": r["process_wall_s"],
                "loadavg_before": r["loadavg_before"],
                "loadavg_after": r["loadavg_after"],
            }
            for key in ("up_bytes_per_client_round1", "up_bytes_per_client_r2plus",
                        "up_bytes_per_client_all_rounds"):
                row[kind][key.replace("bytes_per_client", "bytes_per_param")] = row[kind][key] / d
            # each exchange of rounds 2..R (same sequence every round): median seconds,
            # upload per client per parameter; the rest of the round is server-side work
            # (configure, aggregate, evaluate) outside send_and_receive
            later = [ex for ex in r["exchanges"][1:] if ex]
            if later and all(len(ex) == len(later[0]) for ex in later):
                row[kind]["exchanges_r2plus"] = [
                    {"type": later[0][j]["type"],
                     "median_s": median([ex[j]["s"] for ex in later]),
                     "up_bytes_per_param": float(np.mean([ex[j]["bytes_up"] for ex in later]))
                     / n / d}
                    for j in range(len(later[0]))]
                row[kind]["outside_exchanges_median_s"] = median(
                    [rs[i + 1] - sum(e["s"] for e in ex) for i, ex in enumerate(later)])
            if kind == "lepton-plain" and r.get("setup_exchange"):
                row[kind]["setup_exchange_s"] = r["setup_exchange"][0]["s"]
            if kind == "lepton-secagg":
                if r.get("setup_exchange"):
                    row[kind]["setup_exchange_s"] = r["setup_exchange"][0]["s"]
                # by construction: d + 1 uint32 words ([w * delta, w]) per client
                row[kind]["masked_vector_bytes_per_param"] = 4 * (d + 1) / d
            if kind == "flower-secagg":  # the masked-vector stage alone (stage 2 of 4)
                stage = [ex[2] for ex in r["exchanges"][1:] if len(ex) == 4]
                if stage:
                    row[kind]["masked_vector_bytes_per_param"] = (
                        float(np.mean([s["bytes_up"] for s in stage])) / n / d)
        for a, b, name in (("lepton-secagg", "lepton-plain", "ratio_ours"),
                           ("flower-secagg", "flower-plain", "ratio_flower")):
            if a in row and b in row:
                row[name] = row[a]["median_r2plus_s"] / row[b]["median_r2plus_s"]
                row[name + "_mean"] = row[a]["mean_r2plus_s"] / row[b]["mean_r2plus_s"]
        if "lepton-secagg" in row and "flower-secagg" in row:
            row["ours_vs_flower_secagg"] = (row["lepton-secagg"]["median_r2plus_s"]
                                           / row["flower-secagg"]["median_r2plus_s"])
        per_n[n] = row
    growth: dict[str, Any] = {}
    for kind in KINDS:
        pts = [(n, per_n[n][kind]["median_r2plus_s"]) for n in sizes if kind in per_n[n]]
        if len(pts) >= 3:
            growth[kind] = _fit_line([p[0] for p in pts], [p[1] for p in pts])
            growth[kind]["points"] = pts
    pts = [(n, per_n[n]["lepton-secagg"]["median_r2plus_s"]
            - per_n[n]["lepton-plain"]["median_r2plus_s"])
           for n in sizes if "lepton-secagg" in per_n[n] and "lepton-plain" in per_n[n]]
    if len(pts) >= 3:
        growth["lepton-secagg minus lepton-plain"] = _fit_line(
            [p[0] for p in pts], [max(p[1], 1e-6) for p in pts]) | {"points": pts}
    return {"per_n": {str(k): v for k, v in per_n.items()}, "growth": growth}


def protocol_only() -> dict[str, Any] | None:
    """The in-process protocol-only figures, if ``secagg_protocol.json`` exists."""
    path = RESULTS_DIR / "secagg_protocol.json"
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        return {"error": f"{path.name}: {exc}"}
    rows = [
        {"n": r.get("n"), "d": r.get("d"), "k": r.get("k"), "t": r.get("t"),
         "ratio": r.get("ratio"), "ratio_incl_start": r.get("ratio_incl_start"),
         "upload_bytes_per_param": r.get("upload_bytes_per_param"),
         "client_ms": (r.get("ms") or {}).get("client"),
         "server_agg_ms": (r.get("ms") or {}).get("server_agg")}
        for r in data.get("rows", []) if r.get("mode", "fast") == "fast"
    ]
    return {"file": str(path.relative_to(ROOT)), "date": (data.get("machine") or {}).get("date"),
            "method": data.get("method"), "fast_rows": rows,
            "growth": data.get("growth")}


def _fmt(x: Any, nd: int = 3) -> str:
    return f"{x:.{nd}f}" if isinstance(x, float) and math.isfinite(x) else ("-" if x is None else str(x))


def report(summary: dict[str, Any], proto: dict[str, Any] | None, d: int) -> None:
    rows = []
    for n, r in summary["per_n"].items():
        def g(kind: str, key: str, r: dict[str, Any] = r) -> Any:
            return r.get(kind, {}).get(key)
        rows.append([
            n, _fmt(g("lepton-plain", "median_r2plus_s")), _fmt(g("lepton-secagg", "median_r2plus_s")),
            _fmt(r.get("ratio_ours"), 2) + "x" if "ratio_ours" in r else "-",
            _fmt(g("flower-plain", "median_r2plus_s")), _fmt(g("flower-secagg", "median_r2plus_s")),
            _fmt(r.get("ratio_flower"), 2) + "x" if "ratio_flower" in r else "-",
            _fmt(r.get("ours_vs_flower_secagg"), 2),
        ])
    print_table(["n", "ours plain", "ours secagg", "ours ratio", "flwr plain", "flwr SecAgg+",
                 "flwr ratio", "ours/flwr SA+"], rows,
                title="Seconds per round, median of rounds 2..R (Ray simulation)")
    rows = []
    for n, r in summary["per_n"].items():
        rows.append([n] + [_fmt(r.get(k, {}).get("round1_s"), 2) for k in KINDS]
                    + [_fmt(r.get(k, {}).get("setup_exchange_s"), 2)
                       for k in ("lepton-plain", "lepton-secagg")])
    print_table(["n", *KINDS, "ours plain setup", "ours secagg setup"], rows,
                title="Round 1 seconds (Flower: incl. Ray actor start-up; lepton-fed: key "
                      "advertisement; its actors start in the setup exchange before round 1)")
    rows = []
    for n, r in summary["per_n"].items():
        for kind in KINDS:
            x = r.get(kind, {})
            if "exchanges_r2plus" in x:
                rows.append([n, kind, " + ".join(f"{e['median_s']:.2f}" for e in x["exchanges_r2plus"]),
                             _fmt(x["outside_exchanges_median_s"], 3),
                             " + ".join(f"{e['up_bytes_per_param']:.3f}" for e in x["exchanges_r2plus"])])
    print_table(["n", "app", "exchanges (s, median r2..R)", "outside exchanges (s)",
                 "upload B/param per exchange"], rows,
                title="Where a round goes (lepton secagg: train+unmask; Flower SecAgg+: "
                      "setup, share keys, masked vectors, unmask)")
    rows = []
    for n, r in summary["per_n"].items():
        fs = r.get("flower-secagg", {})
        rows.append([n] + [_fmt(r.get(k, {}).get("up_bytes_per_param_r2plus"), 3) for k in KINDS]
                    + [_fmt(r.get("lepton-secagg", {}).get("up_bytes_per_param_round1"), 3),
                       _fmt(fs.get("masked_vector_bytes_per_param"), 3)])
    print_table(["n", *[k + " B/param" for k in KINDS], "ours round 1", "flwr masked stage"],
                rows, title=f"Upload per client per round, bytes per parameter (d = {d}), rounds 2..R")
    rows = [[k, _fmt(g["a_s"], 3), _fmt(1e3 * g["b_s_per_client"], 2), _fmt(g["r2"], 4),
             _fmt(g["loglog_exponent"], 2)] for k, g in summary["growth"].items()]
    if rows:
        print_table(["series", "a (s)", "b (ms/client)", "R^2", "log-log exponent"], rows,
                    title="Growth with n: median round seconds = a + b n")
    if proto and "fast_rows" in proto:
        rows = [[r["n"], r["d"], f"{r['k']}/{r['t']}", _fmt(r["ratio"], 2),
                 _fmt(r["ratio_incl_start"], 2), _fmt(r["upload_bytes_per_param"], 3)]
                for r in proto["fast_rows"]]
        print_table(["n", "d", "k/t", "ratio", "ratio incl start_round", "upload B/param"], rows,
                    title=f"In-process protocol only (read from {proto['file']}, {proto['date']})")


def model_dim(n: int) -> int:
    return int(sum(a.size for a in initial_ndarrays(n)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10, 50, 100, 200],
                    help="clients per round (all clients sampled)")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--quick", action="store_true", help="n = 10, 50 only")
    ap.add_argument("--kinds", nargs="+", choices=KINDS, default=list(KINDS))
    ap.add_argument("--wait", action=argparse.BooleanOptionalAction, default=True,
                    help="wait for a quiet machine before the first run (default on)")
    ap.add_argument("--quiet-load", type=float, default=1.0)
    ap.add_argument("--max-wait", type=float, default=900.0, help="seconds")
    ap.add_argument("--poll", type=float, default=30.0, help="seconds")
    ap.add_argument("--timeout", type=float, default=900.0, help="per simulation, seconds")
    ap.add_argument("--out", default="secagg_simulation", help="results/<out>.json")
    ap.add_argument("--worker", choices=KINDS, help=argparse.SUPPRESS)
    ap.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        worker(a.worker, a.sizes[0], a.rounds, a.result)
        return
    sizes = [10, 50] if a.quick else a.sizes
    if a.rounds < 2:
        ap.error("--rounds must be >= 2 (round 1 is reported separately)")
    d = model_dim(sizes[0])
    kts = {n: secagg_kt(n, a.rounds) for n in sizes}
    wait = (wait_quiet(a.quiet_load, a.poll, a.max_wait) if a.wait
            else {"skipped": True, "loadavg_at_start": [round(x, 2) for x in os.getloadavg()]})
    print(f"load average at start: {wait['loadavg_at_start']}", flush=True)
    runs: dict[str, dict[int, dict[str, Any]]] = {k: {} for k in a.kinds}
    failures = []
    t_all = time.monotonic()
    for i, n in enumerate(sizes):
        order = list(a.kinds) if i % 2 == 0 else list(reversed(a.kinds))
        for kind in order:
            print(f"n={n}: {kind} ...", end=" ", flush=True)
            r = run_worker(kind, n, a.rounds, a.timeout)
            runs[kind][n] = r
            if "failed" in r:
                failures.append({"kind": kind, "n": n, "failed": r["failed"],
                                 "log_tail": r["log_tail"][-4000:]})
                print(f"FAILED ({r['failed']}):\n{r['log_tail'][-2500:]}", flush=True)
                continue
            rs = r["round_seconds"]
            print(f"rounds {' '.join(f'{x:.2f}' for x in rs)} s; acc {r['final_accuracy']:.3f}; "
                  f"process {r['process_wall_s']:.1f} s; load {r['loadavg_before'][0]:.2f}"
                  f"->{r['loadavg_after'][0]:.2f}", flush=True)
    total = time.monotonic() - t_all
    summary = summarize(runs, sizes, d)
    proto = protocol_only()
    report(summary, proto, d)
    targets: dict[str, Any] = {}
    r50 = summary["per_n"].get("50", {})
    if "ratio_ours" in r50:
        targets["ours_le_2x_plain_at_n50"] = {"value": r50["ratio_ours"],
                                              "met": r50["ratio_ours"] <= 2.0}
    if "ratio_flower" in r50:
        targets["flower_secagg_ratio_at_n50"] = {"value": r50["ratio_flower"],
                                                 "reference_measured_earlier": 3.5}
    g = summary["growth"].get("lepton-secagg")
    if g:
        targets["growth_close_to_linear"] = {
            "b_s_per_client": g["b_s_per_client"], "r2": g["r2"],
            "loglog_exponent": g["loglog_exponent"],
            "met": g["r2"] >= 0.98 and g["loglog_exponent"] <= 1.1}
    ups = [v["lepton-secagg"]["up_bytes_per_param_r2plus"] for v in summary["per_n"].values()
           if "lepton-secagg" in v]
    if ups:
        targets["upload_le_4_bytes_per_param"] = {
            "max_r2plus_all_replies": max(ups), "met": max(ups) <= 4.0,
            "masked_vector_only": 4 * (d + 1) / d,
            "note": "the masked vector is 4 (d+1) bytes; the rest is the k encrypted shares "
                    "and the unmask reply (README: 4 (d+1) + 110 k + 96 bytes)"}
    print("targets:", json.dumps(targets, indent=1, default=float))
    print(f"total {total:.0f} s")
    path = write_result(a.out, {
        "task": {
            "dataset": "sklearn digits via lepton-fed federated_split (80/20 stratified, seed 0, IID)",
            "model": f"MLP 64-{HIDDEN[0]}-{HIDDEN[1]}-10 ({d} parameters)",
            "optimizer": f"SGD lr 0.05 momentum 0.9 (lepton-fed defaults), batch {BATCH}, "
                         f"{EPOCHS} epoch",
            "sizes": sizes, "rounds": a.rounds, "all_clients_sampled": True,
            "lepton_overrides": {n: lepton_overrides(n, a.rounds, True) for n in sizes},
            "secagg_k_t": {n: list(kt) for n, kt in kts.items()},
            "flower_secaggplus": {n: {"num_shares": kt[0] + 1, "reconstruction_threshold": kt[1]}
                                  for n, kt in kts.items()},
            "backend_config": backend_config(),
        },
        "load": {"wait": wait, "at_end": [round(x, 2) for x in os.getloadavg()]},
        "total_s": total,
        "summary": summary,
        "targets": targets,
        "protocol_only": proto,
        "failures": failures,
        "runs": {k: {str(n): r for n, r in v.items()} for k, v in runs.items()},
    })
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
