"""Dataset builders: scikit-learn's bundled sets, and files from a local path.

Nothing here downloads anything. File-backed sources (``heart_disease``, ``mnist``,
``csv``) read from ``path``; :func:`check_source` reports every problem with a source
before any expensive work starts.
"""

from __future__ import annotations

import gzip
import struct
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from lepton_fed.data.schema import FeatureSpec, TabularData
from lepton_fed.errors import MissingExtra

__all__ = ["DATASETS", "check_source", "load_dataset"]

HEART_FILES = (
    ("cleveland", "processed.cleveland.data"),
    ("hungary", "processed.hungarian.data"),
    ("switzerland", "processed.switzerland.data"),
    ("va", "processed.va.data"),
)
HEART_COLUMNS = (
    "age sex cp trestbps chol fbs restecg thalach exang oldpeak slope ca thal num".split()
)


def _sklearn(name: str) -> TabularData:
    from sklearn import datasets as skd

    if name == "breast_cancer":
        b = skd.load_breast_cancer()
        feats = [FeatureSpec(str(n)) for n in b.feature_names]
        return TabularData(
            b.data.astype(np.float32), b.target.astype(np.int64), feats,
            [str(c) for c in b.target_names],
        )
    d = skd.load_digits()
    feats = [FeatureSpec(f"px_{i}") for i in range(d.data.shape[1])]
    return TabularData(
        d.data.astype(np.float32), d.target.astype(np.int64), feats,
        [str(c) for c in d.target_names], input_shape=(1, 8, 8),
    )


def _heart_disease(path: str) -> TabularData:
    """FLamby Fed-Heart-Disease preprocessing (see ../shared/data/fed_heart_disease).

    Drops slope/ca/thal, drops rows with any remaining missing value, binarises ``num``,
    one-hot encodes ``cp`` and ``restecg`` dropping the first level (13 features), and
    reproduces FLamby's per-center stratified 66/34 split (``random_state=43``).
    """
    import pandas as pd
    from sklearn.model_selection import train_test_split

    frames = []
    for cid, (_, fname) in enumerate(HEART_FILES):
        df = pd.read_csv(Path(path) / fname, header=None, names=HEART_COLUMNS, na_values="?")
        df = df.drop(columns=["slope", "ca", "thal"]).dropna().reset_index(drop=True)
        df["num"] = (df["num"] > 0).astype(np.int64)
        y = df["num"].to_numpy()
        idx = np.arange(len(df))
        strat = y if min(np.bincount(y, minlength=2)) > 2 else None
        tr, _ = train_test_split(idx, train_size=0.66, shuffle=True, random_state=43, stratify=strat)
        split = np.full(len(df), "test", dtype=object)
        split[tr] = "train"
        df["__split"] = split
        df["__silo"] = cid
        frames.append(df)
    df = pd.concat(frames, ignore_index=True)
    cp_levels = ("2.0", "3.0", "4.0")
    ecg_levels = ("1.0", "2.0")
    numeric = ["age", "sex", "trestbps", "chol", "fbs", "thalach", "exang", "oldpeak"]
    cols = [df[c].to_numpy(np.float32) for c in numeric]
    cols += [(df["cp"].astype(float).map(str) == lv).to_numpy(np.float32) for lv in cp_levels]
    cols += [(df["restecg"].astype(float).map(str) == lv).to_numpy(np.float32) for lv in ecg_levels]
    feats = [FeatureSpec(c) for c in numeric] + [
        FeatureSpec(f"cp={lv}") for lv in cp_levels
    ] + [FeatureSpec(f"restecg={lv}") for lv in ecg_levels]
    return TabularData(
        np.stack(cols, axis=1), df["num"].to_numpy(np.int64), feats, ["no_disease", "disease"],
        silo=df["__silo"].to_numpy(np.int64), split=df["__split"].to_numpy(),
        silo_names=[n for n, _ in HEART_FILES],
    )


def _read_idx(p: Path) -> np.ndarray:
    raw = gzip.open(p).read() if p.suffix == ".gz" else p.read_bytes()
    magic = struct.unpack(">I", raw[:4])[0]
    ndim = magic & 0xFF
    dims = struct.unpack(">" + "I" * ndim, raw[4 : 4 + 4 * ndim])
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def _mnist(path: str) -> TabularData:
    """MNIST from ``path``: ``mnist_5k.csv.gz`` (train) and the official t10k idx files (test)."""
    import pandas as pd

    p = Path(path)
    train = pd.read_csv(p / "mnist_5k.csv.gz", header=None).to_numpy()
    Xtr, ytr = train[:, :784].astype(np.float32), train[:, 784].astype(np.int64)
    Xte = _read_idx(p / "t10k-images-idx3-ubyte.gz").reshape(-1, 784).astype(np.float32)
    yte = _read_idx(p / "t10k-labels-idx1-ubyte.gz").astype(np.int64)
    X = np.concatenate([Xtr, Xte]) / 255.0
    y = np.concatenate([ytr, yte])
    split = np.array(["train"] * len(ytr) + ["test"] * len(yte), dtype=object)
    return TabularData(
        X.astype(np.float32), y, [FeatureSpec(f"px_{i}") for i in range(784)],
        [str(i) for i in range(10)], split=split, input_shape=(1, 28, 28),
    )


def _read_table(path: str) -> Any:
    import pandas as pd

    if str(path).endswith((".parquet", ".pq")):
        from lepton_fed.utils.extras import require

        require("pyarrow", purpose=f"reading the Parquet file {path}")
        return pd.read_parquet(path)
    return pd.read_csv(path, sep=None, engine="python")


