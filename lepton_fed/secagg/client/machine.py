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

Between calls, persist ``to_bytes()`` and restore with ``from_bytes(...)`` (in Flower,
inside the node's Context). The state holds secret keys: keep it on the node.

Guarantees (see README "Threat model"): the node refuses a round whose (k, t) is
weaker than its own minimum security level for the cohort size, whose graph seed is
not the hash of the cohort's keys, or whose identity keys are not in its roster (or
appear twice); it never reveals, for one round, both a b-share and a pairwise seed for
the same neighbour; it refuses to unmask when fewer than t neighbours are claimed to
have survived; it uses each round key for one masked input only and deletes it (and
every older round key) before replying, which also gives forward secrecy for past
rounds. What would void these: restoring an older state after a reply was sent
(state rollback), a non-cryptographic ``rng_bytes``, or trust on first use against a
server that is malicious from the start.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Collection, Mapping

import numpy as np
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from lepton_fed.errors import ProtocolAbort
from lepton_fed.secagg import keys as K
from lepton_fed.secagg.client import steps
from lepton_fed.secagg.client.checks import check_recipient
from lepton_fed.secagg.client.state import (
    ClientState,
    attach_roster,
    decode_state,
    encode_state,
)
from lepton_fed.secagg.stages import (
    CLIENT_TRANSITIONS,
    ClientPhase,
    Stage,
    check_transition,
)
from lepton_fed.secagg.trust import TrustedRoster, trusted_roster
from lepton_fed.secagg.wire import (
    SERVER_ID,
    UnmaskRequest,
    peek_header,
)

__all__ = ["SecAggClient"]


