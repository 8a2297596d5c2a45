"""A real federation on loopback, started the way docs/deploy.md tells a hospital to.

``lepton-fed superlink`` + four ``lepton-fed node join`` (real Flower SuperLink/SuperNode
processes, TLS, node authentication, the pinned-code runner; no ``--policy``, so every
node holds the strict default: DP-SGD with epsilon <= 8, secure aggregation of >= 40
bits, cohorts of >= 3) + ``lepton-fed run`` with a coordinator that holds no data
(``data.schema`` with a declared normalization, federated evaluation). Then what the
deployment must survive or stop: a node killed mid-round (and restarted), a schema that
differs, a foreign app package, the control API on the public port, an unregistered
key, a node without the CA, a SuperLink restart. Fed-Heart-Disease hospitals last
(skipped when ../shared/data is absent).

One SuperLink serves the whole module; the four nodes are restarted only where a test
needs other data or fresh ledgers (a node's ledger caps its data's lifetime spend at the
run's epsilon, so a second DP run on the same ledger is declined by design). Every
process group the module starts is stopped by its PID at the end, pass or fail.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest

from lepton_fed.deploy.procs import free_port, tool
from lepton_fed.deploy.provision import add_node, init_federation
from lepton_fed.privacy import FileLedger

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
HEART = REPO.parent / "shared" / "data" / "fed_heart_disease"
CLI = [sys.executable, "-m", "lepton_fed.cli.main"]
ENV = dict(os.environ, FLWR_TELEMETRY_ENABLED="0", PYTHONUNBUFFERED="1",
           FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION="1", FLWR_DISABLE_UPDATE_CHECK="1")
NODES = ("hospital-a", "hospital-b", "hospital-c", "hospital-d")
ROUNDS = 3
# What the strict default accepts; timeouts cut to what a loaded 2-core machine needs
# (a secure stage waits secagg.timeout for a node that died; Flower polls every 3 s).
DP_SECAGG = ("privacy=dpsgd", "privacy.epsilon=8", "privacy.delta=1e-5", "secagg=on",
             f"federation.rounds={ROUNDS}", f"federation.evaluate_every={ROUNDS}",
             "federation.node_wait=10", "federation.round_timeout=90", "secagg.timeout=30")


class Group:
    """A process started in its own session (= process group); stopped by its PID."""

    def __init__(self, argv: list[str], log: Path, cwd: Path) -> None:
        self.log = log
        with open(log, "wb") as f:
            self.proc = subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT, env=ENV,
                                         cwd=cwd, start_new_session=True)

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for(self, text: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.text():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"no {text!r} in {self.log}:\n{self.text()[-3000:]}")
            time.sleep(0.2)

    def kill(self) -> None:
        """SIGKILL the whole group (the CLI, its SuperNode and its runner) at once."""
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        """SIGTERM to the leader only (it stops its children, each with ONE signal: a
        SuperNode signalled twice dies before it leaves the SuperLink, which then keeps
        it online for 60 s and refuses its restart); then SIGKILL whatever is left of
        the group."""
        try:
            os.kill(self.proc.pid, signal.SIGTERM)
            self.proc.wait(30)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.proc.wait(10)


# ------------------------------------------------------------------ data
def _sites(tmp: Path, frames: Sequence[Any], label: str) -> dict[str, Any]:
    """One CSV per node and the federation's schema: feature names, classes and a
    declared normalization (the coordinator holds no data; it stands for published
    reference values, here computed once by the test author)."""
    import pandas as pd
    import yaml

    tmp.mkdir(parents=True, exist_ok=True)
    csvs = []
    for name, df in zip(NODES, frames, strict=True):
        csvs.append(tmp / f"{name}.csv")
        df.to_csv(csvs[-1], index=False)
    pooled = pd.concat(frames)
    features = [c for c in pooled.columns if c != label]
    norm = {f: [float(pooled[f].mean()), float(pooled[f].std()) or 1.0] for f in features}
    schema = tmp / "schema.yaml"
    schema.write_text(yaml.safe_dump({"label": label, "classes": [0, 1], "features": features,
                                      "normalization": norm}, sort_keys=False))
    return {"csvs": csvs, "label": label, "schema": schema, "features": features}


def _generated(tmp: Path) -> dict[str, Any]:
    """Four hospitals of a generated binary task (label ``outcome``, unscaled features)."""
    import pandas as pd
    from sklearn.datasets import make_classification

    X, y = make_classification(n_samples=4 * 150, n_features=8, n_informative=5, n_redundant=1,
                               class_sep=1.2, random_state=0)
    frames = []
    for i in range(4):
        df = pd.DataFrame(X[i * 150:(i + 1) * 150] * 3.0 + 10.0 + i,
                          columns=[f"x{j}" for j in range(8)])
        df["outcome"] = y[i * 150:(i + 1) * 150]
        frames.append(df)
    return _sites(tmp, frames, "outcome")


def _heart(tmp: Path) -> dict[str, Any]:
    """One file per Fed-Heart-Disease hospital, rows as FLamby preprocesses them
    (``lepton_fed.data.datasets._heart_disease``: 13 features, label ``disease``)."""
    import pandas as pd

    from lepton_fed.data.datasets import _heart_disease

    data = _heart_disease(str(HEART))
    names = [f.name for f in data.features]
    frames = [pd.DataFrame(data.X[data.silo == s], columns=names)
              .assign(disease=data.y[data.silo == s]) for s in range(4)]
    return _sites(tmp, frames, "disease")


# ------------------------------------------------------------------ the federation
class Federation:
    """The module's SuperLink and its four nodes."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.port, self.control = free_port(), free_port()
        self.dir = init_federation(tmp / "fed", name="loopback", superlink_hosts=["127.0.0.1"],
                                   nodes=list(NODES), port=self.port)
        self.superlink: Group | None = None
        self.nodes: dict[str, Group] = {}
        self.data: dict[str, Any] = {}
        self.ledgers = tmp / "ledgers"

    def start_superlink(self, log: str = "superlink.out") -> None:
        self.superlink = Group([*CLI, "superlink", str(self.dir.root), "--bind", "127.0.0.1",
                                "--control-port", str(self.control)], self.tmp / log, self.tmp)
        self.superlink.wait_for("is up", 90)

    def start_node(self, name: str) -> Group:
        """``lepton-fed node join`` as a hospital types it (no --policy: strict default)."""
        i = NODES.index(name)
        log = self.tmp / f"{name}-{time.monotonic_ns()}.out"
        g = Group([*CLI, "node", "join", "--federation", str(self.dir.node(name).root),
                   "--data", str(self.data["csvs"][i]), "--label", self.data["label"],
                   "--ledger", str(self.ledger_dir(name))], log, self.tmp)
        self.nodes[name] = g
        return g

    def ledger_dir(self, name: str) -> Path:
        d = self.ledgers / name
        d.mkdir(parents=True, exist_ok=True)
        return d

    def start_nodes(self, data: dict[str, Any], ledgers: Path) -> None:
        """(Re)start all four nodes on ``data`` with ledgers under ``ledgers``."""
        self.stop_nodes()
        self.data, self.ledgers = data, ledgers
        for name in NODES:
            self.start_node(name)
        for g in self.nodes.values():
            g.wait_for("joined federation", 90)

    def stop_nodes(self) -> None:
        for g in self.nodes.values():  # all at once, then each by its PID
            if g.proc.poll() is None:
                os.kill(g.proc.pid, signal.SIGTERM)
        for g in self.nodes.values():
            g.stop()
        self.nodes = {}

    def node_status(self, name: str) -> str:
        """The SuperLink's status of ``name`` (online/offline/...), by its SuperNode ID."""
        from flwr.proto.control_pb2 import ListNodesRequest

        from lepton_fed.deploy import control

        m = re.search(r"SuperNode ID (\d+)", self.nodes[name].text())
        assert m, self.nodes[name].text()
        client = control.connect(f"127.0.0.1:{self.control}", self.dir.coordinator.ca_cert)
        try:
            infos = client.ListNodes(ListNodesRequest()).nodes_info
        finally:
            client.close()
        return next(str(n.status) for n in infos if n.node_id == int(m.group(1)))

    def stop(self) -> None:
        self.stop_nodes()
        if self.superlink is not None:
            self.superlink.stop()

    def run_args(self, run_dir: Path, *overrides: str) -> list[str]:
        return [*CLI, "run", "--federation", str(self.dir.root), "--run-dir", str(run_dir),
                "data=csv", f"data.schema={self.data['schema']}", "evaluation.server_data=false",
                *overrides]


