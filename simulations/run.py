"""``lepton-fed simulate`` entry point: compose -> validate -> simulate -> metric.

Run directly too: ``python -m lepton_fed.simulations.run [overrides]`` (``-m`` for sweeps).
Returns the final accuracy, which a Hydra sweeper can optimise.
"""

from __future__ import annotations

import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from lepton_fed.config.paths import conf_dir
from lepton_fed.errors import (
    LeptonError,
    debug_requested,
    format_error,
    format_unexpected,
)


def _fmt(v: object) -> str:
    return f"{v:.4f}" if isinstance(v, int | float) else "n/a"


def headline_table(summary: dict, run_dir: str) -> str:
    """The final console table of a run."""
    fin = summary.get("final", {})
    priv = summary.get("privacy", {})
    rows = [
        ("rounds completed", f"{summary.get('rounds_completed')}/{summary.get('rounds_planned')}"),
        ("clients (per round)", f"{summary.get('num_clients')} ({summary.get('clients_per_round')})"),
        ("test accuracy", _fmt(fin.get("accuracy"))),
        ("test loss", _fmt(fin.get("loss"))),
    ]
    if fin.get("auc") is not None:
        rows.append(("test AUC", _fmt(fin["auc"])))
    eps = priv.get("epsilon")
    rows.append(("privacy", priv.get("mode", "none") + (
        f" (epsilon {eps:.3f}, delta {priv.get('delta')})" if eps is not None else "")))
    rows.append(("secure aggregation", "on" if summary.get("secagg", {}).get("enabled") else "off"))
    b = summary.get("bytes", {})
    rows.append(("bytes up / down", f"{b.get('up', 0):,} / {b.get('down', 0):,}"))
    rows.append(("wall time", f"{summary.get('wall_seconds', 0):.1f} s"))
    rows.append(("run directory", run_dir))
    w = max(len(k) for k, _ in rows)
    line = "+" + "-" * (w + 2) + "+" + "-" * 52 + "+"
    body = "\n".join(f"| {k:<{w}} | {v:<50} |" for k, v in rows)
    return f"{line}\n{body}\n{line}"


@hydra.main(config_path=str(conf_dir()), config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> float:
    """Hydra task: one simulation in Hydra's run (or sweep job) directory."""
    from lepton_fed.simulation import simulate

    run_dir = HydraConfig.get().runtime.output_dir
    try:
        if cfg.get("resume"):  # H5: resume=RUN_DIR continues that run in that directory
            from lepton_fed.server.checkpoint import resume_config

            cfg = resume_config(cfg, HydraConfig.get().overrides.task)
            run_dir = str(cfg.resume)
        summary = simulate(cfg, run_dir)
    except LeptonError as exc:
        print(format_error(exc), file=sys.stderr)
        raise SystemExit(exc.exit_code) from None
    except Exception as exc:  # noqa: BLE001 - one line, like the CLI guard (no Hydra banner)
        if debug_requested():
            raise
        print(format_unexpected(exc), file=sys.stderr)
        raise SystemExit(1) from None
    print(headline_table(summary, run_dir), flush=True)
    acc = summary["final"].get("accuracy")
    return float(acc) if acc is not None else float("nan")


if __name__ == "__main__":
    from lepton_fed.config.compose import plain_slots, precheck

    args = plain_slots(sys.argv[1:])
    try:  # every config problem at once, in the CLI's format, before Hydra starts
        precheck([a for a in args if not a.startswith("-")], multirun="-m" in args
                 or "--multirun" in args)
    except LeptonError as exc:
        print(format_error(exc), file=sys.stderr)
        raise SystemExit(exc.exit_code) from None
    sys.argv = [sys.argv[0], *args]
    main()
