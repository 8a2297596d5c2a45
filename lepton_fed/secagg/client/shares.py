"""Sealing and opening the share ciphertexts a client exchanges with its neighbours.

Both modes: the AEAD key of each direction comes from the pair's X25519 agreement, and
the associated data names run, round, stage, sender and receiver
(:func:`~lepton_fed.secagg.keys.share_associated_data`).
"""

from __future__ import annotations

from collections.abc import Callable

from lepton_fed.secagg import keys as K
from lepton_fed.secagg.stages import Stage
from lepton_fed.secagg.wire import ShareCiphertext

__all__ = ["open_share", "seal_share"]


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
