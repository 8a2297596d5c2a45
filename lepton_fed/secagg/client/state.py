"""Serializable state of a :class:`~lepton_fed.secagg.client.SecAggClient`.

The encoding is versioned (magic ``LFSA``, version byte) and fully bounds-checked.
It holds secret keys (unused round keys, the pending round's pairwise seeds and share
keys): it must stay on the node, e.g. in the Flower node's Context.

Version 3 holds the node's policy (minimum security bits, colluding fraction, trust on
first use), a roster given as ``{node id: key}`` or as a set of allowed keys, and pins
that survive a new run id. Version 4 (written now) may instead hold only the SHA-256
digest of the roster (``encode_state(st, with_roster=False)``): a node's roster is
its own provisioned file, so the Flower glue keeps it once per process and passes it
back on restore, where it must match the digest (at 10,000 nodes an inline key set
is 320 KB per node state). Older states (versions 1 and 2) are refused: they were
written by a client that accepted any (k, t) and cleared its pins on a new run.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

from lepton_fed.errors import ProtocolAbort
from lepton_fed.secagg.keys import KEY_BYTES
from lepton_fed.secagg.stages import ClientPhase
from lepton_fed.secagg.trust import TrustedRoster, roster_digest, trusted_roster
from lepton_fed.secagg.wire import MAX_COHORT, MAX_ROUNDS_PER_ADVERT
from lepton_fed.secagg.wire.binary import MAX_U64, Reader, Writer

__all__ = [
    "ClientState",
    "PendingRound",
    "attach_roster",
    "decode_state",
    "encode_state",
]

_STATE_MAGIC = b"LFSA"
_STATE_VERSION = 4
_READABLE_VERSIONS = (3, 4)
_INLINE, _DIGEST = 1, 2  # how a state holds its roster (0: none)
_DIGEST_BYTES = 32
_MAX_PINS = MAX_COHORT


@dataclass(kw_only=True)
class PendingRound:
    """What a node must remember between its masked input and the unmask request:
    its neighbourhood, the pairwise seeds and the keys of the shares each neighbour
    will send."""

    round: int
    threshold: int
    neighbours: tuple[int, ...]
    seeds: dict[int, bytes] = field(default_factory=dict)  # neighbour -> pairwise seed
    recv_keys: dict[int, bytes] = field(default_factory=dict)  # neighbour -> AEAD key


@dataclass(kw_only=True)
class ClientState:
    """Everything a client remembers between messages (the identity key excepted).

    Exactly one way of trusting identity keys applies: ``roster`` (node id -> key),
    ``allowed`` (a set of keys; node ids are not known in advance), or neither with
    ``allow_tofu`` (keys pinned on first use in ``pinned``, kept across runs).
    """

    node_id: int
    identity_public: bytes
    roster: dict[int, bytes] | None
    allowed: frozenset[bytes] | None = None
    allow_tofu: bool = False
    min_security_bits: float = 40.0
    colluding_fraction: float = 0.05
    min_cohort: int = 2
    phase: ClientPhase = ClientPhase.NEW
    run_id: int = 0
    last_round: int = 0
    round_keys: dict[int, bytes] = field(default_factory=dict)
    pinned: dict[int, bytes] = field(default_factory=dict)
    pending: PendingRound | None = None
    answered: tuple[int, bytes, bytes] | None = None  # (round, sha256(request), reply)
    # SHA-256 of the roster (mapping or key set); in a state decoded from its digest
    # alone, ``roster``/``allowed`` stay None until :func:`attach_roster`
    roster_digest: bytes | None = None
    roster_kind: int = 0  # 0 none, 1 mapping, 2 key set

    def reset_run(self, run_id: int) -> None:
        """Forgets the previous run's keys and rounds; pins are kept (a new run id
        must not let a server swap identities)."""
        self.run_id = run_id
        self.last_round = 0
        self.round_keys = {}
        self.forget_round()
        self.phase = ClientPhase.NEW

    def forget_round(self) -> None:
        """Drops the round in progress (pending round, answered unmask)."""
        self.pending = None
        self.answered = None

    def consume_round_key(self, round: int) -> None:
        """Deletes the key of ``round`` and every older one, and forgets the round in
        progress (phase ``READY``): a second masked input under the same pairwise masks
        is impossible."""
        for old in [q for q in self.round_keys if q <= round]:
            del self.round_keys[old]
        self.last_round = round
        self.forget_round()
        self.phase = ClientPhase.READY


def attach_roster(
    st: ClientState, roster: TrustedRoster | Mapping[int, bytes] | Collection[bytes] | None
) -> None:
    """Give a decoded state its roster back (a state saved ``with_roster=False``), or
    check the one given against the state's own. A state created without a roster
    (trust on first use) keeps trusting as it was created: ``roster`` is ignored.

    Raises:
        ProtocolAbort: the state needs its roster and none is given, or the roster
            given is not the one the state was created with (by digest and kind).
    """
    if st.roster_kind == 0:
        return
    if roster is None:
        if st.roster is None and st.allowed is None:
            raise ProtocolAbort(
                "roster_required: this client state was saved without its roster; "
                "pass the node's roster to restore it")
        return
    try:
        tr = trusted_roster(roster)
    except ValueError as exc:
        raise ProtocolAbort(f"roster_mismatch: {exc}") from None
    if tr.kind != st.roster_kind or tr.digest != _state_digest(st):
        raise ProtocolAbort(
            "roster_mismatch: the roster given is not the one this client state was "
            "created with")
    st.roster, st.allowed = tr.mapping, tr.allowed


def _write_key_map(w: Writer, keys: Mapping[int, bytes] | None) -> None:
    w.u8(0 if keys is None else 1)
    if keys is not None:
        w.u32(len(keys))
        for nid in sorted(keys):
            w.u64(nid)
            w.fixed(keys[nid], KEY_BYTES)


def _read_key_map(r: Reader) -> dict[int, bytes] | None:
    if not r.u8():
        return None
    return _read_keys(r)


def _read_keys(r: Reader) -> dict[int, bytes]:
    out = {}
    for _ in range(r.count(_MAX_PINS)):
        nid = r.u64()
        if nid >= MAX_U64:
            raise ProtocolAbort("reserved node id in saved key map")
        out[nid] = r.fixed(KEY_BYTES)
    return out


def _state_digest(st: ClientState) -> bytes:
    if st.roster_digest is None:  # an inline roster (version 3, or with_roster=True)
        st.roster_digest = roster_digest(st.roster, st.allowed)
    return st.roster_digest


def encode_state(st: ClientState, *, with_roster: bool = True) -> bytes:
    """Versioned byte encoding of ``st``; ``with_roster=False`` writes the roster's
    digest instead of its keys (restore with :func:`attach_roster`)."""
    return _encode(st, digest_only=not with_roster and st.roster_kind != 0)


def _encode(st: ClientState, *, digest_only: bool) -> bytes:
    w = Writer()
    w.fixed(_STATE_MAGIC, 4)
    w.u8(_STATE_VERSION)
    w.u64(st.node_id)
    w.fixed(st.identity_public, KEY_BYTES)
    w.u8(int(st.phase))
    w.u64(st.run_id)
    w.u32(st.last_round)
    w.u32(st.min_cohort)
    w.f64(st.min_security_bits)
    w.f64(st.colluding_fraction)
    w.u8(1 if st.allow_tofu else 0)
    if digest_only and st.roster_kind == 1:
        w.u8(_DIGEST)
        w.fixed(_state_digest(st), _DIGEST_BYTES)
    else:
        _write_key_map(w, st.roster)
    if digest_only and st.roster_kind == 2:
        w.u8(_DIGEST)
        w.fixed(_state_digest(st), _DIGEST_BYTES)
    else:
        w.u8(0 if st.allowed is None else _INLINE)
        if st.allowed is not None:
            w.u32(len(st.allowed))
            for key in sorted(st.allowed):
                w.fixed(key, KEY_BYTES)
    _write_key_map(w, st.pinned)
    w.u32(len(st.round_keys))
    for r in sorted(st.round_keys):
        w.u32(r)
        w.fixed(st.round_keys[r], KEY_BYTES)
    p = st.pending
    w.u8(0 if p is None else 1)
    if p is not None:
        w.u32(p.round)
        w.u32(p.threshold)
        w.ids(p.neighbours)
        for j in p.neighbours:
            w.fixed(p.seeds[j], KEY_BYTES)
            w.fixed(p.recv_keys[j], KEY_BYTES)
    a = st.answered
    w.u8(0 if a is None else 1)
    if a is not None:
        w.u32(a[0])
        w.fixed(a[1], _DIGEST_BYTES)
        w.blob(a[2])
    return w.getvalue()


def decode_state(data: bytes) -> ClientState:
    """Inverse of :func:`encode_state`.

    Raises:
        ProtocolAbort: not a client state, unknown version, or malformed content.
    """
    r = Reader(data, "client state")
    if r.fixed(4) != _STATE_MAGIC or (version := r.u8()) not in _READABLE_VERSIONS:
        raise ProtocolAbort("not a lepton-fed secagg client state (or unknown version)")
    node_id = r.u64()
    identity_public = r.fixed(KEY_BYTES)
    try:
        phase = ClientPhase(r.u8())
    except ValueError:
        raise ProtocolAbort("unknown client phase in saved state") from None
    run_id, last_round, min_cohort = r.u64(), r.u32(), r.u32()
    min_bits, fraction, tofu = r.f64(), r.f64(), bool(r.u8())
    if not (math.isfinite(min_bits) and 0 <= fraction < 1):
        raise ProtocolAbort("malformed security policy in saved state")
    digest: bytes | None = None
    kind = 0
    flag = r.u8()
    roster = None
    if flag == _DIGEST and version >= 4:
        digest, kind = r.fixed(_DIGEST_BYTES), 1
    elif flag == _INLINE:
        roster = _read_keys(r)
        kind = 1
    elif flag:
        raise ProtocolAbort("malformed roster in saved state")
    allowed = None
    flag = r.u8()
    if flag == _DIGEST and version >= 4 and not kind:
        digest, kind = r.fixed(_DIGEST_BYTES), 2
    elif flag == _INLINE and not kind:
        allowed = frozenset(r.fixed(KEY_BYTES) for _ in range(r.count(_MAX_PINS)))
        kind = 2
    elif flag:
        raise ProtocolAbort("malformed roster in saved state")
    pinned = _read_key_map(r) or {}
    round_keys = {}
    for _ in range(r.count(MAX_ROUNDS_PER_ADVERT * 16)):
        rnd = r.u32()
        round_keys[rnd] = r.fixed(KEY_BYTES)
    pending = None
    if r.u8():
        rnd, threshold, nbrs = r.u32(), r.u32(), r.ids()
        seeds, recv = {}, {}
        for j in nbrs:
            seeds[j] = r.fixed(KEY_BYTES)
            recv[j] = r.fixed(KEY_BYTES)
        pending = PendingRound(
            round=rnd, threshold=threshold, neighbours=nbrs, seeds=seeds, recv_keys=recv
        )
    answered = (r.u32(), r.fixed(_DIGEST_BYTES), r.blob()) if r.u8() else None
    r.done()
    return ClientState(
        node_id=node_id,
        identity_public=identity_public,
        roster=roster,
        allowed=allowed,
        allow_tofu=tofu,
        min_security_bits=min_bits,
        colluding_fraction=fraction,
        min_cohort=min_cohort,
        phase=phase,
        run_id=run_id,
        last_round=last_round,
        round_keys=round_keys,
        pinned=pinned,
        pending=pending,
        answered=answered,
        roster_digest=digest,
        roster_kind=kind,
    )
