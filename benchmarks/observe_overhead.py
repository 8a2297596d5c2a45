"""What watching a run costs: observer time per round, its share of round time, and the
dashboard's page weight and time to first chart.

Run: ``python benchmarks/observe_overhead.py [--repeats 5] [--rounds 8]`` (writes
``benchmarks/results/observe_overhead.json``; about 2 minutes on 2 cores).

Part 1, observer cost per round: ``on_round`` of the TensorBoard observer, the
Prometheus coordinator metrics and the progress bar (drawing to an in-memory terminal),
each alone and all three, on rows of a real run extended with per-node epsilons and
decline counts for 5 and 50 nodes (median over 2,000 calls each).

Part 2, share of round time on a real federation: the real round loop and ClientApp
in-process (no Ray: the cheapest transport, so the largest relative overhead), DP-SGD,
digits, 10 nodes, all per round; runs WITH all three observers and WITHOUT any,
alternating, ``--repeats`` each. A row's ``seconds`` is taken before the observers run,
so the measure is the wall time of the round loop (rounds 1..N after setup), median over
repeats. The headline ``overhead_pct`` is part 1's cost (all three observers, 10 nodes)
over the median round time (timing noise between whole runs on a shared 2-core host is
larger than the cost itself; the end-to-end ratio is reported beside it).

Part 3, dashboard: bytes of the page (HTML, JS, CSS) and of its first API answers, and
time from navigation to the first chart drawn (``window.__lf.firstChartMs``) in headless
Debian chromium (skipped without playwright/chromium), for the part-2 run and for a
500-round run; and the server's time to answer ``/api/run`` for 500 rows.
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import print_table, write_result  # noqa: E402

CALLS = 2000


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def _rows_with_nodes(rows: list[dict[str, Any]], n: int) -> list[dict[str, Any]]:
    return [r | {"sampled": n, "connected": n,
                 "epsilon_per_node": {f"node-{i:03d}": (r.get("epsilon") or 0.0) * (1 - i / (2 * n))
                                      for i in range(n)},
                 "declines": {"BUDGET_EXHAUSTED": 1}, "failures": {"NO_REPLY": 1}}
            for r in rows]


def _observers(kind: str, d: Path, rounds: int) -> list[Any]:
    from lepton_fed.observe.progress import ProgressObserver
    from lepton_fed.observe.prometheus import CoordinatorMetrics
    from lepton_fed.observe.tensorboard import TensorBoardObserver

    out: list[Any] = []
    if kind in ("tensorboard", "all"):
        out.append(TensorBoardObserver(d))
    if kind in ("prometheus", "all"):
        out.append(CoordinatorMetrics(None, rounds_planned=rounds))
    if kind in ("progress", "all"):
        out.append(ProgressObserver(rounds, enabled=True, file=_Tty()))
    return out


def part1(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for nodes in (5, 10, 50):
        rr = _rows_with_nodes(rows, nodes)
        for kind in ("tensorboard", "prometheus", "progress", "all"):
            with tempfile.TemporaryDirectory() as tmp:
                obs = _observers(kind, Path(tmp), CALLS)
                times = []
                for i in range(CALLS):
                    row = rr[i % len(rr)] | {"round": i + 1}
                    t0 = time.perf_counter()
                    for o in obs:
                        o.on_round(row)
                    times.append(time.perf_counter() - t0)
                for o in obs:
                    o.on_finish({})
            out.append({"nodes": nodes, "observers": kind,
                        "us_per_round": statistics.median(times) * 1e6,
                        "p90_us": sorted(times)[int(0.9 * len(times))] * 1e6})
    return out


def _cfg(rounds: int) -> Any:
    from lepton_fed.config import compose

    return compose(["data=digits", "privacy=dpsgd", "privacy.epsilon=8",
                    f"federation.rounds={rounds}", "federation.num_clients=10",
                    "federation.clients_per_round=10"])


class _Timed:
    """Observer that records when each round's row was handed over (first in the list)."""

    def __init__(self) -> None:
        self.t: list[float] = []

    def on_round(self, row: dict[str, Any]) -> None:
        self.t.append(time.perf_counter())

    def on_finish(self, summary: dict[str, Any]) -> None:
        self.t.append(time.perf_counter())


def _one_run(cfg: Any, d: Path, with_observers: bool) -> tuple[float, list[dict[str, Any]]]:
    import contextlib

    from lepton_fed.client import app as client_module
    from lepton_fed.inprocess import InProcessGrid
    from lepton_fed.observe.prometheus import CoordinatorMetrics
    from lepton_fed.server.outputs import RunWriter
    from lepton_fed.server.rounds import run_federation

    timed = _Timed()
    obs: list[Any] = [timed]
    if with_observers:
        from lepton_fed.observe.progress import ProgressObserver
        from lepton_fed.observe.tensorboard import TensorBoardObserver

        obs += [TensorBoardObserver(d), CoordinatorMetrics(0, rounds_planned=cfg.federation.rounds),
                ProgressObserver(int(cfg.federation.rounds), enabled=True, file=_Tty())]
    with contextlib.redirect_stdout(io.StringIO()):
        run_federation(InProcessGrid(client_module.app, 10), cfg, RunWriter(d), obs)
    for o in obs:
        if isinstance(o, CoordinatorMetrics) and o.endpoint is not None:
            o.endpoint.shutdown()
    rows = [json.loads(x) for x in (d / "metrics.jsonl").read_text().splitlines()]
    # rounds 2..N: from round 1's hand-over to the last round's hand-over
    per_round = (timed.t[-2] - timed.t[0]) / (len(rows) - 1)
    return per_round, rows


