"""Federated feature scaling and the preprocessing kept for serving.

The scaler is ONE scaler shared by every client, computed from aggregated client
statistics (per-feature sums, sums of squares and counts) -- never from pooled raw
rows. What the server learns is those sums (document as a leak in privacy/README).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lepton_fed.data.schema import FeatureSpec

__all__ = ["FeatureStats", "Preprocessor", "RowError", "Scaler"]


@dataclass
class FeatureStats:
    """Sufficient statistics of one client's training features."""

    count: int
    sum: np.ndarray
    sumsq: np.ndarray

    @staticmethod
    def of(X: np.ndarray) -> FeatureStats:
        """Row count, column sums and column sums of squares of ``X`` (rows x features).

        The sums are float64, whatever the dtype of ``X``.
        """
        X64 = np.asarray(X, dtype=np.float64)
        return FeatureStats(int(X64.shape[0]), X64.sum(0), (X64**2).sum(0))

    def __add__(self, other: FeatureStats) -> FeatureStats:
        return FeatureStats(self.count + other.count, self.sum + other.sum, self.sumsq + other.sumsq)


@dataclass
class Scaler:
    """Standardisation ``(x - mean) / scale``; constant features get scale 1."""

    mean: np.ndarray
    scale: np.ndarray

    @staticmethod
    def from_stats(stats: Sequence[FeatureStats], *, per_feature: bool = True) -> Scaler:
        """Combine per-client statistics into the global mean and (population) std.

        Args:
            stats: one :class:`FeatureStats` per client.
            per_feature: standardise each column (tabular data). False uses ONE mean and
                std over every value (images: per-pixel scaling would blow up nearly
                constant border pixels -- MNIST has pixels with std 3e-4).
        """
        if not stats:
            raise ValueError("no client statistics to build a scaler from")
        total = stats[0]
        for s in stats[1:]:
            total = total + s
        if total.count == 0:
            raise ValueError("clients reported 0 training rows")
        if not per_feature:
            n = total.count * total.sum.size
            m = float(total.sum.sum() / n)
            v = max(float(total.sumsq.sum() / n - m * m), 0.0)
            sd = np.sqrt(v) if v > 1e-24 else 1.0
            return Scaler(np.full(total.sum.size, m, np.float32),
                          np.full(total.sum.size, sd, np.float32))
        mean = total.sum / total.count
        var = np.maximum(total.sumsq / total.count - mean**2, 0.0)
        std = np.sqrt(var)
        scale = np.where(std > 1e-12, std, 1.0)
        return Scaler(mean.astype(np.float32), scale.astype(np.float32))

    @staticmethod
    def identity(n: int) -> Scaler:
        """The no-op scaler for ``n`` features (mean 0, scale 1)."""
        return Scaler(np.zeros(n, np.float32), np.ones(n, np.float32))

    def transform(self, X: np.ndarray) -> np.ndarray:
        """``(X - mean) / scale`` for ``X`` (rows, features); float32, same shape."""
        out: np.ndarray = ((np.asarray(X, np.float32) - self.mean) / self.scale).astype(np.float32)
        return out

    def to_dict(self) -> dict[str, list[float]]:
        """JSON-ready ``mean`` and ``scale`` lists, one float per encoded feature."""
        return {"mean": self.mean.tolist(), "scale": self.scale.tolist()}

    @staticmethod
    def from_dict(d: Mapping[str, Any]) -> Scaler:
        """Inverse of :meth:`to_dict` (values as float32)."""
        return Scaler(np.asarray(d["mean"], np.float32), np.asarray(d["scale"], np.float32))


class RowError(ValueError):
    """A serving row is malformed; ``field`` names the offending feature."""

    def __init__(self, field: str, msg: str) -> None:
        self.field = field
        super().__init__(f"{field}: {msg}")


#: largest finite float32: a row value beyond it would become infinite in the model
_F32_MAX = float(np.finfo(np.float32).max)


@dataclass
class Preprocessor:
    """Raw rows (feature name -> value) -> the scaled matrix the model expects.

    This is what ``preprocess.json`` in a run directory and a serving artifact holds.
    """

    features: list[FeatureSpec]
    scaler: Scaler
    class_names: list[str]
    model: dict[str, Any] = field(default_factory=dict)
    task: str = "multiclass"

    @property
    def feature_names(self) -> list[str]:
        """Raw input column names, in the order a row's values are encoded."""
        return [f.name for f in self.features]

    def encode_rows(self, rows: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """Validate and one-hot encode raw rows (unscaled).

        Raises:
            RowError: a missing, extra, non-numeric, non-finite or unknown-level value,
                naming the field (``rows[i].name``).
        """
        names = set(self.feature_names)
        out = []
        for i, row in enumerate(rows):
            if not isinstance(row, Mapping):
                raise RowError(f"rows[{i}]", "must be an object of feature name -> value")
            extra = sorted(set(row) - names)
            if extra:
                raise RowError(f"rows[{i}].{extra[0]}", "unknown feature")
            vec: list[float] = []
            for f in self.features:
                where = f"rows[{i}].{f.name}"
                if f.name not in row:
                    raise RowError(where, "missing")
                v = row[f.name]
                if f.kind == "categorical":
                    sv = str(v)
                    if sv not in f.levels:
                        raise RowError(where, f"unknown level {sv!r}; expected one of {list(f.levels)}")
                    vec += [1.0 if sv == lv else 0.0 for lv in f.levels]
                else:
                    if isinstance(v, bool) or not isinstance(v, int | float):
                        raise RowError(where, f"must be a number, got {type(v).__name__}")
                    try:  # (H5 fuzz: a 400-digit JSON integer overflowed float())
                        fv = float(v)
                    except OverflowError:
                        raise RowError(where, f"must be within +-{_F32_MAX:.4g}") from None
                    if not math.isfinite(fv):
                        raise RowError(where, "must be finite (no NaN or infinity)")
                    if abs(fv) > _F32_MAX:  # the model computes in float32
                        raise RowError(where, f"must be within +-{_F32_MAX:.4g}, got {fv:.4g}")
                    vec.append(fv)
            out.append(vec)
        return np.asarray(out, dtype=np.float32).reshape(len(out), -1)

    def transform_rows(self, rows: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """Encode and scale raw rows."""
        return self.scaler.transform(self.encode_rows(rows))

    def to_dict(self) -> dict[str, Any]:
        """The ``preprocess.json`` form (version 1): features, scaler, class names, model, task."""
        return {
            "version": 1,
            "features": [f.to_dict() for f in self.features],
            "scaler": self.scaler.to_dict(),
            "class_names": list(self.class_names),
            "model": dict(self.model),
            "task": self.task,
        }

    @staticmethod
    def from_dict(d: Mapping[str, Any]) -> Preprocessor:
        """Inverse of :meth:`to_dict`; no ``model`` / ``task`` means ``{}`` / ``multiclass``."""
        return Preprocessor(
            [FeatureSpec.from_dict(f) for f in d["features"]],
            Scaler.from_dict(d["scaler"]),
            list(d["class_names"]),
            dict(d.get("model", {})),
            str(d.get("task", "multiclass")),
        )
