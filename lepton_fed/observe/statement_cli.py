"""``lepton-fed privacy statement RUN_DIR [--node NAME] [--ledger-dir DIR] [--policy FILE]
[--json]``: the per-member privacy statement (:mod:`lepton_fed.observe.statement`) on
the console. The ``privacy`` command hands ``statement ...`` over to :func:`run_statement`.
"""

from __future__ import annotations

import argparse
import json

__all__ = ["run_statement", "statement_parser"]


def statement_parser() -> argparse.ArgumentParser:
    """The arguments of ``lepton-fed privacy statement``."""
    p = argparse.ArgumentParser(
        prog="lepton-fed privacy statement",
        description="What a member's privacy officer signs off for a run: the mechanism, "
                    "epsilon and delta spent per node (and over the ledger's history), "
                    "what left the node in the clear, who could see what.")
    p.add_argument("run_dir", help="the run directory (config.yaml, summary.json)")
    p.add_argument("--node", default=None, help="only this node (its name in the run)")
    p.add_argument("--ledger-dir", default=None,
                   help="the node's ledger directory: adds the spend over every run")
    p.add_argument("--policy", default=None,
                   help="the node's policy file (default: the run config's node_policy)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    return p


def run_statement(args: argparse.Namespace) -> int:
    """Print the statement; a bad directory, node, policy or ledger raises ConfigError
    (or LedgerError), which the CLI reports with its exit code."""
    from lepton_fed.observe.statement import build_statement, render_statement

    st = build_statement(args.run_dir, node=args.node, ledger_dir=args.ledger_dir,
                         policy_path=args.policy)
    print(json.dumps(st, indent=2) if args.json else render_statement(st), end="")
    if args.json:
        print()
    return 0
