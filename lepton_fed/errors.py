"""Exception hierarchy: one root, one subclass per subsystem, each with a CLI exit code.

The ``lepton-fed`` CLI shows every :class:`LeptonError` the same way
(:func:`format_error`) on stderr and exits with its ``exit_code``.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = [
    "ArtifactError",
    "ConfigError",
    "DeployError",
    "IncompatibleModelError",
    "LeptonError",
    "MissingExtra",
    "PrivacyBudgetExhausted",
    "ProtocolAbort",
    "RunFailed",
    "UsageError",
    "debug_requested",
    "format_error",
    "format_unexpected",
]

#: The prefix of every error line the CLI prints.
PREFIX = "lepton-fed: error:"


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


class DeployError(LeptonError):
    """A deployment step cannot go on: a missing file, an unreachable SuperLink, a bad key."""

    exit_code = 8


class UsageError(LeptonError):
    """A command line that cannot be parsed (unknown flag, missing argument)."""

    exit_code = 2


class MissingExtra(LeptonError, ImportError):
    """An optional dependency is not installed; the message names the pip command.

    Also an :class:`ImportError`, so code that treats a missing optional module as
    "feature unavailable" keeps working.

    Args:
        extra: the ``lepton-fed[...]`` extra that installs the modules.
        modules: the modules that could not be imported.
        purpose: what needs them, e.g. ``"lepton-fed serve"``.
    """

    exit_code = 9

    def __init__(self, extra: str, modules: Iterable[str], purpose: str) -> None:
        self.extra, self.modules, self.purpose = extra, tuple(modules), purpose
        names = ", ".join(self.modules)
        super().__init__(
            f"{purpose} needs {names}, which is not installed; "
            f'install the extra: pip install "lepton-fed[{extra}]"'
        )
        self.name = self.modules[0] if self.modules else None


def format_error(exc: BaseException) -> str:
    """The CLI's one error format: ``lepton-fed: error: <message>``.

    A multi-line message (a :class:`ConfigError`'s problem list) keeps its following
    lines; notes added with ``exc.add_note`` follow as ``  (note)`` lines.
    """
    text = str(exc) or type(exc).__name__
    notes = getattr(exc, "__notes__", None) or []
    return "\n".join([f"{PREFIX} {text}", *(f"  ({n})" for n in notes)])


def format_unexpected(exc: BaseException, debug: bool = False) -> str:
    """The one line the CLI prints for an exception that is not a LeptonError (a bug)."""
    first = (str(exc).strip().splitlines() or [""])[0][:300]
    hint = (
        "" if debug else " (rerun with --debug or LEPTON_FED_DEBUG=1 for the traceback)"
    )
    return f"{PREFIX} unexpected {type(exc).__name__}: {first}{hint}"


def debug_requested() -> bool:
    """Whether ``LEPTON_FED_DEBUG`` asks for tracebacks (``lepton-fed --debug`` sets it)."""
    import os

    return os.environ.get("LEPTON_FED_DEBUG", "").strip().lower() in (
        "1",
        "true",
        "yes",
        "on",
    )
