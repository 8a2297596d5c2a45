"""``lepton-fed simulate [overrides]`` and ``lepton-fed validate [overrides]``.

Both check every override before anything starts and raise one
:class:`~lepton_fed.errors.ConfigError` listing every problem (the CLI guard prints it).
"""

from __future__ import annotations

import argparse
import os
import sys

__all__ = ["register", "run_simulate", "run_validate"]


#: Hydra flags that take a value (``--cfg job``): the value is not an override.
_VALUED = {
    "--cfg",
    "-c",
    "--package",
    "-p",
    "--config-path",
    "-cp",
    "--config-name",
    "-cn",
    "--config-dir",
    "-cd",
    "--experimental-rerun",
}
_INFO = {"all", "config", "defaults", "defaults-tree", "plugins", "searchpath"}


def _split_args(args: list[str]) -> tuple[list[str], bool]:
    overrides: list[str] = []
    skip = False
    for i, a in enumerate(args):
        if skip:
            skip = False
        elif a in _VALUED or (
            a in ("--info", "-i") and args[i + 1 : i + 2] and args[i + 1] in _INFO
        ):
            skip = True
        elif not a.startswith("-") and not a.startswith("hydra."):
            overrides.append(a)
    multirun = "-m" in args or "--multirun" in args
    return overrides, multirun


def run_validate(args: argparse.Namespace) -> int:
    """Compose and check a config: print OK (exit 0) or raise ConfigError (exit 2)."""
    from lepton_fed.config.compose import precheck, to_yaml

    overrides, multirun = _split_args(args.overrides)
    cfgs = precheck(overrides, multirun=multirun)
    if args.show:
        print(to_yaml(cfgs[0]))
    print(f"config OK ({len(cfgs)} job(s))")
    return 0


def run_simulate(args: argparse.Namespace) -> int:
    """Pre-check every override (all problems at once), then hand over to Hydra.

    Hydra is told to re-raise what a job raises (``HYDRA_FULL_ERROR``) instead of
    printing its own trace, so an unexpected error reaches the CLI guard too.
    """
    from lepton_fed.config.compose import plain_slots, precheck

    overrides, multirun = _split_args(args.overrides)
    precheck(overrides, multirun=multirun)
    from lepton_fed.simulations import run

    os.environ.setdefault("HYDRA_FULL_ERROR", "1")
    sys.argv = ["lepton-fed simulate", *plain_slots(args.overrides)]
    run.main()
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``simulate`` and ``validate`` subcommands to ``sub``."""
    p = sub.add_parser(
        "simulate",
        help="run a simulation (Hydra overrides; -m for sweeps)",
        add_help=False,
    )
    p.add_argument("overrides", nargs=argparse.REMAINDER)
    p.set_defaults(func=run_simulate)
    v = sub.add_parser("validate", help="check a config without running it")
    v.add_argument("--show", action="store_true", help="print the composed config")
    v.add_argument("overrides", nargs=argparse.REMAINDER)
    v.set_defaults(func=run_validate)
