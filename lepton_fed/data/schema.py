"""The in-memory form of a dataset: encoded numeric features plus the schema to rebuild them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["FeatureSpec", "TabularData"]


@dataclass(frozen=True)
class FeatureSpec:
    """One raw input column as a user (or a serving client) provides it.

    ``kind`` is ``"numeric"`` or ``"categorical"``; a categorical column has ``levels``
    and is one-hot encoded into ``len(levels)`` columns named ``f"{name}={level}"``.
    """

    name: str
    kind: str = "numeric"
    levels: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form: ``name`` and ``kind``, plus ``levels`` for a categorical column."""
        d: dict[str, Any] = {"name": self.name, "kind": self.kind}
        if self.kind == "categorical":
            d["levels"] = list(self.levels)
        return d

    @staticmethod
    def from_dict(d: dict[str, Any]) -> FeatureSpec:
        """Inverse of :meth:`to_dict`; ``kind`` defaults to ``numeric``."""
        return FeatureSpec(str(d["name"]), str(d.get("kind", "numeric")), tuple(d.get("levels", ())))


@dataclass
class TabularData:
    """Encoded (not yet scaled) features and integer labels.

    Attributes:
        X: float32 matrix, one row per example, columns = encoded features.
        y: int64 labels in ``[0, len(class_names))``.
        features: raw input columns (what serving accepts), in order.
        class_names: label names, index = class id.
        silo: optional natural silo id per row (hospital, bank branch...).
        split: optional fixed ``"train"``/``"test"`` marker per row.
        input_shape: optional (C, H, W) for image data.
    """

    X: np.ndarray
    y: np.ndarray
    features: list[FeatureSpec]
    class_names: list[str]
    silo: np.ndarray | None = None
    split: np.ndarray | None = None
    input_shape: tuple[int, ...] | None = None
    silo_names: list[str] = field(default_factory=list)

    @property
    def num_classes(self) -> int:
        """Number of label classes (``len(class_names)``)."""
        return len(self.class_names)

    @property
    def num_features(self) -> int:
        """Number of encoded columns of ``X`` (categorical features one-hot encoded)."""
        return int(self.X.shape[1])

    @property
    def encoded_names(self) -> list[str]:
        """Column names after one-hot encoding, in matrix order."""
        names: list[str] = []
        for f in self.features:
            if f.kind == "categorical":
                names += [f"{f.name}={lv}" for lv in f.levels]
            else:
                names.append(f.name)
        return names

    def subset(self, idx: np.ndarray) -> TabularData:
        """Rows ``idx`` of this dataset (schema shared)."""
        return TabularData(
            X=self.X[idx],
            y=self.y[idx],
            features=self.features,
            class_names=self.class_names,
            silo=None if self.silo is None else self.silo[idx],
            split=None if self.split is None else self.split[idx],
            input_shape=self.input_shape,
            silo_names=self.silo_names,
        )
