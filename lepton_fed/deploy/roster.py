"""The federation's signed member list (interim format until ``lepton_fed.secagg.roster``).

A roster names every node that may take part, with its secure-aggregation identity key
(raw Ed25519, base64) and its node-authentication public key (OpenSSH line). It is
signed with the federation signing key over the canonical JSON of every field except
``signature`` (:func:`lepton_fed.serving.signing.canonical_json`). A node that checks the
roster against ``federation.pub`` (which it received out of band, with its bundle) knows
which identity keys belong to the federation, so a SuperLink cannot insert identities
of its own into secure aggregation.

Guarantee: :func:`verify_roster` returns only a roster whose every field was signed by
the holder of the federation signing key; any change (a member added, removed or
re-keyed, a name changed) makes it raise.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from lepton_fed.deploy.layout import DeployError
from lepton_fed.serving.signing import canonical_json, key_fingerprint, load_public_key

__all__ = ["ROSTER_FORMAT", "Member", "read_roster", "sign_roster", "verify_roster"]

ROSTER_FORMAT = 1


@dataclass(frozen=True)
class Member:
    """One node of the federation."""

    name: str
    secagg_identity: str  # base64 of the raw 32-byte Ed25519 public key
    auth_public_key: str  # "ecdsa-sha2-nistp384 AAAA..." (no comment)

    def as_dict(self) -> dict[str, str]:  # noqa: D102
        return {"name": self.name, "secagg_identity": self.secagg_identity,
                "auth_public_key": self.auth_public_key}


def sign_roster(
    *, federation: str, members: Sequence[Member], signing_key: Ed25519PrivateKey, version: int
) -> dict[str, Any]:
    """The signed roster document (members sorted by name; names must be unique)."""
    names = [m.name for m in members]
    if len(set(names)) != len(names):
        raise DeployError(f"roster names are not unique: {sorted(names)}")
    body: dict[str, Any] = {
        "format": ROSTER_FORMAT,
        "federation": federation,
        "version": int(version),
        "members": [m.as_dict() for m in sorted(members, key=lambda m: m.name)],
    }
    public = signing_key.public_key()
    body["signature"] = {
        "algorithm": "Ed25519",
        "key_fingerprint": key_fingerprint(public),
        "value": base64.b64encode(signing_key.sign(canonical_json(body))).decode("ascii"),
    }
    return body


def read_roster(path: Path) -> dict[str, Any]:
    """Parse a roster file (not verified)."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise DeployError(f"cannot read roster {path}: {e}") from None
    if not isinstance(doc, dict):
        raise DeployError(f"roster {path} is not a JSON object")
    return doc


def verify_roster(doc: dict[str, Any] | Path, trusted_public_key: Any) -> list[Member]:
    """The members of a roster whose signature verifies with ``trusted_public_key``.

    Args:
        doc: the roster document or its file.
        trusted_public_key: the federation public key (object, PEM bytes or PEM path).

    Raises:
        DeployError: malformed, unknown format, or the signature does not verify.
    """
    if isinstance(doc, Path):
        doc = read_roster(doc)
    body = {k: v for k, v in doc.items() if k != "signature"}
    sig = doc.get("signature")
    if body.get("format") != ROSTER_FORMAT or not isinstance(sig, dict):
        raise DeployError("roster has an unknown format or no signature")
    key = load_public_key(trusted_public_key)
    try:
        key.verify(base64.b64decode(str(sig.get("value", "")), validate=True), canonical_json(body))
    except (InvalidSignature, ValueError):
        raise DeployError(
            "roster signature does not verify with the federation key "
            f"{key_fingerprint(key)}: it was altered or signed by someone else"
        ) from None
    try:
        return [Member(str(m["name"]), str(m["secagg_identity"]), str(m["auth_public_key"]))
                for m in body["members"]]
    except (KeyError, TypeError) as e:
        raise DeployError(f"roster member entry is malformed: {e}") from None
