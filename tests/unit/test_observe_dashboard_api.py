"""The dashboard's HTTP API over run directories (no browser): discovery, incremental
rows, only discovered runs served, offline page, the CLI's argument checks."""

import argparse
import json

import pytest

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from lepton_fed.cli import report  # noqa: E402
from lepton_fed.errors import ConfigError  # noqa: E402
from lepton_fed.observe.dashboard import COLUMNS, STATIC_FILES, create_app  # noqa: E402
from lepton_fed.observe.runs import MetricsTail, RunIndex  # noqa: E402

CONFIG = """federation: {rounds: 4, num_clients: 3, clients_per_round: 3}
privacy: {mode: dpsgd, epsilon: 2.0, delta: 1.0e-05}
secagg: {enabled: false}
strategy: {name: fedavg}
model: {name: mlp}
data: {name: breast_cancer}
"""


def _row(r):
    return {"round": r, "accuracy": 0.5 + r / 10, "loss": 1 / r, "clients": 3, "failed": 0,
            "declined": 0, "epsilon": r / 2, "bytes_up": 100, "bytes_down": 200,
            "seconds": 0.5}


def _run_dir(d, rounds=2):
    d.mkdir(parents=True, exist_ok=True)
    (d / "config.yaml").write_text(CONFIG)
    (d / "metrics.jsonl").write_text("".join(json.dumps(_row(r)) + "\n"
                                             for r in range(1, rounds + 1)))
    return d


def _client(root):
    return TestClient(create_app(root, index=RunIndex(root, rescan_s=0)))


def test_columns_are_the_reports():
    assert COLUMNS == report.COLUMNS


def test_single_run_rows_since_and_meta(tmp_path):
    c = _client(_run_dir(tmp_path))
    runs = c.get("/api/runs").json()
    assert runs["runs"] == ["."] and runs["sweep"] is False
    r = c.get("/api/run?run=.").json()
    assert [x["round"] for x in r["rows"]] == [1, 2] and r["next"] == 2
    assert r["summary"] is None and r["meta"]["rounds_planned"] == 4
    assert r["meta"]["epsilon_target"] == 2.0 and r["meta"]["privacy"] == "dpsgd"
    with (tmp_path / "metrics.jsonl").open("a") as f:
        f.write(json.dumps(_row(3)) + "\n" + json.dumps(_row(4))[:10])  # 4 is half written
    r = c.get("/api/run?run=.&since=2").json()
    assert [x["round"] for x in r["rows"]] == [3] and r["next"] == 3
    (tmp_path / "summary.json").write_text(json.dumps({"rounds_completed": 3}))
    assert c.get("/api/run?run=.&since=3").json()["summary"] == {"rounds_completed": 3}


def test_rewritten_metrics_file_is_read_again(tmp_path):
    tail = MetricsTail(_run_dir(tmp_path, rounds=3) / "metrics.jsonl")
    assert len(tail.refresh()) == 3
    (tmp_path / "metrics.jsonl").write_text(json.dumps(_row(1)) + "\n")
    assert [r["round"] for r in tail.refresh()] == [1]


def test_only_discovered_runs_are_served(tmp_path):
    _run_dir(tmp_path / "sweep" / "0")
    (tmp_path / "secret").mkdir()
    (tmp_path / "secret" / "metrics.jsonl").write_text(json.dumps(_row(1)) + "\n")
    (tmp_path / "secret" / "config.yaml").write_text(CONFIG)
    c = _client(tmp_path / "sweep")
    for bad in ("../secret", "/etc", "..", "0/../../secret", "1"):
        assert c.get("/api/run", params={"run": bad}).status_code == 404, bad
        assert c.get("/api/statement", params={"run": bad}).status_code == 404, bad
    assert c.get("/static/../dashboard.py").status_code == 404
    assert c.get("/static/runs.py").status_code == 404
    assert c.get("/api/run", params={"run": "0"}).status_code == 200


def test_sweep_table_includes_running_jobs(tmp_path):
    root = tmp_path / "multirun"
    _run_dir(root / "0", rounds=4)
    (root / "0" / ".hydra").mkdir()
    (root / "0" / ".hydra" / "overrides.yaml").write_text("- model=logreg\n- seed=1\n")
    (root / "0" / "summary.json").write_text(json.dumps({
        "rounds_completed": 4, "final": {"accuracy": 0.9}, "privacy": {"mode": "dpsgd",
                                                                      "epsilon": 2.0}}))
    _run_dir(root / "1", rounds=1)  # still going
    c = _client(root)
    data = c.get("/api/runs").json()
    assert data["sweep"] is True and data["runs"] == ["0", "1"]
    t0, t1 = data["table"]
    assert list(t0)[:len(COLUMNS)] == list(COLUMNS)
    assert t0["overrides"] == "model=logreg seed=1" and t0["accuracy"] == 0.9
    assert t0["finished"] is True and t1["finished"] is False and t1["rounds"] == 1
    assert t1["accuracy"] == _row(1)["accuracy"]
    series = c.get("/api/series?key=accuracy").json()
    assert [p[0] for p in series["0"]] == [1, 2, 3, 4]
    assert c.get("/api/series?key=../x").status_code == 422


def test_page_is_offline_and_locked_down(tmp_path):
    c = _client(_run_dir(tmp_path))
    page = c.get("/")
    assert page.status_code == 200
    csp = page.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src 'self'" in csp
    weight = 0
    for name, ctype in STATIC_FILES.items():
        r = c.get("/" if name == "index.html" else f"/static/{name}")
        assert r.status_code == 200 and r.headers["content-type"] == ctype
        text = r.text.replace("http://www.w3.org/2000/svg", "")  # a namespace name
        assert "http://" not in text and "https://" not in text  # nothing from elsewhere
        weight += len(r.content)
    assert weight < 60_000


def test_statement_endpoint(tmp_path):
    c = _client(_run_dir(tmp_path))
    r = c.get("/api/statement?run=.").json()
    assert "MECHANISM" in r["text"] and r["statement"]["finished"] is False
    assert r["statement"]["spent"]["epsilon"] == 1.0  # the last row's, while running


def _args(tmp_path, **kw):
    base = dict(dir=str(tmp_path), host="127.0.0.1", port=8765, poll_ms=1000,
                ledger_dir=None)
    return argparse.Namespace(**(base | kw))


def test_cli_names_every_bad_argument(tmp_path):
    from lepton_fed.cli import dashboard

    with pytest.raises(ConfigError) as e:
        dashboard.run(_args(tmp_path, dir=str(tmp_path / "nope"), port=0, poll_ms=5,
                            ledger_dir=str(tmp_path / "nol")))
    msg = str(e.value)
    for part in ("is not a directory", "--port 0", "--poll-ms 5", "--ledger-dir"):
        assert part in msg
