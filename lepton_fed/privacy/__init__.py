"""Differential privacy: accounting math, the per-node ledger, DP-SGD and central DP.

What each mode guarantees, against whom, and what voids it: ``privacy/README.md``.
The DP-SGD names (``make_private`` ...) and ``ReproducibleNoiseWarning`` import torch
(and Opacus) on first use only.
"""

from __future__ import annotations

from typing import Any

from lepton_fed.privacy.accounting import (
    FileLedger,
    LedgerError,
    PrivacyEvent,
    PrivacyLedger,
    dataset_fingerprint,
    source_fingerprint,
)
from lepton_fed.privacy.analysis import (
    LocalSchedule,
    central_epsilon,
    central_noise_multiplier_for,
    epsilon_for,
    epsilon_for_history,
    local_schedule,
    noise_multiplier_for,
)
from lepton_fed.privacy.central import (
    CentralAccountant,
    add_gaussian_noise,
    clip_update,
)

__all__ = [
    "CentralAccountant",
    "FileLedger",
    "InsecureRNGWarning",
    "LedgerError",
    "LocalSchedule",
    "PrivacyEvent",
    "PrivacyLedger",
    "PrivateTraining",
    "ReproducibleNoiseWarning",
    "add_gaussian_noise",
    "central_epsilon",
    "central_noise_multiplier_for",
    "clip_update",
    "dataset_fingerprint",
    "dp_loss_step",
    "epsilon_for",
    "epsilon_for_history",
    "local_schedule",
    "make_private",
    "noise_multiplier_for",
    "source_fingerprint",
    "validate_model",
]

# name -> the module that defines it (these import torch/Opacus, so only on first use)
_LAZY = {
    "InsecureRNGWarning": "dpsgd",
    "PrivateTraining": "dpsgd",
    "dp_loss_step": "dpsgd",
    "make_private": "dpsgd",
    "validate_model": "dpsgd",
    "ReproducibleNoiseWarning": "noise",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"lepton_fed.privacy.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'lepton_fed.privacy' has no attribute {name!r}")
