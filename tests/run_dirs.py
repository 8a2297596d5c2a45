"""Run directories written the way ``simulate`` writes them, for the export and serving
tests and ``benchmarks/serving.py``.

A model trained centrally for a few epochs on scikit-learn data (a stand-in for a
finished federation), its preprocessing, the held-out split (encoded and scaled), a
summary and the config. Tests import it as ``run_dirs`` (pytest puts ``tests/`` on
``sys.path`` for ``tests/conftest.py``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["PLAIN_SUMMARY", "write_run_dir"]

#: summary.json of a run without differential privacy or secure aggregation.
PLAIN_SUMMARY: dict[str, Any] = {
    "rounds_completed": 2,
    "num_clients": 3,
    "final": {"accuracy": 0.9, "loss": 0.4},
    "privacy": {"mode": "none", "epsilon": None, "delta": None},
    "secagg": {"enabled": False},
}


def write_run_dir(
    path: Path,
    dataset: str,
    spec: dict[str, Any],
    *,
    epochs: int = 5,
    seed: int = 0,
    train_rows: int | None = None,
    batch_size: int = 128,
    lr: float = 1e-2,
    shuffle: bool = False,
    summary: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train a model of ``spec`` on ``dataset`` briefly and write a run directory.

    Args:
        path: the run directory (created).
        dataset: a :func:`~lepton_fed.data.datasets.load_dataset` name.
        spec: the model spec without ``num_features``/``num_classes`` (taken from the
            data); a ``cnn`` also gets the data's ``input_shape``.
        epochs: passes of Adam over the training rows.
        seed: seeds torch and the train/held-out permutation.
        train_rows: training rows taken from the seeded permutation (default 80%);
            the rest are held out.
        batch_size: rows per optimizer step.
        lr: Adam learning rate.
        shuffle: reshuffle the training rows every epoch (torch RNG) instead of
            taking them in permutation order.
        summary: ``summary.json`` (default :data:`PLAIN_SUMMARY`).

    Returns:
        ``{"dir": path, "raw_rows": held-out rows as {feature: value}, "y": labels}``.
    """
    import torch
    from safetensors.torch import save_file

    from lepton_fed.data.datasets import load_dataset
    from lepton_fed.data.preprocess import FeatureStats, Preprocessor, Scaler
    from lepton_fed.models import build_model

    torch.manual_seed(seed)
    data = load_dataset(dataset)
    idx = np.random.default_rng(seed).permutation(len(data.y))
    cut = int(0.8 * len(idx)) if train_rows is None else train_rows
    tr, te = idx[:cut], idx[cut:]
    scaler = Scaler.from_stats([FeatureStats.of(data.X[tr])])
    spec = {"num_features": data.num_features, "num_classes": data.num_classes, **spec}
    if spec["name"] == "cnn":
        spec["input_shape"] = list(data.input_shape or ())
    net = build_model(spec)
    X, y = torch.from_numpy(scaler.transform(data.X[tr])), torch.from_numpy(data.y[tr])
    opt = torch.optim.Adam(net.parameters(), lr)
    for _ in range(epochs):
        order = torch.randperm(len(X)) if shuffle else torch.arange(len(X))
        for i in range(0, len(X), batch_size):
            b = order[i : i + batch_size]
            opt.zero_grad()
            torch.nn.functional.cross_entropy(net(X[b]), y[b]).backward()
            opt.step()

    path.mkdir(parents=True, exist_ok=True)
    save_file(net.eval().state_dict(), str(path / "model.safetensors"))
    task = "binary" if data.num_classes == 2 else "multiclass"
    pre = Preprocessor(data.features, scaler, data.class_names, spec, task)
    (path / "preprocess.json").write_text(json.dumps(pre.to_dict()))
    np.savez(path / "heldout.npz", X=scaler.transform(data.X[te]), y=data.y[te])
    (path / "summary.json").write_text(
        json.dumps(PLAIN_SUMMARY if summary is None else summary)
    )
    (path / "config.yaml").write_text(f"model: {spec['name']}\n")
    raw = [
        {f.name: float(v) for f, v in zip(data.features, row, strict=True)}
        for row in data.X[te]
    ]
    return {"dir": path, "raw_rows": raw, "y": data.y[te]}
