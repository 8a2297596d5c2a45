"""``lepton-fed export``: build a signed serving artifact, or verify one.

Usage::

    lepton-fed export RUN_DIR --out DIR [--prune magnitude:0.5] [--signing-key PATH]
    lepton-fed export --verify DIR [--public-key PATH]
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from lepton_fed.compression.quantize import QUANTIZATION_MODES
from lepton_fed.errors import UsageError

__all__ = ["register", "run"]


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``export`` parser to ``subparsers`` (``set_defaults(func=run)``)."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "export",
        help="compress, quantize and sign a run's model; or --verify an artifact",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "run_dir", nargs="?", metavar="RUN_DIR", help="a simulate run directory"
    )
    p.add_argument("--out", metavar="DIR", help="artifact directory to create")
    p.add_argument(
        "--prune",
        default="none",
        help="none | magnitude:AMOUNT | structured:AMOUNT (default: none)",
    )
    p.add_argument(
        "--signing-key",
        metavar="PATH",
        help="Ed25519 PEM private key (default: local key under $LEPTON_FED_HOME or "
        "~/.lepton-fed, created on first use)",
    )
    p.add_argument(
        "--quantization",
        default="auto",
        choices=QUANTIZATION_MODES,
        help="int8 method (default: auto = the best measured ONNX Runtime int8 model)",
    )
    p.add_argument(
        "--calibration-rows",
        type=int,
        default=256,
        help="held-out rows to calibrate static int8 (0 disables static)",
    )
    p.add_argument(
        "--max-accuracy-drop",
        type=float,
        default=0.02,
        help="reject int8 if it loses more held-out accuracy than this (default 0.02)",
    )
    p.add_argument(
        "--overwrite", action="store_true", help="replace an existing artifact"
    )
    p.add_argument(
        "--verify", metavar="DIR", help="verify an artifact instead of exporting"
    )
    p.add_argument(
        "--public-key", metavar="PATH", help="trusted Ed25519 public key for --verify"
    )
    p.set_defaults(func=run)
    return p


def _verify(args: argparse.Namespace) -> int:
    from lepton_fed.serving.signing import verify_artifact

    result = verify_artifact(args.verify, args.public_key)
    print(result.message)
    return 0


def run(args: argparse.Namespace) -> int:
    """Run ``export`` (or ``export --verify``); returns 0 or raises a LeptonError.

    Raises:
        UsageError: RUN_DIR/--out missing, or given together with --verify.
        ConfigError: a bad option value or output directory.
        MissingExtra: the ``serve`` extra (onnx, onnxruntime, onnxscript) is missing.
        ArtifactError: the run directory or the artifact to verify is unusable.
    """
    if args.verify:
        if args.run_dir or args.out:
            raise UsageError("export: --verify takes no RUN_DIR or --out")
        return _verify(args)
    if not args.run_dir or not args.out:
        raise UsageError("export: needs RUN_DIR and --out DIR (or --verify DIR)")
    from lepton_fed.serving.export import export_artifact

    out = export_artifact(
        args.run_dir,
        args.out,
        prune=args.prune,
        signing_key_path=args.signing_key,
        quantization=args.quantization,
        calibration=args.calibration_rows or None,
        max_accuracy_drop=args.max_accuracy_drop,
        overwrite=args.overwrite,
    )
    m = json.loads((out / "manifest.json").read_text())
    ev, rt = m["evaluation"], m["runtime"]
    acc = ev["accuracy"]
    print(f"artifact: {out}")
    print(
        f"  runtime: {rt['engine']} {rt['precision']} ({rt['method']}) -> {rt['file']}"
    )
    if rt.get("preprocessing") == "graph":
        shapes = ", ".join(f"{i['name']}[{len(i['columns'])}]" for i in rt["inputs"])
        print(f"  graph inputs (raw values, scaled in the graph): {shapes}")
    print(
        f"  held-out accuracy: fp32 {acc['fp32']:.4f}, served {acc['served']:.4f} "
        f"(pruning cost {m['pruning']['accuracy_cost']:+.4f})"
    )
    print(
        f"  size: {ev['size_bytes']['served']} B "
        f"({ev['size_bytes']['ratio_served_vs_fp32']:.2f}x fp32)"
    )
    lat = ev["latency_us"]
    print(
        f"  latency p50 (1 thread): b1 {lat['served']['b1']['p50_us']:.0f} us, "
        f"b64 {lat['served']['b64']['p50_us']:.0f} us "
        f"({lat['speedup_b64']:.1f}x fp32 torch at b64)"
    )
    for note in m["quantization"]["notes"]:
        print(f"  note: {note}")
    print(f"  signed by {m['signer']['key_fingerprint']}")
    return 0
