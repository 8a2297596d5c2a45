"""Serializable state of a :class:`~lepton_fed.secagg.client.SecAggClient`.

The encoding is versioned (magic ``LFSA``, version byte) and fully bounds-checked.
It holds secret keys (unused round keys, the pending round's pairwise seeds and share
keys; in robust mode the round's self-mask seed, mask key and the shares received
from neighbours): it must stay on the node, e.g. in the Flower node's Context.

Version 2 added the robust-mode fields; version-1 states (fast mode only) still load.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from lepton_fed.errors import ProtocolAbort
from lepton_fed.secagg._wire import MAX_U64, Reader, Writer
from lepton_fed.secagg.keys import KEY_BYTES
from lepton_fed.secagg.messages import MAX_COHORT, MAX_ROUNDS_PER_ADVERT, SERVER_ID
from lepton_fed.secagg.shamir import SHARE_BYTES
from lepton_fed.secagg.stages import ClientPhase

__all__ = [
    "ClientState",
    "PendingRound",
    "SharedRound",
    "check_roster",
    "decode_state",
    "encode_state",
]

_STATE_MAGIC = b"LFSA"
_STATE_VERSION = 2
_READABLE_VERSIONS = (1, 2)
_DIGEST_BYTES = 32


@dataclass(kw_only=True)
class PendingRound:
    """What a node must remember between its masked input and the unmask request.

    Fast mode: ``neighbours`` is the whole neighbourhood, with the pairwise seeds and
    the keys of the shares each neighbour will send. Robust mode (``robust``):
    ``neighbours`` are the neighbours masked with (those that shared keys), and
    ``shares`` holds the (b-share, mask-key share) each of them sent.
    """

    round: int
    threshold: int
    neighbours: tuple[int, ...]
    seeds: dict[int, bytes] = field(default_factory=dict)  # neighbour -> pairwise seed
    recv_keys: dict[int, bytes] = field(default_factory=dict)  # neighbour -> AEAD key
    robust: bool = False
    shares: dict[int, tuple[bytes, bytes]] = field(default_factory=dict)


@dataclass(kw_only=True)
class SharedRound:
    """Robust mode: what a node remembers between share_keys and its masked input.

    The advertised round key is already deleted; what remains is derived from it (the
    AEAD keys of the shares its neighbours send) plus the round's fresh secrets.
    """

    round: int
    threshold: int
    neighbours: tuple[int, ...]
    cohort_size: int
    dim: int
    clip: float
    bits: int
    b: bytes  # self-mask secret
    mask_key: bytes  # X25519 private key of the round's pairwise masks
    recv_keys: dict[int, bytes]  # neighbour -> AEAD key of the shares it sends us


@dataclass(kw_only=True)
class ClientState:
    """Everything a client remembers between messages (the identity key excepted)."""

    node_id: int
    identity_public: bytes
    roster: dict[int, bytes] | None
    min_cohort: int = 2
    min_neighbours: int = 1
    phase: ClientPhase = ClientPhase.NEW
    run_id: int = 0
    last_round: int = 0
    round_keys: dict[int, bytes] = field(default_factory=dict)
    pinned: dict[int, bytes] = field(default_factory=dict)
    pending: PendingRound | None = None
    answered: tuple[int, bytes, bytes] | None = None  # (round, sha256(request), reply)
    shared: SharedRound | None = None

    def reset_run(self, run_id: int) -> None:
        """Forgets everything about the previous run."""
        self.run_id = run_id
        self.last_round = 0
        self.round_keys = {}
        self.pinned = {}
        self.forget_round()
        self.phase = ClientPhase.NEW

    def forget_round(self) -> None:
        """Drops the round in progress (shared keys, pending round, answered unmask)."""
        self.pending = None
        self.answered = None
        self.shared = None

    def consume_round_key(self, round: int) -> None:
        """Deletes the key of ``round`` and every older one, and forgets the round in
        progress (phase ``READY``): a second masked input under the same pairwise masks
        is impossible."""
        for old in [q for q in self.round_keys if q <= round]:
            del self.round_keys[old]
        self.last_round = round
        self.forget_round()
        self.phase = ClientPhase.READY


def check_roster(roster: Mapping[int, bytes]) -> dict[int, bytes]:
    """Copies a roster, checking ids and 32-byte Ed25519 public keys.

    Raises:
        ValueError: a malformed entry.
    """
    out = {}
    for nid, key in roster.items():
        if not 0 <= int(nid) < SERVER_ID or len(key) != KEY_BYTES:
            raise ValueError(f"malformed roster entry for node {nid}")
        out[int(nid)] = bytes(key)
    return out


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
    out = {}
    for _ in range(r.count(MAX_COHORT)):
        nid = r.u64()
        if nid >= MAX_U64:
            raise ProtocolAbort("reserved node id in saved key map")
        out[nid] = r.fixed(KEY_BYTES)
    return out


def encode_state(st: ClientState) -> bytes:
    """Versioned byte encoding of ``st``."""
    w = Writer()
    w.fixed(_STATE_MAGIC, 4)
    w.u8(_STATE_VERSION)
    w.u64(st.node_id)
    w.fixed(st.identity_public, KEY_BYTES)
    w.u8(int(st.phase))
    w.u64(st.run_id)
    w.u32(st.last_round)
    w.u32(st.min_cohort)
    w.u32(st.min_neighbours)
    _write_key_map(w, st.roster)
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
        w.u8(1 if p.robust else 0)
        for j in p.neighbours:
            if p.robust:
                w.fixed(p.shares[j][0], SHARE_BYTES)
                w.fixed(p.shares[j][1], SHARE_BYTES)
            else:
                w.fixed(p.seeds[j], KEY_BYTES)
                w.fixed(p.recv_keys[j], KEY_BYTES)
    a = st.answered
    w.u8(0 if a is None else 1)
    if a is not None:
        w.u32(a[0])
        w.fixed(a[1], _DIGEST_BYTES)
        w.blob(a[2])
    sh = st.shared
    w.u8(0 if sh is None else 1)
    if sh is not None:
        w.u32(sh.round)
        w.u32(sh.threshold)
        w.ids(sh.neighbours)
        w.u32(sh.cohort_size)
        w.u64(sh.dim)
        w.f64(sh.clip)
        w.u8(sh.bits)
        w.fixed(sh.b, KEY_BYTES)
        w.fixed(sh.mask_key, KEY_BYTES)
        for j in sh.neighbours:
            w.fixed(sh.recv_keys[j], KEY_BYTES)
    return w.getvalue()


def decode_state(data: bytes) -> ClientState:
    """Inverse of :func:`encode_state`.

    Raises:
        ProtocolAbort: not a client state, unknown version, or malformed content.
    """
    r = Reader(data, "client state")
    if r.fixed(4) != _STATE_MAGIC:
        raise ProtocolAbort("not a lepton-fed secagg client state (or unknown version)")
    version = r.u8()
    if version not in _READABLE_VERSIONS:
        raise ProtocolAbort("not a lepton-fed secagg client state (or unknown version)")
    node_id = r.u64()
    identity_public = r.fixed(KEY_BYTES)
    try:
        phase = ClientPhase(r.u8())
    except ValueError:
        raise ProtocolAbort("unknown client phase in saved state") from None
    run_id, last_round, min_cohort, min_neighbours = r.u64(), r.u32(), r.u32(), r.u32()
    roster = _read_key_map(r)
    pinned = _read_key_map(r) or {}
    round_keys = {}
    for _ in range(r.count(MAX_ROUNDS_PER_ADVERT * 16)):
        rnd = r.u32()
        round_keys[rnd] = r.fixed(KEY_BYTES)
    pending = None
    if r.u8():
        rnd, threshold, nbrs = r.u32(), r.u32(), r.ids()
        robust = bool(r.u8()) if version >= 2 else False
        seeds, recv, shares = {}, {}, {}
        for j in nbrs:
            if robust:
                shares[j] = (r.fixed(SHARE_BYTES), r.fixed(SHARE_BYTES))
            else:
                seeds[j] = r.fixed(KEY_BYTES)
                recv[j] = r.fixed(KEY_BYTES)
        pending = PendingRound(
            round=rnd,
            threshold=threshold,
            neighbours=nbrs,
            seeds=seeds,
            recv_keys=recv,
            robust=robust,
            shares=shares,
        )
    answered = (r.u32(), r.fixed(_DIGEST_BYTES), r.blob()) if r.u8() else None
    shared = None
    if version >= 2 and r.u8():
        rnd, threshold, nbrs = r.u32(), r.u32(), r.ids()
        cohort_size, dim, clip, bits = r.u32(), r.u64(), r.f64(), r.u8()
        b, mask_key = r.fixed(KEY_BYTES), r.fixed(KEY_BYTES)
        shared = SharedRound(
            round=rnd,
            threshold=threshold,
            neighbours=nbrs,
            cohort_size=cohort_size,
            dim=dim,
            clip=clip,
            bits=bits,
            b=b,
            mask_key=mask_key,
            recv_keys={j: r.fixed(KEY_BYTES) for j in nbrs},
        )
    r.done()
    return ClientState(
        node_id=node_id,
        identity_public=identity_public,
        roster=roster,
        min_cohort=min_cohort,
        min_neighbours=min_neighbours,
        phase=phase,
        run_id=run_id,
        last_round=last_round,
        round_keys=round_keys,
        pinned=pinned,
        pending=pending,
        answered=answered,
        shared=shared,
    )
