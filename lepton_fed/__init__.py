"""lepton-fed: privacy-preserving federated training (Flower + Opacus + secure aggregation).

The Python API (``docs/api.md`` has a runnable example of each):

* :func:`compose`, :func:`simulate` -- compose a validated config from overrides and run
  a simulated federation (on Ray, or ``in_process=True``), returning its summary.
* :func:`make_private`, :class:`PrivacyLedger`, :class:`PrivacyEvent`,
  :class:`FileLedger` -- DP-SGD for one node's local round, and the budget it spends.
* :class:`SecAggClient`, :class:`SecAggServer`, :func:`default_params` -- the
  secure-aggregation protocol, without Flower.
* :func:`export_model`, :func:`load_artifact` -- a signed int8 serving artifact whose
  ONNX graph takes raw features, and its verified predictor.
* :class:`NodePolicy`, :class:`FederationSchema` -- what a node accepts, and the input
  contract every node's data is checked against.
* the errors (:class:`LeptonError` and its subclasses, each with an ``exit_code``).

Importing this package does nothing else: no environment variables, no downloads, and
none of torch, Flower, Hydra or ONNX is imported until a name that needs it is used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from lepton_fed.errors import (
    ArtifactError,
    ConfigError,
    IncompatibleModelError,
    LeptonError,
    MissingExtra,
    PrivacyBudgetExhausted,
    ProtocolAbort,
    RunFailed,
    UsageError,
)

if TYPE_CHECKING:
    from lepton_fed.api import compose, simulate
    from lepton_fed.data.contract import FederationSchema
    from lepton_fed.policy import NodePolicy
    from lepton_fed.privacy import (
        FileLedger,
        PrivacyEvent,
        PrivacyLedger,
        make_private,
    )
    from lepton_fed.secagg import SecAggClient, SecAggServer, default_params
    from lepton_fed.serving.export import export_model
    from lepton_fed.serving.runtime import load_artifact

__version__ = "0.1.0"

__all__ = [
    "ArtifactError",
    "ConfigError",
    "FederationSchema",
    "FileLedger",
    "IncompatibleModelError",
    "LeptonError",
    "MissingExtra",
    "NodePolicy",
    "PrivacyBudgetExhausted",
    "PrivacyEvent",
    "PrivacyLedger",
    "ProtocolAbort",
    "RunFailed",
    "SecAggClient",
    "SecAggServer",
    "UsageError",
    "__version__",
    "compose",
    "default_params",
    "export_model",
    "load_artifact",
    "make_private",
    "simulate",
]

#: name -> defining module, imported on first use (PEP 562).
_LAZY = {
    "FederationSchema": "lepton_fed.data.contract",
    "FileLedger": "lepton_fed.privacy",
    "NodePolicy": "lepton_fed.policy",
    "PrivacyEvent": "lepton_fed.privacy",
    "PrivacyLedger": "lepton_fed.privacy",
    "SecAggClient": "lepton_fed.secagg",
    "SecAggServer": "lepton_fed.secagg",
    "compose": "lepton_fed.api",
    "default_params": "lepton_fed.secagg",
    "export_model": "lepton_fed.serving.export",
    "load_artifact": "lepton_fed.serving.runtime",
    "make_private": "lepton_fed.privacy",
    "simulate": "lepton_fed.api",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'lepton_fed' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
