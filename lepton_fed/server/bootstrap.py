"""What the server knows before any node answers: the model's shape and the input contract.

With ``evaluation.server_data=true`` (the simulation default) the server loads the
simulation's dataset and keeps its held-out split for centralized evaluation. With
``evaluation.server_data=false`` (a real federation) the coordinator holds NO data: the
model is built from the federation's declared schema (``data.schema``: a file or a
mapping; for the bundled datasets it is implied), and evaluation is federated.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

from omegaconf import DictConfig, OmegaConf

from lepton_fed.data.contract import FederationSchema, load_schema
from lepton_fed.data.schema import FeatureSpec, TabularData
from lepton_fed.models.spec import model_spec

__all__ = ["Bootstrap", "bootstrap"]

#: datasets whose schema is fixed and public (bundled with scikit-learn)
_BUNDLED = ("breast_cancer", "digits")


@dataclass
class Bootstrap:
    """Model spec, input features, classes, the config nodes get, and (maybe) test rows."""

    spec: dict[str, Any]
    features: list[FeatureSpec]
    class_names: list[str]
    input_shape: tuple[int, ...] | None
    node_yaml: str
    test: TabularData | None
    declared_scaler: tuple[Any, Any] | None = None


def _schema(cfg: DictConfig) -> FederationSchema | None:
    src = cfg.data.get("schema")
    if src is None:
        if cfg.data.name in _BUNDLED:
            from lepton_fed.data.datasets import load_dataset

            return FederationSchema.of(load_dataset(str(cfg.data.name)))
        return None
    if isinstance(src, str):
        return load_schema(src)
    return load_schema(OmegaConf.to_container(src, resolve=True))  # type: ignore[arg-type]


def bootstrap(cfg: DictConfig) -> Bootstrap:
    """Model spec and contract for ``cfg`` (loads data only with server data)."""
    server_data = bool(cfg.get("evaluation") is None or cfg.evaluation.server_data)
    schema = _schema(cfg) if cfg.data.get("schema") is not None or not server_data else None
    node_cfg = cast(dict[str, Any], OmegaConf.to_container(cfg, resolve=True))
    node_cfg.pop("node_policy", None)  # a node's policy is its own, never the server's
    if schema is not None:  # nodes get the schema itself, never a coordinator path
        node_cfg["data"]["schema"] = schema.to_dict()
    if server_data:
        from lepton_fed.data.federated import federated_split

        split = federated_split(cfg)
        data = split.data
        spec = model_spec(cfg.model, num_features=data.num_features,
                          num_classes=data.num_classes, input_shape=data.input_shape)
        return Bootstrap(spec, list(data.features), list(data.class_names), data.input_shape,
                         OmegaConf.to_yaml(OmegaConf.create(node_cfg)), split.test(),
                         schema.declared_scaler() if schema is not None else None)
    if schema is None:  # config validation refuses this before any work starts
        raise ValueError("data.schema is required when evaluation.server_data=false")
    spec = model_spec(cfg.model, num_features=schema.num_encoded,
                      num_classes=len(schema.class_names), input_shape=None)
    return Bootstrap(spec, list(schema.features), list(schema.class_names), None,
                     OmegaConf.to_yaml(OmegaConf.create(node_cfg)), None,
                     schema.declared_scaler())
