"""The per-member privacy statement, checked against real federations (the real round
loop and ClientApp in-process): the metrics it says left a node are exactly those the
nodes sent, and the ledger history is what the node's ledger holds."""

import json

import pytest

from lepton_fed.client import app as client_module
from lepton_fed.errors import ConfigError
from lepton_fed.inprocess import InProcessGrid
from lepton_fed.observe.statement import build_statement, render_statement
from lepton_fed.server.outputs import RunWriter
from lepton_fed.server.rounds import run_federation
from lepton_fed.sim_bundle import write_bundle

REPLACED = "num-examples (replaced by 1: the policy keeps the count)"


def _run(cfg, d, **grid_kw):
    grid = InProcessGrid(client_module.app, int(cfg.federation.num_clients), **grid_kw)
    summary = run_federation(grid, cfg, RunWriter(d))
    return summary, grid


def _listed_metrics(st):
    line = next(i for i in st["left_in_clear"] if i.startswith("each round it trained, metrics"))
    return set(line.split(": ", 1)[1].split(", "))


def _sent(grid):
    out = set()
    for r in grid.seen:
        if r.metadata.message_type == "train" and r.has_content() and "metrics" in r.content:
            out |= set(r.content["metrics"].keys())
    return out


@pytest.mark.parametrize("privacy, clear, expected", [
    (["privacy=dpsgd", "privacy.epsilon=3"], None,
     {"num-examples", "unit-weight", "declined", "train-loss", "epsilon", "server-round",
      "epsilon-rdp", "epsilon-pld", "dp-batch-size", "dp-epochs", "dp-lr", "dp-clip",
      "dp-local-steps", "dp-noise-multiplier"}),
    (["privacy=dpsgd", "privacy.epsilon=3"], "[epsilon,unit-weight]",
     {"unit-weight", "declined", "epsilon", "server-round", REPLACED}),
    (["privacy=central", "privacy.noise_multiplier=0.5"], None,
     {"num-examples", "unit-weight", "declined", "train-loss", "update-norm", "server-round"}),
    (["privacy=dpsgd", "privacy.epsilon=3", "secagg=on"], None, {"declined", "epsilon"}),
    (["privacy=distributed", "privacy.epsilon=8", "secagg=on", "model=logreg"], None,
     {"declined"}),  # the coordinator accounts the sums it unmasks: no node epsilon
])
def test_listed_clear_metrics_are_exactly_what_nodes_sent(compose_cfg, tmp_path, privacy,
                                                          clear, expected):
    ov = [*privacy, "federation.rounds=2", "federation.num_clients=3",
          "federation.clients_per_round=3"]
    if clear:
        ov.append(f"node_policy.clear_metrics={clear}")
    cfg = compose_cfg(*ov)
    _, grid = _run(cfg, tmp_path / "run", bundle=write_bundle(tmp_path / "bundle", cfg))
    st = build_statement(tmp_path / "run")
    listed = _listed_metrics(st)
    assert listed == expected
    assert _sent(grid) == {m.split(" ")[0] for m in listed}
    update = next(i for i in st["left_in_clear"] if i.startswith("each round it trained: "))
    masked = any("secagg=on" in o for o in privacy)
    assert ("masked" in update) is masked
    assert all("arrays" not in r.content for r in grid.seen
               if r.metadata.message_type == "train") is masked  # no plain update left
    if REPLACED in listed:  # the count really was withheld
        counts = {r.content["metrics"]["num-examples"] for r in grid.seen
                  if r.metadata.message_type == "train" and "metrics" in r.content}
        assert counts == {1}


