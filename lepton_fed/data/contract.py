"""The federation's input schema: a contract every node's file is checked against BY NAME.

A real federation declares its schema once (feature names, kinds, categorical levels, the
label column and its class values); the coordinator holds no data, and builds the model
from the schema alone. Each node reads only its own file, checks it against the schema
before anything is computed from it, and encodes it by column NAME (column order in the
file does not matter), with the declared levels and classes (a hospital that has only one
class still encodes labels with the federation's class ids).

Guarantee: a node whose file differs from the contract (a missing column, a non-numeric
value in a numeric column, a categorical level or a label value outside the declared sets)
is refused with a message that names the COLUMN, never a value from the data.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lepton_fed.data.schema import FeatureSpec, TabularData

__all__ = ["FederationSchema", "SchemaMismatch", "load_schema"]


class SchemaMismatch(ValueError):
    """A node's table does not match the federation's schema; ``columns`` names them."""

    def __init__(self, problems: list[str], columns: list[str]) -> None:
        self.problems = problems
        self.columns = columns
        super().__init__("; ".join(problems))


@dataclass(frozen=True)
class FederationSchema:
    """Declared input contract: ``features`` (in model order), ``label``, ``class_names``."""

    features: tuple[FeatureSpec, ...]
    label: str
    class_names: tuple[str, ...]
    normalization: tuple[tuple[str, float, float], ...] = ()

    def __post_init__(self) -> None:
        names = [f.name for f in self.features]
        problems = []
        numeric = {f.name for f in self.features if f.kind == "numeric"}
        for name, _mean, scale in self.normalization:
            if name not in numeric:
                problems.append(f"schema: normalization names {name!r}, not a numeric feature")
            elif not scale > 0:
                problems.append(f"schema: normalization scale of {name!r} must be > 0")
        if not names:
            problems.append("schema: at least one feature is needed")
        if len(set(names)) != len(names):
            problems.append("schema: feature names must be unique")
        if self.label in names:
            problems.append(f"schema: label {self.label!r} is also listed as a feature")
        if len(self.class_names) < 2 or len(set(self.class_names)) != len(self.class_names):
            problems.append("schema: classes must list at least 2 distinct label values")
        for f in self.features:
            if f.kind not in ("numeric", "categorical"):
                problems.append(f"schema: feature {f.name!r} has unknown kind {f.kind!r}")
            elif f.kind == "categorical" and not f.levels:
                problems.append(f"schema: categorical feature {f.name!r} needs its levels")
        if problems:
            raise ValueError("; ".join(problems))

    @property
    def num_encoded(self) -> int:
        """Width of the encoded matrix (one-hot categorical columns)."""
        return sum(len(f.levels) if f.kind == "categorical" else 1 for f in self.features)

    def to_dict(self) -> dict[str, Any]:
        """The form :meth:`from_dict` reads back (label, classes, features).

        A declared ``normalization`` is added as ``{name: [mean, scale]}``.
        """
        d: dict[str, Any] = {"label": self.label, "classes": list(self.class_names),
                             "features": [f.to_dict() for f in self.features]}
        if self.normalization:
            d["normalization"] = {n: [m, s] for n, m, s in self.normalization}
        return d

    def declared_scaler(self) -> tuple[np.ndarray, np.ndarray] | None:
        """(mean, scale) over the encoded columns from ``normalization``, or None.

        A federation may declare its normalization (e.g. clinical reference ranges)
        so that no node has to send feature statistics; undeclared numeric columns and
        one-hot columns keep mean 0 and scale 1.
        """
        if not self.normalization:
            return None
        norm = {n: (m, s) for n, m, s in self.normalization}
        mean, scale = [], []
        for f in self.features:
            if f.kind == "categorical":
                mean += [0.0] * len(f.levels)
                scale += [1.0] * len(f.levels)
            else:
                m, s = norm.get(f.name, (0.0, 1.0))
                mean.append(m)
                scale.append(s)
        return np.asarray(mean, np.float32), np.asarray(scale, np.float32)

    @staticmethod
    def from_dict(d: Mapping[str, Any]) -> FederationSchema:
        """From ``{"label": str, "classes": [...], "features": [name | {name, kind, levels}]}``.

        Raises:
            ValueError: naming every problem found.
        """
        problems = [f"schema: missing key {k!r}" for k in ("label", "classes", "features")
                    if k not in d]
        if problems:
            raise ValueError("; ".join(problems))
        feats = []
        for f in d["features"]:
            if isinstance(f, str):
                feats.append(FeatureSpec(f))
            elif isinstance(f, Mapping) and "name" in f:
                feats.append(FeatureSpec(str(f["name"]), str(f.get("kind", "numeric")),
                                         tuple(str(v) for v in f.get("levels", ()) or ())))
            else:
                raise ValueError(f"schema: feature entry {f!r} needs a name")
        norm = d.get("normalization") or {}
        if not isinstance(norm, Mapping):
            raise ValueError("schema: normalization must map feature -> [mean, scale]")
        try:
            triples = tuple((str(k), float(v[0]), float(v[1])) for k, v in norm.items())
        except (TypeError, ValueError, IndexError) as exc:
            raise ValueError("schema: normalization must map feature -> [mean, scale]") from exc
        return FederationSchema(tuple(feats), str(d["label"]),
                                tuple(str(c) for c in d["classes"]), triples)

    @staticmethod
    def of(data: TabularData, label: str = "label") -> FederationSchema:
        """The schema a loaded dataset implies (simulation: the server holds the data)."""
        return FederationSchema(tuple(data.features), label, tuple(data.class_names))

    def digest(self) -> str:
        """sha256 of the canonical JSON form (what a node pins)."""
        text = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()

    def check(self, df: Any) -> list[str]:
        """Every mismatch between a table and the schema, naming columns only."""
        import pandas as pd

        cols = {str(c) for c in df.columns}
        out = [f"column {c!r} is missing" for c in [f.name for f in self.features] + [self.label]
               if c not in cols]
        for f in self.features:
            if f.name not in cols:
                continue
            s = df[f.name]
            if f.kind == "numeric":
                if not pd.api.types.is_numeric_dtype(s):
                    out.append(f"column {f.name!r} must be numeric")
                elif bool(np.isinf(s.to_numpy(np.float64)).any()):
                    out.append(f"column {f.name!r} has infinite values")
            else:
                bad = set(s.dropna().astype(str).unique()) - set(f.levels)
                if bad:
                    out.append(f"column {f.name!r} has {len(bad)} level(s) outside the schema")
        if self.label in cols:
            bad = set(df[self.label].dropna().astype(str).unique()) - set(self.class_names)
            if bad:
                out.append(f"label column {self.label!r} has {len(bad)} value(s) outside the "
                           "schema's classes")
        return out

    def encode(self, df: Any) -> TabularData:
        """Encode a table by column name (rows with a missing value are dropped).

        Raises:
            SchemaMismatch: the table does not match (see :meth:`check`).
        """
        problems = self.check(df)
        if problems:
            cols = sorted({p.split("'")[1] for p in problems if "'" in p})
            raise SchemaMismatch(problems, cols)
        names = [f.name for f in self.features]
        keep = ~(df[names].isna().any(axis=1) | df[self.label].isna()).to_numpy()
        mats: list[np.ndarray] = []
        for f in self.features:
            if f.kind == "categorical":
                s = df[f.name].astype(str)
                mats += [(s == lv).to_numpy(np.float32) for lv in f.levels]
            else:
                mats.append(df[f.name].to_numpy(np.float32))
        X = np.stack(mats, axis=1)[keep]
        index = {c: i for i, c in enumerate(self.class_names)}
        y = df[self.label][keep].astype(str).map(index).to_numpy(np.int64)
        return TabularData(X, y, list(self.features), list(self.class_names))


def load_schema(source: str | Path | Mapping[str, Any]) -> FederationSchema:
    """A schema from a mapping, or a YAML/JSON file path.

    Raises:
        ValueError: unreadable file or an invalid schema (every problem named).
    """
    if isinstance(source, Mapping):
        return FederationSchema.from_dict(source)
    p = Path(source)
    if not p.is_file():
        raise ValueError(f"schema file {str(p)!r} does not exist")
    from omegaconf import OmegaConf

    try:
        d = OmegaConf.to_container(OmegaConf.load(p), resolve=True)
    except Exception as exc:  # noqa: BLE001 - report which file
        raise ValueError(f"schema file {str(p)!r} is not valid YAML/JSON") from exc
    if not isinstance(d, Mapping):
        raise ValueError(f"schema file {str(p)!r} must hold a mapping")
    return FederationSchema.from_dict({str(k): v for k, v in d.items()})
