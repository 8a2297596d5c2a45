"""A node that restarts between rounds (same node id, same identity key, lost its run
config and round keys) is set up again before the next round samples it.

The SuperLink reports when it last activated each node (``NodeInfo.last_activated_at``,
newer after a restart or after the node came back from offline); the server compares it
with the time it recorded at the node's setup. The grid here is the in-process grid whose
``restart(node)`` wipes the node's in-memory state as a process restart does and reports
a new activation time, exactly the two things a real SuperNode restart changes.
"""

import json

import pytest
from flwr.app import RecordDict
from flwr.proto.node_pb2 import NodeInfo

from lepton_fed.client.app import app
from lepton_fed.inprocess import InProcessGrid
from lepton_fed.secagg.provisioning import make_sim_bundle
from lepton_fed.server.outputs import RunWriter
from lepton_fed.server.rounds import run_federation

N = 4
BASE = (f"federation.num_clients={N}", f"federation.clients_per_round={N}",
        "federation.rounds=3", "model=logreg")


class Restarting(InProcessGrid):
    """Reports an activation time per node; ``restart`` gives a node a fresh process."""

    def __init__(self, *a, report_activation: bool = True, **kw):
        super().__init__(*a, **kw)
        self.report = report_activation
        self.activations = dict.fromkeys(self.contexts, 1)

    def get_nodes(self):
        return [NodeInfo(node_id=n, last_activated_at=f"t{self.activations[n]}"
                         if self.report else "") for n in self.contexts]

    def restart(self, nid: int) -> None:
        self.contexts[nid].state = RecordDict()  # what lived in the process is gone
        self.activations[nid] += 1


class RestartAfterRound:
    """Observer: restarts ``nid`` right after round ``rnd`` (between two rounds)."""

    def __init__(self, grid: Restarting, nid: int, rnd: int) -> None:
        self.grid, self.nid, self.rnd = grid, nid, rnd

    def on_round(self, row):
        if row["round"] == self.rnd:
            self.grid.restart(self.nid)

    def on_finish(self, summary):
        pass


def _run(compose_cfg, tmp_path, *over, report=True):
    make_sim_bundle(tmp_path / "bundle", N)
    configs = [{"partition-id": i, "num-partitions": N, "sim-bundle": str(tmp_path / "bundle")}
               for i in range(N)]
    grid = Restarting(app, N, node_configs=configs, report_activation=report)
    cfg = compose_cfg(*BASE, *over)
    summary = run_federation(grid, cfg, RunWriter(tmp_path / "run"),
                             observers=[RestartAfterRound(grid, 2, 1)])
    rows = [json.loads(x) for x in (tmp_path / "run/metrics.jsonl").read_text().splitlines()]
    return summary, rows, grid


@pytest.mark.parametrize("secagg", ["off", "on"])
def test_a_restarted_node_is_set_up_again_and_trains_in_the_next_round(
        compose_cfg, tmp_path, secagg):
    summary, rows, grid = _run(compose_cfg, tmp_path, f"secagg={secagg}")
    assert [r["clients"] for r in rows] == [N, N, N], rows
    assert all(r["declined"] == 0 and r["failed"] == 0 for r in rows), rows
    if secagg == "on":
        assert all(r["secagg"]["contributors"] == N for r in rows), rows
    assert summary["nodes"]["declines"] == {}, summary["nodes"]
    setups = [m for m in grid.seen if m.metadata.message_type == "query.setup"
              and m.metadata.src_node_id == 2]
    assert len(setups) == 2  # once at the start, once after its restart


def test_without_activation_times_the_restart_is_only_seen_when_the_node_declines(
        compose_cfg, tmp_path):
    """The control: a grid that does not report activation times (the check above would
    fail without the server's activation bookkeeping): the restarted node is sampled with
    stale state, declines NEEDS_SETUP, and misses round 2."""
    summary, rows, _ = _run(compose_cfg, tmp_path, "secagg=off", report=False)
    assert rows[1]["clients"] == N - 1 and rows[1]["declined"] == 1, rows
    assert rows[2]["clients"] == N, rows  # set up again before round 3
    assert summary["nodes"]["declines"] == {"partition-1": {"NEEDS_SETUP": 1}}