def test_ledger_history_spans_runs(compose_cfg, tmp_path):
    """Two runs on the same node data: the statement's ledger total is the node's spend
    over both, as the node reported it at the end of the second run."""
    nodes = [{"partition-id": i, "num-partitions": 3, "ledger-dir": str(tmp_path / f"l{i}")}
             for i in range(3)]
    common = ["privacy=dpsgd", "federation.rounds=2", "federation.num_clients=3",
              "federation.clients_per_round=3"]
    s1, _ = _run(compose_cfg(*common, "privacy.epsilon=1"), tmp_path / "r1",
                 node_configs=nodes, run_id=1)
    s2, _ = _run(compose_cfg(*common, "privacy.epsilon=3"), tmp_path / "r2",
                 node_configs=nodes, run_id=2)
    st = build_statement(tmp_path / "r2", node="partition-0", ledger_dir=tmp_path / "l0")
    [ds] = st["ledger"]["datasets"]
    declined = sum(s2["nodes"]["declines"].get("partition-0", {}).values())
    assert declined < 2  # it trained in run 2 too
    assert ds["events"] == 2 + (2 - declined) and ds["pending"] == 0
    first = s1["privacy"]["per_client"]["partition-0"]
    total = s2["privacy"]["per_client"]["partition-0"]
    assert ds["epsilon_total"] == pytest.approx(total, rel=1e-9)
    assert first < ds["epsilon_total"] <= 3.0 + 1e-6
    assert [n["name"] for n in st["nodes"]] == ["partition-0"]
    text = render_statement(st)
    assert "LEDGER HISTORY" in text and f"over all {ds['events']} rounds" in text


def test_modes_and_parties(compose_cfg, tmp_path):
    cfg = compose_cfg("privacy=central", "privacy.noise_multiplier=0.5", "federation.rounds=1",
                      "federation.num_clients=3", "federation.clients_per_round=3")
    _run(cfg, tmp_path)
    st = build_statement(tmp_path)
    assert st["mechanism"]["mode"] == "central" and st["mechanism"]["clip"] == 1.0
    assert "coordinator" in st["mechanism"]["enforced_by"]
    coord = st["who_sees"][0]["sees"]
    assert "individual update" in coord and "NOT protect" in coord
    assert any("NOT noised" in i for i in st["left_in_clear"])
    assert json.loads(json.dumps(st)) == st  # JSON-ready


@pytest.fixture(scope="module")
def plain_run(tmp_path_factory):
    """A finished 1-round run without DP (3 nodes)."""
    from lepton_fed.config import compose

    d = tmp_path_factory.mktemp("plain")
    _run(compose(["federation.rounds=1", "federation.num_clients=3",
                  "federation.clients_per_round=3"]), d)
    return d


def test_a_run_still_going_and_bad_input(plain_run, tmp_path):
    import shutil

    going = tmp_path / "going"
    shutil.copytree(plain_run, going)
    (going / "summary.json").unlink()
    st = build_statement(going)
    assert st["finished"] is False and st["nodes"] == [] and st["rounds_completed"] == 1
    assert "still running" in render_statement(st)
    with pytest.raises(ConfigError, match="no config.yaml"):
        build_statement(tmp_path / "nowhere")
    with pytest.raises(ConfigError, match="ledger directory"):
        build_statement(plain_run, ledger_dir=tmp_path / "nope")
    with pytest.raises(ConfigError, match=r"node 'x' is not in this run.*partition-0"):
        build_statement(plain_run, node="x")


def test_statement_command(plain_run, capsys):
    from lepton_fed.observe.statement_cli import run_statement, statement_parser

    assert run_statement(statement_parser().parse_args([str(plain_run), "--json"])) == 0
    st = json.loads(capsys.readouterr().out)
    assert st["mechanism"]["mode"] == "none" and st["finished"] is True
    assert run_statement(statement_parser().parse_args(
        [str(plain_run), "--node", "partition-1"])) == 0
    out = capsys.readouterr().out
    assert "partition-1" in out and "partition-0" not in out.split("WHAT LEFT")[0]


