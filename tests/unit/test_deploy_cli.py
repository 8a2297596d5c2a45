"""The deploy commands' errors, through the real ``lepton-fed`` entry point (no SuperLink needed)."""

from __future__ import annotations

import socket
import stat

import pytest

from lepton_fed.cli.main import main
from lepton_fed.deploy.procs import free_port
from lepton_fed.deploy.provision import init_federation


@pytest.fixture
def fed(tmp_path):
    return init_federation(tmp_path / "fed", name="demo", superlink_hosts=["127.0.0.1"],
                           nodes=["a", "b"], port=free_port())


def test_init_prints_no_private_key(tmp_path, capsys):
    assert main(["federation", "init", str(tmp_path / "f"), "--name", "x", "--superlink-host",
                 "fl.example.org", "--node", "a"]) == 0
    out = capsys.readouterr()
    assert "PRIVATE KEY" not in out.out + out.err and "keep offline" in out.out
    key = tmp_path / "f" / "nodes" / "a" / "auth_key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600


def test_superlink_names_missing_files(tmp_path, capsys):
    assert main(["superlink", str(tmp_path)]) == 8
    assert "not a federation (or coordinator) directory" in capsys.readouterr().err


def test_superlink_refuses_a_busy_port(fed, capsys):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        busy = s.getsockname()[1]
        assert main(["superlink", str(fed.root), "--bind", "127.0.0.1", "--port", str(busy)]) == 8
    err = capsys.readouterr().err
    assert f"port {busy} on 127.0.0.1 is not free" in err


def test_run_reports_config_errors_before_contacting_anyone(fed, capsys):
    # No SuperLink is running: a config problem must still be the error reported.
    assert main(["run", "--federation", str(fed.root), "model=transformer",
                 "federation.rounds=0"]) == 2
    err = capsys.readouterr().err
    assert "configuration problem(s)" in err and "model" in err


def test_run_without_a_superlink_says_so(fed, tmp_path, capsys):
    (fed.coordinator.state).mkdir()
    (fed.coordinator.state / "superlink.json").write_text(
        f'{{"control": "127.0.0.1:{free_port()}"}}')
    csv = tmp_path / "d.csv"
    csv.write_text("x,target\n1,0\n2,1\n")
    code = main(["run", "--federation", str(fed.root), "data=csv", f"data.path={csv}",
                 "data.label=target", "privacy=none"])
    assert code == 8 and "no SuperLink answers" in capsys.readouterr().err


def test_join_names_a_missing_bundle(tmp_path, capsys):
    code = main(["node", "join", "--federation", str(tmp_path / "nope"), "--data",
                 str(tmp_path / "d.csv"), "--label", "y"])
    assert code == 8 and "does not exist" in capsys.readouterr().err


def test_join_rejects_a_bad_allowlist_hash(fed, tmp_path, capsys):
    code = main(["node", "join", "--federation", str(fed.node("a").root), "--data",
                 str(tmp_path / "d.csv"), "--label", "y", "--allow-fab-hash", "abc"])
    assert code == 8 and "sha256" in capsys.readouterr().err
