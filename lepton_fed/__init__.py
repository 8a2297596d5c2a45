"""lepton-fed: privacy-preserving federated training (Flower + Opacus + secure aggregation).

Importing this package does nothing else: no environment variables, no downloads.
"""

from lepton_fed.errors import (
    ArtifactError,
    ConfigError,
    IncompatibleModelError,
    LeptonError,
    PrivacyBudgetExhausted,
    ProtocolAbort,
    RunFailed,
)

__version__ = "0.1.0"

__all__ = [
    "ArtifactError",
    "ConfigError",
    "IncompatibleModelError",
    "LeptonError",
    "PrivacyBudgetExhausted",
    "ProtocolAbort",
    "RunFailed",
    "__version__",
]
