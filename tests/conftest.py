"""Shared fixtures: composed configs, the shared-data path (skipped when absent)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
os.environ.setdefault("FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION", "1")
os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
logging.getLogger("flwr").setLevel(logging.WARNING)

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data, or skip: a user's fresh clone has no ../shared."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared datasets not present at {SHARED_DATA} (only in the dev workspace)")
    return SHARED_DATA


@pytest.fixture
def compose_cfg():
    """Compose conf/ with overrides (no Ray, no run)."""
    from lepton_fed.config import compose

    return lambda *ov: compose(list(ov))
