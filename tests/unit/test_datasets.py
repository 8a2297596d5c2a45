"""Dataset builders: bundled sets, CSV/Parquet sources, shared-data files."""

import numpy as np
import pandas as pd
import pytest

from lepton_fed.data import check_source, load_dataset
from lepton_fed.errors import ConfigError


def test_bundled_datasets():
    bc = load_dataset("breast_cancer")
    assert bc.X.shape == (569, 30) and bc.num_classes == 2
    dg = load_dataset("digits")
    assert dg.X.shape == (1797, 64) and dg.num_classes == 10 and dg.input_shape == (1, 8, 8)


def test_csv_one_hot_and_labels(tmp_path):
    df = pd.DataFrame({
        "age": [30, 40, 50, 60], "city": ["a", "b", "a", "c"],
        "income": [1.0, 2.0, 3.0, np.nan], "y": ["no", "yes", "no", "yes"],
    })
    p = tmp_path / "t.csv"
    df.to_csv(p, index=False)
    d = load_dataset("csv", path=str(p), label="y")
    # NaN row dropped; city one-hot with every level
    assert d.X.shape == (3, 1 + 3 + 1)
    assert d.encoded_names == ["age", "city=a", "city=b", "city=c", "income"]
    assert d.class_names == ["no", "yes"] and d.y.tolist() == [0, 1, 0]


def test_parquet_source(tmp_path):
    p = tmp_path / "t.parquet"
    pd.DataFrame({"x": [1.0, 2.0, 3.0], "label": [0, 1, 0]}).to_parquet(p)
    d = load_dataset("csv", path=str(p), label="label")
    assert d.X.shape == (3, 1)


def test_csv_problems_are_all_reported(tmp_path):
    p = tmp_path / "t.csv"
    pd.DataFrame({"x": [1, 2], "txt": ["a", "b"], "y": [0, 1]}).to_csv(p, index=False)
    assert any("'nope' does not exist" in s for s in check_source("csv", str(p), "nope"))
    with pytest.raises(ConfigError) as ei:
        load_dataset("csv", path=str(p), label="missing", features=["x", "zzz"], categorical=[])
    text = str(ei.value)
    assert "'missing' does not exist" in text and "'zzz' does not exist" in text
    with pytest.raises(ConfigError, match="not numeric"):
        load_dataset("csv", path=str(p), label="y", categorical=[])


def test_missing_paths_named():
    assert "needs data.path" in check_source("heart_disease", None)[0]
    assert "does not exist" in check_source("mnist", "/nonexistent/dir")[0]
    assert "unknown dataset" in check_source("imagenet", None)[0]


@pytest.mark.shared_data
def test_heart_disease_matches_flamby_split(shared_data):
    d = load_dataset("heart_disease", path=str(shared_data / "fed_heart_disease"))
    assert d.X.shape == (740, 13)
    assert np.bincount(d.silo).tolist() == [303, 261, 46, 130]
    ref = pd.read_csv(shared_data / "fed_heart_disease" / "flamby_split_rederived.csv")
    assert (ref["split"].to_numpy() == d.split).all()
    assert (ref["label"].to_numpy() == d.y).all()
    assert [(d.split[d.silo == c] == "train").sum() for c in range(4)] == [199, 172, 30, 85]


@pytest.mark.shared_data
def test_mnist_reads_idx_and_csv(shared_data):
    d = load_dataset("mnist", path=str(shared_data / "mnist"))
    assert d.X.shape == (15000, 784) and (d.split == "test").sum() == 10000
    assert np.bincount(d.y[d.split == "test"]).tolist()[:2] == [980, 1135]
    assert 0.0 <= d.X.min() and d.X.max() <= 1.0
