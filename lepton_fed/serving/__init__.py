"""Signed serving artifacts: export, verification, offline prediction and HTTP serving.

Importing this package imports numpy only; torch, onnxruntime, fastapi and uvicorn are
imported by the functions that need them (the ``lepton-fed[serve]`` extra).
"""

from lepton_fed.serving.export import export_artifact, export_model
from lepton_fed.serving.http import create_app, serve
from lepton_fed.serving.run_dir import load_run
from lepton_fed.serving.runtime import Predictor, load_artifact
from lepton_fed.serving.signing import (
    Verification,
    load_or_create_signing_key,
    verify_artifact,
)

__all__ = [
    "Predictor",
    "Verification",
    "create_app",
    "export_artifact",
    "export_model",
    "load_artifact",
    "load_or_create_signing_key",
    "load_run",
    "serve",
    "verify_artifact",
]
