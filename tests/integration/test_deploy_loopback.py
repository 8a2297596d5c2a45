"""A real federation on loopback, started the way docs/deploy.md tells a hospital to.

``lepton-fed superlink`` + two ``lepton-fed node join`` (real Flower SuperLink/SuperNode
processes, TLS, node authentication, the pinned-code runner) + ``lepton-fed run``; then
the attacks the deployment must stop. Every process group the module starts is stopped
by its PID at the end, pass or fail.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from lepton_fed.deploy.procs import free_port, tool
from lepton_fed.deploy.provision import add_node, init_federation

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "lepton_fed.cli.main"]
ENV = dict(os.environ, FLWR_TELEMETRY_ENABLED="0", PYTHONUNBUFFERED="1",
           FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION="1", FLWR_DISABLE_UPDATE_CHECK="1")


class Group:
    """A process started in its own session (= process group); stopped by its PID."""

    def __init__(self, argv: list[str], log: Path, cwd: Path) -> None:
        self.log = log
        with open(log, "wb") as f:
            self.proc = subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT, env=ENV,
                                         cwd=cwd, start_new_session=True)

    def wait_for(self, text: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.log.read_text(errors="replace"):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"no {text!r} in {self.log}:\n{self.log.read_text()[-3000:]}")
            time.sleep(0.2)

    def stop(self) -> None:
        t0 = time.monotonic()
        self._stop()
        print(f"stopped {self.log.name} in {time.monotonic() - t0:.1f}s")

    def _stop(self) -> None:
        for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                return
            try:
                self.proc.wait(wait)
                time.sleep(0.5)  # let the group's other members finish their exit
                os.killpg(self.proc.pid, 0)  # raises once nobody is left in the group
            except (subprocess.TimeoutExpired, ProcessLookupError, PermissionError):
                if self.proc.poll() is not None:
                    try:
                        os.killpg(self.proc.pid, 0)
                    except ProcessLookupError:
                        return


def _csvs(tmp: Path) -> tuple[Path, Path]:
    from sklearn.datasets import load_breast_cancer

    frame = load_breast_cancer(as_frame=True).frame.sample(frac=1.0, random_state=0)
    paths = []
    for i, part in enumerate((frame.iloc[:280], frame.iloc[280:])):
        p = tmp / f"site{i}.csv"
        part.to_csv(p, index=False)
        paths.append(p)
    return paths[0], paths[1]


@pytest.fixture(scope="module")
def fed(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("loopback")
    port, control_port = free_port(), free_port()
    fdir = init_federation(tmp / "fed", name="loopback", superlink_hosts=["127.0.0.1"],
                           nodes=["hospital-a", "hospital-b"], port=port)
    a_csv, b_csv = _csvs(tmp)
    schema = tmp / "schema.yaml"  # the coordinator holds no data: only the declared contract
    import pandas as pd
    import yaml

    features = [c for c in pd.read_csv(a_csv, nrows=1).columns if c != "target"]
    schema.write_text(yaml.safe_dump({"label": "target", "classes": [0, 1], "features": features}))
    policy = tmp / "policy.yaml"
    shutil.copy(REPO / "conf" / "node_policy" / "open.yaml", policy)
    groups: list[Group] = []
    try:
        sl = Group([*CLI, "superlink", str(fdir.root), "--bind", "127.0.0.1",
                    "--control-port", str(control_port)], tmp / "superlink.out", tmp)
        groups.append(sl)
        sl.wait_for("is up", 60)
        for name, data in (("hospital-a", a_csv), ("hospital-b", b_csv)):
            g = Group([*CLI, "node", "join", "--federation", str(fdir.node(name).root),
                       "--data", str(data), "--label", "target", "--policy", str(policy)],
                      tmp / f"{name}.out", tmp)
            groups.append(g)
        for g in groups[1:]:
            g.wait_for("joined federation", 60)
        yield {"dir": fdir, "tmp": tmp, "port": port, "control": control_port, "csv": a_csv,
               "schema": schema, "groups": groups}
    finally:
        for g in reversed(groups):
            g.stop()


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
            raise AssertionError(f"{argv[:4]} timed out:\n{out[-2000:]}\n{err[-2000:]}") from None
    return subprocess.CompletedProcess(argv, p.returncode, out, err)


def _cli(*args: str, cwd: Path, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    return _run([*CLI, *args], cwd, timeout)


def test_two_hospitals_train_two_rounds(fed):
    run_dir = fed["tmp"] / "run"
    t0 = time.monotonic()
    out = _cli("run", "--federation", str(fed["dir"].root), "--run-dir", str(run_dir), "data=csv",
               f"data.schema={fed['schema']}", "evaluation.server_data=false", "privacy=none",
               "secagg=off", "federation.rounds=2", cwd=fed["tmp"])
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "[lepton-fed] round 2/2" in out.stdout and "completed" in out.stdout
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["rounds_completed"] == 2 and summary["num_clients"] == 2
    for name in ("hospital-a", "hospital-b"):
        log = (fed["dir"].node(name).state / "logs" / "runner.log").read_text()
        assert "(pinned)" in log and "REFUSED" not in log
    print(f"loopback run wall time {time.monotonic() - t0:.1f}s")


def test_a_failed_run_exits_non_zero(fed):
    # `flwr run` itself exits 0 when the ServerApp fails; `lepton-fed run` must not.
    run_dir = fed["tmp"] / "failing-run"
    out = _cli("run", "--federation", str(fed["dir"].root), "--run-dir", str(run_dir), "data=csv",
               f"data.path={fed['csv']}", "data.label=target", "data.features=[no_such_column]",
               "privacy=none", "federation.rounds=1", cwd=fed["tmp"])
    assert out.returncode == 7, out.stdout[-2000:] + out.stderr[-2000:]
    assert "finished:failed" in out.stderr and "no_such_column" in out.stderr
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
    rc = fed["tmp"] / "evil-rc.toml"
    rc.write_text(f'config-overrides = "data=csv data.path={fed["csv"]} data.label=target '
                  f'privacy=none federation.num_clients=2 federation.clients_per_round=2 '
                  f'federation.rounds=1"\nrun-dir = "{tmp_path / "evil-run"}"\n')
    env = dict(ENV, FLWR_HOME=str(fed["dir"].coordinator.state / "flwr_home"))
    out = _run([tool("flwr"), "run", str(app), "lepton", "--stream", "--run-config", str(rc)],
               tmp_path, 90, env)
    assert "Successfully started run" in out.stdout, out.stdout + out.stderr
    for name in ("hospital-a", "hospital-b"):
        log = fed["dir"].node(name).state / "logs" / "runner.log"
        deadline = time.monotonic() + 30
        while f"FAB sha256 {digest}" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.5)
        line = [x for x in log.read_text().splitlines() if digest in x]
        assert line and "REFUSED" in line[0] and "evil/client.py" in line[0]
    assert not marker.exists()
    assert "refused the app package" in out.stdout  # the ServerApp sees why


def test_public_port_serves_only_the_fleet_api(fed):
    from flwr.proto.control_pb2 import ListNodesRequest

    from lepton_fed.deploy import control

    ca = fed["dir"].coordinator.ca_cert
    public = control.connect(f"127.0.0.1:{fed['port']}", ca)
    with pytest.raises(httpx.HTTPStatusError) as err:
        public.ListNodes(ListNodesRequest())
    assert err.value.response.status_code == 404
    public.close()
    for path in ("/v1/runtime/acquire-task", "/v1/control/start-run", "/v1/fleet/../control/list-nodes"):
        assert httpx.post(f"https://127.0.0.1:{fed['port']}{path}", verify=str(ca)).status_code == 404
    local = control.connect(f"127.0.0.1:{fed['control']}", ca)
    assert len(local.ListNodes(ListNodesRequest()).nodes_info) == 2
    local.close()


def test_unregistered_key_is_refused(fed, tmp_path):
    copy = tmp_path / "fed"
    shutil.copytree(fed["dir"].root, copy, ignore=shutil.ignore_patterns("state"))
    bundle = add_node(copy, "hospital-c")  # same CA, but the running SuperLink never saw this key
    out = _cli("node", "join", "--federation", str(bundle.root), "--data", str(fed["csv"]),
               "--label", "target", cwd=tmp_path, timeout=60)
    assert out.returncode == 8, out.stdout + out.stderr
    assert "does not accept this node's key" in out.stderr and "not registered" in out.stderr


def test_a_node_without_the_federation_ca_cannot_connect(fed, tmp_path):
    other = init_federation(tmp_path / "other", name="other", superlink_hosts=["127.0.0.1"],
                            nodes=["hospital-a"])
    out = _cli("node", "join", "--federation", str(other.node("hospital-a").root), "--superlink",
               f"127.0.0.1:{fed['port']}", "--data", str(fed["csv"]), "--label", "target",
               cwd=tmp_path, timeout=60)
    assert out.returncode == 8 and "does not accept" in out.stderr, out.stderr
    # Flower's own SuperNode with the right key but no CA (system roots): TLS fails, no session.
    sn = _run([tool("flower-supernode"), "--superlink", f"127.0.0.1:{fed['port']}",
               "--auth-supernode-private-key", str(fed["dir"].node("hospital-a").auth_key),
               "--isolation", "process", "--port", str(free_port()), "--max-retries", "1"],
              tmp_path, 60)
    assert sn.returncode != 0 and "SuperNode ID" not in sn.stdout + sn.stderr


def test_superlink_restart_keeps_registrations_and_nodes_come_back(fed):
    from flwr.proto.control_pb2 import ListNodesRequest

    from lepton_fed.deploy import control

    groups, tmp = fed["groups"], fed["tmp"]
    client = control.connect(f"127.0.0.1:{fed['control']}", fed["dir"].coordinator.ca_cert)
    before = {n.node_id for n in client.ListNodes(ListNodesRequest()).nodes_info}
    client.close()
    groups[0].stop()
    sl = Group([*CLI, "superlink", str(fed["dir"].root), "--bind", "127.0.0.1",
                "--control-port", str(fed["control"])], tmp / "superlink-2.out", tmp)
    groups[0] = sl
    sl.wait_for("is up", 60)
    text = sl.log.read_text()
    assert "hospital-a               registered (node id" in text and "registered now" not in text
    client = control.connect(f"127.0.0.1:{fed['control']}", fed["dir"].coordinator.ca_cert)
    assert {n.node_id for n in client.ListNodes(ListNodesRequest()).nodes_info} == before
    client.close()
    run_dir = tmp / "run-after-restart"
    out = _cli("run", "--federation", str(fed["dir"].root), "--run-dir", str(run_dir), "data=csv",
               f"data.schema={fed['schema']}", "evaluation.server_data=false", "privacy=none",
               "secagg=off", "federation.rounds=1", cwd=tmp)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert all(g.proc.poll() is None for g in groups[1:])  # the nodes never stopped
