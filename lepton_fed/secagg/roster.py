"""A signed roster: the secure-aggregation identity keys of a federation's members.

Format (JSON, UTF-8)::

    {
      "format": "lepton-fed/roster/v1",
      "federation": "<name>",
      "version": <int >= 1>,
      "members": [{"name": "<member>", "secagg_identity": "<base64 raw Ed25519 public
                   key, 32 bytes>", ...optional string attributes}, ...],
      "signature": "<base64 Ed25519 signature, 64 bytes>"
    }

The signature is the federation key's Ed25519 signature over the **canonical JSON**
of the document without ``signature``: keys sorted, separators ``,`` and ``:``, UTF-8,
no NaN (``json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
allow_nan=False).encode()``, the same form as ``lepton_fed.serving.signing``). Members
may carry further string attributes (e.g. ``auth_public_key`` for node
authentication); they are signed too.
The ``format`` field is inside the signed bytes, so a signature over another kind of
document never verifies as a roster.

Node ids are not in the roster: Flower assigns them when a node registers, after the
roster is signed. A node therefore trusts the roster as a **set of keys**
(:attr:`Roster.identity_keys`, passed as ``roster=`` to
:class:`~lepton_fed.secagg.SecAggClient`), which refuses any relayed identity key
outside the set and any key used by two node ids in one round.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

__all__ = [
    "ROSTER_FORMAT",
    "Roster",
    "RosterError",
    "RosterMember",
    "canonical_json",
    "load_roster",
    "sign_roster",
]

ROSTER_FORMAT = "lepton-fed/roster/v1"
_KEY_BYTES = 32
_SIGNATURE_BYTES = 64
_MAX_ROSTER_BYTES = 64 << 20


class RosterError(ValueError):
    """A roster that is malformed or whose signature does not verify."""


@dataclass(frozen=True)
class RosterMember:
    """One member: a name, its raw Ed25519 secure-aggregation identity key, and
    optional string attributes (sorted ``(key, value)`` pairs)."""

    name: str
    secagg_identity: bytes
    attributes: tuple[tuple[str, str], ...] = ()

    def attribute(self, key: str) -> str | None:
        """The attribute ``key``, or None."""
        return dict(self.attributes).get(key)


@dataclass(frozen=True)
class Roster:
    """A verified roster (only :func:`load_roster` builds one from bytes)."""

    federation: str
    version: int
    members: tuple[RosterMember, ...]

    @property
    def identity_keys(self) -> frozenset[bytes]:
        """The members' raw identity keys (the ``roster=`` of a SecAggClient)."""
        return frozenset(m.secagg_identity for m in self.members)

    def key_of(self, name: str) -> bytes:
        """The identity key of member ``name``.

        Raises:
            KeyError: no such member.
        """
        for m in self.members:
            if m.name == name:
                return m.secagg_identity
        raise KeyError(name)


