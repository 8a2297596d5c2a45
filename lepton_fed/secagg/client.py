"""SecAgg+ client: a pure state machine, one per node, no I/O.

Call order (each method takes the server's request bytes and returns reply bytes):

1. ``advertise(request)`` once per run (and again when the server asks for more
   rounds): fresh X25519 key pair per round, each public key signed with the node's
   Ed25519 identity key.
2. per round r: ``masked_input(request, delta=..., weight=...)`` returns the masked
   encoding of ``[weight * delta, weight]`` together with one AEAD-encrypted Shamir
   share of the fresh self-mask seed b per neighbour.
3. per round r: ``unmask(request)`` returns b-shares of the neighbours the server says
   survived and pairwise-mask seeds for the neighbours it says dropped.

Robust mode (``SecAggParams.share_keys_first``; the server decides, the node follows the
requests it gets), per round r:

2a. ``share_keys(request)``: draws b and a fresh X25519 mask key pair for the round and
    sends each neighbour, AEAD-encrypted under a key derived from the advertised round
    keys, (mask public key, b-share, mask-key share). The advertised round key is
    deleted here.
2b. ``masked_input(request, delta=..., weight=...)``: the request relays the ciphertexts
    of the neighbours that shared keys; the node masks with exactly those (pairwise
    seeds from its mask key and theirs), keeps their shares, and deletes its mask key.
3.  ``unmask(request)``: b-shares of the neighbours the server says survived,
    mask-key shares of those it says dropped; never both for one neighbour.

Between calls, persist ``to_bytes()`` and restore with ``from_bytes(...)`` (in Flower,
inside the node's Context). The state holds secret keys: keep it on the node.

Guarantees (see README "Threat model"): the node never reveals, for one round, both a
b-share and a pairwise seed for the same neighbour; it refuses to unmask when fewer
than t neighbours are claimed to have survived; it uses each round key for one
masked input only and deletes it (and every older round key) before replying, which
also gives forward secrecy for past rounds. What would void these: restoring an older
state after a reply was sent (state rollback), or using a non-cryptographic
``rng_bytes``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping

import numpy as np
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from lepton_fed.errors import ProtocolAbort
from lepton_fed.secagg import _client_fast as fast
from lepton_fed.secagg import _client_robust as robust
from lepton_fed.secagg import keys as K
from lepton_fed.secagg._client_checks import check_recipient
from lepton_fed.secagg._client_state import (
    ClientState,
    check_roster,
    decode_state,
    encode_state,
)
from lepton_fed.secagg.messages import (
    MAX_ROUNDS_PER_ADVERT,
    SERVER_ID,
    AdvertiseReply,
    AdvertiseRequest,
    RobustUnmaskRequest,
    RoundKey,
    UnmaskRequest,
    peek_header,
)
from lepton_fed.secagg.stages import (
    CLIENT_TRANSITIONS,
    ClientPhase,
    Stage,
    check_transition,
)

__all__ = ["SecAggClient"]


class SecAggClient:
    """Client side of lepton-fed SecAgg+ for one node.

    Args:
        node_id: this node's id, 0 <= node_id < 2^64 - 1.
        identity_key: the node's Ed25519 identity key (from provisioning).
        roster: ``{node_id: raw Ed25519 public key}`` from provisioning. When given,
            neighbour keys are verified against it and the identity keys the server
            relays must match it; this is what protects against a server that
            substitutes keys. When ``None``, the node trusts the identity keys the
            server relays the first time it sees each node in a run and pins them
            (trust on first use; a malicious server can then impersonate nodes).
        rng_bytes: CSPRNG (``os.urandom``); injectable only for known-answer tests.
        min_cohort: refuse rounds whose cohort is smaller.
        min_neighbours: refuse graphs with fewer neighbours (capped at cohort - 1).

    Raises:
        ValueError: node id out of range, a malformed roster, or a roster entry for
            this node that is not ``identity_key``'s public key.
    """

    def __init__(
        self,
        *,
        node_id: int,
        identity_key: Ed25519PrivateKey,
        roster: Mapping[int, bytes] | None = None,
        rng_bytes: Callable[[int], bytes] = os.urandom,
        min_cohort: int = 2,
        min_neighbours: int = 1,
    ) -> None:
        if not 0 <= node_id < SERVER_ID:
            raise ValueError(f"node_id must be in [0, 2^64 - 2], got {node_id}")
        if min_cohort < 2 or min_neighbours < 1:
            raise ValueError("min_cohort must be >= 2 and min_neighbours >= 1")
        public = K.identity_public_bytes(identity_key)
        checked = None if roster is None else check_roster(roster)
        if checked is not None and checked.get(node_id, public) != public:
            raise ValueError("roster entry for this node does not match identity_key")
        self._identity = identity_key
        self._rng = rng_bytes
        self._st = ClientState(
            node_id=node_id,
            identity_public=public,
            roster=checked,
            min_cohort=min_cohort,
            min_neighbours=min_neighbours,
        )

    # ------------------------------------------------------------------ properties
    @property
    def node_id(self) -> int:
        """This node's id."""
        return self._st.node_id

    @property
    def phase(self) -> ClientPhase:
        """Current phase of the state machine."""
        return self._st.phase

    @property
    def identity_key(self) -> Ed25519PrivateKey:
        """The node's identity key (never part of ``to_bytes``)."""
        return self._identity

    @property
    def rng_bytes(self) -> Callable[[int], bytes]:
        """The randomness source (``os.urandom`` outside tests)."""
        return self._rng

    @property
    def run_id(self) -> int | None:
        """Run this node holds keys for, or ``None`` before the first advertisement."""
        return None if self._st.phase == ClientPhase.NEW else self._st.run_id

    @property
    def advertised_rounds(self) -> tuple[int, ...]:
        """Rounds for which an unused round key is held."""
        return tuple(sorted(self._st.round_keys))

    @property
    def min_neighbours(self) -> int:
        """Smallest graph degree this node accepts (capped at cohort size - 1)."""
        return self._st.min_neighbours

    @min_neighbours.setter
    def min_neighbours(self, value: int) -> None:
        if value < 1:
            raise ValueError("min_neighbours must be >= 1")
        self._st.min_neighbours = value

    # --------------------------------------------------------------------- dispatch
    def handle(
        self,
        request: bytes,
        *,
        delta: np.ndarray | None = None,
        weight: float | None = None,
    ) -> bytes:
        """Routes a request to :meth:`advertise`, :meth:`share_keys`,
        :meth:`masked_input` or :meth:`unmask`.

        Raises:
            ProtocolAbort: unknown/malformed request, or whatever the handler raises.
            ValueError: a masked-input request without ``delta`` and ``weight``.
        """
        stage = peek_header(request).stage
        if stage == Stage.ADVERTISE:
            return self.advertise(request)
        if stage == Stage.SHARE_KEYS:
            return self.share_keys(request)
        if stage in (Stage.MASKED_INPUT, Stage.ROBUST_MASKED_INPUT):
            if delta is None or weight is None:
                raise ValueError("a masked-input request needs delta and weight")
            return self.masked_input(request, delta=delta, weight=weight)
        return self.unmask(request)

    # ------------------------------------------------------------------- advertise
    def advertise(self, request: bytes) -> bytes:
        """Answers an advertisement request with signed per-round X25519 public keys.

        A request for a new run id starts a fresh run (all old keys are dropped).
        Re-advertising rounds that still have unused keys replaces those keys; a
        pending round (masked input sent, no unmask yet) is abandoned.

        Raises:
            ProtocolAbort: malformed request, wrong recipient, or rounds at or below
                the last round this node already sent a masked input for.
        """
        st = self._st
        req = AdvertiseRequest.from_bytes(request, sender=SERVER_ID)
        check_recipient(st, req.recipient)
        if not 1 <= req.num_rounds <= MAX_ROUNDS_PER_ADVERT:
            raise ProtocolAbort(f"cannot advertise {req.num_rounds} rounds")
        if req.round < 1 or req.round + req.num_rounds - 1 > 2**32 - 1:
            raise ProtocolAbort(f"invalid first round {req.round}")
        fresh_run = st.phase == ClientPhase.NEW or req.run_id != st.run_id
        if not fresh_run and req.round <= st.last_round:
            raise ProtocolAbort(
                f"round {req.round} is not after the last used round {st.last_round}"
            )
        phase = ClientPhase.NEW if fresh_run else st.phase
        next_phase = check_transition(CLIENT_TRANSITIONS, phase, Stage.ADVERTISE)
        if fresh_run:
            st.reset_run(req.run_id)
        st.forget_round()
        round_keys = []
        for r in range(req.round, req.round + req.num_rounds):
            private, public = K.x25519_keypair(self._rng)
            st.round_keys[r] = private
            sig = K.sign_round_key(
                self._identity,
                run_id=req.run_id,
                node_id=st.node_id,
                round=r,
                public_key=public,
            )
            round_keys.append(RoundKey(public_key=public, signature=sig))
        st.phase = next_phase
        return AdvertiseReply(
            run_id=req.run_id,
            round=req.round,
            sender=st.node_id,
            identity_key=st.identity_public,
            round_keys=tuple(round_keys),
        ).to_bytes()

    # ---------------------------------------------------------------- masked input
    def masked_input(
        self, request: bytes, *, delta: np.ndarray, weight: float
    ) -> bytes:
        """Masks ``[weight * delta, weight]`` and encrypts b-shares to the neighbours.

        In robust mode (a ``RobustMaskedInputRequest``, after :meth:`share_keys`) the
        shares already went out: the request relays the neighbours' ciphertexts, the
        node masks with exactly the neighbours that shared keys and returns only the
        masked vector. A content refusal of a robust request wipes the round.

        Args:
            request: a ``MaskedInputRequest`` or ``RobustMaskedInputRequest``.
            delta: the model update, already clipped so every coordinate lies in
                [-clip, clip] (``clip`` comes in the request).
            weight: normalized example count in [0, 1]; masked like the update.

        Returns:
            ``MaskedInputReply`` bytes: ``dim + 1`` uint32 (4 bytes per parameter),
            a commitment to b, and one ciphertext per neighbour.

        Raises:
            ProtocolAbort: wrong run/round/recipient/stage, bad graph parameters, a
                neighbour key that is missing, extra, or not signed by the roster's
                identity key, no unused key for the round, or ``dim != len(delta)``.
                Nothing is consumed when the request is refused.
            ValueError: ``delta``/``weight`` outside the encoding's range.
        """
        if self._st.phase == ClientPhase.NEW:
            raise ProtocolAbort("masked-input request before any advertisement")
        step = (
            robust.masked_input
            if peek_header(request).stage == Stage.ROBUST_MASKED_INPUT
            else fast.masked_input
        )
        return step(self._st, self._rng, request, delta=delta, weight=weight)

    # ---------------------------------------------------------------------- unmask
    def unmask(self, request: bytes) -> bytes:
        """Reveals b-shares of surviving neighbours and pairwise seeds of dropped ones.

        For every neighbour exactly one kind is revealed, and only once per round: the
        round's secrets are wiped after the reply, and also after a request for the
        pending round that is refused for its content (a server caught sending an
        inconsistent request gets nothing more for the round). A request for another
        run, round or stage is refused without touching the pending round.

        Retries are idempotent: the byte-identical request of the round just answered
        gets the same reply again (its reply may have been lost), so the adapter can
        re-send unmask requests to nodes that have not answered before declaring them
        dropped. Any other request for that round is refused.

        In robust mode (a ``RobustUnmaskRequest``) the survivors and dropped must
        partition the neighbours the node masked with; it returns the b-share of each
        survivor and the mask-key share of each dropped neighbour (never both, never a
        pairwise seed).

        Raises:
            ProtocolAbort: wrong run/round/recipient/stage; survivors and dropped that
                overlap or do not partition the neighbourhood; fewer than t survivors;
                ciphertexts missing, extra, from a dropped node, or failing AEAD
                authentication.
        """
        st = self._st
        robust_mode = peek_header(request).stage == Stage.ROBUST_UNMASK
        cls = RobustUnmaskRequest if robust_mode else UnmaskRequest
        req = cls.from_bytes(request, run_id=st.run_id, sender=SERVER_ID)
        check_recipient(st, req.recipient)
        digest = _sha256(request)
        done = st.answered
        if (
            st.phase == ClientPhase.READY
            and done is not None
            and done[:2] == (req.round, digest)
        ):
            return done[2]  # identical retry: reveals nothing new
        next_phase = check_transition(CLIENT_TRANSITIONS, st.phase, req.STAGE)
        pending = st.pending
        if (
            pending is None
            or req.round != pending.round
            or pending.robust != robust_mode
        ):
            mode = "robust-mode " if robust_mode else ""
            raise ProtocolAbort(f"no {mode}masked input pending for round {req.round}")
        try:
            if isinstance(req, RobustUnmaskRequest):
                reply = robust.unmask_reply(st, req, pending)
            else:
                reply = fast.unmask_reply(st, req, pending)
        finally:
            # Wipe the round either way: never answer twice, never after a refusal.
            st.pending = None
            st.phase = ClientPhase.READY
        st.answered = (req.round, digest, reply)
        st.phase = next_phase
        return reply

    # ------------------------------------------------------------ robust mode
    def share_keys(self, request: bytes) -> bytes:
        """Robust mode, exchange 1: shares of b and of a fresh mask key to neighbours.

        Checks the request exactly like a fast-mode masked-input request (cohort,
        graph recomputed from the seed, thresholds, encoding, every neighbour's round
        key against the roster), then consumes the round key: it derives the AEAD keys
        for this round's shares and deletes the round key and every older one. Draws
        the self-mask secret b and a fresh X25519 mask key pair (the pairwise masks come
        from the mask keys, never from the advertised round keys, so rebuilding a
        dropped node's mask key never exposes the share-encryption keys), splits b and
        the mask private key into k Shamir shares (threshold t, x = neighbour id + 1)
        and sends neighbour j the ChaCha20-Poly1305 encryption of
        ``mask public key || b-share_j || mask-key share_j``.

        Returns:
            ``ShareKeysReply`` bytes: mask public key, commitment to b, k ciphertexts.

        Raises:
            ProtocolAbort: as :meth:`masked_input` for a fast-mode request. Nothing is
                consumed when the request is refused.
        """
        if self._st.phase == ClientPhase.NEW:
            raise ProtocolAbort("share-keys request before any advertisement")
        return robust.share_keys(self._st, self._rng, request)

    # ----------------------------------------------------------------------- state
    def to_bytes(self) -> bytes:
        """Serializes the whole state (secret keys included; keep it on the node).

        The identity key is not included: pass it again to :meth:`from_bytes`.
        """
        return encode_state(self._st)

    @classmethod
    def from_bytes(
        cls,
        data: bytes,
        *,
        identity_key: Ed25519PrivateKey,
        rng_bytes: Callable[[int], bytes] = os.urandom,
    ) -> SecAggClient:
        """Restores a client saved with :meth:`to_bytes`.

        Raises:
            ProtocolAbort: malformed state, unknown state version, or an identity key
                that is not the one the state was created with.
        """
        st = decode_state(data)
        if st.identity_public != K.identity_public_bytes(identity_key):
            raise ProtocolAbort("identity key does not match the saved client state")
        client = cls(
            node_id=st.node_id,
            identity_key=identity_key,
            roster=st.roster,
            rng_bytes=rng_bytes,
            min_cohort=st.min_cohort,
            min_neighbours=st.min_neighbours,
        )
        client._st = st
        return client


def _sha256(data: bytes) -> bytes:
    h = hashes.Hash(hashes.SHA256())
    h.update(data)
    return h.finalize()
