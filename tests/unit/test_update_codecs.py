"""Update codecs: int8 stochastic quantization and top-k with error feedback."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from lepton_fed.compression.update import (
    Int8Codec,
    TopKCodec,
    from_bytes,
    payload_nbytes,
    to_bytes,
)

finite = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False, width=32)


@settings(max_examples=60, deadline=None)
@given(
    vec=arrays(np.float64, st.integers(0, 700), elements=finite),
    bs=st.sampled_from([1, 7, 256]),
)
def test_int8_error_is_below_one_step_per_block(vec: np.ndarray, bs: int) -> None:
    # Prepare
    codec = Int8Codec(block_size=bs)
    # Execute
    payload = codec.encode(vec, np.random.default_rng(0))
    out = codec.decode(payload)
    # Assert
    assert out.shape == vec.shape and out.dtype == np.float32
    assert (
        payload["q"].dtype == np.int8
        and np.abs(payload["q"].astype(int)).max(initial=0) <= 127
    )
    scale = np.repeat(payload["scale"].astype(np.float64), bs)[: vec.size]
    # < one quantization step, plus float32 rounding of the decoded value
    assert np.all(np.abs(out - vec) <= scale * (1 + 1e-6) + np.abs(vec) * 1e-6 + 1e-30)


def test_int8_is_unbiased() -> None:
    # Prepare
    vec = np.random.default_rng(1).normal(size=512)
    codec = Int8Codec(block_size=64)
    rng = np.random.default_rng(2)
    trials = 4000
    # Execute
    mean = sum(
        codec.decode(codec.encode(vec, rng)).astype(np.float64) for _ in range(trials)
    )
    mean /= trials
    # Assert: the error of the mean shrinks like step / (2 sqrt(trials))
    step = np.repeat(np.abs(vec.reshape(-1, 64)).max(1) / 127, 64)
    assert np.all(np.abs(mean - vec) < 6 * step / (2 * np.sqrt(trials)))


def test_int8_replays_with_the_same_seed_and_zero_blocks_stay_zero() -> None:
    vec = np.concatenate([np.zeros(256), np.linspace(-3, 3, 300)])
    codec = Int8Codec()
    a = codec.encode(vec, np.random.default_rng(7))
    b = codec.encode(vec, np.random.default_rng(7))
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert np.all(codec.decode(a)[:256] == 0)
    assert codec.nbytes(a) == vec.size + 4 * 3


def test_int8_size_is_about_a_quarter_of_fp32() -> None:
    vec = np.random.default_rng(0).normal(size=100_000)
    payload = Int8Codec(256).encode(vec, np.random.default_rng(0))
    assert payload_nbytes(payload) / (4 * vec.size) == pytest.approx(0.2539, abs=1e-3)


@pytest.mark.parametrize(
    "payload",
    [
        {"q": np.zeros(3, np.int8)},
        {"q": np.zeros(3, np.int16), "scale": np.ones(1, np.float32)},
        {"q": np.zeros(300, np.int8), "scale": np.ones(1, np.float32)},
        {"q": np.zeros(3, np.int8), "scale": np.array([np.nan], np.float32)},
    ],
)
def test_int8_decode_rejects_malformed_payloads(payload: dict[str, np.ndarray]) -> None:
    with pytest.raises(ValueError):
        Int8Codec(256).decode(payload)


def test_codecs_reject_bad_input() -> None:
    with pytest.raises(ValueError, match="NaN"):
        Int8Codec().encode(np.array([1.0, np.nan]), np.random.default_rng(0))
    with pytest.raises(ValueError, match="1-D"):
        TopKCodec(0.1).encode(np.zeros((2, 2)), None)
    with pytest.raises(ValueError):
        TopKCodec(0.0)
    with pytest.raises(ValueError):
        Int8Codec(0)
    with pytest.raises(ValueError, match="residual shape"):
        TopKCodec(0.5).encode(np.zeros(4), np.zeros(3))


def test_topk_sends_the_largest_and_keeps_the_rest() -> None:
    # Prepare
    vec = np.array([0.1, -5.0, 0.2, 3.0, -0.05, 0.0, 1.0, 0.3])
    codec = TopKCodec(0.25)
    # Execute
    payload, residual = codec.encode(vec, None)
    out = codec.decode(payload)
    # Assert
    assert np.cumsum(payload["gaps"]).tolist() == [1, 3]  # ascending indices as gaps
    assert out.tolist() == [0, -5.0, 0, 3.0, 0, 0, 0, 0]
    assert np.allclose(residual + out, vec)
    assert codec.nbytes(payload) == 2 * 2 + 2 * 4 + 8  # uint16 gaps + float32 values + length


def test_topk_error_feedback_loses_nothing_over_rounds() -> None:
    # Prepare
    rng = np.random.default_rng(3)
    updates = [rng.normal(size=1000) for _ in range(20)]
    codec = TopKCodec(0.05)
    residual = None
    sent = np.zeros(1000)
    # Execute
    for g in updates:
        payload, residual = codec.encode(g, residual)
        sent += codec.decode(from_bytes(to_bytes(payload)))
    # Assert: sum(sent) + final residual == sum(updates)
    assert np.allclose(sent + residual, np.sum(updates, axis=0), atol=1e-9)


@settings(max_examples=40, deadline=None)
@given(
    vec=arrays(np.float64, st.integers(1, 300), elements=finite),
    fraction=st.floats(0.01, 1.0),
)
def test_topk_contraction_bound(vec: np.ndarray, fraction: float) -> None:
    codec = TopKCodec(fraction)
    payload, residual = codec.encode(vec, None)
    k = codec.k_for(vec.size)
    assert payload["gaps"].size == k and payload["gaps"].dtype == np.uint16
    bound = (1 - k / vec.size) * float(vec @ vec)
    err = float(residual @ residual)
    assert err <= bound * (1 + 1e-6) + 1e-6 * float(np.abs(vec).max()) ** 2


def test_topk_decode_rejects_bad_indices() -> None:
    codec = TopKCodec(0.5)
    bad = {
        "indices": np.array([0, 9], np.uint32),
        "values": np.ones(2, np.float32),
        "length": np.array([4]),
    }
    with pytest.raises(ValueError, match="out of range"):
        codec.decode(bad)
    with pytest.raises(ValueError, match="version"):
        from_bytes(b"\x09abc")


def test_topk_falls_back_to_uint32_indices_for_wide_gaps() -> None:
    vec = np.zeros(200_000)
    vec[[3, 150_000]] = [5.0, -7.0]
    payload, _ = TopKCodec(1e-5).encode(vec, None)
    assert "indices" in payload and payload["indices"].dtype == np.uint32
    np.testing.assert_array_equal(TopKCodec(1e-5).decode(payload), vec.astype(np.float32))


def test_topk_gap_payload_rejects_repeated_indices() -> None:
    bad = {"gaps": np.array([2, 0], np.uint16), "values": np.ones(2, np.float32),
           "length": np.array([5])}
    with pytest.raises(ValueError, match="repeated"):
        TopKCodec(0.5).decode(bad)
