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
from lepton_fed.secagg import keys as K
from lepton_fed.secagg._client_checks import (
    check_robust_masked_request,
    check_robust_unmask_request,
    check_round_request,
    check_unmask_request,
    verified_peer_keys,
)
from lepton_fed.secagg._client_state import (
    ClientState,
    PendingRound,
    SharedRound,
    check_roster,
    decode_state,
    encode_state,
)
from lepton_fed.secagg.encoding import FieldEncoding
from lepton_fed.secagg.masking import apply_masks, pairwise_sign
from lepton_fed.secagg.messages import (
    MAX_ROUNDS_PER_ADVERT,
    SERVER_ID,
    AdvertiseReply,
    AdvertiseRequest,
    MaskedInputReply,
    MaskedInputRequest,
    RobustMaskedInputReply,
    RobustMaskedInputRequest,
    RobustUnmaskReply,
    RobustUnmaskRequest,
    RoundKey,
    ShareCiphertext,
    ShareKeysReply,
    ShareKeysRequest,
    UnmaskReply,
    UnmaskRequest,
    peek_header,
)
from lepton_fed.secagg.prg import SEED_BYTES
from lepton_fed.secagg.shamir import (
    SHARE_BYTES,
    decode_share_value,
    encode_share_value,
    split_secret,
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
        self._check_recipient(req.recipient)
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
        st.pending = None
        st.answered = None
        st.shared = None
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
        st = self._st
        if st.phase == ClientPhase.NEW:
            raise ProtocolAbort("masked-input request before any advertisement")
        if peek_header(request).stage == Stage.ROBUST_MASKED_INPUT:
            return self._robust_masked_input(request, delta=delta, weight=weight)
        req = MaskedInputRequest.from_bytes(request, run_id=st.run_id, sender=SERVER_ID)
        self._check_recipient(req.recipient)
        next_phase = check_transition(CLIENT_TRANSITIONS, st.phase, Stage.MASKED_INPUT)
        r = req.round
        if r <= st.last_round:
            raise ProtocolAbort(f"round {r} already used (last round {st.last_round})")
        private = st.round_keys.get(r)
        if private is None:
            raise ProtocolAbort(f"no unused key for round {r}; advertise first")
        neighbours, encoding = check_round_request(req, st)
        if np.ndim(delta) != 1 or len(delta) != req.dim:
            raise ProtocolAbort(
                f"server asked for dim {req.dim}, input has shape {np.shape(delta)}"
            )
        peer_keys = verified_peer_keys(req, neighbours, st)
        shared = {j: K.agree(private, peer_keys[j]) for j in neighbours}
        y = encoding.encode(np.asarray(delta), weight, rng_bytes=self._rng)

        # From here on the round key is consumed: delete it and every older one, so a
        # second masked input under the same pairwise masks is impossible.
        for old in [q for q in st.round_keys if q <= r]:
            del st.round_keys[old]
        st.last_round = r
        st.pending = None
        st.answered = None
        st.shared = None
        st.phase = ClientPhase.READY

        me, run, bits = st.node_id, st.run_id, encoding.bits
        b = self._rng(SEED_BYTES)
        jobs = [(K.self_mask_seed(b, run_id=run, round=r, node_id=me), 1)]
        seeds: dict[int, bytes] = {}
        recv_keys: dict[int, bytes] = {}
        cts = []
        values = split_secret(
            b,
            xs=[j + 1 for j in neighbours],
            threshold=req.threshold,
            rng_bytes=self._rng,
        )
        for j, value in zip(neighbours, values, strict=True):
            seeds[j] = K.pairwise_seed(shared[j], run_id=run, round=r, a=me, b=j)
            jobs.append((seeds[j], pairwise_sign(owner=me, peer=j)))
            recv_keys[j] = K.share_key(
                shared[j], run_id=run, round=r, sender=j, receiver=me
            )
            send_key = K.share_key(
                shared[j], run_id=run, round=r, sender=me, receiver=j
            )
            nonce = self._rng(K.NONCE_BYTES)
            ad = K.share_associated_data(run_id=run, round=r, sender=me, receiver=j)
            data = K.encrypt_share(
                send_key, encode_share_value(value), nonce=nonce, ad=ad
            )
            cts.append(ShareCiphertext(peer=j, nonce=nonce, data=data))
        apply_masks(y, jobs, bits=bits)
        if bits < 32:
            y &= np.uint32(encoding.modulus - 1)
        st.pending = PendingRound(
            round=r,
            threshold=req.threshold,
            neighbours=neighbours,
            seeds=seeds,
            recv_keys=recv_keys,
        )
        st.phase = next_phase
        return MaskedInputReply(
            run_id=run,
            round=r,
            sender=me,
            commitment=K.self_mask_commitment(b, run_id=run, round=r, node_id=me),
            masked=y.astype("<u4", copy=False).tobytes(),
            ciphertexts=tuple(cts),
        ).to_bytes()

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
        robust = peek_header(request).stage == Stage.ROBUST_UNMASK
        cls = RobustUnmaskRequest if robust else UnmaskRequest
        req = cls.from_bytes(request, run_id=st.run_id, sender=SERVER_ID)
        self._check_recipient(req.recipient)
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
        if pending is None or req.round != pending.round or pending.robust != robust:
            mode = "robust-mode " if robust else ""
            raise ProtocolAbort(f"no {mode}masked input pending for round {req.round}")
        try:
            if isinstance(req, RobustUnmaskRequest):
                check_robust_unmask_request(req, pending)
                reply = RobustUnmaskReply(
                    run_id=st.run_id,
                    round=req.round,
                    sender=st.node_id,
                    self_mask_shares=tuple(
                        (j, pending.shares[j][0]) for j in req.survivors
                    ),
                    key_shares=tuple((j, pending.shares[j][1]) for j in req.dropped),
                ).to_bytes()
            else:
                check_unmask_request(req, pending)
                reply = self._unmask_reply(req, pending)
        finally:
            # Wipe the round either way: never answer twice, never after a refusal.
            st.pending = None
            st.phase = ClientPhase.READY
        st.answered = (req.round, digest, reply)
        st.phase = next_phase
        return reply

    def _unmask_reply(self, req: UnmaskRequest, pending: PendingRound) -> bytes:
        me, run = self._st.node_id, self._st.run_id
        shares = []
        for c in sorted(req.ciphertexts, key=lambda c: c.peer):
            ad = K.share_associated_data(
                run_id=run, round=req.round, sender=c.peer, receiver=me
            )
            plain = K.decrypt_share(
                pending.recv_keys[c.peer], c.data, nonce=c.nonce, ad=ad
            )
            try:
                decode_share_value(plain)
            except ValueError as exc:
                raise ProtocolAbort(f"malformed share from node {c.peer}") from exc
            shares.append((c.peer, plain))
        return UnmaskReply(
            run_id=run,
            round=req.round,
            sender=me,
            self_mask_shares=tuple(shares),
            pairwise_seeds=tuple((i, pending.seeds[i]) for i in req.dropped),
        ).to_bytes()

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
        st = self._st
        if st.phase == ClientPhase.NEW:
            raise ProtocolAbort("share-keys request before any advertisement")
        req = ShareKeysRequest.from_bytes(request, run_id=st.run_id, sender=SERVER_ID)
        self._check_recipient(req.recipient)
        next_phase = check_transition(CLIENT_TRANSITIONS, st.phase, Stage.SHARE_KEYS)
        r = req.round
        if r <= st.last_round:
            raise ProtocolAbort(f"round {r} already used (last round {st.last_round})")
        private = st.round_keys.get(r)
        if private is None:
            raise ProtocolAbort(f"no unused key for round {r}; advertise first")
        neighbours, _ = check_round_request(req, st)
        peer_keys = verified_peer_keys(req, neighbours, st)
        shared = {j: K.agree(private, peer_keys[j]) for j in neighbours}

        # The round key is consumed from here on (one use per round key).
        for old in [q for q in st.round_keys if q <= r]:
            del st.round_keys[old]
        st.last_round = r
        st.pending = None
        st.answered = None
        st.shared = None
        st.phase = ClientPhase.READY

        me, run = st.node_id, st.run_id
        b = self._rng(SEED_BYTES)
        mask_private, mask_public = K.x25519_keypair(self._rng)
        xs = [j + 1 for j in neighbours]
        b_values = split_secret(b, xs=xs, threshold=req.threshold, rng_bytes=self._rng)
        key_values = split_secret(
            mask_private, xs=xs, threshold=req.threshold, rng_bytes=self._rng
        )
        recv_keys: dict[int, bytes] = {}
        cts = []
        for j, bv, kv in zip(neighbours, b_values, key_values, strict=True):
            recv_keys[j] = K.share_key(
                shared[j], run_id=run, round=r, sender=j, receiver=me
            )
            send_key = K.share_key(
                shared[j], run_id=run, round=r, sender=me, receiver=j
            )
            nonce = self._rng(K.NONCE_BYTES)
            ad = K.share_associated_data(
                run_id=run, round=r, sender=me, receiver=j, stage=Stage.SHARE_KEYS
            )
            plain = mask_public + encode_share_value(bv) + encode_share_value(kv)
            data = K.encrypt_share(send_key, plain, nonce=nonce, ad=ad)
            cts.append(ShareCiphertext(peer=j, nonce=nonce, data=data))
        st.shared = SharedRound(
            round=r,
            threshold=req.threshold,
            neighbours=neighbours,
            cohort_size=len(req.cohort),
            dim=req.dim,
            clip=req.clip,
            bits=req.bits,
            b=b,
            mask_key=mask_private,
            recv_keys=recv_keys,
        )
        st.phase = next_phase
        return ShareKeysReply(
            run_id=run,
            round=r,
            sender=me,
            mask_key=mask_public,
            commitment=K.self_mask_commitment(b, run_id=run, round=r, node_id=me),
            ciphertexts=tuple(cts),
        ).to_bytes()

    def _robust_masked_input(
        self, request: bytes, *, delta: np.ndarray, weight: float
    ) -> bytes:
        st = self._st
        req = RobustMaskedInputRequest.from_bytes(
            request, run_id=st.run_id, sender=SERVER_ID
        )
        self._check_recipient(req.recipient)
        next_phase = check_transition(
            CLIENT_TRANSITIONS, st.phase, Stage.ROBUST_MASKED_INPUT
        )
        sh = st.shared
        if sh is None or req.round != sh.round:
            raise ProtocolAbort(f"no shared keys pending for round {req.round}")
        if np.ndim(delta) != 1 or len(delta) != sh.dim:
            raise ProtocolAbort(
                f"server asked for dim {sh.dim}, input has shape {np.shape(delta)}"
            )
        try:
            encoding = FieldEncoding(
                clip=sh.clip, max_contributors=sh.cohort_size, bits=sh.bits
            )
        except ValueError as exc:  # checked at share_keys; only a corrupt state
            raise ProtocolAbort(f"refusing round parameters: {exc}") from exc
        y = encoding.encode(np.asarray(delta), weight, rng_bytes=self._rng)
        me, run, r = st.node_id, st.run_id, sh.round
        try:
            senders = check_robust_masked_request(req, sh)
            shares, seeds = self._open_robust_shares(req, sh)
        except ProtocolAbort:
            # A server caught relaying bad ciphertexts gets nothing for the round.
            st.shared = None
            st.phase = ClientPhase.READY
            raise
        st.shared = None  # the mask key is gone: one masked input per mask key
        st.pending = None
        st.answered = None
        st.phase = ClientPhase.READY
        bits = encoding.bits
        jobs = [(K.self_mask_seed(sh.b, run_id=run, round=r, node_id=me), 1)]
        jobs += [(seeds[j], pairwise_sign(owner=me, peer=j)) for j in senders]
        apply_masks(y, jobs, bits=bits)
        if bits < 32:
            y &= np.uint32(encoding.modulus - 1)
        st.pending = PendingRound(
            round=r,
            threshold=sh.threshold,
            neighbours=senders,
            robust=True,
            shares=shares,
        )
        st.phase = next_phase
        return RobustMaskedInputReply(
            run_id=run,
            round=r,
            sender=me,
            masked=y.astype("<u4", copy=False).tobytes(),
        ).to_bytes()

    def _open_robust_shares(
        self, req: RobustMaskedInputRequest, sh: SharedRound
    ) -> tuple[dict[int, tuple[bytes, bytes]], dict[int, bytes]]:
        """Decrypts every relayed ciphertext; returns shares and pairwise seeds."""
        me, run = self._st.node_id, self._st.run_id
        shares: dict[int, tuple[bytes, bytes]] = {}
        seeds: dict[int, bytes] = {}
        for c in req.ciphertexts:
            ad = K.share_associated_data(
                run_id=run,
                round=sh.round,
                sender=c.peer,
                receiver=me,
                stage=Stage.SHARE_KEYS,
            )
            plain = K.decrypt_share(sh.recv_keys[c.peer], c.data, nonce=c.nonce, ad=ad)
            peer_mask = plain[: K.KEY_BYTES]
            b_share = plain[K.KEY_BYTES : K.KEY_BYTES + SHARE_BYTES]
            key_share = plain[K.KEY_BYTES + SHARE_BYTES :]
            try:
                decode_share_value(b_share)
                decode_share_value(key_share)
            except ValueError as exc:
                raise ProtocolAbort(f"malformed share from node {c.peer}") from exc
            shares[c.peer] = (b_share, key_share)
            seeds[c.peer] = K.pairwise_seed(
                K.agree(sh.mask_key, peer_mask), run_id=run, round=sh.round, a=me, b=c.peer
            )
        return shares, seeds

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

    def _check_recipient(self, recipient: int) -> None:
        if recipient != self._st.node_id:
            raise ProtocolAbort(
                f"request addressed to node {recipient}, not {self._st.node_id}"
            )


def _sha256(data: bytes) -> bytes:
    h = hashes.Hash(hashes.SHA256())
    h.update(data)
    return h.finalize()