def _csv(path: str, label: str, features: list[str] | None, categorical: list[str] | None,
         silo_column: str | None = None) -> TabularData:
    """Any CSV/Parquet table: ``label`` column, numeric and categorical feature columns.

    Categorical columns (listed, or every non-numeric column when ``categorical`` is
    None) are one-hot encoded with every level kept (sorted), so serving can accept
    any level seen here.
    """
    import pandas as pd

    df = _read_table(path)
    problems = _table_problems(df, label, features, categorical, silo_column)
    if problems:
        from lepton_fed.errors import ConfigError

        raise ConfigError(problems)
    cols = features or [c for c in df.columns if c not in (label, silo_column)]
    cats = set(categorical) if categorical is not None else {
        c for c in cols if not pd.api.types.is_numeric_dtype(df[c])
    }
    feats: list[FeatureSpec] = []
    mats: list[np.ndarray] = []
    for c in cols:
        if c in cats:
            levels = tuple(sorted(str(v) for v in df[c].dropna().unique()))
            feats.append(FeatureSpec(str(c), "categorical", levels))
            s = df[c].astype(str)
            mats += [(s == lv).to_numpy(np.float32) for lv in levels]
        else:
            feats.append(FeatureSpec(str(c)))
            mats.append(df[c].to_numpy(np.float32))
    keep = ~np.isnan(np.stack(mats, axis=1)).any(axis=1) & df[label].notna().to_numpy()
    X = np.stack(mats, axis=1)[keep]
    labels = df[label][keep]
    classes = sorted(labels.astype(str).unique())
    y = labels.astype(str).map({c: i for i, c in enumerate(classes)}).to_numpy(np.int64)
    silo = silo_names = None
    if silo_column:
        s = df[silo_column][keep].astype(str)
        silo_names = sorted(s.unique())
        silo = s.map({n: i for i, n in enumerate(silo_names)}).to_numpy(np.int64)
    return TabularData(X, y, feats, classes, silo=silo, silo_names=silo_names or [])


def _table_problems(df: Any, label: str, features: list[str] | None,
                    categorical: list[str] | None, silo_column: str | None) -> list[str]:
    import pandas as pd

    out: list[str] = []
    cols = list(df.columns)
    if label not in cols:
        out.append(f"data.label: column {label!r} does not exist; columns are {cols}")
    for c in features or []:
        if c not in cols:
            out.append(f"data.features: column {c!r} does not exist; columns are {cols}")
    for c in categorical or []:
        if c not in cols:
            out.append(f"data.categorical: column {c!r} does not exist; columns are {cols}")
    if silo_column and silo_column not in cols:
        out.append(f"data.silo_column: column {silo_column!r} does not exist; columns are {cols}")
    if categorical is not None:
        for c in features or [c for c in cols if c not in (label, silo_column)]:
            if c in cols and c not in categorical and not pd.api.types.is_numeric_dtype(df[c]):
                out.append(
                    f"data: feature column {c!r} is not numeric (e.g. {df[c].iloc[0]!r}); "
                    "list it in data.categorical or drop it from data.features"
                )
    return out


DATASETS: dict[str, Callable[..., TabularData]] = {
    "breast_cancer": lambda **_: _sklearn("breast_cancer"),
    "digits": lambda **_: _sklearn("digits"),
    "heart_disease": lambda path, **_: _heart_disease(path),
    "mnist": lambda path, **_: _mnist(path),
    "csv": lambda path, label, features=None, categorical=None, silo_column=None, **_: _csv(
        path, label, features, categorical, silo_column),
}
FILE_SOURCES = {"heart_disease": [f for _, f in HEART_FILES],
                "mnist": ["mnist_5k.csv.gz", "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]}


def check_source(name: str, path: str | None, label: str | None = None) -> list[str]:
    """Every problem with a data source that can be seen without loading it fully."""
    if name not in DATASETS:
        return [f"data.name: unknown dataset {name!r}; choose one of {sorted(DATASETS)}"]
    out: list[str] = []
    if name in FILE_SOURCES or name == "csv":
        if not path:
            return [f"data.path: dataset {name!r} needs data.path (a local directory or file)"]
        p = Path(path)
        if name == "csv":
            if not p.is_file():
                out.append(f"data.path: file {path!r} does not exist")
            elif not label:
                out.append("data.label: dataset 'csv' needs data.label (the label column)")
            else:
                try:
                    df = _read_table(path)
                except MissingExtra:
                    raise
                except Exception as exc:  # noqa: BLE001 - report, don't crash
                    out.append(f"data.path: cannot read {path!r}: {exc}")
                else:
                    out += _table_problems(df, label, None, None, None)
        elif not p.is_dir():
            out.append(f"data.path: directory {path!r} does not exist")
        else:
            out += [
                f"data.path: {name} needs file {f!r} in {path!r}"
                for f in FILE_SOURCES[name] if not (p / f).is_file()
            ]
    return out


@lru_cache(maxsize=4)
def _cached(name: str, key: tuple[tuple[str, Any], ...]) -> TabularData:
    return DATASETS[name](**dict(key))


def load_dataset(name: str, **options: Any) -> TabularData:
    """Load dataset ``name`` (cached per process; options as in ``conf/data/*.yaml``)."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {sorted(DATASETS)}")
    key = tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in options.items()))
    data = _cached(name, key)
    return data
