"""Field encoding: overflow check, quantization error bound, validation."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lepton_fed.secagg.encoding import FieldEncoding
from lepton_fed.secagg.inprocess import DeterministicRng


def _encode_sum(
    enc: FieldEncoding, items: list[tuple[np.ndarray, float]], label: bytes
):
    rng = DeterministicRng(label)
    total = np.zeros(len(items[0][0]) + 1, dtype=np.uint32)
    for delta, w in items:
        np.add(total, enc.encode(delta, w, rng_bytes=rng), out=total)
    total &= np.uint32(enc.modulus - 1)
    return enc.decode(total)


@pytest.mark.parametrize(
    ("n", "bits", "clip"), [(1, 32, 1.0), (7, 32, 0.1), (100, 32, 5.0), (50, 24, 1.0)]
)
def test_decoded_sum_is_within_the_stated_bound(n: int, bits: int, clip: float) -> None:
    # Prepare
    rng = np.random.default_rng(n)
    enc = FieldEncoding(clip=clip, max_contributors=n, bits=bits)
    items = [
        (rng.uniform(-clip, clip, 500).astype(np.float32), float(rng.uniform(0, 1)))
        for _ in range(n)
    ]
    items[0][0][:2] = [clip, -clip]  # the extremes
    exact = sum(w * d.astype(np.float64) for d, w in items)
    exact_w = sum(w for _, w in items)
    # Execute
    values, weight = _encode_sum(enc, items, b"bound")
    # Assert
    vb, wb = enc.error_bound(n)
    assert np.max(np.abs(values - exact)) < vb
    assert abs(weight - exact_w) < wb
    assert vb == pytest.approx(n * clip / enc.bound)


def test_extreme_inputs_do_not_overflow() -> None:
    # Prepare: n contributors all at +clip (then all at -clip) with weight 1
    n, clip = 1000, 2.0
    enc = FieldEncoding(clip=clip, max_contributors=n)
    for sign in (1.0, -1.0):
        items = [(np.full(4, sign * clip), 1.0)] * n
        # Execute
        values, weight = _encode_sum(enc, items, b"extreme")
        # Assert
        np.testing.assert_allclose(values, sign * n * clip, atol=enc.error_bound(n)[0])
        assert weight == pytest.approx(n, abs=enc.error_bound(n)[1])


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(1, 40),
    clip=st.floats(1e-3, 1e3),
    seed=st.integers(0, 2**32 - 1),
)
def test_error_bound_property(n: int, clip: float, seed: int) -> None:
    rng = np.random.default_rng(seed)
    enc = FieldEncoding(clip=clip, max_contributors=n)
    items = [(rng.uniform(-clip, clip, 16), float(rng.uniform(0, 1))) for _ in range(n)]
    values, weight = _encode_sum(enc, items, seed.to_bytes(4, "little"))
    exact = sum(w * d for d, w in items)
    assert np.max(np.abs(values - exact)) < enc.error_bound(n)[0]
    assert abs(weight - sum(w for _, w in items)) < enc.error_bound(n)[1]


def test_stochastic_rounding_is_unbiased() -> None:
    # Prepare: a value a third of the way between two grid points
    enc = FieldEncoding(clip=1.0, max_contributors=2**20)
    step = 1 / enc.value_scale
    x = np.full(20000, 5 * step + step / 3)
    # Execute
    q = enc.encode(x, 1.0, rng_bytes=DeterministicRng(b"unbiased"))[:-1].astype(
        np.float64
    )
    # Assert: only the two neighbouring grid points, mean close to x
    assert set(np.unique(q)) == {5.0, 6.0}
    assert np.mean(q) * step == pytest.approx(x[0], abs=0.02 * step)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"clip": 1.0, "max_contributors": 2**31}, "overflow possible"),
        ({"clip": 1.0, "max_contributors": 300, "bits": 8}, "overflow possible"),
        ({"clip": 1.0, "max_contributors": 10, "scale": 2**28}, "overflow possible"),
        ({"clip": 0.0, "max_contributors": 10}, "clip"),
        ({"clip": float("inf"), "max_contributors": 10}, "clip"),
        ({"clip": 1.0, "max_contributors": 0}, "max_contributors"),
        ({"clip": 1.0, "max_contributors": 10, "bits": 33}, "bits"),
        ({"clip": 1.0, "max_contributors": 10, "scale": -1.0}, "scale"),
    ],
)
def test_unsafe_parameters_raise(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        FieldEncoding(**kwargs)


def test_custom_scale_at_the_limit_is_accepted() -> None:
    enc = FieldEncoding(clip=1.0, max_contributors=10, scale=(2**31 - 1) // 10)
    assert enc.value_scale == (2**31 - 1) // 10


@pytest.mark.parametrize(
    ("delta", "weight", "other", "match"),
    [
        (np.array([0.0, np.nan]), 0.5, (np.array([np.inf, 0.1]), 0.9), "^non_finite_input: "),
        (np.array([0.0, 1.732051]), 0.5, (np.array([-2.5, 0.0]), 0.9), "^input_exceeds_clip: "),
        (np.array([0.0, 0.5]), 1.414213, (np.array([0.0, 0.5]), 7.0), "^weight_out_of_range: "),
        (np.array([0.0, 0.5]), -0.1, (np.array([0.0, 0.5]), -3.0), "^weight_out_of_range: "),
        (np.full((2, 3), 0.25), 0.5, (np.zeros((4, 1)), 0.5), "^input_not_vector: "),
    ],
)
def test_invalid_inputs_raise_with_a_code_and_no_data(
    delta: np.ndarray, weight: float, other: tuple, match: str
) -> None:
    enc = FieldEncoding(clip=1.0, max_contributors=3)
    with pytest.raises(ValueError, match=match) as err:
        enc.encode(delta, weight)
    text = str(err.value)
    # no value, position or shape derived from the input may appear in the message...
    for leak in ("1.73", "1.41", "0.1", "-0.1", "(2, 3)", "nan"):
        assert leak not in text, text
    # ...which is the same for any other input with the same problem
    with pytest.raises(ValueError) as err2:
        enc.encode(*other)
    assert str(err2.value) == text


def test_float_roundoff_beyond_clip_is_tolerated() -> None:
    enc = FieldEncoding(clip=1.0, max_contributors=3)
    out = enc.encode(np.array([1.0 + 1e-9, -1.0 - 1e-9]), 1.0)
    assert out.dtype == np.uint32 and out.size == 3