def canonical_json(doc: Mapping[str, Any]) -> bytes:
    """The bytes that are signed: sorted keys, no spaces, UTF-8, no NaN/Infinity."""
    return json.dumps(
        doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def _check_fields(federation: Any, version: Any, names: list[Any], keys: list[bytes]) -> None:
    if not isinstance(federation, str) or not federation:
        raise RosterError("roster: federation must be a non-empty string")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise RosterError("roster: version must be an integer >= 1")
    if not names:
        raise RosterError("roster: no members")
    if any(not isinstance(n, str) or not n for n in names):
        raise RosterError("roster: every member needs a non-empty name")
    if len(set(names)) != len(names):
        raise RosterError("roster: duplicate member name")
    if any(len(k) != _KEY_BYTES for k in keys):
        raise RosterError("roster: secagg_identity must be a 32-byte Ed25519 key")
    if len(set(keys)) != len(keys):
        raise RosterError("roster: two members share an identity key")


_RESERVED = frozenset({"name", "secagg_identity"})


def _check_attributes(attributes: Iterable[tuple[Any, Any]]) -> None:
    for key, value in attributes:
        if not isinstance(key, str) or not isinstance(value, str) or key in _RESERVED:
            raise RosterError("roster: member attributes must be string -> string")


def _unsigned(
    federation: str, version: int, members: list[RosterMember]
) -> dict[str, Any]:
    return {
        "format": ROSTER_FORMAT,
        "federation": federation,
        "version": version,
        "members": [
            {
                **dict(m.attributes),
                "name": m.name,
                "secagg_identity": base64.b64encode(m.secagg_identity).decode("ascii"),
            }
            for m in members
        ],
    }


def sign_roster(
    members: Mapping[str, bytes] | Iterable[RosterMember],
    federation_key: Ed25519PrivateKey,
    *,
    federation: str,
    version: int = 1,
) -> bytes:
    """A signed roster document (JSON bytes, ready to write to ``roster.json``).

    Args:
        members: member name -> raw 32-byte Ed25519 public key (e.g.
            ``key.public_key().public_bytes_raw()``), or :class:`RosterMember` objects
            (with attributes such as ``auth_public_key``); written in name order.
        federation_key: the federation's Ed25519 private key.
        federation: the federation's name.
        version: roster version (bump it when members change).

    Raises:
        RosterError: empty or duplicate names, keys that are not 32 bytes, a key used
            by two members, non-string attributes, an empty federation name or a
            version below 1.
    """
    if isinstance(members, Mapping):
        items = [RosterMember(str(n), bytes(k)) for n, k in members.items()]
    else:
        items = [
            RosterMember(m.name, bytes(m.secagg_identity), tuple(sorted(m.attributes)))
            for m in members
        ]
    items.sort(key=lambda m: m.name)
    _check_fields(
        federation, version, [m.name for m in items], [m.secagg_identity for m in items]
    )
    for m in items:
        _check_attributes(m.attributes)
    doc = _unsigned(federation, version, items)
    doc["signature"] = base64.b64encode(
        federation_key.sign(canonical_json(doc))
    ).decode("ascii")
    return json.dumps(doc, indent=2, sort_keys=True).encode("utf-8") + b"\n"


def _b64(value: Any, what: str) -> bytes:
    if not isinstance(value, str):
        raise RosterError(f"roster: {what} must be a base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise RosterError(f"roster: {what} is not valid base64") from None


def load_roster(
    source: str | os.PathLike[str] | bytes,
    federation_public_key: Ed25519PublicKey | bytes,
) -> Roster:
    """Reads and verifies a roster written by :func:`sign_roster`.

    Args:
        source: a path to ``roster.json``, or its bytes.
        federation_public_key: the federation's Ed25519 public key (object or raw
            32 bytes), obtained out of band (``federation.pub``).

    Raises:
        RosterError: unreadable or malformed JSON, another format, malformed members,
            or a signature that does not verify under ``federation_public_key``.
    """
    if isinstance(source, bytes):
        data = source
    else:
        path = Path(source)
        if path.stat().st_size > _MAX_ROSTER_BYTES:
            raise RosterError(f"roster: {path} is too large")
        data = path.read_bytes()
    try:
        doc = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise RosterError("roster: not a UTF-8 JSON document") from None
    if not isinstance(doc, dict) or doc.get("format") != ROSTER_FORMAT:
        raise RosterError(f"roster: not a {ROSTER_FORMAT} document")
    expected = {"format", "federation", "version", "members", "signature"}
    if set(doc) != expected:
        raise RosterError(f"roster: fields must be exactly {sorted(expected)}")
    signature = _b64(doc["signature"], "signature")
    unsigned = {k: v for k, v in doc.items() if k != "signature"}
    key = (
        federation_public_key
        if isinstance(federation_public_key, Ed25519PublicKey)
        else Ed25519PublicKey.from_public_bytes(bytes(federation_public_key))
    )
    try:
        if len(signature) != _SIGNATURE_BYTES:
            raise InvalidSignature
        key.verify(signature, canonical_json(unsigned))
    except InvalidSignature:
        raise RosterError(
            "roster: the signature does not verify under the federation key"
        ) from None
    raw_members = doc["members"]
    if not isinstance(raw_members, list) or any(
        not isinstance(m, dict) or not _RESERVED <= set(m) for m in raw_members
    ):
        raise RosterError("roster: members must be objects {name, secagg_identity, ...}")
    names = [m["name"] for m in raw_members]
    keys = [_b64(m["secagg_identity"], "secagg_identity") for m in raw_members]
    _check_fields(doc["federation"], doc["version"], names, keys)
    members = []
    for m, name, identity in zip(raw_members, names, keys, strict=True):
        attributes = tuple(sorted((k, v) for k, v in m.items() if k not in _RESERVED))
        _check_attributes(attributes)
        members.append(RosterMember(name, identity, attributes))
    return Roster(
        federation=doc["federation"], version=doc["version"], members=tuple(members)
    )