@pytest.fixture(scope="module")
def fed(tmp_path_factory):
    f = Federation(tmp_path_factory.mktemp("loopback"))
    try:
        f.start_superlink()
        f.start_nodes(_generated(f.tmp / "generated"), f.tmp / "ledgers-generated")
        yield f
    finally:
        f.stop()


def _run(argv: list[str], cwd: Path, timeout: float, env: dict[str, str] | None = None
         ) -> subprocess.CompletedProcess[str]:
    """Run to completion in a session of its own; on timeout stop that whole group."""
    with subprocess.Popen(argv, cwd=cwd, env=env or ENV, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, start_new_session=True) as p:
        try:
            out, err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            out, err = p.communicate()
            raise AssertionError(f"{argv[:4]} timed out:\n{out[-3000:]}\n{err[-3000:]}") from None
    return subprocess.CompletedProcess(argv, p.returncode, out, err)


def _cli(*args: str, cwd: Path, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    return _run([*CLI, *args], cwd, timeout)


def _rows(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines() if x]


def _ledger_epsilon(directory: Path, privacy: dict[str, Any], *, may_be_empty: bool = False
                    ) -> tuple[float, list[Any]]:
    """Epsilon of the node's one ledger (FileLedger, as the node wrote it) and its events."""
    store = FileLedger(directory)
    keys = store.keys()
    if may_be_empty and not keys:
        return 0.0, []
    assert len(keys) == 1, f"{directory}: ledgers {keys}"
    ledger = store.load(keys[0])
    return (ledger.epsilon(delta=float(privacy["delta"]), accountant=privacy["accountant"]),
            list(ledger.events))


def _check_run_dir(run_dir: Path, rounds: int) -> dict[str, Any]:
    """The run directory a simulation writes, complete; returns summary.json."""
    for name in ("config.yaml", "metrics.jsonl", "summary.json", "model.safetensors",
                 "preprocess.json"):
        assert (run_dir / name).is_file(), f"{name} missing in {run_dir}"
    summary = json.loads((run_dir / "summary.json").read_text())
    assert [r["round"] for r in _rows(run_dir)] == list(range(1, rounds + 1))
    assert summary["plots"] and all((run_dir / p).is_file() for p in summary["plots"])
    assert summary["evaluation"] == {"server_data": False, "federated": True}
    assert summary["scaler"] == "declared in the schema"
    final = summary["final"]  # federated evaluation: federation totals only (secagg)
    assert final["federated"] is not None and final["accuracy"] is not None
    assert 0.0 <= final["accuracy"] <= 1.0
    sa = summary["secagg"]
    assert sa["enabled"] and sa["neighbours"] and sa["threshold"] and not sa["abandoned_rounds"]
    return summary


def _runner_log(fed: Federation, node: str) -> Path:
    return fed.dir.node(node).state / "logs" / "runner.log"


def _dp_secagg_run(fed: Federation, name: str, *, accuracy_above: float) -> dict[str, Any]:
    run_dir = fed.tmp / name
    marks = {n: _runner_log(fed, n).stat().st_size for n in NODES}  # this run's lines only
    t0 = time.monotonic()
    out = _run(fed.run_args(run_dir, *DP_SECAGG), fed.tmp, 420)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    print(f"{name}: {time.monotonic() - t0:.1f}s; rounds "
          f"{[round(r['seconds'], 1) for r in _rows(run_dir)]}")
    assert f"[lepton-fed] round {ROUNDS}/{ROUNDS}" in out.stdout
    summary = _check_run_dir(run_dir, ROUNDS)
    print(f"{name}: accuracy {summary['final']['accuracy']:.3f}, epsilon per node "
          f"{summary['privacy']['per_client']}")
    assert summary["rounds_completed"] == ROUNDS
    assert sorted(summary["nodes"]["names"]) == list(NODES)
    assert not summary["nodes"]["refused"] and not summary["nodes"]["failures"]
    assert all(r["clients"] == 4 for r in _rows(run_dir))
    assert summary["final"]["accuracy"] > accuracy_above, summary["final"]
    privacy = summary["privacy"]
    assert privacy["mode"] == "dpsgd" and set(privacy["per_client"]) == set(NODES)
    for node in NODES:  # each hospital's own ledger, as its node wrote it, on its disk
        eps, events = _ledger_epsilon(fed.ledger_dir(node), privacy)
        assert len(events) == ROUNDS and not any(e.pending for e in events)
        assert eps == pytest.approx(privacy["per_client"][node], rel=1e-9, abs=1e-12)
        assert 0 < eps <= 8.0
    started = re.search(r"started run (\d+)", out.stdout + out.stderr)
    for node in NODES:
        with open(_runner_log(fed, node), "rb") as f:
            f.seek(marks[node])
            log = f.read().decode(errors="replace")
        assert "(pinned)" in log
        # this run's tasks were all run pinned (a foreign package of an earlier test's run,
        # refused on the same node, may be logged late: only this run's lines count)
        mine = [ln for ln in log.splitlines() if started is None or started.group(1) in ln]
        assert mine and not any("REFUSED" in ln for ln in mine), log[-2000:]
    return summary


def test_four_hospitals_dp_secagg_three_rounds_coordinator_without_data(fed):
    _dp_secagg_run(fed, "run-generated", accuracy_above=0.6)


def test_a_node_with_a_different_schema_is_refused_with_the_column_named(fed):
    import yaml

    schema = yaml.safe_load(fed.data["schema"].read_text())
    schema["features"].append("troponin")
    other = fed.tmp / "schema-v2.yaml"
    other.write_text(yaml.safe_dump(schema))
    run_dir = fed.tmp / "run-schema-v2"
    argv = [a if not a.startswith("data.schema=") else f"data.schema={other}"
            for a in fed.run_args(run_dir, *DP_SECAGG)]
    out = _run(argv, fed.tmp, 180)
    assert out.returncode == 7, out.stdout[-3000:] + out.stderr[-3000:]  # exits non-zero
    text = out.stdout + out.stderr
    for n in NODES:  # the coordinator sees each node's name and reason code
        assert f"{n}: SCHEMA_MISMATCH" in text, text[-3000:]
        log = (fed.dir.node(n).state / "logs" / "runner.log").read_text()
        assert "SCHEMA_MISMATCH: column 'troponin' is missing" in log  # the node, the column
    assert str(fed.data["csvs"][0].parent) not in text  # and no node file path
    assert not (run_dir / "summary.json").exists()


def test_a_foreign_app_package_is_refused_with_its_hash(fed, tmp_path):
    from flwr.cli.build import build_fab_from_disk

    from lepton_fed.deploy.submit import write_app

    marker = tmp_path / "PWNED"
    app = write_app(tmp_path / "evil")
    py = app / "pyproject.toml"
    py.write_text(py.read_text().replace('clientapp = "lepton_fed.client.app:app"',
                                         'clientapp = "evil.client:app"'))
    (app / "evil").mkdir()
    (app / "evil" / "__init__.py").write_text("")
    (app / "evil" / "client.py").write_text(
        f"from pathlib import Path\nPath({str(marker)!r}).write_text('ran')\n"
        "from flwr.clientapp import ClientApp\napp = ClientApp()\n")
    digest = hashlib.sha256(build_fab_from_disk(app)).hexdigest()
    rc = fed.tmp / "evil-rc.toml"
    rc.write_text(f'config-overrides = "data=csv data.path={fed.data["csvs"][0]} '
                  f'data.label={fed.data["label"]} privacy=none federation.num_clients=4 '
                  f'federation.clients_per_round=4 federation.rounds=1"\n'
                  f'run-dir = "{tmp_path / "evil-run"}"\n')
    env = dict(ENV, FLWR_HOME=str(fed.dir.coordinator.state / "flwr_home"))
    out = _run([tool("flwr"), "run", str(app), "lepton", "--stream", "--run-config", str(rc)],
               tmp_path, 120, env)
    assert "Successfully started run" in out.stdout, out.stdout + out.stderr
    for name in NODES:
        log = fed.dir.node(name).state / "logs" / "runner.log"
        deadline = time.monotonic() + 45
        while f"FAB sha256 {digest}" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.5)
        line = [x for x in log.read_text().splitlines() if digest in x]
        assert line and "REFUSED" in line[0] and "evil/client.py" in line[0]
    assert not marker.exists()
    assert "refused the app package" in out.stdout  # the ServerApp sees why


