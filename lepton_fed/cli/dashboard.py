"""``lepton-fed dashboard RUN_DIR|MULTIRUN_DIR``: a live dashboard of a run or a sweep.

Serves one page (no external resources) on ``http://HOST:PORT/`` that redraws as the run
writes rounds: accuracy/loss, epsilon per node against the budget, participation and
dropouts, bytes and round time, the nodes, the privacy statement; for a sweep, the runs'
comparison table and accuracy chart. Binds 127.0.0.1 by default.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from lepton_fed.errors import ConfigError

__all__ = ["register", "run"]


def run(args: argparse.Namespace) -> int:
    """Check the arguments, then serve until interrupted."""
    root = Path(args.dir)
    problems = []
    if not root.is_dir():
        problems.append(f"{root} is not a directory (give a run directory such as "
                        "outputs/DATE/TIME, or a sweep directory multirun/DATE/TIME)")
    if not 0 < args.port < 65536:
        problems.append(f"--port {args.port}: must be in 1..65535")
    if args.poll_ms < 100:
        problems.append(f"--poll-ms {args.poll_ms}: must be at least 100")
    if args.ledger_dir is not None and not Path(args.ledger_dir).is_dir():
        problems.append(f"--ledger-dir {args.ledger_dir} is not a directory")
    if problems:
        raise ConfigError(problems)
    from lepton_fed.utils.extras import require

    require("fastapi", "uvicorn", purpose="lepton-fed dashboard")
    import uvicorn

    from lepton_fed.observe.dashboard import create_app
    from lepton_fed.observe.runs import RunIndex

    index = RunIndex(root)
    found = len(index.runs())
    app = create_app(root, poll_ms=args.poll_ms, ledger_dir=args.ledger_dir, index=index)
    print(f"lepton-fed dashboard: {found} run(s) under {root} (more appear as they start); "
          f"open http://{args.host}:{args.port}/  (Ctrl-C stops)", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``dashboard`` subcommand to ``sub``."""
    p = sub.add_parser("dashboard", help="live dashboard of a run or sweep directory",
                       description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dir", help="a run directory or a sweep (multirun) directory")
    p.add_argument("--host", default="127.0.0.1", help="interface (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8765, help="port (default 8765)")
    p.add_argument("--poll-ms", type=int, default=1000,
                   help="how often the page fetches new rounds (default 1000)")
    p.add_argument("--ledger-dir", default=None,
                   help="a node's ledger directory: the statement adds its history")
    p.set_defaults(func=run)
