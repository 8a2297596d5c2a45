"""The ``lepton-fed`` console script: dispatches to one module per subcommand."""

from __future__ import annotations

import argparse
import importlib
import sys

from lepton_fed.errors import LeptonError

__all__ = ["main"]

# Subcommand modules; each exposes register(subparsers). Optional ones may be missing
# while their extra is not installed -- they are then skipped with a note in --help.
MODULES = ("simulate", "report", "privacy", "export", "serve", "federation")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every available subcommand."""
    parser = argparse.ArgumentParser(
        prog="lepton-fed",
        description="Privacy-preserving federated training: simulate, report, export, serve.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in MODULES:
        try:
            mod = importlib.import_module(f"lepton_fed.cli.{name}")
        except ImportError as exc:
            sub.add_parser(name, help=f"(unavailable: {exc})")
            continue
        mod.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if argv and argv[0] == "simulate":  # Hydra owns everything after 'simulate'
        from lepton_fed.cli.simulate import run_simulate

        if "--help" in argv[1:] or "-h" in argv[1:]:
            sys.argv = ["lepton-fed simulate", "--help"]
            from lepton_fed.simulations import run

            run.main()
            return 0
        return _guard(run_simulate, argparse.Namespace(overrides=argv[1:]))
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0 if not argv else 2
    return _guard(args.func, args)


def _guard(func, args) -> int:  # type: ignore[no-untyped-def]
    try:
        return int(func(args) or 0)
    except LeptonError as exc:
        print(f"lepton-fed: error: {exc}", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    raise SystemExit(main())
