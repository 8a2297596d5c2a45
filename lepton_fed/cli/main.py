"""The ``lepton-fed`` console script: dispatches to one module per subcommand.

One error path: subcommands raise :class:`~lepton_fed.errors.LeptonError` subclasses and
:func:`main` prints them on stderr in one format (:func:`~lepton_fed.errors.format_error`:
``lepton-fed: error: <message>``, a config error's problems on the lines below) and
returns the error's ``exit_code``. A command line argparse cannot parse is a
:class:`~lepton_fed.errors.UsageError` (exit 2); an optional module that is not installed is
a :class:`~lepton_fed.errors.MissingExtra` (exit 9, naming the pip command). Anything else
is a bug: one short line and exit 1; ``--debug`` (anywhere before a ``--``) or
``LEPTON_FED_DEBUG=1`` adds the traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import traceback
from collections.abc import Callable
from typing import Any, NoReturn

from lepton_fed.errors import (
    PREFIX,
    LeptonError,
    UsageError,
    debug_requested,
    format_error,
    format_unexpected,
)

__all__ = ["main"]

# Subcommand modules; each exposes register(subparsers). Optional ones may be missing
# while their extra is not installed -- they are then skipped with a note in --help.
MODULES = (
    "simulate",
    "report",
    "privacy",
    "export",
    "serve",
    "federation",
    "dashboard",
    "audit",
)

#: exit code of an unexpected exception (a bug) and of Ctrl-C (128 + SIGINT).
EXIT_BUG, EXIT_INTERRUPTED = 1, 130


class _Parser(argparse.ArgumentParser):
    """argparse whose usage errors are :class:`UsageError` (the one error format)."""

    def error(self, message: str) -> NoReturn:
        where = self.prog.removeprefix("lepton-fed").strip()
        raise UsageError(
            f"{where + ': ' if where else ''}{message} (see {self.prog} --help)"
        )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every available subcommand."""
    parser = _Parser(
        prog="lepton-fed",
        description="Privacy-preserving federated training: simulate, report, export, serve.",
        epilog="Errors print as 'lepton-fed: error: ...' on stderr; the exit code names "
        "the kind (2 config/usage, 3 privacy budget, 4 protocol, 5 model, 6 artifact, "
        "7 run failed, 8 deployment, 9 missing optional extra, 1 unexpected).",
    )
    parser.add_argument(
        "--debug",
        action="store_true",
        help="show the traceback of an error (also LEPTON_FED_DEBUG=1)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in MODULES:
        try:
            mod = importlib.import_module(f"lepton_fed.cli.{name}")
        except ImportError as exc:
            if (
                isinstance(exc, ModuleNotFoundError)
                and exc.name == f"lepton_fed.cli.{name}"
            ):
                continue  # a subcommand this checkout does not have
            p = sub.add_parser(name, help=f"(unavailable: {exc})", add_help=False)
            p.add_argument("rest", nargs=argparse.REMAINDER)
            p.set_defaults(func=_unavailable(exc, name))
            continue
        mod.register(sub)
    return parser


def _unavailable(exc: ImportError, name: str) -> Callable[[argparse.Namespace], int]:
    """The handler of a subcommand whose module cannot be imported: raise why."""
    from lepton_fed.utils.extras import as_missing_extra

    def run(_: argparse.Namespace) -> int:
        raise as_missing_extra(exc, f"lepton-fed {name}") or exc

    return run


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    end = argv.index("--") if "--" in argv else len(argv)
    debug = debug_requested() or "--debug" in argv[:end]
    argv = [a for a in argv[:end] if a != "--debug"] + argv[end:]
    if argv and argv[0] == "simulate":  # Hydra owns everything after 'simulate'
        if debug:  # for the Hydra task (simulations/run.py) too
            os.environ["LEPTON_FED_DEBUG"] = "1"
        if "--help" in argv[1:] or "-h" in argv[1:]:
            sys.argv = ["lepton-fed simulate", "--help"]
            from lepton_fed.simulations import run

            run.main()
            return 0
        from lepton_fed.cli.simulate import run_simulate

        return _guard(run_simulate, argparse.Namespace(overrides=argv[1:]), debug=debug)
    return _guard(_dispatch, argv, debug=debug)


def _dispatch(argv: list[str]) -> int:
    if argv[:2] == [
        "privacy",
        "statement",
    ]:  # what a member's privacy officer signs off
        from lepton_fed.observe.statement_cli import run_statement, statement_parser

        return int(run_statement(statement_parser().parse_args(argv[2:])) or 0)
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    return int(args.func(args) or 0)


def _guard(func: Callable[[Any], int | None], arg: Any, *, debug: bool) -> int:
    """Run ``func(arg)``; map every exception to the one error format and an exit code."""
    from lepton_fed.utils.extras import as_missing_extra

    try:
        return int(func(arg) or 0)
    except LeptonError as exc:
        if debug:
            traceback.print_exc()
        print(format_error(exc), file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"{PREFIX} interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # the reader went away (`... | head`): not an error
        # Python would report the pipe again while flushing stdout at exit
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except ImportError as exc:
        extra = as_missing_extra(exc)
        if debug:
            traceback.print_exc()
        if extra is not None:
            print(format_error(extra), file=sys.stderr)
            return extra.exit_code
        print(format_unexpected(exc, debug), file=sys.stderr)
        return EXIT_BUG
    except Exception as exc:  # noqa: BLE001 - the guard: anything else is a bug
        if debug:
            traceback.print_exc()
        print(format_unexpected(exc, debug), file=sys.stderr)
        return EXIT_BUG


if __name__ == "__main__":
    raise SystemExit(main())
