"""A real federation on loopback, timed as a new user would live it.

``lepton-fed federation init`` -> ``lepton-fed superlink`` -> one ``lepton-fed node join``
per hospital (strict default node policy: no ``--policy``) -> ``lepton-fed run`` with
DP-SGD and secure aggregation, the coordinator holding no data (``data.schema`` with a
declared normalization, federated evaluation). Real Flower SuperLink/SuperNode processes
with TLS and node authentication. Measures:

* the commands a user types and the seconds from ``federation init`` to the first
  finished round (and to each milestone: SuperLink up, nodes joined, setup done);
* wall time per round (``metrics.jsonl`` ``seconds``) against the same experiment in
  simulation: in-process (``lepton_fed.api.simulate(in_process=True)``) and, with
  ``--ray``, on Flower's Ray engine; same data per node, same config;
* bytes per node per round (``bytes_up`` / ``bytes_down`` over the round's clients).

Every process started here runs in its own session and is stopped by its PID (its
process group), pass or fail. Writes ``benchmarks/results/deploy_loopback[_<data>].json``.

    python benchmarks/deploy_loopback.py                      # generated data, 4 nodes, 3 rounds
    python benchmarks/deploy_loopback.py --data heart --rounds 5 --ray
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import ROOT, loadavg, median, print_table, write_result  # noqa: E402

CLI = [sys.executable, "-m", "lepton_fed.cli.main"]
ENV = dict(os.environ, FLWR_TELEMETRY_ENABLED="0", PYTHONUNBUFFERED="1",
           FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION="1", FLWR_DISABLE_UPDATE_CHECK="1")
HEART_DIR = ROOT.parent / "shared" / "data" / "fed_heart_disease"
ROUND_LINE = re.compile(r"\[lepton-fed\] round (\d+)/\d+: .*\(([\d.]+)s\)")


# ------------------------------------------------------------------ data
def generated_sites(n_sites: int, rows: int = 160, seed: int = 0) -> tuple[list[Any], list[str]]:
    """``n_sites`` frames of a generated binary task with a site shift (label ``outcome``)."""
    import numpy as np
    import pandas as pd
    from sklearn.datasets import make_classification

    X, y = make_classification(n_samples=n_sites * rows, n_features=8, n_informative=5,
                               n_redundant=1, class_sep=1.2, random_state=seed)
    rng = np.random.default_rng(seed)
    feats = [f"x{i}" for i in range(X.shape[1])]
    frames = []
    for s in range(n_sites):
        part = slice(s * rows, (s + 1) * rows)
        df = pd.DataFrame(X[part] * 3.0 + 10.0 + rng.normal(0, 0.5, X.shape[1]), columns=feats)
        df["outcome"] = y[part]
        frames.append(df)
    return frames, feats


def heart_sites(path: Path) -> tuple[list[Any], list[str]]:
    """One frame per Fed-Heart-Disease hospital, rows as FLamby preprocesses them
    (``lepton_fed.data.datasets._heart_disease``), label ``disease``."""
    import pandas as pd

    from lepton_fed.data.datasets import _heart_disease

    data = _heart_disease(str(path))
    feats = [f.name for f in data.features]
    frames = []
    for s in range(len(data.silo_names or [])):
        rows = data.silo == s
        df = pd.DataFrame(data.X[rows], columns=feats)
        df["disease"] = data.y[rows]
        frames.append(df)
    return frames, feats


def write_sites(work: Path, frames: list[Any], feats: list[str], label: str) -> dict[str, Any]:
    """One CSV per site, a pooled CSV (``site`` column, for the simulation) and the
    federation's schema with a declared normalization (the coordinator holds no data:
    here the normalization stands for published reference values)."""
    import pandas as pd
    import yaml

    sites = []
    for i, df in enumerate(frames):
        p = work / f"site{i}.csv"
        df.to_csv(p, index=False)
        sites.append(p)
    pooled = pd.concat([df.assign(site=i) for i, df in enumerate(frames)], ignore_index=True)
    norm = {f: [round(float(pooled[f].mean()), 4), round(float(pooled[f].std()) or 1.0, 4)]
            for f in feats}
    # the simulation reads one pooled file, already scaled by the declared normalization
    # (a simulation with data.schema fails today: lepton_fed/data/federated.py passes
    # the schema to the CSV loader), so its nodes see the rows the loopback nodes see
    scaled = pooled.copy()
    for f, (m, sd) in norm.items():
        scaled[f] = (scaled[f] - m) / sd
    scaled.to_csv(work / "pooled.csv", index=False)
    schema = work / "schema.yaml"
    schema.write_text(yaml.safe_dump({"label": label, "classes": [0, 1], "features": feats,
                                      "normalization": norm}, sort_keys=False))
    return {"sites": sites, "pooled": work / "pooled.csv", "schema": schema, "label": label,
            "features": feats}


# ------------------------------------------------------------------ processes
class Proc:
    """A command in its own session (process group); stopped by its PID."""

    def __init__(self, argv: list[str], log: Path, cwd: Path) -> None:
        self.log = log
        with open(log, "wb") as f:
            self.proc = subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT, env=ENV,
                                         cwd=cwd, start_new_session=True)

    def wait_for(self, text: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.log.read_text(errors="replace"):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"no {text!r} in {self.log}:\n{self.log.read_text()[-2000:]}")
            time.sleep(0.1)

    def stop(self) -> None:
        for sig, wait in ((signal.SIGTERM, 20.0), (signal.SIGKILL, 10.0)):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                return
            try:
                self.proc.wait(wait)
                return
            except subprocess.TimeoutExpired:
                continue


def run_overrides(d: dict[str, Any], rounds: int, every: int = 1) -> list[str]:
    """The experiment, as the strict default node policy accepts it."""
    return ["data=csv", f"data.schema={d['schema']}", "evaluation.server_data=false",
            "model=mlp", "privacy=dpsgd", "privacy.epsilon=8", "privacy.delta=1e-5", "secagg=on",
            f"federation.rounds={rounds}", f"federation.evaluate_every={every}", "seed=0"]


def loopback(work: Path, d: dict[str, Any], rounds: int, every: int) -> dict[str, Any]:
    """Init, SuperLink, one node per site, one run; times and per-round figures."""
    names = [f"hospital-{chr(97 + i)}" for i in range(len(d["sites"]))]
    procs: list[Proc] = []
    marks: dict[str, Any] = {}
    from lepton_fed.deploy.procs import free_port

    port, control = free_port(), free_port()
    t0 = time.monotonic()
    try:
        subprocess.run([*CLI, "federation", "init", str(work / "fed"), "--name", "bench",
                        "--superlink-host", "127.0.0.1", *[a for n in names for a in ("--node", n)],
                        "--port", str(port)], env=ENV, check=True, capture_output=True)
        marks["init_done_s"] = time.monotonic() - t0
        sl = Proc([*CLI, "superlink", str(work / "fed"), "--bind", "127.0.0.1", "--control-port",
                   str(control)], work / "superlink.out", work)
        procs.append(sl)
        sl.wait_for("is up", 120)
        marks["superlink_up_s"] = time.monotonic() - t0
        for name, csv in zip(names, d["sites"], strict=True):
            procs.append(Proc([*CLI, "node", "join", "--federation", str(work / "fed/nodes" / name),
                               "--data", str(csv), "--label", d["label"], "--ledger",
                               str(_mkdir(work / "ledgers" / name))], work / f"{name}.out", work))
        for p in procs[1:]:
            p.wait_for("joined federation", 120)
        marks["nodes_joined_s"] = time.monotonic() - t0
        run_dir = work / "run"
        run = subprocess.Popen([*CLI, "run", "--federation", str(work / "fed"), "--run-dir",
                                str(run_dir), *run_overrides(d, rounds, every)], env=ENV, cwd=work,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               start_new_session=True)
        text: list[str] = []
        ts = time.monotonic()
        assert run.stdout is not None
        for line in run.stdout:
            text.append(line)
            if "setup done" in line:
                marks.setdefault("setup_done_s", time.monotonic() - t0)
            if (m := ROUND_LINE.search(line)) and m.group(1) == "1":
                marks["first_round_done_s"] = time.monotonic() - t0
        run.wait()
        marks["run_rc"] = run.returncode
        marks["run_wall_s"] = time.monotonic() - ts
        if run.returncode:
            print("".join(text[-40:]))
            raise RuntimeError(f"lepton-fed run exited {run.returncode}")
    finally:
        for p in reversed(procs):
            p.stop()
    marks["commands"] = {"coordinator": 3, "per_node": 1, "total": 3 + len(names),
                         "out_of_band_copies": len(names)}
    return marks | _figures(run_dir)


def _mkdir(p: Path) -> Path:
    p.mkdir(parents=True, exist_ok=True)
    return p


def _figures(run_dir: Path) -> dict[str, Any]:
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines() if x]
    summary = json.loads((run_dir / "summary.json").read_text())
    per_node = [{"round": r["round"], "clients": r["clients"],
                 "up": r["bytes_up"] / max(r["clients"], 1),
                 "down": r["bytes_down"] / max(r["clients"], 1)} for r in rows]
    return {
        "round_s": [round(r["seconds"], 2) for r in rows],
        "bytes_per_node": per_node,
        "accuracy": summary["final"].get("accuracy"),
        "epsilon": summary["privacy"].get("epsilon"),
        "secagg": {k: summary["secagg"].get(k) for k in ("neighbours", "threshold",
                                                         "security_bits")},
        "rounds_completed": summary["rounds_completed"],
        "wall_s": summary["wall_seconds"],
        # payload bytes (content_bytes) of setup + evaluation exchanges: not in the rows
        "setup_and_eval_bytes": {
            "up": summary["bytes"]["up"] - sum(r["bytes_up"] for r in rows),
            "down": summary["bytes"]["down"] - sum(r["bytes_down"] for r in rows)},
    }


def simulation(work: Path, d: dict[str, Any], rounds: int, every: int, *,
               ray: bool) -> dict[str, Any]:
    """The same experiment simulated: one virtual node per site (``partition=natural`` on
    the pooled file's ``site`` column), each holding the strict default policy. The
    server evaluates on its held-out rows (cheaper than the loopback's secure federated
    evaluation: compare rounds without evaluation, or pass ``--evaluate-every``)."""
    from lepton_fed.api import simulate

    n = len(d["sites"])
    over = [o for o in run_overrides(d, rounds, every)
            if not o.startswith(("data.schema", "evaluation."))]
    over += [f"data.path={d['pooled']}", f"data.label={d['label']}", "data.silo_column=site",
             f"data.features=[{','.join(repr(f) for f in d['features'])}]",
             "partition=natural", "node_policy=strict", f"federation.num_clients={n}",
             f"federation.clients_per_round={n}", "evaluation.server_data=true"]
    run_dir = work / ("sim-ray" if ray else "sim-inprocess")
    t0 = time.monotonic()
    simulate(over, run_dir=run_dir, in_process=not ray, quiet=True)
    return {"total_s": time.monotonic() - t0} | _figures(run_dir)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", choices=["generated", "heart"], default="generated")
    ap.add_argument("--heart-dir", type=Path, default=HEART_DIR)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--evaluate-every", type=int, default=1, help="federation.evaluate_every")
    ap.add_argument("--nodes", type=int, default=4, help="generated data only (heart: 4)")
    ap.add_argument("--ray", action="store_true", help="also simulate on Ray")
    ap.add_argument("--no-sim", action="store_true", help="loopback only")
    ap.add_argument("--keep", type=Path, help="keep the work directory here")
    args = ap.parse_args()
    work = args.keep.resolve() if args.keep else Path(tempfile.mkdtemp(prefix="deploy-bench-"))
    if args.keep:
        shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)
    if args.data == "heart":
        frames, feats = heart_sites(args.heart_dir)
        d = write_sites(work, frames, feats, "disease")
    else:
        frames, feats = generated_sites(args.nodes)
        d = write_sites(work, frames, feats, "outcome")
    result: dict[str, Any] = {"data": args.data, "nodes": len(d["sites"]), "rounds": args.rounds,
                              "overrides": run_overrides(d, args.rounds, args.evaluate_every)[2:],
                              "load_before": loadavg()}
    try:
        result["loopback"] = loopback(work, d, args.rounds, args.evaluate_every)
        if not args.no_sim:
            every = args.evaluate_every
            result["inprocess"] = simulation(work, d, args.rounds, every, ray=False)
            if args.ray:
                result["ray"] = simulation(work, d, args.rounds, every, ray=True)
    finally:
        result["load_after"] = loadavg()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    lb = result["loopback"]
    rows = [["loopback (4 processes x 3 + SuperLink)", *_row(lb)]]
    for k in ("inprocess", "ray"):
        if k in result:
            rows.append([f"simulation ({k})", *_row(result[k])])
    print_table(["engine", "round s (median)", "rounds", "B up/node/round", "B down/node/round",
                 "accuracy"], rows, title=f"{args.data}: {result['nodes']} nodes, DP-SGD + secagg")
    print(f"commands typed: {lb['commands']['total']} (3 coordinator + 1 per node); "
          f"init -> first finished round {lb['first_round_done_s']:.1f} s "
          f"(SuperLink up {lb['superlink_up_s']:.1f} s, nodes joined {lb['nodes_joined_s']:.1f} s, "
          f"setup done {lb.get('setup_done_s', float('nan')):.1f} s)")
    name = "deploy_loopback" + ("" if args.data == "generated" else f"_{args.data}")
    if args.evaluate_every != 1:
        name += f"_every{args.evaluate_every}"
    print("wrote", write_result(name, result))


def _row(r: dict[str, Any]) -> list[Any]:
    later = r["round_s"][1:] or r["round_s"]
    bpn = r["bytes_per_node"]
    return [f"{median(later):.2f} (r1 {r['round_s'][0]:.2f})", r["rounds_completed"],
            int(median([b["up"] for b in bpn])), int(median([b["down"] for b in bpn])),
            r["accuracy"]]


if __name__ == "__main__":
    main()
