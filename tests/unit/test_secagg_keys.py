"""Key derivation labels, signatures and share encryption."""

from __future__ import annotations

import os

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from lepton_fed.errors import ProtocolAbort
from lepton_fed.secagg import keys as K


def test_labels_are_distinct_and_versioned() -> None:
    labels = [
        K.LABEL_PAIRWISE_MASK,
        K.LABEL_SHARE_ENCRYPTION,
        K.LABEL_SELF_MASK,
        K.LABEL_COMMITMENT,
        K.LABEL_GRAPH,
        K.LABEL_ROUND_KEY,
        K.LABEL_SHARE_AD,
    ]
    assert len(set(labels)) == len(labels)
    assert all(label.startswith(b"lepton-fed/secagg/v1/") for label in labels)


def test_derivations_separate_purpose_round_run_and_direction() -> None:
    # Prepare
    shared = os.urandom(32)
    seed = K.pairwise_seed(shared, run_id=1, round=1, a=3, b=9)
    # Assert
    assert seed == K.pairwise_seed(shared, run_id=1, round=1, a=9, b=3)  # symmetric
    others = {
        K.pairwise_seed(shared, run_id=1, round=2, a=3, b=9),
        K.pairwise_seed(shared, run_id=2, round=1, a=3, b=9),
        K.share_key(shared, run_id=1, round=1, sender=3, receiver=9),
        K.share_key(shared, run_id=1, round=1, sender=9, receiver=3),
        K.self_mask_seed(shared, run_id=1, round=1, node_id=3),
    }
    assert seed not in others and len(others) == 5


def test_x25519_agreement_is_symmetric_and_rejects_low_order_points() -> None:
    # Prepare
    a_priv, a_pub = K.x25519_keypair()
    b_priv, b_pub = K.x25519_keypair()
    # Assert
    assert K.agree(a_priv, b_pub) == K.agree(b_priv, a_pub)
    with pytest.raises(ProtocolAbort):
        K.agree(a_priv, bytes(32))  # the all-zero point has small order
    with pytest.raises(ProtocolAbort):
        K.agree(a_priv, b"short")


def test_round_key_signature_verifies_and_binds_every_field() -> None:
    # Prepare
    ident = Ed25519PrivateKey.generate()
    pub = K.identity_public_bytes(ident)
    _, pk = K.x25519_keypair()
    fields = {"run_id": 5, "node_id": 7, "round": 3, "public_key": pk}
    sig = K.sign_round_key(ident, **fields)
    # Execute / Assert: the genuine statement verifies (returns None, never a bool)
    assert K.verify_round_key(pub, sig, **fields) is None
    for change in (
        {"run_id": 6},
        {"node_id": 8},
        {"round": 4},
        {"public_key": os.urandom(32)},
    ):
        with pytest.raises(ProtocolAbort, match="invalid signature"):
            K.verify_round_key(pub, sig, **(fields | change))
    other = K.identity_public_bytes(Ed25519PrivateKey.generate())
    with pytest.raises(ProtocolAbort, match="invalid signature"):
        K.verify_round_key(other, sig, **fields)
    with pytest.raises(ProtocolAbort):
        K.verify_round_key(b"bad", sig, **fields)


def test_share_encryption_rejects_tampering_and_wrong_context() -> None:
    # Prepare
    key, nonce = os.urandom(32), os.urandom(12)
    ad = K.share_associated_data(run_id=1, round=2, sender=3, receiver=4)
    ct = K.encrypt_share(key, b"share", nonce=nonce, ad=ad)
    # Assert
    assert K.decrypt_share(key, ct, nonce=nonce, ad=ad) == b"share"
    flipped = bytes([ct[0] ^ 1]) + ct[1:]
    with pytest.raises(ProtocolAbort, match="authentication"):
        K.decrypt_share(key, flipped, nonce=nonce, ad=ad)
    for other_ad in (
        K.share_associated_data(run_id=1, round=3, sender=3, receiver=4),
        K.share_associated_data(run_id=1, round=2, sender=4, receiver=3),
        K.share_associated_data(run_id=2, round=2, sender=3, receiver=4),
    ):
        with pytest.raises(ProtocolAbort, match="authentication"):
            K.decrypt_share(key, ct, nonce=nonce, ad=other_ad)


def test_round_derivations_match_the_functions() -> None:
    d = K.RoundDerivations(run_id=2**63 + 5, round=17)
    for node in (0, 9, 2**64 - 2):
        b = os.urandom(32)
        assert d.self_mask_seed(b, node) == K.self_mask_seed(
            b, run_id=2**63 + 5, round=17, node_id=node
        )
        assert d.commitment(b, node) == K.self_mask_commitment(
            b, run_id=2**63 + 5, round=17, node_id=node
        )