def test_public_port_serves_only_the_fleet_api(fed):
    from flwr.proto.control_pb2 import ListNodesRequest

    from lepton_fed.deploy import control

    ca = fed.dir.coordinator.ca_cert
    public = control.connect(f"127.0.0.1:{fed.port}", ca)
    with pytest.raises(httpx.HTTPStatusError) as err:
        public.ListNodes(ListNodesRequest())
    assert err.value.response.status_code == 404
    public.close()
    for path in ("/v1/runtime/acquire-task", "/v1/control/start-run", "/v1/fleet/../control/list-nodes"):
        assert httpx.post(f"https://127.0.0.1:{fed.port}{path}", verify=str(ca)).status_code == 404
    local = control.connect(f"127.0.0.1:{fed.control}", ca)
    assert len(local.ListNodes(ListNodesRequest()).nodes_info) == len(NODES)
    local.close()


def test_unregistered_key_is_refused(fed, tmp_path):
    copy = tmp_path / "fed"
    shutil.copytree(fed.dir.root, copy, ignore=shutil.ignore_patterns("state"))
    bundle = add_node(copy, "hospital-e")  # same CA, but the running SuperLink never saw this key
    out = _cli("node", "join", "--federation", str(bundle.root), "--data",
               str(fed.data["csvs"][0]), "--label", fed.data["label"], "--ledger", str(tmp_path),
               cwd=tmp_path, timeout=60)
    assert out.returncode == 8, out.stdout + out.stderr
    assert "does not accept this node's key" in out.stderr and "not registered" in out.stderr