class SecAggClient:
    """Client side of lepton-fed SecAgg+ for one node.

    Args:
        node_id: this node's id, 0 <= node_id < 2^64 - 1.
        identity_key: the node's Ed25519 identity key (from provisioning).
        roster: the identity keys this node trusts, from provisioning: either
            ``{node_id: raw Ed25519 public key}``, or a collection of raw keys when
            node ids are assigned after the roster is signed (Flower assigns them at
            registration). Every identity key the server relays for the round's cohort
            must be in it, and no key may appear twice in one round.
        allow_tofu: with no roster, trust the identity key relayed the first time a
            node is seen and pin it (kept across runs; a warning is issued per new
            pin). A malicious server can then impersonate nodes it introduces. Must be
            set explicitly: with neither a roster nor ``allow_tofu`` the client refuses
            to be built.
        min_security_bits: the node refuses a round whose (k, t) gives a bound on the
            probability that some honest input is exposed above
            ``2^-min_security_bits`` for the cohort size (README "Parameters from a
            security level"); 0 accepts any (k, t) with t > k/2.
        colluding_fraction: the fraction of any cohort this node assumes colludes
            with the server, used for that bound.
        rng_bytes: CSPRNG (``os.urandom``); injectable only for known-answer tests.
        min_cohort: refuse rounds whose cohort is smaller.

    Raises:
        ValueError: node id out of range, a malformed roster, a roster that does not
            contain this node's key, no roster without ``allow_tofu``, or a policy out
            of range.
    """

    def __init__(
        self,
        *,
        node_id: int,
        identity_key: Ed25519PrivateKey,
        roster: TrustedRoster | Mapping[int, bytes] | Collection[bytes] | None = None,
        allow_tofu: bool = False,
        min_security_bits: float = 40.0,
        colluding_fraction: float = 0.05,
        rng_bytes: Callable[[int], bytes] = os.urandom,
        min_cohort: int = 2,
    ) -> None:
        if not 0 <= node_id < SERVER_ID:
            raise ValueError(f"node_id must be in [0, 2^64 - 2], got {node_id}")
        if min_cohort < 2:
            raise ValueError("min_cohort must be >= 2")
        if not (math.isfinite(min_security_bits) and min_security_bits >= 0):
            raise ValueError("min_security_bits must be a finite number >= 0")
        if not 0 <= colluding_fraction < 1:
            raise ValueError("colluding_fraction must be in [0, 1)")
        public = K.identity_public_bytes(identity_key)
        trusted = None if roster is None else trusted_roster(roster)
        mapping, allowed = (None, None) if trusted is None else (trusted.mapping, trusted.allowed)
        if mapping is not None and mapping.get(node_id, public) != public:
            raise ValueError("roster entry for this node does not match identity_key")
        if allowed is not None and public not in allowed:
            raise ValueError("this node's identity key is not in the roster")
        if roster is None and not allow_tofu:
            raise ValueError(
                "no roster: pass the provisioned roster, or allow_tofu=True to trust "
                "identity keys on first use"
            )
        self._identity = identity_key
        self._rng = rng_bytes
        self._st = ClientState(
            node_id=node_id,
            identity_public=public,
            roster=mapping,
            allowed=allowed,
            allow_tofu=allow_tofu and roster is None,
            min_security_bits=float(min_security_bits),
            colluding_fraction=float(colluding_fraction),
            min_cohort=min_cohort,
            roster_digest=None if trusted is None else trusted.digest,
            roster_kind=0 if trusted is None else trusted.kind,
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
    def min_security_bits(self) -> float:
        """This node's minimum security level (see the constructor)."""
        return self._st.min_security_bits

    @property
    def pinned(self) -> dict[int, bytes]:
        """Identity keys pinned on first use (empty with a roster)."""
        return dict(self._st.pinned)

    # --------------------------------------------------------------------- dispatch
    def handle(
        self,
        request: bytes,
        *,
        delta: np.ndarray | None = None,
        weight: float | None = None,
    ) -> bytes:
        """Routes a request to :meth:`advertise`, :meth:`masked_input` or
        :meth:`unmask`.

        Raises:
            ProtocolAbort: unknown/malformed request, or whatever the handler raises.
            ValueError: a masked-input request without ``delta`` and ``weight``.
        """
        stage = peek_header(request).stage
        if stage == Stage.ADVERTISE:
            return self.advertise(request)
        if stage == Stage.MASKED_INPUT:
            if delta is None or weight is None:
                raise ValueError("a masked-input request needs delta and weight")
            return self.masked_input(request, delta=delta, weight=weight)
        return self.unmask(request)

    # ------------------------------------------------------------------- advertise
    def advertise(self, request: bytes) -> bytes:
        """Answers an advertisement request with signed per-round X25519 public keys.

        A request for a new run id starts a fresh run (all old round keys are
        dropped; pinned identities are kept).
        Re-advertising rounds that still have unused keys replaces those keys; a
        pending round (masked input sent, no unmask yet) is abandoned.

        Raises:
            ProtocolAbort: malformed request, wrong recipient, or rounds at or below
                the last round this node already sent a masked input for.
        """
        return steps.advertise_reply(self._st, self._identity, self._rng, request)

    # ---------------------------------------------------------------- masked input
    def masked_input(
        self, request: bytes, *, delta: np.ndarray, weight: float
    ) -> bytes:
        """Masks ``[weight * delta, weight]`` and encrypts b-shares to the neighbours.

        Args:
            request: a ``MaskedInputRequest``.
            delta: the model update, already clipped so every coordinate lies in
                [-clip, clip] (``clip`` comes in the request).
            weight: normalized example count in [0, 1]; masked like the update.

        Returns:
            ``MaskedInputReply`` bytes: ``dim + 1`` uint32 (4 bytes per parameter),
            a commitment to b, and one ciphertext per neighbour.

        Raises:
            ProtocolAbort: wrong run/round/recipient/stage; bad or too weak graph
                parameters (``weak_parameters``); a graph seed that is not the hash
                of the cohort's keys (``graph_seed_mismatch``); an identity key not
                in the roster, differing from it or from a pin, or used twice
                (``not_in_roster``, ``roster_mismatch``, ``identity_changed``,
                ``duplicate_identity``); a neighbour signature that does not verify
                (``bad_signature``); no unused key for the round; or an input that
                is not a vector of the requested dim. Nothing is consumed when the
                request is refused.
            ValueError: ``delta``/``weight`` outside the encoding's range (the
                message names the problem, never a value).
        """
        if self._st.phase == ClientPhase.NEW:
            raise ProtocolAbort("masked-input request before any advertisement")
        return steps.masked_input(
            self._st, self._rng, request, delta=delta, weight=weight
        )

    def masked_integers(
        self, request: bytes, *, values: np.ndarray, min_cohort: int = 0
    ) -> bytes:
        """Masks the integer vector ``values`` as it is, in Z_M (no fixed-point
        encoding, no clip): the server's :attr:`SecAggResult.field_sum` is then the sum
        of the contributors' ``values`` mod M, followed by their count. For inputs that
        are already integers with a known range (distributed DP,
        :mod:`lepton_fed.privacy.distributed`); the caller owns wrap-around.
        ``min_cohort`` raises the node's smallest accepted cohort for this request
        (distributed DP: the contributors each noise share is sized for).

        Raises:
            ProtocolAbort: as :meth:`masked_input` (a cohort below ``min_cohort`` too).
            ValueError: ``values`` without an integer dtype.
        """
        if self._st.phase == ClientPhase.NEW:
            raise ProtocolAbort("masked-input request before any advertisement")
        return steps.masked_input(
            self._st, self._rng, request, delta=None, weight=1.0, field=values,
            min_cohort=min_cohort,
        )

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

        Raises:
            ProtocolAbort: wrong run/round/recipient/stage; survivors and dropped that
                overlap or do not partition the neighbourhood; fewer than t survivors;
                ciphertexts missing, extra, from a dropped node, or failing AEAD
                authentication.
        """
        st = self._st
        req = UnmaskRequest.from_bytes(request, run_id=st.run_id, sender=SERVER_ID)
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
        if pending is None or req.round != pending.round:
            raise ProtocolAbort(f"no masked input pending for round {req.round}")
        try:
            reply = steps.unmask_reply(st, req, pending)
        finally:
            # Wipe the round either way: never answer twice, never after a refusal.
            st.pending = None
            st.phase = ClientPhase.READY
        st.answered = (req.round, digest, reply)
        st.phase = next_phase
        return reply

    # ----------------------------------------------------------------------- state
    def to_bytes(self, *, with_roster: bool = True) -> bytes:
        """Serializes the whole state (secret keys included; keep it on the node).

        The identity key is not included: pass it again to :meth:`from_bytes`. With
        ``with_roster=False`` the roster is replaced by its SHA-256 digest (32 bytes
        instead of 32 per key) and must be passed again to :meth:`from_bytes`.
        """
        return encode_state(self._st, with_roster=with_roster)

    @classmethod
    def from_bytes(
        cls,
        data: bytes,
        *,
        identity_key: Ed25519PrivateKey,
        rng_bytes: Callable[[int], bytes] = os.urandom,
        roster: TrustedRoster | Mapping[int, bytes] | Collection[bytes] | None = None,
    ) -> SecAggClient:
        """Restores a client saved with :meth:`to_bytes` (policy and pins included;
        the roster too, unless it was saved ``with_roster=False``: pass it as
        ``roster`` then).

        Raises:
            ProtocolAbort: malformed state, unknown state version, an identity key
                that is not the one the state was created with, a state saved without
                its roster and no ``roster`` given (``roster_required``), or a
                ``roster`` that is not the state's own (``roster_mismatch``).
        """
        st = decode_state(data)
        if st.identity_public != K.identity_public_bytes(identity_key):
            raise ProtocolAbort("identity key does not match the saved client state")
        attach_roster(st, roster)
        client = cls.__new__(cls)
        client._identity = identity_key
        client._rng = rng_bytes
        client._st = st
        return client


def _sha256(data: bytes) -> bytes:
    h = hashes.Hash(hashes.SHA256())
    h.update(data)
    return h.finalize()
