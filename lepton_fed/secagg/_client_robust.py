"""Robust-mode client steps (``share_keys_first``): shares of b and of a fresh mask key,
the masked input from the neighbours' relayed shares, and the unmask reply
(:class:`~lepton_fed.secagg.client.SecAggClient` dispatches)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from lepton_fed.errors import ProtocolAbort
from lepton_fed.secagg import keys as K
from lepton_fed.secagg._client_checks import (
    check_recipient,
    check_robust_masked_request,
    check_robust_unmask_request,
    open_round,
    verified_peer_keys,
)
from lepton_fed.secagg._client_shares import open_share, seal_share
from lepton_fed.secagg._client_state import ClientState, PendingRound, SharedRound
from lepton_fed.secagg.encoding import FieldEncoding
from lepton_fed.secagg.masking import apply_masks, pairwise_sign
from lepton_fed.secagg.messages import (
    SERVER_ID,
    RobustMaskedInputReply,
    RobustMaskedInputRequest,
    RobustUnmaskReply,
    RobustUnmaskRequest,
    ShareKeysReply,
    ShareKeysRequest,
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

__all__ = ["masked_input", "open_shares", "share_keys", "unmask_reply"]


def share_keys(
    st: ClientState, rng_bytes: Callable[[int], bytes], request: bytes
) -> bytes:
    """:meth:`SecAggClient.share_keys`: draws b and a mask key pair for the round and
    sends each neighbour its shares of both. Nothing is consumed when the request is
    refused."""
    req = ShareKeysRequest.from_bytes(request, run_id=st.run_id, sender=SERVER_ID)
    next_phase, private, neighbours, _ = open_round(st, req)
    peer_keys = verified_peer_keys(req, neighbours, st)
    shared = {j: K.agree(private, peer_keys[j]) for j in neighbours}

    # The round key is consumed from here on (one use per round key).
    st.consume_round_key(req.round)

    me, run, r = st.node_id, st.run_id, req.round
    b = rng_bytes(SEED_BYTES)
    mask_private, mask_public = K.x25519_keypair(rng_bytes)
    xs = [j + 1 for j in neighbours]
    b_values = split_secret(b, xs=xs, threshold=req.threshold, rng_bytes=rng_bytes)
    key_values = split_secret(
        mask_private, xs=xs, threshold=req.threshold, rng_bytes=rng_bytes
    )
    recv_keys: dict[int, bytes] = {}
    cts = []
    for j, bv, kv in zip(neighbours, b_values, key_values, strict=True):
        recv_keys[j], ct = seal_share(
            shared[j],
            mask_public + encode_share_value(bv) + encode_share_value(kv),
            rng_bytes=rng_bytes,
            run_id=run,
            round=r,
            sender=me,
            receiver=j,
            stage=Stage.SHARE_KEYS,
        )
        cts.append(ct)
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


def open_shares(
    st: ClientState, req: RobustMaskedInputRequest, sh: SharedRound
) -> tuple[dict[int, tuple[bytes, bytes]], dict[int, bytes]]:
    """Decrypts every relayed ciphertext; returns shares and pairwise seeds.

    Raises:
        ProtocolAbort: a ciphertext fails authentication or holds no share values.
    """
    me, run = st.node_id, st.run_id
    shares: dict[int, tuple[bytes, bytes]] = {}
    seeds: dict[int, bytes] = {}
    for c in req.ciphertexts:
        plain = open_share(
            sh.recv_keys[c.peer],
            c,
            run_id=run,
            round=sh.round,
            receiver=me,
            stage=Stage.SHARE_KEYS,
        )
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


def masked_input(
    st: ClientState,
    rng_bytes: Callable[[int], bytes],
    request: bytes,
    *,
    delta: np.ndarray,
    weight: float,
) -> bytes:
    """:meth:`SecAggClient.masked_input` for a ``RobustMaskedInputRequest``: masks
    with exactly the neighbours whose shares the request relays, keeps their shares and
    deletes the mask key. A content refusal wipes the round."""
    req = RobustMaskedInputRequest.from_bytes(
        request, run_id=st.run_id, sender=SERVER_ID
    )
    check_recipient(st, req.recipient)
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
    y = encoding.encode(np.asarray(delta), weight, rng_bytes=rng_bytes)
    me, run, r = st.node_id, st.run_id, sh.round
    try:
        senders = check_robust_masked_request(req, sh)
        shares, seeds = open_shares(st, req, sh)
    except ProtocolAbort:
        # A server caught relaying bad ciphertexts gets nothing for the round.
        st.shared = None
        st.phase = ClientPhase.READY
        raise
    st.forget_round()  # the mask key is gone: one masked input per mask key
    st.phase = ClientPhase.READY
    jobs = [(K.self_mask_seed(sh.b, run_id=run, round=r, node_id=me), 1)]
    jobs += [(seeds[j], pairwise_sign(owner=me, peer=j)) for j in senders]
    apply_masks(y, jobs, bits=encoding.bits)
    encoding.reduce(y)
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


def unmask_reply(
    st: ClientState, req: RobustUnmaskRequest, pending: PendingRound
) -> bytes:
    """Checks ``req`` (:func:`check_robust_unmask_request`), then returns the b-share
    of each survivor and the mask-key share of each dropped neighbour.

    Raises:
        ProtocolAbort: a refused request.
    """
    check_robust_unmask_request(req, pending)
    return RobustUnmaskReply(
        run_id=st.run_id,
        round=req.round,
        sender=st.node_id,
        self_mask_shares=tuple((j, pending.shares[j][0]) for j in req.survivors),
        key_shares=tuple((j, pending.shares[j][1]) for j in req.dropped),
    ).to_bytes()
