"""Model builders, registry and weight conversion."""

from lepton_fed.models.params import (
    flatten_state,
    get_state,
    set_state,
    unflatten_state,
)
from lepton_fed.models.registry import (
    available_models,
    build_model,
    register_model,
)

__all__ = [
    "available_models",
    "build_model",
    "flatten_state",
    "get_state",
    "register_model",
    "set_state",
    "unflatten_state",
]