def test_distributed_dp_statement(compose_cfg, tmp_path):
    """Each node adds its own noise share inside the secure sum: nobody is trusted to add
    noise, the trust rests on secure aggregation; the figures are the run's."""
    cfg = compose_cfg("privacy=distributed", "privacy.epsilon=8", "secagg=on", "model=logreg",
                      "federation.rounds=2", "federation.num_clients=3",
                      "federation.clients_per_round=3")
    s, grid = _run(cfg, tmp_path)
    st = build_statement(tmp_path)
    m = st["mechanism"]
    assert m["mode"] == "distributed" and m["secure_aggregation"] is True
    assert "own share of discrete Gaussian noise" in m["description"]
    assert "nobody is trusted to add noise" in m["description"]
    assert "faking dropouts" in m["enforced_by"] and "fewer noise shares" in m["enforced_by"]
    assert m["releases"] == s["privacy"]["releases"] == 2
    assert m["min_contributors"] == 3 and m["clip"] == cfg.privacy.clip
    assert st["spent"]["epsilon"] == s["privacy"]["epsilon"] > 0
    assert "including the coordinator" in st["spent"]["scope"]
    update = next(i for i in st["left_in_clear"] if i.startswith("each round it trained: "))
    assert "noise share" in update and "masked" in update
    assert all("arrays" not in r.content for r in grid.seen
               if r.metadata.message_type == "train")  # no plain update left
    coord = st["who_sees"][0]["sees"]
    assert "fakes dropouts" in coord and "protects against the coordinator" in coord
    assert "node-level epsilon" in st["who_sees"][-1]["sees"]
    text = render_statement(st)
    assert "distributed DP" in text and "releases: 2" in text
    assert json.loads(json.dumps(st)) == st


def _eval_replies(grid):
    return [r for r in grid.seen if r.metadata.message_type in ("evaluate",
                                                                "query.secagg_evaluate")]


@pytest.mark.parametrize("secagg", [False, True])
def test_evaluation_sums_are_listed_as_they_leave(compose_cfg, tmp_path, secagg):
    """Federated evaluation: exact sums in the clear, or under secure aggregation only
    inside the masked vector of the secure sum (query.secagg_evaluate)."""
    cfg = compose_cfg("evaluation.federated=true", "federation.rounds=1", "model=logreg",
                      "federation.num_clients=3", "federation.clients_per_round=3",
                      *(["secagg=on"] if secagg else []))
    _, grid = _run(cfg, tmp_path)
    st = build_statement(tmp_path)
    [item] = [i for i in st["left_in_clear"] if i.startswith("each evaluation")]
    replies = _eval_replies(grid)
    assert replies
    in_clear = [r for r in replies if "metrics" in r.content
                and any(k.startswith("eval-") for k in r.content["metrics"].keys())]
    if secagg:
        assert "no evaluation sum leaves a node in the clear" in item
        assert "exact sums" not in item
        assert not in_clear
        assert {r.metadata.message_type for r in replies} == {"query.secagg_evaluate"}
    else:
        assert "exact sums" in item and "in the clear" not in item
        assert len(in_clear) == len(replies)


def test_late_replies_are_listed_per_node(compose_cfg, tmp_path):
    """A node whose round-1 reply missed the deadline: its discarded late reply is shown."""
    def late(nid, msg):  # node 3's round-1 reply reaches the server only later
        return (nid == 3 and msg.metadata.message_type == "train"
                and int(msg.content["config"]["server-round"]) == 1)

    class Late(InProcessGrid):
        def send_and_receive(self, messages, *, timeout=None):
            out = []
            for m in messages:
                r = self._deliver(m)
                if r is not None and late(m.metadata.dst_node_id, m):
                    self._pending[m.metadata.message_id] = r  # pulled in a later round
                elif r is not None:
                    out.append(r)
            return out

    cfg = compose_cfg("federation.rounds=2", "federation.num_clients=3",
                      "federation.clients_per_round=3", "model=logreg")
    run_federation(Late(client_module.app, 3), cfg, RunWriter(tmp_path))
    st = build_statement(tmp_path)
    assert {n["name"]: n["late"] for n in st["nodes"]} == {
        "partition-0": 0, "partition-1": 0, "partition-2": 1}
    assert "partition-2: epsilon - (failures NO_REPLY x1; late replies discarded x1)" in \
        render_statement(st)
