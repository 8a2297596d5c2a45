"""Prometheus metrics of the coordinator and of a node, scraped over real HTTP and parsed
with prometheus_client.parser."""

import logging
import socket
import urllib.request

import pytest

pytest.importorskip("prometheus_client")

from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from lepton_fed.observe import node_exporter  # noqa: E402
from lepton_fed.observe.node_exporter import NodeMetrics, observe_node_round  # noqa: E402
from lepton_fed.observe.prometheus import CoordinatorMetrics  # noqa: E402

ROW = {"round": 1, "loss": 0.6, "accuracy": 0.7, "auc": 0.8, "clients": 3, "failed": 1,
       "declined": 1, "sampled": 5, "connected": 6, "epsilon": 0.5,
       "epsilon_per_node": {"hospital-a": 0.5, "bank-b": 0.25},
       "declines": {"BUDGET_EXHAUSTED": 1}, "failures": {"NO_REPLY": 1},
       "federated": {"accuracy": 0.69, "loss": 0.61, "nodes": 3},
       "bytes_up": 1000, "bytes_down": 2000, "seconds": 0.7}


def _scrape(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        text = r.read().decode()
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def coordinator():
    m = CoordinatorMetrics(0, rounds_planned=3, epsilon_target=2.0,
                           info={"privacy": "dpsgd", "strategy": "fedavg"})
    yield m
    m.endpoint.shutdown()


def test_coordinator_metrics_over_http(coordinator):
    m = coordinator
    m.on_round(ROW)
    m.on_round(ROW | {"round": 2, "seconds": 3.0, "clients": 4, "failed": 0, "declined": 0,
                      "declines": {}, "failures": {}, "epsilon": 0.9,
                      "epsilon_per_node": {"hospital-a": 0.9}})
    s = _scrape(m.port)
    assert s[("lepton_round", ())] == 2 and s[("lepton_rounds_total", ())] == 2
    assert s[("lepton_rounds_planned", ())] == 3
    assert s[("lepton_round_duration_seconds_count", ())] == 2
    assert s[("lepton_round_duration_seconds_sum", ())] == pytest.approx(3.7)
    assert s[("lepton_round_duration_seconds_bucket", (("le", "1.0"),))] == 1
    assert s[("lepton_nodes", (("state", "replied"),))] == 4
    assert s[("lepton_nodes", (("state", "connected"),))] == 6
    assert s[("lepton_nodes", (("state", "sampled"),))] == 5
    assert s[("lepton_node_outcomes_total", (("outcome", "replied"),))] == 7
    assert s[("lepton_node_outcomes_total", (("outcome", "failed"),))] == 1
    assert s[("lepton_declines_total", (("reason", "BUDGET_EXHAUSTED"),))] == 1
    assert s[("lepton_failures_total", (("code", "NO_REPLY"),))] == 1
    assert s[("lepton_epsilon", (("node", "hospital-a"),))] == 0.9
    assert s[("lepton_epsilon", (("node", "bank-b"),))] == 0.25
    assert s[("lepton_epsilon_max", ())] == 0.9 and s[("lepton_epsilon_target", ())] == 2.0
    assert s[("lepton_bytes_total", (("direction", "up"),))] == 2000
    assert s[("lepton_eval", (("metric", "accuracy"), ("source", "federated")))] == 0.69
    assert s[("lepton_run_info", (("privacy", "dpsgd"), ("strategy", "fedavg")))] == 1
    assert s[("lepton_run_finished", ())] == 0
    m.on_finish({"privacy": {"epsilon": 1.0, "per_client": {"bank-b": 0.4}}})
    s = _scrape(m.port)
    assert s[("lepton_run_finished", ())] == 1
    assert s[("lepton_epsilon", (("node", "bank-b"),))] == 0.4


def test_a_sweep_job_takes_over_the_port(coordinator):
    """Jobs of a sweep run in one process: the next job's registry is served on the
    same port (binding it again would fail)."""
    coordinator.on_round(ROW)
    nxt = CoordinatorMetrics(coordinator.port, rounds_planned=9)
    assert nxt.endpoint is coordinator.endpoint
    s = _scrape(nxt.port)
    assert s[("lepton_rounds_planned", ())] == 9 and s[("lepton_rounds_total", ())] == 0


def test_node_metrics_over_http():
    m = NodeMetrics("hospital-a", port=0)
    try:
        m.record_train(epsilon=2.0, epsilon_cap=8.0, declined=None)
        m.record_train(epsilon=6.0, epsilon_cap=8.0, declined=None)
        m.record_train(epsilon=6.0, epsilon_cap=8.0, declined="BUDGET_EXHAUSTED")
        s = _scrape(m.endpoint.port)
    finally:
        m.endpoint.shutdown()
    node = (("node", "hospital-a"),)
    assert s[("lepton_node_epsilon", node)] == 6.0
    assert s[("lepton_node_epsilon_cap", node)] == 8.0
    assert s[("lepton_node_budget_used_ratio", node)] == 0.75
    assert s[("lepton_node_rounds_trained_total", node)] == 2
    assert s[("lepton_node_rounds_declined_total",
              (("node", "hospital-a"), ("reason", "BUDGET_EXHAUSTED")))] == 1


def test_node_without_metrics_port_serves_nothing(monkeypatch):
    monkeypatch.setattr(node_exporter, "_NODES", {})
    observe_node_round({"data-path": "x.csv"}, node="a", epsilon=1.0, epsilon_cap=8.0,
                       declined=None)
    assert node_exporter._NODES == {}


def test_node_exporter_from_node_config(monkeypatch):
    monkeypatch.setattr(node_exporter, "_NODES", {})
    port = _free_port()
    observe_node_round({"metrics-port": port}, node="bank-b", epsilon=1.5,
                       epsilon_cap=None, declined=None)
    try:
        s = _scrape(port)
        assert s[("lepton_node_epsilon", (("node", "bank-b"),))] == 1.5
        assert ("lepton_node_epsilon_cap", (("node", "bank-b"),)) not in s  # uncapped
    finally:
        node_exporter._NODES[port].endpoint.shutdown()


def test_node_exporter_never_fails_the_round(monkeypatch, caplog):
    """A port held by another program: logged once, the round goes on."""
    monkeypatch.setattr(node_exporter, "_NODES", {})
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with caplog.at_level(logging.WARNING):
            for _ in range(2):
                observe_node_round({"metrics-port": str(port)}, node="a", epsilon=1.0,
                                   epsilon_cap=8.0, declined=None)
    assert node_exporter._NODES == {port: None}
    assert sum("node metrics are off" in r.message for r in caplog.records) == 1
    observe_node_round({"metrics-port": "not-a-port"}, node="a", epsilon=None,
                       epsilon_cap=None, declined=None)  # logged, no exception


def test_node_exporter_reads_the_nodes_real_replies(monkeypatch):
    """Trained, declined (with its code) and error replies as the ClientApp builds them."""
    from flwr.app import Message, MetricRecord, RecordDict
    from flwr.supercore.task_identity import TaskIdentity

    from lepton_fed.client import codes
    from lepton_fed.observe.node_exporter import observe_train_reply

    for k, v in (("_run_id", 1), ("_task_id", 1), ("_node_id", 0)):  # as a running app has
        monkeypatch.setattr(TaskIdentity, k, v, raising=False)
    monkeypatch.setattr(node_exporter, "_NODES", {})
    port = _free_port()
    nc = {"metrics-port": port}
    req = Message(RecordDict(), dst_node_id=1, message_type="train")
    trained = Message(RecordDict({"metrics": MetricRecord({"epsilon": 3.0, "declined": 0})}),
                      reply_to=req)
    declined = codes.decline_reply(req, "BUDGET_EXHAUSTED", metrics={"epsilon": 7.5})
    failed = codes.error_reply(req, ValueError("bad"), "hospital-a")
    for reply in (trained, trained, declined, failed):
        observe_train_reply(nc, node="hospital-a", reply=reply, epsilon_cap=8.0)
    observe_train_reply({}, node="x", reply=object(), epsilon_cap=None)  # off: no-op
    try:
        s = _scrape(port)
    finally:
        node_exporter._NODES[port].endpoint.shutdown()
    node = (("node", "hospital-a"),)
    assert s[("lepton_node_rounds_trained_total", node)] == 2
    assert s[("lepton_node_rounds_declined_total",
              (("node", "hospital-a"), ("reason", "BUDGET_EXHAUSTED")))] == 1
    assert s[("lepton_node_rounds_failed_total", node)] == 1
    assert s[("lepton_node_epsilon", node)] == 7.5
    assert s[("lepton_node_budget_used_ratio", node)] == pytest.approx(7.5 / 8)
