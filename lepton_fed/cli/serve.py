"""``lepton-fed serve``: serve a verified artifact over HTTP (uvicorn, one worker).

Usage::

    lepton-fed serve DIR [--host 127.0.0.1] [--port 8080] [--public-key PATH]

Also runnable as ``python -m lepton_fed.cli.serve DIR ...``.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from lepton_fed.errors import LeptonError

__all__ = ["register", "run"]


def _add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("artifact_dir", metavar="DIR", help="artifact written by `export`")
    p.add_argument(
        "--host", default="127.0.0.1", help="bind address (default 127.0.0.1)"
    )
    p.add_argument("--port", type=int, default=8080, help="port (default 8080)")
    p.add_argument(
        "--public-key",
        metavar="PATH",
        help="trusted Ed25519 public key (default: the artifact's embedded signer.pub)",
    )
    p.add_argument("--max-batch", type=int, default=1024, help="most rows per request")
    p.add_argument(
        "--threads", type=int, default=1, help="ONNX Runtime intra-op threads"
    )
    p.add_argument("--access-log", action="store_true", help="log every request")
    p.add_argument("--log-level", default="info", help="uvicorn log level")


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``serve`` parser to ``subparsers`` (``set_defaults(func=run)``)."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "serve",
        help="serve a signed artifact over HTTP",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_arguments(p)
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Verify, then serve until interrupted; returns 0 or raises a LeptonError.

    A tampered or unverifiable artifact raises (with a note that nothing was started)
    before the port is opened.

    Raises:
        MissingExtra: the ``serve`` extra (fastapi, uvicorn; onnxruntime for ONNX) is missing.
        ArtifactError: the artifact fails verification or does not load.
    """
    from lepton_fed.serving.http import serve
    from lepton_fed.utils.extras import require

    require("fastapi", "uvicorn", purpose="lepton-fed serve")
    try:
        serve(
            args.artifact_dir,
            host=args.host,
            port=args.port,
            max_batch=args.max_batch,
            trusted_public_key=args.public_key,
            threads=args.threads,
            access_log=args.access_log,
            log_level=args.log_level,
        )
    except LeptonError as e:
        e.add_note(f"refusing to serve {args.artifact_dir}; nothing was started")
        raise
    return 0


def main(argv: list[str] | None = None) -> int:
    """Standalone entry point (``python -m lepton_fed.cli.serve``): ``lepton-fed serve``."""
    from lepton_fed.cli.main import main as cli_main

    return cli_main(["serve", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
