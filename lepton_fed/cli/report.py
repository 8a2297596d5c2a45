"""``lepton-fed report DIR``: a table (CSV + Markdown) and a comparison plot over the
runs found under DIR (a ``-m`` sweep directory, or any folder of run directories)."""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path
from typing import Any

from lepton_fed.errors import ConfigError

__all__ = ["collect_runs", "register", "run"]

COLUMNS = (
    "job",
    "overrides",
    "rounds",
    "accuracy",
    "loss",
    "auc",
    "epsilon",
    "privacy",
    "secagg",
    "bytes_up",
    "wall_seconds",
)


def _overrides(run_dir: Path) -> str:
    p = run_dir / ".hydra" / "overrides.yaml"
    if not p.is_file():
        return ""
    lines = [
        ln.strip()[2:]
        for ln in p.read_text().splitlines()
        if ln.strip().startswith("- ")
    ]
    return " ".join(lines)


def collect_runs(root: Path) -> list[dict[str, Any]]:
    """One row per run directory (a folder holding summary.json) under ``root``."""
    rows = []
    for s in sorted(root.rglob("summary.json"), key=lambda p: str(p)):
        d = s.parent
        try:
            summ = json.loads(s.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ConfigError(f"{s} is not a readable run summary ({exc})") from exc
        if not isinstance(summ, dict):
            raise ConfigError(f"{s} is not a run summary (a JSON object)")
        fin = summ.get("final", {})
        rows.append(
            {
                "job": str(d.relative_to(root)) if d != root else d.name,
                "overrides": _overrides(d),
                "rounds": summ.get("rounds_completed"),
                "accuracy": fin.get("accuracy"),
                "loss": fin.get("loss"),
                "auc": fin.get("auc"),
                "epsilon": summ.get("privacy", {}).get("epsilon"),
                "privacy": summ.get("privacy", {}).get("mode"),
                "secagg": summ.get("secagg", {}).get("enabled"),
                "bytes_up": summ.get("bytes", {}).get("up"),
                "wall_seconds": summ.get("wall_seconds"),
                "_dir": d,
            }
        )
    return rows


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4f}"
    return "" if v is None else str(v)


def _plot(rows: list[dict[str, Any]], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for r in rows:
        mfile = r["_dir"] / "metrics.jsonl"
        if not mfile.is_file():
            continue
        pts = [json.loads(x) for x in mfile.read_text().splitlines() if x.strip()]
        ax.plot(
            [p["round"] for p in pts],
            [p.get("accuracy") for p in pts],
            marker=".",
            label=(r["overrides"] or r["job"])[:60],
        )
    ax.set_xlabel("round")
    ax.set_ylabel("test accuracy")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def run(args: argparse.Namespace) -> int:
    """Write report.csv, report.md and report.png into DIR (or --out).

    Raises:
        ConfigError: DIR is not a directory, holds no run, or a summary is unreadable.
    """
    root = Path(args.dir)
    if not root.is_dir():
        raise ConfigError(
            f"report: {root} is not a directory (give a sweep directory such "
            "as multirun/DATE/TIME, or any folder of run directories)"
        )
    rows = collect_runs(root)
    if not rows:
        raise ConfigError(
            f"report: no run directories (folders with summary.json) under {root}"
        )
    out = Path(args.out) if args.out else root
    out.mkdir(parents=True, exist_ok=True)
    with (out / "report.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(COLUMNS)
        for r in rows:
            w.writerow([r[c] for c in COLUMNS])
    md = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    md += ["| " + " | ".join(_fmt(r[c]) for c in COLUMNS) + " |" for r in rows]
    (out / "report.md").write_text("\n".join(md) + "\n")
    _plot(rows, out / "report.png")
    print("\n".join(md))
    print(f"\nwrote {out / 'report.csv'}, {out / 'report.md'}, {out / 'report.png'}")
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``report`` subcommand to ``sub``."""
    p = sub.add_parser("report", help="table + plot over the runs of a sweep directory")
    p.add_argument("dir", help="sweep directory (e.g. multirun/DATE/TIME)")
    p.add_argument("--out", default=None, help="where to write (default: DIR)")
    p.set_defaults(func=run)
