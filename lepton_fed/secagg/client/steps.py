"""The client's protocol steps (:class:`~lepton_fed.secagg.client.SecAggClient`
dispatches and keeps the phases): the advertisement of signed round keys, the masked
input with one encrypted b-share per neighbour, and the unmask reply; and the share
AEAD they use.

Shares are sealed under a key from the pair's X25519 agreement, one per direction,
with associated data naming run, round, stage, sender and receiver
(:func:`~lepton_fed.secagg.keys.share_associated_data`).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from lepton_fed.errors import ProtocolAbort
from lepton_fed.secagg import keys as K
from lepton_fed.secagg.client.checks import (
    check_recipient,
    check_unmask_request,
    open_round,
    verified_peer_keys,
)
from lepton_fed.secagg.client.state import ClientState, PendingRound
from lepton_fed.secagg.masking import apply_masks, pairwise_sign
from lepton_fed.secagg.prg import SEED_BYTES
from lepton_fed.secagg.shamir import (
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
from lepton_fed.secagg.wire import (
    MAX_ROUNDS_PER_ADVERT,
    SERVER_ID,
    AdvertiseReply,
    AdvertiseRequest,
    MaskedInputReply,
    MaskedInputRequest,
    RoundKey,
    ShareCiphertext,
    UnmaskReply,
    UnmaskRequest,
)

__all__ = [
    "advertise_reply",
    "masked_input",
    "open_share",
    "seal_share",
    "unmask_reply",
]


def advertise_reply(
    st: ClientState,
    identity_key: Ed25519PrivateKey,
    rng_bytes: Callable[[int], bytes],
    request: bytes,
) -> bytes:
    """:meth:`SecAggClient.advertise` for an ``AdvertiseRequest``: one fresh X25519
    key pair per requested round, each public key signed with ``identity_key``.

    Raises:
        ProtocolAbort: malformed request, wrong recipient, or rounds at or below the
            last round this node already sent a masked input for.
    """
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
        private, public = K.x25519_keypair(rng_bytes)
        st.round_keys[r] = private
        sig = K.sign_round_key(
            identity_key,
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


def masked_input(
    st: ClientState,
    rng_bytes: Callable[[int], bytes],
    request: bytes,
    *,
    delta: np.ndarray | None,
    weight: float,
    field: np.ndarray | None = None,
    min_cohort: int = 0,
) -> bytes:
    """:meth:`SecAggClient.masked_input` for a ``MaskedInputRequest``.

    Masks ``[weight * delta, weight]`` (or, with ``field``, the integers ``[field mod M,
    1]`` as they are: :meth:`SecAggClient.masked_integers`) with a fresh self-mask seed
    b and the pairwise seeds, and encrypts one Shamir share of b to each neighbour.
    Nothing is consumed when the request is refused.
    """
    req = MaskedInputRequest.from_bytes(request, run_id=st.run_id, sender=SERVER_ID)
    next_phase, private, neighbours, encoding = open_round(st, req, min_cohort)
    x = field if field is not None else delta
    if x is None or np.ndim(x) != 1 or len(x) != req.dim:
        raise ProtocolAbort("input_shape: the input is not a vector of the requested dim")
    peer_keys = verified_peer_keys(req, neighbours, st)
    shared = K.agree_all(private, {j: peer_keys[j] for j in neighbours})
    if field is not None:
        y = _field_vector(field, encoding.modulus)
    else:
        y = encoding.encode(np.asarray(delta), weight, rng_bytes=rng_bytes)

    # From here on the round key is consumed: delete it and every older one, so a
    # second masked input under the same pairwise masks is impossible.
    st.consume_round_key(req.round)

    me, run, r = st.node_id, st.run_id, req.round
    b = rng_bytes(SEED_BYTES)
    jobs = [(K.self_mask_seed(b, run_id=run, round=r, node_id=me), 1)]
    seeds: dict[int, bytes] = {}
    recv_keys: dict[int, bytes] = {}
    cts = []
    values = split_secret(
        b,
        xs=[j + 1 for j in neighbours],
        threshold=req.threshold,
        rng_bytes=rng_bytes,
    )
    for j, value in zip(neighbours, values, strict=True):
        seeds[j] = K.pairwise_seed(shared[j], run_id=run, round=r, a=me, b=j)
        jobs.append((seeds[j], pairwise_sign(owner=me, peer=j)))
        recv_keys[j], ct = seal_share(
            shared[j],
            encode_share_value(value),
            rng_bytes=rng_bytes,
            run_id=run,
            round=r,
            sender=me,
            receiver=j,
        )
        cts.append(ct)
    apply_masks(y, jobs, bits=encoding.bits)
    encoding.reduce(y)
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


def _field_vector(values: np.ndarray, modulus: int) -> np.ndarray:
    """``[values mod M, 1]`` as uint32 (the last element counts the contributor)."""
    v = np.asarray(values)
    if v.dtype.kind not in "iu":
        raise ValueError("integer_input: masked integers must have an integer dtype")
    out = np.empty(v.size + 1, dtype=np.uint32)
    out[:-1] = np.mod(v.astype(np.int64), modulus).astype(np.uint32)
    out[-1] = 1
    return out


def unmask_reply(st: ClientState, req: UnmaskRequest, pending: PendingRound) -> bytes:
    """Checks ``req`` (:func:`check_unmask_request`), then returns the b-shares the
    survivors sent (decrypted) and the pairwise seeds of the dropped neighbours.

    Raises:
        ProtocolAbort: a refused request; a ciphertext that fails authentication or
            holds no share value.
    """
    check_unmask_request(req, pending)
    me, run = st.node_id, st.run_id
    shares = []
    for c in sorted(req.ciphertexts, key=lambda c: c.peer):
        plain = open_share(
            pending.recv_keys[c.peer], c, run_id=run, round=req.round, receiver=me
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


def seal_share(
    shared: bytes,
    plain: bytes,
    *,
    rng_bytes: Callable[[int], bytes],
    run_id: int,
    round: int,
    sender: int,
    receiver: int,
    stage: Stage = Stage.MASKED_INPUT,
) -> tuple[bytes, ShareCiphertext]:
    """Encrypts ``plain`` from ``sender`` to ``receiver`` under their agreement.

    Returns:
        The key of the reverse direction (to open what ``receiver`` sends back) and
        the ciphertext; one nonce is drawn from ``rng_bytes``.
    """
    recv_key = K.share_key(
        shared, run_id=run_id, round=round, sender=receiver, receiver=sender
    )
    send_key = K.share_key(
        shared, run_id=run_id, round=round, sender=sender, receiver=receiver
    )
    nonce = rng_bytes(K.NONCE_BYTES)
    ad = K.share_associated_data(
        run_id=run_id, round=round, sender=sender, receiver=receiver, stage=stage
    )
    data = K.encrypt_share(send_key, plain, nonce=nonce, ad=ad)
    return recv_key, ShareCiphertext(peer=receiver, nonce=nonce, data=data)


def open_share(
    key: bytes,
    ct: ShareCiphertext,
    *,
    run_id: int,
    round: int,
    receiver: int,
    stage: Stage = Stage.MASKED_INPUT,
) -> bytes:
    """Decrypts a ciphertext that neighbour ``ct.peer`` sent to ``receiver``.

    Raises:
        ProtocolAbort: the ciphertext fails authentication.
    """
    ad = K.share_associated_data(
        run_id=run_id, round=round, sender=ct.peer, receiver=receiver, stage=stage
    )
    return K.decrypt_share(key, ct.data, nonce=ct.nonce, ad=ad)