def test_a_node_without_the_federation_ca_cannot_connect(fed, tmp_path):
    other = init_federation(tmp_path / "other", name="other", superlink_hosts=["127.0.0.1"],
                            nodes=["hospital-a"])
    out = _cli("node", "join", "--federation", str(other.node("hospital-a").root), "--superlink",
               f"127.0.0.1:{fed.port}", "--data", str(fed.data["csvs"][0]), "--label",
               fed.data["label"], "--ledger", str(tmp_path), cwd=tmp_path, timeout=60)
    assert out.returncode == 8 and "does not accept" in out.stderr, out.stderr
    # Flower's own SuperNode with the right key but no CA (system roots): TLS fails, no session.
    sn = _run([tool("flower-supernode"), "--superlink", f"127.0.0.1:{fed.port}",
               "--auth-supernode-private-key", str(fed.dir.node("hospital-a").auth_key),
               "--isolation", "process", "--port", str(free_port()), "--max-retries", "1"],
              tmp_path, 60)
    assert sn.returncode != 0 and "SuperNode ID" not in sn.stdout + sn.stderr


def test_superlink_restart_keeps_registrations_and_nodes(fed):
    """The next test's run goes through the restarted SuperLink."""
    from flwr.proto.control_pb2 import ListNodesRequest

    from lepton_fed.deploy import control

    client = control.connect(f"127.0.0.1:{fed.control}", fed.dir.coordinator.ca_cert)
    before = {n.node_id for n in client.ListNodes(ListNodesRequest()).nodes_info}
    client.close()
    assert fed.superlink is not None
    fed.superlink.stop()
    fed.start_superlink("superlink-2.out")
    text = fed.superlink.text()
    assert "hospital-a               registered (node id" in text and "registered now" not in text
    client = control.connect(f"127.0.0.1:{fed.control}", fed.dir.coordinator.ca_cert)
    assert {n.node_id for n in client.ListNodes(ListNodesRequest()).nodes_info} == before
    client.close()
    assert all(g.proc.poll() is None for g in fed.nodes.values())  # the nodes never stopped


