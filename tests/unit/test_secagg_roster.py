"""Signed rosters and simulation bundles: real Ed25519 signatures, real files."""

from __future__ import annotations

import base64
import json
import stat

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from lepton_fed.secagg import SecAggClient
from lepton_fed.secagg.provisioning import (
    load_federation_public_key,
    load_identity_key,
    make_sim_bundle,
    sim_bundle_paths,
)
from lepton_fed.secagg.roster import (
    ROSTER_FORMAT,
    RosterError,
    RosterMember,
    canonical_json,
    load_roster,
    sign_roster,
)


def _raw(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes_raw()


@pytest.fixture()
def federation():
    fed = Ed25519PrivateKey.generate()
    nodes = {f"site-{i}": Ed25519PrivateKey.generate() for i in range(3)}
    doc = sign_roster({n: _raw(k) for n, k in nodes.items()}, fed, federation="demo")
    return fed, nodes, doc


def test_roundtrip_and_format(federation) -> None:
    fed, nodes, doc = federation
    roster = load_roster(doc, fed.public_key())
    assert roster.federation == "demo" and roster.version == 1
    assert [m.name for m in roster.members] == sorted(nodes)
    assert roster.identity_keys == {_raw(k) for k in nodes.values()}
    assert roster.key_of("site-1") == _raw(nodes["site-1"])
    parsed = json.loads(doc)
    assert parsed["format"] == ROSTER_FORMAT
    # the signature covers the canonical JSON of everything else
    unsigned = {k: v for k, v in parsed.items() if k != "signature"}
    fed.public_key().verify(base64.b64decode(parsed["signature"]), canonical_json(unsigned))
    assert load_roster(doc, _raw(fed)).members == roster.members  # raw key works too


def _tamper(doc: bytes, change) -> bytes:
    parsed = json.loads(doc)
    change(parsed)
    return json.dumps(parsed).encode()


@pytest.mark.parametrize(
    "change",
    [
        lambda d: d["members"][0].update(
            secagg_identity=base64.b64encode(_raw(Ed25519PrivateKey.generate())).decode()
        ),
        lambda d: d["members"].append(
            {
                "name": "sybil",
                "secagg_identity": base64.b64encode(
                    _raw(Ed25519PrivateKey.generate())
                ).decode(),
            }
        ),
        lambda d: d["members"].pop(),
        lambda d: d.update(version=2),
        lambda d: d.update(federation="other"),
        lambda d: d.update(signature=base64.b64encode(bytes(64)).decode()),
        lambda d: d.update(signature=base64.b64encode(b"short").decode()),
    ],
    ids=["rekeyed", "added", "removed", "version", "federation", "zero-sig", "short"],
)
def test_any_change_breaks_the_signature(federation, change) -> None:
    fed, _, doc = federation
    with pytest.raises(RosterError, match="signature does not verify"):
        load_roster(_tamper(doc, change), fed.public_key())


def test_a_roster_signed_by_another_key_is_refused(federation) -> None:
    _, nodes, _ = federation
    rogue = Ed25519PrivateKey.generate()
    doc = sign_roster({n: _raw(k) for n, k in nodes.items()}, rogue, federation="demo")
    with pytest.raises(RosterError, match="signature does not verify"):
        load_roster(doc, federation[0].public_key())


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"\xff\xfe", "not a UTF-8 JSON"),
        (b"[]", "not a lepton-fed/roster/v1"),
        (json.dumps({"format": "x"}).encode(), "not a lepton-fed/roster/v1"),
        (json.dumps({"format": ROSTER_FORMAT}).encode(), "fields must be exactly"),
    ],
)
def test_malformed_documents_are_refused(data: bytes, match: str) -> None:
    with pytest.raises(RosterError, match=match):
        load_roster(data, Ed25519PrivateKey.generate().public_key())


def test_signing_refuses_bad_members() -> None:
    fed = Ed25519PrivateKey.generate()
    key = _raw(Ed25519PrivateKey.generate())
    with pytest.raises(RosterError, match="share an identity key"):
        sign_roster({"a": key, "b": key}, fed, federation="f")
    with pytest.raises(RosterError, match="32-byte"):
        sign_roster({"a": key[:31]}, fed, federation="f")
    with pytest.raises(RosterError, match="no members"):
        sign_roster({}, fed, federation="f")
    with pytest.raises(RosterError, match="version"):
        sign_roster({"a": key}, fed, federation="f", version=0)
    with pytest.raises(RosterError, match="duplicate member name"):
        sign_roster([RosterMember("a", key), RosterMember("a", b"k" * 32)], fed,
                    federation="f")


def test_member_attributes_are_signed_and_kept() -> None:
    fed = Ed25519PrivateKey.generate()
    key = _raw(Ed25519PrivateKey.generate())
    doc = sign_roster(
        [RosterMember("a", key, (("auth_public_key", "ecdsa-sha2-nistp384 AAAA"),))],
        fed,
        federation="f",
        version=3,
    )
    roster = load_roster(doc, fed.public_key())
    assert roster.members[0].attribute("auth_public_key") == "ecdsa-sha2-nistp384 AAAA"
    changed = _tamper(doc, lambda d: d["members"][0].update(auth_public_key="other"))
    with pytest.raises(RosterError, match="signature does not verify"):
        load_roster(changed, fed.public_key())


def test_sim_bundle_has_everything_a_node_needs(tmp_path) -> None:
    make_sim_bundle(tmp_path / "b", 4)
    paths = sim_bundle_paths(tmp_path / "b")
    roster = load_roster(paths.roster, load_federation_public_key(paths.federation_public_key))
    assert [m.name for m in roster.members] == [f"node-{i}" for i in range(4)]
    keys = [load_identity_key(paths.identity_key(i)) for i in range(4)]
    assert {_raw(k) for k in keys} == roster.identity_keys
    assert stat.S_IMODE(paths.identity_key(0).stat().st_mode) == 0o600
    # a node's client accepts the key-set roster, and only with its own key in it
    SecAggClient(node_id=77, identity_key=keys[2], roster=roster.identity_keys)
    with pytest.raises(ValueError, match="not in the roster"):
        SecAggClient(
            node_id=77, identity_key=Ed25519PrivateKey.generate(),
            roster=roster.identity_keys,
        )
    with pytest.raises(FileExistsError):
        make_sim_bundle(tmp_path / "b", 4)