def part2(repeats: int, rounds: int) -> dict[str, Any]:
    cfg = _cfg(rounds)
    res: dict[str, list[float]] = {"with": [], "without": []}
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        _one_run(cfg, Path(tmp) / "warm", False)  # imports, dataset cache
        for i in range(repeats):
            for kind in (("with", "without") if i % 2 == 0 else ("without", "with")):
                s, rows = _one_run(cfg, Path(tmp) / f"{kind}{i}", kind == "with")
                res[kind].append(s)
    return {"round_s_with": statistics.median(res["with"]),
            "round_s_without": statistics.median(res["without"]),
            "samples": res, "rows": rows}


def part3(run_rows: list[dict[str, Any]], config_yaml: str) -> dict[str, Any]:
    from fastapi.testclient import TestClient

    from lepton_fed.observe.dashboard import STATIC_FILES, create_app
    from lepton_fed.observe.runs import RunIndex

    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        dirs = {}
        for name, rows in (("part2_run", run_rows),
                           ("500_rounds", [run_rows[i % len(run_rows)] | {"round": i + 1}
                                           for i in range(500)])):
            d = Path(tmp) / name
            d.mkdir()
            (d / "config.yaml").write_text(config_yaml)
            (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
            dirs[name] = d
        c = TestClient(create_app(dirs["500_rounds"], index=RunIndex(dirs["500_rounds"])))
        page = sum(len(c.get("/" if n == "index.html" else f"/static/{n}").content)
                   for n in STATIC_FILES)
        api = [len(c.get(u).content) for u in ("/api/runs", "/api/run?run=.",
                                                "/api/statement?run=.")]
        t = []
        for _ in range(20):
            t0 = time.perf_counter()
            c.get("/api/run?run=.")
            t.append(time.perf_counter() - t0)
        out |= {"page_bytes": page, "api_bytes_500_rounds": api,
                "api_run_ms_500_rows": statistics.median(t) * 1e3}
        out["first_chart_ms"] = _browser(dirs)
    return out


def _browser(dirs: dict[str, Path]) -> dict[str, Any]:
    chromium = shutil.which("chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return {"skipped": "playwright not installed"}
    if chromium is None:
        return {"skipped": "no chromium (apt-get install chromium)"}
    import threading

    import uvicorn

    from lepton_fed.observe.dashboard import create_app

    out: dict[str, Any] = {}
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        for name, d in dirs.items():
            server = uvicorn.Server(uvicorn.Config(create_app(d), host="127.0.0.1", port=0,
                                                   log_level="warning"))
            th = threading.Thread(target=server.run, daemon=True)
            th.start()
            while not server.started:
                time.sleep(0.05)
            url = f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}/"
            ms = []
            for _ in range(5):
                pg = b.new_page()
                pg.goto(url)
                pg.wait_for_function("() => window.__lf && window.__lf.firstChartMs !== null")
                ms.append(pg.evaluate("() => window.__lf.firstChartMs"))
                pg.close()
            out[name] = statistics.median(ms)
            server.should_exit = True
            th.join(timeout=10)
        b.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=8)
    args = ap.parse_args()
    p2 = part2(args.repeats, args.rounds)
    rows = p2.pop("rows")
    p1 = part1(rows)
    print_table(["nodes", "observers", "us/round (median)", "p90 us"],
                [[r["nodes"], r["observers"], f"{r['us_per_round']:.0f}", f"{r['p90_us']:.0f}"]
                 for r in p1], "Part 1: observer cost per round")
    cost10 = next(r["us_per_round"] for r in p1 if r["nodes"] == 10 and r["observers"] == "all")
    overhead = cost10 / 1e6 / p2["round_s_without"] * 100
    e2e = (p2["round_s_with"] / p2["round_s_without"] - 1) * 100
    print_table(["round s without", "round s with", "end-to-end %", "observer cost %"],
                [[f"{p2['round_s_without']:.4f}", f"{p2['round_s_with']:.4f}", f"{e2e:+.2f}",
                  f"{overhead:.3f}"]],
                "Part 2: in-process DP-SGD digits, 10 nodes (target <= 2 %)")
    from omegaconf import OmegaConf

    p3 = part3(rows, OmegaConf.to_yaml(_cfg(args.rounds), resolve=True))
    print_table(["page bytes", "API bytes (runs, run, statement) 500 rounds",
                 "/api/run ms, 500 rows", "first chart ms"],
                [[p3["page_bytes"], p3["api_bytes_500_rounds"],
                  f"{p3['api_run_ms_500_rows']:.2f}", p3["first_chart_ms"]]], "Part 3: dashboard")
    path = write_result("observe_overhead", {
        "observer_cost": p1, "round_time": p2, "overhead_pct": overhead,
        "end_to_end_pct": e2e, "target_pct": 2.0, "dashboard": p3})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
