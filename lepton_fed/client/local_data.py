"""A node's own rows: training rows and the held-out rows it evaluates the global model on.

In simulation a virtual node (``node_config["partition-id"]``) takes its partition of the
run's training split, and its share of the run's test split for federated evaluation.
On a real node (``node_config["data-path"]``) the node reads ONLY its own file: against
the federation's declared schema (``data.schema``, checked by column NAME) when there is
one, else with the dataset loader named in the config; it then holds out a fraction of
its rows for evaluation: the node's own ``node_config["test-fraction"]`` (``lepton-fed
node join --test-fraction``), default :data:`NODE_TEST_FRACTION`; the server's
``data.test_fraction`` is not used on a real node. The held-out rows are chosen from a
seed derived from the file's own content, so they are the same rows in every run and
nothing the server sends can move a row from the held-out set into training.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from flwr.app import Context
from omegaconf import DictConfig, OmegaConf

from lepton_fed.data.schema import TabularData

__all__ = ["NODE_TEST_FRACTION", "NodeData", "node_data"]

#: The share of its rows a real node holds out when its node config sets none.
NODE_TEST_FRACTION = 0.2


@dataclass(frozen=True)
class NodeData:
    """``train`` rows (used for training and the scaler) and ``test`` rows (evaluation)."""

    train: TabularData
    test: TabularData


def node_data(cfg: DictConfig, context: Context) -> NodeData:
    """This node's rows for this run config.

    Raises:
        lepton_fed.data.contract.SchemaMismatch: the file differs from the schema.
        FileNotFoundError: the node's data file is missing.
        RuntimeError: the node config names no data.
        ValueError: the node config's ``test-fraction`` is not in (0, 1).
    """
    nc = context.node_config
    if "partition-id" in nc:
        from lepton_fed.data.federated import federated_split

        sp = federated_split(cfg)
        pid = int(nc["partition-id"])
        n = int(cfg.federation.num_clients)
        return NodeData(sp.client(pid), sp.data.subset(sp.test_idx[pid::n]))
    if "data-path" in nc:
        schema = cfg.data.get("schema")
        label = str(nc.get("data-label", "")) or None
        return _file_data(
            str(nc["data-path"]),
            OmegaConf.to_yaml(schema) if schema is not None else "",
            label,
            OmegaConf.to_yaml(cfg.data),
            _node_test_fraction(nc.get("test-fraction", NODE_TEST_FRACTION)),
        )
    raise RuntimeError("node_config has neither 'partition-id' (simulation) nor 'data-path'")


def _node_test_fraction(raw: object) -> float:
    """The node's held-out share from its own config, checked."""
    try:
        f = float(raw)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ValueError(f"node_config test-fraction {raw!r} is not a number") from None
    if not 0.0 < f < 1.0:
        raise ValueError(f"node_config test-fraction {f} must lie strictly between 0 and 1")
    return f


@lru_cache(maxsize=4)
def _file_data(path: str, schema_yaml: str, label: str | None, data_yaml: str,
               test_fraction: float) -> NodeData:
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError("the node's data file does not exist")
    if schema_yaml:
        from lepton_fed.data.contract import load_schema
        from lepton_fed.data.datasets import _read_table

        schema = load_schema(dict(OmegaConf.to_container(OmegaConf.create(schema_yaml))))  # type: ignore[arg-type]
        df = _read_table(str(p))
        if label and label != schema.label:
            if label not in df.columns:
                from lepton_fed.data.contract import SchemaMismatch

                raise SchemaMismatch([f"label column {label!r} is missing"], [label])
            df = df.rename(columns={label: schema.label})
        data = schema.encode(df)
    else:
        from lepton_fed.data.datasets import load_dataset

        d = OmegaConf.create(data_yaml)
        opts = {str(k): v for k, v in OmegaConf.to_container(d, resolve=True).items()  # type: ignore[union-attr]
                if k not in ("name", "test_fraction", "path", "schema") and v is not None}
        if label:
            opts["label"] = label
        data = load_dataset(str(d.name), path=str(p), **opts)
    return _hold_out(data, test_fraction, _content_seed(p))


def _content_seed(p: Path) -> int:
    h = hashlib.sha256()
    files = sorted(q for q in p.rglob("*") if q.is_file()) if p.is_dir() else [p]
    for q in files:
        with open(q, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return int.from_bytes(h.digest()[:8], "little")


def _hold_out(data: TabularData, fraction: float, seed: int) -> NodeData:
    n = len(data.y)
    n_test = int(round(n * fraction)) if n >= 5 else 0
    perm = np.random.default_rng(seed).permutation(n)
    test_idx, train_idx = np.sort(perm[:n_test]), np.sort(perm[n_test:])
    return NodeData(data.subset(train_idx), data.subset(test_idx))
