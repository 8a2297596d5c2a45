"""Small shared helpers."""

from lepton_fed.utils.device import resolve_device
from lepton_fed.utils.seed import derive_seed, seed_everything

__all__ = ["derive_seed", "resolve_device", "seed_everything"]
