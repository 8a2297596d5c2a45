"""PRG: determinism, uniformity (chi-square), field reduction."""

from __future__ import annotations

import os

import numpy as np
import pytest
from scipy import stats

from lepton_fed.secagg.prg import expand_mask


def test_same_seed_same_mask_different_seed_different_mask() -> None:
    a = expand_mask(b"\x01" * 32, 1000)
    assert np.array_equal(a, expand_mask(b"\x01" * 32, 1000))
    assert not np.array_equal(a, expand_mask(b"\x02" * 32, 1000))
    assert np.array_equal(expand_mask(b"\x01" * 32, 10), a[:10])  # prefix-stable


def test_mask_bytes_are_uniform_chi_square() -> None:
    # Prepare
    words = expand_mask(os.urandom(32), 250_000)
    # Execute: byte frequencies and top-8-bit buckets
    byte_counts = np.bincount(words.view(np.uint8), minlength=256)
    top_counts = np.bincount(words >> 24, minlength=256)
    # Assert: a uniform source passes at alpha=1e-6 except with probability 1e-6
    for counts in (byte_counts, top_counts):
        assert stats.chisquare(counts).pvalue > 1e-6


@pytest.mark.parametrize("bits", [8, 20, 31])
def test_reduced_field_masks_stay_in_range_and_uniform(bits: int) -> None:
    words = expand_mask(os.urandom(32), 100_000, bits=bits)
    assert int(words.max()) < 2**bits
    counts = np.bincount(words >> (bits - 6), minlength=64)
    assert stats.chisquare(counts).pvalue > 1e-6


@pytest.mark.parametrize(
    ("seed", "bits"), [(b"x" * 31, 32), (b"x" * 32, 0), (b"x" * 32, 33)]
)
def test_bad_arguments_raise(seed: bytes, bits: int) -> None:
    with pytest.raises(ValueError):
        expand_mask(seed, 4, bits=bits)


@pytest.mark.parametrize("bits", [32, 20])
def test_mask_buffer_equals_expand_mask(bits: int) -> None:
    from lepton_fed.secagg.prg import MaskBuffer

    buf = MaskBuffer(1001, bits=bits)
    for _ in range(3):
        seed = os.urandom(32)
        assert np.array_equal(buf.expand(seed), expand_mask(seed, 1001, bits=bits))
    with pytest.raises(ValueError):
        buf.expand(b"short")
