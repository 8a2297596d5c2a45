"""Exception hierarchy: one root, one subclass per subsystem, each with a CLI exit code."""

from __future__ import annotations

__all__ = [
    "ArtifactError",
    "ConfigError",
    "IncompatibleModelError",
    "LeptonError",
    "PrivacyBudgetExhausted",
    "ProtocolAbort",
    "RunFailed",
]


class LeptonError(Exception):
    """Root of every error lepton-fed raises on purpose.

    ``exit_code`` is what the ``lepton-fed`` CLI exits with when the error reaches it.
    """

    exit_code: int = 1


class ConfigError(LeptonError):
    """One or more configuration problems, reported all at once.

    Args:
        problems: every problem found, each a full sentence naming the key at fault
            and, where there is a fixed set, the valid choices.
    """

    exit_code = 2

    def __init__(self, problems: list[str] | str) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"{len(self.problems)} configuration problem(s):\n{lines}")


class PrivacyBudgetExhausted(LeptonError):
    """A node's privacy budget would be exceeded by the requested work."""

    exit_code = 3


class ProtocolAbort(LeptonError):
    """Secure aggregation cannot complete safely; the round must be abandoned."""

    exit_code = 4


class IncompatibleModelError(LeptonError):
    """A model cannot be used as asked (e.g. a layer Opacus cannot handle)."""

    exit_code = 5


class ArtifactError(LeptonError):
    """A serving artifact is missing, malformed, or fails its hash/signature check."""

    exit_code = 6


class RunFailed(LeptonError):
    """A federated run could not make progress (e.g. no client succeeded in a round)."""

    exit_code = 7
