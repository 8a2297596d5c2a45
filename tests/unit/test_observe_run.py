"""Observers on a real federation (the real round loop and ClientApp, in-process, DP-SGD):
what TensorBoard and Prometheus show is what metrics.jsonl and summary.json say."""

import json
import urllib.request

import pytest

pytest.importorskip("tensorboard")
pytest.importorskip("prometheus_client")

from prometheus_client.parser import text_string_to_metric_families  # noqa: E402
from tensorboard.backend.event_processing.event_accumulator import (  # noqa: E402
    EventAccumulator,
)

from lepton_fed.client import app as client_module  # noqa: E402
from lepton_fed.inprocess import InProcessGrid  # noqa: E402
from lepton_fed.observe import observers_for  # noqa: E402
from lepton_fed.observe.prometheus import CoordinatorMetrics  # noqa: E402
from lepton_fed.server.outputs import RunWriter  # noqa: E402
from lepton_fed.server.rounds import run_federation  # noqa: E402


@pytest.fixture(scope="module")
def dp_run(tmp_path_factory):
    from lepton_fed.config import compose

    d = tmp_path_factory.mktemp("run")
    cfg = compose(["privacy=dpsgd", "privacy.epsilon=2", "federation.rounds=3",
                   "federation.num_clients=3", "federation.clients_per_round=3",
                   "++observe.metrics_port=0", "++observe.progress=false"])
    obs = observers_for(cfg, d)
    prom = next(o for o in obs if isinstance(o, CoordinatorMetrics))
    summary = run_federation(InProcessGrid(client_module.app, 3), cfg, RunWriter(d), obs)
    with urllib.request.urlopen(f"http://127.0.0.1:{prom.port}/metrics", timeout=10) as r:
        text = r.read().decode()
    prom.endpoint.shutdown()
    rows = [json.loads(x) for x in (d / "metrics.jsonl").read_text().splitlines()]
    return d, rows, summary, text


def test_tensorboard_matches_metrics_jsonl(dp_run):
    d, rows, summary, _ = dp_run
    acc = EventAccumulator(str(d), size_guidance={"scalars": 0})
    acc.Reload()
    for tag, key in (("eval/accuracy", "accuracy"), ("privacy/epsilon_max", "epsilon"),
                     ("participation/clients", "clients"), ("bytes/up", "bytes_up"),
                     ("time/round_seconds", "seconds")):
        got = [(e.step, e.value) for e in acc.Scalars(tag)]
        assert got == [(r["round"], pytest.approx(r[key], rel=1e-6)) for r in rows], tag
    final = {n: e.value for n, e in
             ((t.split("/")[-1], acc.Scalars(t)[-1]) for t in acc.Tags()["scalars"]
              if t.startswith("final/epsilon/"))}
    assert final == {n: pytest.approx(e, rel=1e-6)
                     for n, e in summary["privacy"]["per_client"].items()}


def test_prometheus_matches_the_run(dp_run):
    _, rows, summary, text = dp_run
    s = {(x.name, tuple(sorted(x.labels.items()))): x.value
         for f in text_string_to_metric_families(text) for x in f.samples}
    assert s[("lepton_round", ())] == len(rows) == 3
    assert s[("lepton_run_finished", ())] == 1
    assert s[("lepton_round_duration_seconds_sum", ())] == pytest.approx(
        sum(r["seconds"] for r in rows))
    assert s[("lepton_bytes_total", (("direction", "up"),))] == sum(r["bytes_up"] for r in rows)
    assert s[("lepton_epsilon_target", ())] == 2.0
    for node, eps in summary["privacy"]["per_client"].items():
        assert s[("lepton_epsilon", (("node", node),))] == pytest.approx(eps)
    assert s[("lepton_epsilon_max", ())] == pytest.approx(summary["privacy"]["epsilon"])


def test_per_node_detail_reaches_tensorboard_and_prometheus(dp_run):
    """The round loop writes each row's per-node detail (``epsilon_per_node``,
    ``declines``, ``failures``, ``sampled``, ``connected``), both observers show it."""
    d, rows, _, text = dp_run
    assert "epsilon_per_node" in rows[0] and "sampled" in rows[0], rows[0]
    acc = EventAccumulator(str(d), size_guidance={"scalars": 0})
    acc.Reload()
    for node in rows[0]["epsilon_per_node"]:
        got = [(e.step, e.value) for e in acc.Scalars(f"privacy/epsilon/{node}")]
        want = [(r["round"], pytest.approx(r["epsilon_per_node"][node], rel=1e-6))
                for r in rows if node in r["epsilon_per_node"]]
        assert got == want
    s = {(x.name, tuple(sorted(x.labels.items()))): x.value
         for f in text_string_to_metric_families(text) for x in f.samples}
    assert s[("lepton_nodes", (("state", "sampled"),))] == rows[-1]["sampled"] == 3
    assert s[("lepton_nodes", (("state", "connected"),))] == rows[-1]["connected"] == 3
    assert [e.value for e in acc.Scalars("participation/sampled")] == [3, 3, 3]
