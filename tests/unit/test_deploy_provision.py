"""federation init: certificates, key formats and permissions, the signed roster, bundle contents."""

from __future__ import annotations

import ipaddress
import json
import socket
import ssl
import stat
import threading
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.x509.oid import ExtendedKeyUsageOID

from lepton_fed.deploy.layout import DeployError, FederationDir
from lepton_fed.deploy.provision import (
    add_node,
    init_federation,
    remove_node,
    rotate_node,
)
from lepton_fed.secagg.provisioning import load_federation_public_key
from lepton_fed.secagg.roster import RosterError, load_roster

NODES = ["hospital-a", "hospital-b", "hospital-c"]


@pytest.fixture(scope="module")
def fed(tmp_path_factory) -> FederationDir:
    return init_federation(tmp_path_factory.mktemp("f") / "fed", name="demo",
                           superlink_hosts=["fl.example.org", "10.0.0.5"], nodes=NODES, port=9443)


def verify_roster(source, pub: Path):
    """The members of a roster file/bytes/dict verified with the PEM key ``pub``."""
    if isinstance(source, dict):
        source = json.dumps(source).encode()
    return load_roster(source, load_federation_public_key(pub)).members


def read_roster(path: Path) -> dict:
    return json.loads(path.read_text())


def _cert(p: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(p.read_bytes())


def _private_files(root: Path) -> dict[Path, bytes]:
    """Every file under root that parses as a private key -> its public key bytes."""
    out = {}
    for p in root.rglob("*"):
        if not p.is_file():
            continue
        data = p.read_bytes()
        key = None
        for load in (lambda d: serialization.load_pem_private_key(d, None),
                     lambda d: serialization.load_ssh_private_key(d, None)):
            try:
                key = load(data)
                break
            except (ValueError, TypeError):
                continue
        if key is not None:
            out[p] = key.public_key().public_bytes(serialization.Encoding.DER,
                                                    serialization.PublicFormat.SubjectPublicKeyInfo)
    return out


def test_superlink_certificate_sans_chain_and_usage(fed):
    co = fed.coordinator
    ca, leaf = _cert(co.ca_cert), _cert(co.superlink_cert)
    leaf.verify_directly_issued_by(ca)
    sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(sans.get_values_for_type(x509.DNSName)) == {"fl.example.org", "localhost"}
    assert set(sans.get_values_for_type(x509.IPAddress)) == {
        ipaddress.ip_address("10.0.0.5"), ipaddress.ip_address("127.0.0.1")}
    assert leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value == \
        x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH])
    assert not leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    bc = ca.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert bc.ca and bc.path_length == 0
    assert isinstance(ca.public_key(), ec.EllipticCurvePublicKey)


def _serve_tls_once(cert: Path, key: Path) -> int:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    srv = socket.create_server(("127.0.0.1", 0))
    port = srv.getsockname()[1]

    def serve():
        with srv:
            for _ in range(3):
                conn, _ = srv.accept()
                try:
                    with ctx.wrap_socket(conn, server_side=True):
                        pass
                except (ssl.SSLError, OSError):
                    pass

    threading.Thread(target=serve, daemon=True).start()
    return port


@pytest.mark.parametrize("hostname", ["fl.example.org", "127.0.0.1"])
def test_tls_handshake_verifies_with_federation_ca_only(fed, tmp_path, hostname):
    co = fed.coordinator
    port = _serve_tls_once(co.superlink_cert, co.superlink_key)
    good = ssl.create_default_context(cafile=str(fed.node("hospital-a").ca_cert))
    with socket.create_connection(("127.0.0.1", port)) as s, good.wrap_socket(s, server_hostname=hostname):
        pass
    other = init_federation(tmp_path / "other", name="other", superlink_hosts=[hostname], nodes=["x"])
    bad = ssl.create_default_context(cafile=str(other.coordinator.ca_cert))
    with pytest.raises(ssl.SSLCertVerificationError), socket.create_connection(("127.0.0.1", port)) as s:
        bad.wrap_socket(s, server_hostname=hostname)
    with pytest.raises(ssl.SSLCertVerificationError), socket.create_connection(("127.0.0.1", port)) as s:
        good.wrap_socket(s, server_hostname="evil.example.org")  # not in the SANs


def test_private_keys_are_0600_and_dirs_private(fed):
    privs = _private_files(fed.root)
    assert len(privs) == 2 + 1 + 2 * len(NODES)  # ca, signing, superlink, 2 per node
    for p in privs:
        assert stat.S_IMODE(p.stat().st_mode) == 0o600, p
    for d in (fed.offline, fed.coordinator.root, *(fed.node(n).root for n in NODES)):
        assert stat.S_IMODE(d.stat().st_mode) == 0o700, d


