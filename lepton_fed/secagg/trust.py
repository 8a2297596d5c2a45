"""Which identity keys a party trusts: a provisioned roster, checked and digested.

A roster is ``{node id: raw Ed25519 public key}``, or a collection of keys when node ids
are assigned after the roster is signed (Flower assigns them at registration). Both the
client (:class:`~lepton_fed.secagg.client.SecAggClient`) and the server
(:class:`~lepton_fed.secagg.server.SecAggServer`) accept either form; the client keeps
the roster's SHA-256 digest in its saved state so that a state saved without its roster
only accepts the same roster back. Reading and verifying a signed roster file is
:mod:`lepton_fed.secagg.roster`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Mapping
from dataclasses import dataclass

from lepton_fed.secagg.keys import KEY_BYTES
from lepton_fed.secagg.wire import SERVER_ID

__all__ = ["TrustedRoster", "check_roster", "roster_digest", "trusted_roster"]

_LABEL_MAPPING = b"lepton-fed/secagg/v1/roster-mapping"
_LABEL_KEYSET = b"lepton-fed/secagg/v1/roster-keyset"


def check_roster(
    roster: Mapping[int, bytes] | Collection[bytes],
) -> tuple[dict[int, bytes] | None, frozenset[bytes] | None]:
    """Copies a roster: ``{node id: raw Ed25519 public key}`` or a collection of keys.

    Returns:
        ``(mapping, None)`` or ``(None, key set)``.

    Raises:
        ValueError: a malformed entry, an empty roster, or (mapping) one key under
            two node ids.
    """
    if isinstance(roster, Mapping):
        out = {}
        for nid, key in roster.items():
            if not 0 <= int(nid) < SERVER_ID or len(key) != KEY_BYTES:
                raise ValueError("malformed roster entry")
            out[int(nid)] = bytes(key)
        if not out:
            raise ValueError("the roster is empty")
        if len(set(out.values())) != len(out):
            raise ValueError("the roster lists one identity key under two node ids")
        return out, None
    if isinstance(roster, bytes | bytearray | str):
        raise ValueError("a roster is a mapping or a collection of keys, not one key")
    keys = frozenset(bytes(k) for k in roster)
    if not keys:
        raise ValueError("the roster is empty")
    if any(len(k) != KEY_BYTES for k in keys):
        raise ValueError("malformed roster key (expected 32-byte raw Ed25519 keys)")
    return None, keys


@dataclass(frozen=True, eq=False)
class TrustedRoster:
    """A checked roster, prepared once (a node keeps one per process and hands it to
    every client it builds or restores): ``mapping`` (``{node id: key}``) or ``allowed``
    (a key set), and ``digest``, the SHA-256 of its canonical form."""

    mapping: dict[int, bytes] | None
    allowed: frozenset[bytes] | None
    digest: bytes

    @property
    def kind(self) -> int:
        """1 for a mapping, 2 for a key set."""
        return 1 if self.mapping is not None else 2


def roster_digest(
    mapping: Mapping[int, bytes] | None, allowed: Collection[bytes] | None
) -> bytes:
    """SHA-256 of a roster's canonical form: the ``mapping`` sorted by node id, else
    the sorted key set ``allowed`` (each under its own label, so the two forms of one
    set of keys never share a digest)."""
    if mapping is not None:
        h = hashlib.sha256(_LABEL_MAPPING + len(mapping).to_bytes(4, "little"))
        for nid in sorted(mapping):
            h.update(nid.to_bytes(8, "little") + mapping[nid])
        return h.digest()
    keys = sorted(allowed or ())
    h = hashlib.sha256(_LABEL_KEYSET + len(keys).to_bytes(4, "little"))
    h.update(b"".join(keys))
    return h.digest()


def trusted_roster(
    roster: TrustedRoster | Mapping[int, bytes] | Collection[bytes],
) -> TrustedRoster:
    """:func:`check_roster`, plus the digest (``roster`` itself if already prepared).

    Raises:
        ValueError: as :func:`check_roster`.
    """
    if isinstance(roster, TrustedRoster):
        return roster
    mapping, allowed = check_roster(roster)
    return TrustedRoster(mapping, allowed, roster_digest(mapping, allowed))