def _count(path: Path, text: str) -> int:
    try:
        return path.read_text(errors="replace").count(text)
    except FileNotFoundError:
        return 0


VICTIM = "hospital-d"


@pytest.fixture(scope="module")
def kill_run(fed):
    """One run of 3 rounds in which ``hospital-d`` is killed with SIGKILL (its whole
    process group: the CLI, its SuperNode and its runner) while it trains in round 1,
    then started again with the same command once the SuperLink lists it offline.

    Flower keeps a node that vanished "online" for two heartbeats (60 s) and refuses to
    activate it again before that, so ``secagg.timeout`` is 70 s here: round 1 outlasts
    that window and round 2 is sampled from the three live nodes (after waiting
    ``node_wait`` for a fourth), whatever the phase of the dead node's heartbeat was."""
    fed.start_nodes(fed.data, fed.tmp / "ledgers-kill")  # fresh ledgers: a new DP budget
    sn_log = fed.dir.node(VICTIM).state / "logs" / "supernode.log"
    trains_before = _count(sn_log, "Receiving: train message")
    peer_log = fed.dir.node(NODES[0]).state / "logs" / "supernode.log"
    peer_before = _count(peer_log, "Receiving: train message")
    run_dir = fed.tmp / "run-kill"
    over = [o for o in DP_SECAGG if not o.startswith("secagg.timeout=")]
    run = Group(fed.run_args(run_dir, *over, "secagg.timeout=70"), fed.tmp / "run-kill.out",
                fed.tmp)
    t: dict[str, float] = {}
    try:
        deadline = time.monotonic() + 240
        while _count(sn_log, "Receiving: train message") == trains_before:
            assert run.proc.poll() is None and time.monotonic() < deadline, run.text()[-3000:]
            time.sleep(0.1)
        fed.nodes[VICTIM].kill()  # mid-round 1: it holds its train message
        killed_at = time.monotonic()
        run.wait_for("[lepton-fed] round 1/", 240)
        t["round1_end_after_kill_s"] = time.monotonic() - killed_at
        # its operator restarts it once round 2 has started without it: it comes back
        # under the same node id during round 2, and the server sees the new activation
        # time before round 3 (server/registry.py) and sets it up again ...
        while _count(peer_log, "Receiving: train message") < peer_before + 2:
            assert time.monotonic() - killed_at < 200 and run.proc.poll() is None
            time.sleep(0.2)
        while fed.node_status(VICTIM) == "online":
            assert time.monotonic() - killed_at < 90 and run.proc.poll() is None
            time.sleep(1)
        restart = fed.start_node(VICTIM)  # ... with the same command
        restart.wait_for("joined federation", 90)
        t["rejoined_after_kill_s"] = time.monotonic() - killed_at
        run.proc.wait(420)
    finally:
        run.stop()
    assert run.proc.returncode == 0, run.text()[-4000:]
    rows = _rows(run_dir)
    print("kill run", t, [(r["round"], r["clients"], round(r["seconds"], 1),
                           r["secagg"].get("abandoned") or r["secagg"].get("dropped"))
                          for r in rows])
    return {"rows": rows, "summary": json.loads((run_dir / "summary.json").read_text()),
            "dir": run_dir, "text": run.text()}


