"""The empirical privacy audit (``lepton-fed audit``) on digits: its one-run lower bound
on epsilon beside the accounted epsilon for epsilon 1, 3, 8, membership-inference AUC
with and without DP, and the audit's wall time.

Run: ``python benchmarks/dp_audit.py [--reps 2] [--canaries 200] [--conf DIR]``
(writes ``benchmarks/results/dp_audit.json``; ~3 minutes on 2 shared cores).

Setup (what a user types): ``data=digits federation.num_clients=10
federation.clients_per_round=10`` and ``privacy=dpsgd privacy.epsilon=E`` (the DP
defaults: logistic regression, each node's DP rule, PLD), or ``privacy=none`` twice:
with the default model (MLP) and with the DP runs' model (logistic regression), so the
membership-inference AUC is compared on the same model. Each row is
:func:`lepton_fed.cli.audit.run_audit` (canaries, one in-process training run).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
import warnings
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import mean_std, print_table, write_result  # noqa: E402
from privacy_utility import compose  # noqa: E402

USER = ["data=digits", "federation.num_clients=10", "federation.clients_per_round=10"]
VARIANTS: dict[str, list[str]] = {
    "dpsgd eps=1": ["privacy=dpsgd", "privacy.epsilon=1"],
    "dpsgd eps=3": ["privacy=dpsgd", "privacy.epsilon=3"],
    "dpsgd eps=8": ["privacy=dpsgd", "privacy.epsilon=8"],
    "none (mlp, default model)": ["privacy=none"],
    "none (logreg, the DP model)": ["privacy=none", "model=logreg"],
}
KEYS = ("epsilon_lower_bound", "epsilon_lower_bound_final_model", "canary_auc",
        "canary_auc_final_model", "mia_auc", "accuracy", "wall_seconds")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--canaries", type=int, default=200)
    ap.add_argument("--conf", default=None, help="config directory (default: package)")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    import torch

    from lepton_fed.cli.audit import run_audit

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    rows: dict[str, Any] = {}
    for name, ov in VARIANTS.items():
        runs = [run_audit(compose([*USER, *ov, f"seed={i}"], args.conf),
                          canaries=args.canaries) for i in range(args.reps)]
        agg = {k: mean_std([float(r[k]) for r in runs]) for k in KEYS}
        rows[name] = {"overrides": [*USER, *ov], "runs": runs,
                      "epsilon_accounted": runs[0]["epsilon_accounted"],
                      "passed_all": all(r["passed"] for r in runs),
                      **{f"{k}_mean": v[0] for k, v in agg.items()},
                      **{f"{k}_std": v[1] for k, v in agg.items()}}
        r = rows[name]
        print(f"{name}: bound {r['epsilon_lower_bound_mean']:.3f} (accounted "
              f"{r['epsilon_accounted']}), MIA AUC {r['mia_auc_mean']:.3f}, "
              f"{r['wall_seconds_mean']:.1f} s", flush=True)

    def ms(r: dict[str, Any], k: str) -> str:
        return f"{r[k + '_mean']:.3f}±{r[k + '_std']:.3f}"

    print_table(
        ["run", "accounted eps", "audit eps >= (server view)", "(final model)",
         "canary AUC", "MIA AUC (train vs held-out)", "accuracy", "audit s", "pass"],
        [[n, "-" if r["epsilon_accounted"] is None else f"{r['epsilon_accounted']:.3f}",
          ms(r, "epsilon_lower_bound"), ms(r, "epsilon_lower_bound_final_model"),
          ms(r, "canary_auc"), ms(r, "mia_auc"), ms(r, "accuracy"),
          f"{r['wall_seconds_mean']:.1f}", "yes" if r["passed_all"] else "NO"]
         for n, r in rows.items()],
        title=f"\nOne-run audit on digits, {args.canaries} canaries, 95% confidence, "
        f"{args.reps} repetition(s)")
    path = write_result("dp_audit", {"canaries": args.canaries, "reps": args.reps,
                                     "rows": rows, "conf": args.conf or "package",
                                     "wall_s": time.perf_counter() - t0})
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
