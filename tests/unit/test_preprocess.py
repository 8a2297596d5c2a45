"""Federated scaler equals pooled standardisation; serving rows are validated."""

import numpy as np
import pytest

from lepton_fed.data import FeatureSpec, FeatureStats, Preprocessor, RowError, Scaler


def test_scaler_from_client_stats_equals_pooled():
    rng = np.random.default_rng(0)
    parts = [rng.normal(i, 1 + i, size=(20 + 7 * i, 5)) for i in range(4)]
    parts[2][:, 3] = 7.0
    for p in parts:
        p[:, 3] = 7.0  # a constant column
    sc = Scaler.from_stats([FeatureStats.of(p) for p in parts])
    pooled = np.concatenate(parts)
    np.testing.assert_allclose(sc.mean, pooled.mean(0), rtol=1e-5)
    std = pooled.std(0)
    np.testing.assert_allclose(sc.scale[[0, 1, 2, 4]], std[[0, 1, 2, 4]], rtol=1e-4)
    assert sc.scale[3] == 1.0
    z = sc.transform(pooled)
    np.testing.assert_allclose(z[:, [0, 1, 2, 4]].mean(0), 0, atol=1e-4)


def test_preprocessor_rows_and_errors():
    pre = Preprocessor(
        [FeatureSpec("age"), FeatureSpec("city", "categorical", ("a", "b"))],
        Scaler(np.array([10.0, 0, 0], np.float32), np.array([2.0, 1, 1], np.float32)),
        ["no", "yes"],
    )
    X = pre.transform_rows([{"age": 14, "city": "b"}])
    np.testing.assert_allclose(X, [[2.0, 0.0, 1.0]])
    cases = [
        ({"city": "a"}, "rows[0].age: missing"),
        ({"age": 1, "city": "a", "x": 1}, "rows[0].x: unknown feature"),
        ({"age": "old", "city": "a"}, "must be a number"),
        ({"age": float("nan"), "city": "a"}, "finite"),
        ({"age": 1, "city": "z"}, "unknown level"),
    ]
    for row, msg in cases:
        with pytest.raises(RowError, match=msg.replace("[", r"\[").replace("]", r"\]")):
            pre.encode_rows([row])
    rt = Preprocessor.from_dict(pre.to_dict())
    np.testing.assert_allclose(rt.transform_rows([{"age": 14, "city": "b"}]), X)


def test_image_scaler_uses_one_global_mean_and_std():
    rng = np.random.default_rng(1)
    parts = [rng.uniform(0, 1, size=(30, 16)) for _ in range(3)]
    for p in parts:
        p[:, 0] = 0.0  # a constant "border pixel": per-pixel scaling would divide by ~0
        p[0, 1] = 1e-3
    sc = Scaler.from_stats([FeatureStats.of(p) for p in parts], per_feature=False)
    pooled = np.concatenate(parts)
    np.testing.assert_allclose(sc.mean, np.full(16, pooled.mean()), rtol=1e-5)
    np.testing.assert_allclose(sc.scale, np.full(16, pooled.std()), rtol=1e-4)
    assert np.abs(sc.transform(pooled)).max() < 10