def test_a_node_killed_mid_round_the_round_ends_cleanly_and_the_next_proceeds(fed, kill_run):
    rows, summary = kill_run["rows"], kill_run["summary"]
    assert [r["round"] for r in rows] == [1, 2, 3]
    first = rows[0]
    if "abandoned" in first["secagg"]:  # abandoned cleanly: nothing released, model kept
        assert first["clients"] == 0 and "surviving neighbours" in first["secagg"]["abandoned"]
    else:  # dropout recovery: the three survivors' sum
        assert first["clients"] == 3 and first["secagg"]["contributors"] == 3
    second = rows[1]  # the next round proceeds with the rest
    assert second["sampled"] == 3 and second["connected"] == 3, second
    assert "abandoned" not in second["secagg"] and second["secagg"]["contributors"] == 3
    assert second["clients"] == 3 and summary["rounds_completed"] >= 2
    privacy = summary["privacy"]
    for node in NODES:  # what a killed or abandoned round spent stays counted on the node
        eps, events = _ledger_epsilon(fed.ledger_dir(node), privacy, may_be_empty=node == VICTIM)
        assert eps >= privacy["per_client"].get(node, 0.0) - 1e-12
        assert eps <= 8.0 and (events or node == VICTIM)  # killed before it reserved: none


def test_a_node_killed_mid_round_rejoins_when_restarted(fed, kill_run):
    rows, summary = kill_run["rows"], kill_run["summary"]
    third = rows[2]  # set up again (fresh run config and round keys), then it trains
    assert "abandoned" not in third["secagg"] and third["clients"] == 4, third
    assert summary["rounds_completed"] == 3 and VICTIM in summary["nodes"]["names"]
    privacy = summary["privacy"]
    _, events = _ledger_epsilon(fed.ledger_dir(VICTIM), privacy, may_be_empty=True)
    assert any(e.round == 3 and not e.pending for e in events), events
    for node in NODES[:3]:
        eps, _ = _ledger_epsilon(fed.ledger_dir(node), privacy)
        assert eps == pytest.approx(privacy["per_client"][node], rel=1e-9, abs=1e-12)


