"""node join's checks before anything starts: bundle, data, SuperLink reachability and CA."""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import threading

import pytest

from lepton_fed.deploy import preflight
from lepton_fed.deploy.layout import DeployError, NodeFiles
from lepton_fed.deploy.node import NODE_CONFIG_KEYS, write_node_config
from lepton_fed.deploy.procs import free_port
from lepton_fed.deploy.provision import init_federation, rotate_node


@pytest.fixture(scope="module")
def fed(tmp_path_factory):
    return init_federation(tmp_path_factory.mktemp("f") / "fed", name="demo",
                           superlink_hosts=["127.0.0.1"], nodes=["a", "b"])


def _copy(fed, tmp_path, name="a") -> NodeFiles:
    dst = tmp_path / name
    shutil.copytree(fed.node(name).root, dst)
    return NodeFiles(dst)


def test_good_bundle(fed):
    assert preflight.check_bundle(fed.node("a"))["node"] == "a"


def test_missing_file_is_named(fed, tmp_path):
    b = _copy(fed, tmp_path)
    b.ca_cert.unlink()
    with pytest.raises(DeployError, match=r"lacks ca\.crt"):
        preflight.check_bundle(b)


def test_world_readable_key_is_refused(fed, tmp_path):
    b = _copy(fed, tmp_path)
    os.chmod(b.auth_key, 0o644)
    with pytest.raises(DeployError, match="readable by other users"):
        preflight.check_bundle(b)


def test_tampered_roster_in_bundle_is_refused(fed, tmp_path):
    b = _copy(fed, tmp_path)
    b.roster.write_text(b.roster.read_text().replace('"demo"', '"other"'))
    with pytest.raises(DeployError, match="does not verify"):
        preflight.check_bundle(b)


def test_stale_bundle_after_rotation_is_refused(tmp_path):
    fed = init_federation(tmp_path / "f", name="demo", superlink_hosts=["h"], nodes=["a", "b"])
    stale = _copy(fed, tmp_path / "old")
    rotate_node(fed.root, "a")
    stale.roster.write_bytes(fed.node("b").roster.read_bytes())  # the new roster reaches it
    with pytest.raises(DeployError, match="another auth key"):
        preflight.check_bundle(stale)


def test_data_label_column(tmp_path):
    f = tmp_path / "d.csv"
    f.write_text("age,sex,outcome\n1,0,1\n")
    assert preflight.check_data(f, "outcome") == f.resolve()
    with pytest.raises(DeployError, match="no column 'target'.*age, sex, outcome"):
        preflight.check_data(f, "target")
    with pytest.raises(DeployError, match="does not exist"):
        preflight.check_data(tmp_path / "none.csv", "outcome")


def test_ledger_dir_must_exist(tmp_path):
    with pytest.raises(DeployError, match="does not exist"):
        preflight.check_dir(tmp_path / "missing", "ledger directory")


def test_unreachable_superlink_is_named_after_retries(fed):
    port = free_port()
    with pytest.raises(DeployError, match=rf"127\.0\.0\.1:{port}.*tries"):
        preflight.check_superlink("127.0.0.1", port, fed.node("a").ca_cert, wait=1.0, say=lambda s: None)


def test_wrong_ca_is_named(fed, tmp_path):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(fed.coordinator.superlink_cert, fed.coordinator.superlink_key)
    srv = socket.create_server(("127.0.0.1", 0))
    port = srv.getsockname()[1]

    def serve():
        with srv:
            for _ in range(2):
                conn, _ = srv.accept()
                try:
                    with ctx.wrap_socket(conn, server_side=True):
                        pass
                except (ssl.SSLError, OSError):
                    pass

    threading.Thread(target=serve, daemon=True).start()
    preflight.check_superlink("127.0.0.1", port, fed.node("a").ca_cert, wait=5)
    other = init_federation(tmp_path / "o", name="o", superlink_hosts=["127.0.0.1"], nodes=["x"])
    with pytest.raises(DeployError, match="does not accept"):
        preflight.check_superlink("127.0.0.1", port, other.node("x").ca_cert, wait=5)


def test_node_config_is_parsed_back_by_flower(tmp_path):
    from flwr.common.config import parse_config_args

    values = {k: f"/path with space/{k}\"q'" for k in NODE_CONFIG_KEYS}
    p = write_node_config(tmp_path / "nc.toml", values)
    assert parse_config_args([str(p)]) == values
    with pytest.raises(ValueError, match="unknown"):
        write_node_config(tmp_path / "x.toml", {"data_path": "x"})


def test_join_checks_its_own_flags_before_anything_starts(fed, tmp_path):
    """Both problems named at once, before the bundle is read or a process starts."""
    from lepton_fed.deploy.node import join

    csv = tmp_path / "d.csv"
    csv.write_text("a,y\n1,0\n2,1\n")
    with pytest.raises(DeployError) as e:
        join(bundle_dir=tmp_path / "no-bundle", data=csv, label="y", test_fraction=1.0,
             metrics_port=70000)
    assert "--test-fraction must lie strictly between 0 and 1 (got 1.0)" in str(e.value)
    assert "--metrics-port must be a TCP port 1-65535 (got 70000)" in str(e.value)


def test_node_owned_settings_reach_the_node_config(fed, tmp_path):
    """``--test-fraction`` and ``--metrics-port`` become typed node-config values that
    Flower parses back (the ClientApp reads them: local_data, observe.node_exporter)."""
    from flwr.common.config import parse_config_args

    from lepton_fed.deploy.node import _inputs

    csv = tmp_path / "d.csv"
    csv.write_text("a,y\n1,0\n2,1\n")
    _, values = _inputs(_copy(fed, tmp_path), csv, "y", None, None, 0.3, 9101)
    p = write_node_config(tmp_path / "nc.toml", values)
    back = parse_config_args([str(p)])
    assert back["test-fraction"] == 0.3 and back["metrics-port"] == 9101