def test_node_keys_are_in_flowers_formats(fed):
    from flwr.cli.supernode.register import try_load_public_key

    node = fed.node("hospital-a")
    key = serialization.load_ssh_private_key(node.auth_key.read_bytes(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp384r1"
    assert try_load_public_key(fed.coordinator.node_keys / "hospital-a.pub")  # flwr's own check
    assert (fed.coordinator.node_keys / "hospital-a.pub").read_bytes() == node.auth_public_key.read_bytes()
    ident = serialization.load_pem_private_key(node.secagg_identity.read_bytes(), None)
    assert isinstance(ident, Ed25519PrivateKey)


def test_bundles_hold_only_their_own_private_keys(fed):
    everywhere = _private_files(fed.root)
    for n in NODES:
        node = fed.node(n)
        own = _private_files(node.root)
        assert set(own) == {node.auth_key, node.secagg_identity}
        others = {pub for p, pub in everywhere.items() if node.root not in p.parents}
        assert not set(own.values()) & others
        for p in node.root.rglob("*"):
            if p.is_file() and p not in own:
                assert b"PRIVATE KEY" not in p.read_bytes(), p
    assert not any(fed.coordinator.root in p.parents and p.name != "superlink.key" for p in everywhere)


def test_roster_verifies_and_matches_the_bundles(fed):
    members = verify_roster(fed.node("hospital-b").roster, fed.node("hospital-b").federation_public_key)
    assert [m.name for m in members] == NODES
    for m in members:
        node = fed.node(m.name)
        assert m.attribute("auth_public_key") == " ".join(node.auth_public_key.read_text().split()[:2])
        ident = serialization.load_pem_private_key(node.secagg_identity.read_bytes(), None)
        assert m.secagg_identity == ident.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    info = json.loads(fed.node("hospital-a").federation_json.read_text())
    assert info["superlink_address"] == "fl.example.org:9443" and info["node"] == "hospital-a"


@pytest.mark.parametrize("tamper", ["identity", "drop", "add", "rename_federation", "version"])
def test_tampered_roster_fails(fed, tamper):
    doc = read_roster(fed.coordinator.roster)
    if tamper == "identity":
        doc["members"][0]["secagg_identity"] = doc["members"][1]["secagg_identity"]
    elif tamper == "drop":
        doc["members"].pop()
    elif tamper == "add":
        doc["members"].append(dict(doc["members"][0], name="mallory"))
    elif tamper == "rename_federation":
        doc["federation"] = "other"
    else:
        doc["version"] += 1
    with pytest.raises(RosterError, match="does not verify"):
        verify_roster(doc, fed.coordinator.federation_public_key)


def test_roster_signed_by_another_key_fails(fed, tmp_path):
    other = init_federation(tmp_path / "o", name="demo", superlink_hosts=["h"], nodes=NODES)
    doc = read_roster(other.coordinator.roster)
    with pytest.raises(RosterError, match="does not verify"):
        verify_roster(doc, fed.coordinator.federation_public_key)


def test_federation_key_signs_serving_artifacts(fed, tmp_path):
    from lepton_fed.serving.signing import (
        load_or_create_signing_key,
        sign_manifest,
        verify_artifact,
    )

    d = tmp_path / "artifact"
    d.mkdir()
    key = load_or_create_signing_key(fed.signing_key)
    sign_manifest(d, {"files": {}}, key)
    assert verify_artifact(d, fed.node("hospital-a").federation_public_key).trusted


@pytest.mark.parametrize(("kw", "msg"), [
    ({"name": "Bad Name"}, "federation name"),
    ({"nodes": ["a", "a"]}, "repeat"),
    ({"nodes": ["../x"]}, "node name"),
    ({"superlink_hosts": ["https://x:1"]}, "neither an IP"),
    ({"superlink_hosts": []}, "superlink-host"),
    ({"port": 0}, "port"),
])
def test_bad_arguments_are_named(tmp_path, kw, msg):
    args = {"name": "ok", "superlink_hosts": ["h"], "nodes": ["a"], "port": 9092} | kw
    with pytest.raises(DeployError, match=msg):
        init_federation(tmp_path / "f", **args)


def test_refuses_a_non_empty_directory(fed):
    with pytest.raises(DeployError, match="not empty"):
        init_federation(fed.root, name="again", superlink_hosts=["h"], nodes=["a"])


def test_add_rotate_remove_re_sign_the_roster(tmp_path):
    fed = init_federation(tmp_path / "f", name="demo", superlink_hosts=["h"], nodes=["a", "b"])
    old_pub = fed.node("a").auth_public_key.read_bytes()
    add_node(fed.root, "c")
    rotate_node(fed.root, "a")
    assert fed.node("a").auth_public_key.read_bytes() != old_pub
    assert (fed.root / "nodes" / "a.retired-1" / "auth_key.pub").read_bytes() == old_pub
    assert (fed.coordinator.node_keys / "a.pub").read_bytes() != old_pub
    remove_node(fed.root, "b")
    assert not (fed.coordinator.node_keys / "b.pub").exists()
    doc = read_roster(fed.coordinator.roster)
    members = verify_roster(doc, fed.coordinator.federation_public_key)
    assert [m.name for m in members] == ["a", "c"] and doc["version"] == 4
    assert " ".join(old_pub.decode().split()[:2]) not in {m.attribute("auth_public_key") for m in members}
    assert read_roster(fed.node("c").roster) == doc  # every remaining bundle has the new roster
    with pytest.raises(DeployError, match="already exists"):
        add_node(fed.root, "c")
    remove_node(fed.root, "a")
    with pytest.raises(DeployError, match="last node"):
        remove_node(fed.root, "c")
