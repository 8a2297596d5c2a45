"""The dashboard in a real headless browser (Playwright driving Debian's chromium), over
run directories written by the real round loop: no console errors, the charts show the
run's rounds, a live run adds points, a sweep shows its table and chart. A screenshot of
each page is kept under the test's tmp_path (``dashboard-*.png``)."""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from pathlib import Path

import pytest

sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
CHROMIUM = os.environ.get("LEPTON_CHROMIUM") or shutil.which("chromium") or shutil.which(
    "chromium-browser")
if CHROMIUM is None:
    pytest.skip("no chromium executable (apt-get install chromium, or set LEPTON_CHROMIUM)",
                allow_module_level=True)

pytestmark = pytest.mark.integration


# ---------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def real_run(tmp_path_factory) -> Path:
    """A 3-round DP-SGD federation written by the real round loop (in-process nodes)."""
    from lepton_fed.client import app as client_module
    from lepton_fed.config import compose
    from lepton_fed.inprocess import InProcessGrid
    from lepton_fed.server.outputs import RunWriter
    from lepton_fed.server.rounds import run_federation

    d = tmp_path_factory.mktemp("run")
    cfg = compose(["privacy=dpsgd", "privacy.epsilon=2", "federation.rounds=3",
                   "federation.num_clients=3", "federation.clients_per_round=3"])
    run_federation(InProcessGrid(client_module.app, 3), cfg, RunWriter(d))
    return d


class _Server:
    """The dashboard app on uvicorn in a thread, on a free loopback port."""

    def __init__(self, root: Path, poll_ms: int = 200) -> None:
        import uvicorn

        from lepton_fed.observe.dashboard import create_app
        from lepton_fed.observe.runs import RunIndex

        app = create_app(root, poll_ms=poll_ms, index=RunIndex(root, rescan_s=0.2))
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0,
                                                    log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            assert time.monotonic() < deadline, "dashboard server did not start"
            time.sleep(0.05)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}/"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture
def serve():
    servers: list[_Server] = []

    def start(root: Path) -> _Server:
        servers.append(_Server(root))
        return servers[-1]

    yield start
    for s in servers:
        s.stop()


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        b.close()


@pytest.fixture
def page(browser):
    ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
    pg = ctx.new_page()
    pg.problems = []  # console errors, page errors, requests leaving the server
    pg.on("console", lambda m: m.type in ("error", "warning") and pg.problems.append(
        f"console {m.type}: {m.text}"))
    pg.on("pageerror", lambda e: pg.problems.append(f"page error: {e}"))
    pg.requests = []
    pg.on("request", lambda r: pg.requests.append(r.url))
    yield pg
    ctx.close()


def _wait_rounds(pg, n, timeout=15_000):
    pg.wait_for_function(f"() => window.__lf && window.__lf.rounds === {n}", timeout=timeout)


def _rounds(pg, chart, series):
    return pg.eval_on_selector_all(
        f"#{chart} g[data-series='{series}'] .pt", "els => els.map(e => +e.dataset.round)")


def _local_only(pg, base):
    assert [u for u in pg.requests if not u.startswith(base)] == []


# ---------------------------------------------------------------- tests
def test_page_shows_the_runs_rounds_without_console_errors(real_run, serve, page, tmp_path):
    srv = serve(real_run)
    page.goto(srv.url)
    _wait_rounds(page, 3)
    page.wait_for_function("() => document.getElementById('statement').textContent"
                           ".includes('Privacy statement')")
    rows = [json.loads(x) for x in (real_run / "metrics.jsonl").read_text().splitlines()]
    assert _rounds(page, "chart-acc", "accuracy") == [r["round"] for r in rows] == [1, 2, 3]
    assert _rounds(page, "chart-loss", "loss") == [1, 2, 3]
    assert _rounds(page, "chart-part", "replied") == [1, 2, 3]
    assert _rounds(page, "chart-bytes", "up (nodes to server)") == [1, 2, 3]
    assert _rounds(page, "chart-time", "round seconds") == [1, 2, 3]
    assert _rounds(page, "chart-eps", "max over nodes") == [1, 2, 3]
    assert "budget ε = 2" in page.inner_text("#chart-eps")
    summary = json.loads((real_run / "summary.json").read_text())
    names = page.eval_on_selector_all("#nodes tbody tr td:first-child",
                                      "els => els.map(e => e.textContent)")
    assert names == sorted(summary["privacy"]["per_client"])
    assert page.inner_text("#status") == "finished"
    assert page.inner_text("#progress") == "round 3 / 3"
    page.screenshot(path=str(tmp_path / "dashboard-run.png"), full_page=True)
    assert (tmp_path / "dashboard-run.png").stat().st_size > 20_000
    assert page.problems == []
    _local_only(page, srv.url)


def test_a_live_run_adds_points(real_run, serve, page, tmp_path):
    live = tmp_path / "live"
    live.mkdir()
    shutil.copy(real_run / "config.yaml", live / "config.yaml")
    (live / "metrics.jsonl").write_text("")
    rows = [json.loads(x) for x in (real_run / "metrics.jsonl").read_text().splitlines()]
    srv = serve(live)
    page.goto(srv.url)
    page.wait_for_function("() => document.getElementById('status').textContent"
                           ".startsWith('waiting')")
    for i, row in enumerate(rows, start=1):
        row = row | {"epsilon_per_node": {"hospital-a": row["epsilon"],
                                          "bank-b": row["epsilon"] / 2}}
        line = json.dumps(row) + "\n"
        with (live / "metrics.jsonl").open("a") as f:  # half a line first: not drawn yet
            f.write(line[:20])
            f.flush()
            time.sleep(0.5)
            assert page.evaluate("() => window.__lf.rounds") == i - 1
            f.write(line[20:])
        _wait_rounds(page, i)
        assert _rounds(page, "chart-acc", "accuracy") == list(range(1, i + 1))
        assert _rounds(page, "chart-eps", "hospital-a") == list(range(1, i + 1))
        assert page.inner_text("#status") == "running"
    page.screenshot(path=str(tmp_path / "dashboard-live.png"), full_page=True)
    shutil.copy(real_run / "summary.json", live / "summary.json")
    page.wait_for_function("() => document.getElementById('status').textContent === 'finished'")
    assert page.problems == []
    _local_only(page, srv.url)


def test_sweep_table_chart_and_run_selection(real_run, serve, page, tmp_path):
    sweep = tmp_path / "multirun"
    for job, ov in (("0", "model=mlp"), ("1", "model=logreg")):
        shutil.copytree(real_run, sweep / job)
        (sweep / job / ".hydra").mkdir()
        (sweep / job / ".hydra" / "overrides.yaml").write_text(f"- {ov}\n")
    srv = serve(sweep)
    page.goto(srv.url)
    page.wait_for_selector("#sweep-table tbody tr")
    page.wait_for_function("() => document.querySelectorAll('#chart-sweep .pt').length === 6")
    jobs = page.eval_on_selector_all("#sweep-table tbody tr td:first-child",
                                     "els => els.map(e => e.textContent)")
    assert jobs == ["0", "1"]
    assert "model=logreg" in page.inner_text("#sweep-table")
    assert "model=mlp" in page.inner_text("#chart-sweep")
    page.click("#sweep-table tbody tr[data-run='0']")
    page.wait_for_function("() => location.hash === '#run=0'")
    page.wait_for_function("() => document.getElementById('run-title').textContent"
                           ".endsWith('/ 0')")
    _wait_rounds(page, 3)
    page.screenshot(path=str(tmp_path / "dashboard-sweep.png"), full_page=True)
    assert page.problems == []
    _local_only(page, srv.url)