@pytest.mark.shared_data
@pytest.mark.skipif(not (HEART / "processed.cleveland.data").is_file(),
                    reason=f"Fed-Heart-Disease files not found in {HEART} (../shared/data)")
def test_fed_heart_disease_four_hospitals_dp_secagg_three_rounds(fed):
    """Each node holds one hospital's file only (Cleveland, Hungary, Switzerland, VA)."""
    data = _heart(fed.tmp / "heart")
    fed.start_nodes(data, fed.tmp / "ledgers-heart")
    rows = [len(p.read_text().splitlines()) - 1 for p in data["csvs"]]
    assert rows == [303, 261, 46, 130], rows  # FLamby's 740 rows, per hospital
    _dp_secagg_run(fed, "run-heart", accuracy_above=0.5)



def test_a_node_stopped_with_ctrl_c_leaves_and_can_rejoin_at_once(fed):
    """Ctrl-C in the node's terminal (SIGINT to its process group), then the same command."""
    name = NODES[0]
    g = fed.nodes[name]
    os.killpg(g.proc.pid, signal.SIGINT)
    g.proc.wait(30)
    assert fed.node_status(name) == "offline"  # it left: the SuperLink knows at once
    fed.start_node(name).wait_for("joined federation", 30)


def test_a_killed_node_restarted_at_once_waits_until_the_superlink_lets_it_in(fed):
    """SIGKILL (no goodbye): the SuperLink keeps it online up to 60 s; `node join` retries
    with a message instead of calling its registered key unregistered."""
    name = NODES[1]
    fed.nodes[name].kill()
    g = fed.start_node(name)
    g.wait_for("still lists", 30)
    g.wait_for("joined federation", 90)
    assert "not registered" not in g.text()
