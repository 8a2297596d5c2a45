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
from lepton_fed.errors import LeptonError


def headline_table(summary: dict, run_dir: str) -> str:
    """The final console table of a run."""
    fin = summary.get("final", {})
    priv = summary.get("privacy", {})
    rows = [
        ("rounds completed", f"{summary.get('rounds_completed')}/{summary.get('rounds_planned')}"),
        ("clients (per round)", f"{summary.get('num_clients')} ({summary.get('clients_per_round')})"),
        ("test accuracy", f"{fin.get('accuracy', float('nan')):.4f}"),
        ("test loss", f"{fin.get('loss', float('nan')):.4f}"),
    ]
    if "auc" in fin:
        rows.append(("test AUC", f"{fin['auc']:.4f}"))
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
        summary = simulate(cfg, run_dir)
    except LeptonError as exc:
        print(f"lepton-fed: error: {exc}", file=sys.stderr)
        raise SystemExit(exc.exit_code) from None
    print(headline_table(summary, run_dir), flush=True)
    return float(summary["final"]["accuracy"])


if __name__ == "__main__":
    main()
