"""Shamir secret sharing: correctness, threshold secrecy, validation, field prime."""

from __future__ import annotations

import os
import random

import pytest

from lepton_fed.secagg.shamir import (
    FIELD_PRIME,
    SHARE_BYTES,
    combine_shares,
    decode_share_value,
    encode_share_value,
    recover_secret,
    split_secret,
)


def _is_probable_prime(n: int, rounds: int = 40) -> bool:
    """Miller-Rabin with the first primes and random bases (independent of the code)."""
    small = [2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37]
    if n in small:
        return True
    if any(n % p == 0 for p in small):
        return False
    d, s = n - 1, 0
    while d % 2 == 0:
        d //= 2
        s += 1
    rng = random.Random(1234)
    bases = small + [rng.randrange(2, n - 1) for _ in range(rounds)]
    for a in bases:
        x = pow(a, d, n)
        if x in (1, n - 1):
            continue
        for _ in range(s - 1):
            x = x * x % n
            if x == n - 1:
                break
        else:
            return False
    return True


def test_field_prime_is_smallest_prime_above_2_256() -> None:
    # Assert
    assert FIELD_PRIME == 2**256 + 297
    assert _is_probable_prime(FIELD_PRIME)
    assert not any(_is_probable_prime(2**256 + i) for i in range(1, 297, 2))
    assert SHARE_BYTES * 8 >= FIELD_PRIME.bit_length()


@pytest.mark.parametrize(("n", "t"), [(1, 1), (3, 2), (5, 3), (20, 12), (30, 30)])
def test_any_t_shares_recover_the_secret(n: int, t: int) -> None:
    # Prepare
    secret = os.urandom(32)
    xs = random.Random(n).sample(range(1, 2**62), n)
    ys = split_secret(secret, xs=xs, threshold=t)
    pts = list(zip(xs, ys, strict=True))
    rng = random.Random(t)
    # Execute / Assert: several random subsets of size t, and all shares
    for _ in range(5):
        assert recover_secret(rng.sample(pts, t), threshold=t) == secret
    assert combine_shares(pts) == int.from_bytes(secret, "big")


def test_fewer_than_t_shares_give_a_wrong_secret() -> None:
    # Prepare
    secret = os.urandom(32)
    xs = list(range(1, 11))
    pts = list(zip(xs, split_secret(secret, xs=xs, threshold=6), strict=True))
    # Execute
    guesses = [combine_shares(pts[i : i + 5]) for i in range(5)]
    # Assert: t-1 shares interpolate to unrelated field elements
    assert all(g != int.from_bytes(secret, "big") for g in guesses)
    with pytest.raises(ValueError, match="need 6 shares"):
        recover_secret(pts[:5], threshold=6)


def test_t_minus_one_shares_are_consistent_with_every_secret() -> None:
    """Perfect secrecy, constructively: for t=3, two observed shares can come from ANY
    secret, with exactly one choice of the (uniform) coefficients."""
    # Prepare
    p = FIELD_PRIME
    xs = [1, 2, 3]
    y1, y2, _ = split_secret(os.urandom(32), xs=xs, threshold=3)
    inv2 = pow(2, -1, p)
    for candidate in (bytes(32), b"\x42" * 32, os.urandom(32)):
        s = int.from_bytes(candidate, "big")
        a2 = (y2 - s - 2 * (y1 - s)) * inv2 % p
        a1 = (y1 - s - a2) % p
        feed = iter([a1.to_bytes(SHARE_BYTES, "big"), a2.to_bytes(SHARE_BYTES, "big")])
        # Execute: split the candidate with those coefficients
        shares = split_secret(
            candidate, xs=xs, threshold=3, rng_bytes=lambda n, f=feed: next(f)
        )
        # Assert: the same two observed shares
        assert shares[:2] == [y1, y2]


def test_inconsistent_shares_are_detected_when_out_of_range() -> None:
    # Prepare
    xs = [1, 2, 3]
    ys = split_secret(bytes(range(32)), xs=xs, threshold=2)
    # Execute: corrupt one share
    bad = [(1, ys[0]), (2, (ys[1] + 1) % FIELD_PRIME)]
    # Assert: either rejected, or a different secret (never silently the right one)
    try:
        assert recover_secret(bad, threshold=2) != bytes(range(32))
    except ValueError as exc:
        assert "inconsistent" in str(exc)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"secret": b"x" * 31, "xs": [1, 2], "threshold": 1}, "32 bytes"),
        ({"secret": b"x" * 32, "xs": [1, 2], "threshold": 0}, "threshold"),
        ({"secret": b"x" * 32, "xs": [1, 2], "threshold": 3}, "threshold"),
        ({"secret": b"x" * 32, "xs": [1, 1], "threshold": 1}, "distinct"),
        ({"secret": b"x" * 32, "xs": [0, 1], "threshold": 1}, r"\[1, p-1\]"),
        ({"secret": b"x" * 32, "xs": [FIELD_PRIME], "threshold": 1}, r"\[1, p-1\]"),
    ],
)
def test_split_rejects_bad_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        split_secret(**kwargs)


def test_share_value_encoding_roundtrip_and_bounds() -> None:
    # Assert
    for y in (0, 1, FIELD_PRIME - 1):
        assert decode_share_value(encode_share_value(y)) == y
    with pytest.raises(ValueError):
        encode_share_value(FIELD_PRIME)
    with pytest.raises(ValueError):
        decode_share_value(b"\xff" * SHARE_BYTES)
    with pytest.raises(ValueError):
        decode_share_value(b"\x00" * (SHARE_BYTES - 1))
    with pytest.raises(ValueError):
        combine_shares([])


@pytest.mark.parametrize("big", [False, True])
def test_batched_lagrange_coefficients_recover_every_secret(big: bool) -> None:
    from lepton_fed.secagg.shamir import lagrange_at_zero

    rng = random.Random(7)
    base = 2**64 - 10**6 if big else 1
    secrets, sets, shares = [], [], []
    for _ in range(5):
        secret = os.urandom(32)
        xs = rng.sample(range(base, base + 500), 9)
        ys = split_secret(secret, xs=xs, threshold=6)
        pick = rng.sample(range(9), 6)
        secrets.append(secret)
        sets.append([xs[i] for i in pick])
        shares.append([ys[i] for i in pick])
    sets.append(sets[0])  # a repeated set is fine
    shares.append(shares[0])
    secrets.append(secrets[0])
    for coeffs, ys, secret in zip(lagrange_at_zero(sets), shares, secrets, strict=True):
        value = sum(c * y for c, y in zip(coeffs, ys, strict=True)) % FIELD_PRIME
        assert value.to_bytes(32, "big") == secret
    with pytest.raises(ValueError):
        lagrange_at_zero([[1, 1, 2]])
    with pytest.raises(ValueError):
        lagrange_at_zero([[]])
