"""RDP vs PLD accounting: epsilon at the same sigma, sigma for the same target, and the
time each takes for what lepton-fed does with it (calibration once per run, a ledger
budget check every round).

Run: ``python benchmarks/dp_accountants.py`` (writes ``benchmarks/results/dp_accountants.json``;
~1 minute).

Settings are the DP-SGD schedules of our datasets and presets (client size n, batch b,
local epochs, rounds) plus Opacus's pinned example, at delta 1e-5:

* ``epsilon_at_sigma``: epsilon of the same (sigma, q, steps) under both accountants
  (sigma is the one RDP calibrates for the target), and PLD's relative saving;
* ``sigma_for_target``: the sigma each accountant needs for the target (less noise for
  the same guarantee), and the calibration time (cold: caches cleared);
* ``ledger_check``: one budget check of the last round's history, with the
  per-(sigma, q) step already computed (as on a node from round 2 on), and the first
  check of a process (``ledger_first_check``: nothing cached).

Both accountants are upper bounds on the true epsilon; PLD's grid is
``lepton_fed.privacy.pld.PLD_DISCRETIZATION`` (1e-3), pessimistic.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import machine, print_table, write_result  # noqa: E402

DELTA = 1e-5
# name, examples per client, batch, local epochs, rounds, target epsilon
SETTINGS: list[tuple[str, int, int, int, int, float]] = [
    ("digits 10 clients, preset", 144, 16, 1, 10, 3.0),
    ("digits 20 clients, b16", 72, 16, 1, 8, 3.0),
    ("digits 20 clients, full batch x4", 72, 72, 4, 8, 3.0),
    ("breast cancer 10 clients", 45, 16, 1, 5, 1.0),
    ("heart disease Swiss site", 30, 4, 1, 15, 1.0),
    ("MNIST 500/client full batch", 500, 500, 1, 20, 3.0),
    ("long run, q=0.04", 1250, 50, 90, 25, 8.0),
]


def _clear_caches() -> None:
    from lepton_fed.privacy import analysis, pld

    analysis._rdp_one_step.cache_clear()
    analysis._calibrated_sigma.cache_clear()
    pld._subsampled_gaussian.cache_clear()
    pld._epsilon_cached.cache_clear()


def main() -> int:
    from lepton_fed.privacy.analysis import (
        epsilon_for,
        local_schedule,
        noise_multiplier_for,
    )
    from lepton_fed.privacy.ledger import PrivacyEvent, PrivacyLedger

    epsilon_for(noise_multiplier=1.0, sample_rate=0.1, steps=1, delta=DELTA)  # imports
    epsilon_for(noise_multiplier=1.0, sample_rate=0.1, steps=1, delta=DELTA,
                accountant="pld")
    rows: list[dict[str, Any]] = []
    for name, n, b, epochs, rounds, target in SETTINGS:
        sch = local_schedule(num_examples=n, batch_size=b, epochs=epochs)
        steps = rounds * sch.steps
        sig: dict[str, float] = {}
        cal_s: dict[str, float] = {}
        for acc in ("rdp", "pld"):
            _clear_caches()
            t0 = time.perf_counter()
            sig[acc] = noise_multiplier_for(target_epsilon=target, delta=DELTA,
                                            sample_rate=sch.sample_rate, steps=steps,
                                            accountant=acc)
            cal_s[acc] = time.perf_counter() - t0
        eps = {acc: epsilon_for(noise_multiplier=sig["rdp"], sample_rate=sch.sample_rate,
                                steps=steps, delta=DELTA, accountant=acc)
               for acc in ("rdp", "pld")}
        check_ms: dict[str, float] = {}
        cold_ms: dict[str, float] = {}
        for acc in ("rdp", "pld"):
            ledger = PrivacyLedger(dataset="bench")
            ev = PrivacyEvent(noise_multiplier=sig[acc], sample_rate=sch.sample_rate,
                              steps=sch.steps)
            for _ in range(rounds - 2):
                ledger.record(ev)
            _clear_caches()
            t0 = time.perf_counter()  # a node's first check: nothing cached
            ledger.can_afford(ev, target_epsilon=target, delta=DELTA, accountant=acc)
            cold_ms[acc] = 1e3 * (time.perf_counter() - t0)
            ledger.record(ev)
            t0 = time.perf_counter()  # later rounds: the step's distribution is cached
            ledger.can_afford(ev, target_epsilon=target, delta=DELTA, accountant=acc)
            check_ms[acc] = 1e3 * (time.perf_counter() - t0)
        rows.append({
            "setting": name, "examples": n, "batch": b, "local_epochs": epochs,
            "rounds": rounds, "sample_rate": sch.sample_rate, "steps": steps,
            "target_epsilon": target, "sigma_rdp": sig["rdp"], "sigma_pld": sig["pld"],
            "epsilon_rdp_at_sigma_rdp": eps["rdp"], "epsilon_pld_at_sigma_rdp": eps["pld"],
            "pld_saving_pct": 100 * (1 - eps["pld"] / eps["rdp"]),
            "sigma_saving_pct": 100 * (1 - sig["pld"] / sig["rdp"]),
            "calibration_s_rdp": cal_s["rdp"], "calibration_s_pld": cal_s["pld"],
            "ledger_check_ms_rdp": check_ms["rdp"], "ledger_check_ms_pld": check_ms["pld"],
            "ledger_first_check_ms_rdp": cold_ms["rdp"],
            "ledger_first_check_ms_pld": cold_ms["pld"],
        })
    print_table(
        ["setting", "q", "steps", "eps RDP", "eps PLD", "PLD saves", "sigma RDP",
         "sigma PLD", "calib s RDP", "calib s PLD", "check ms RDP", "check ms PLD",
         "1st check ms RDP", "1st check ms PLD"],
        [[r["setting"], f"{r['sample_rate']:.3f}", r["steps"],
          f"{r['epsilon_rdp_at_sigma_rdp']:.3f}", f"{r['epsilon_pld_at_sigma_rdp']:.3f}",
          f"{r['pld_saving_pct']:.1f}%", f"{r['sigma_rdp']:.3f}", f"{r['sigma_pld']:.3f}",
          f"{r['calibration_s_rdp']:.2f}", f"{r['calibration_s_pld']:.2f}",
          f"{r['ledger_check_ms_rdp']:.1f}", f"{r['ledger_check_ms_pld']:.1f}",
          f"{r['ledger_first_check_ms_rdp']:.1f}", f"{r['ledger_first_check_ms_pld']:.1f}"]
         for r in rows],
        title=f"RDP vs PLD at delta {DELTA:g} (epsilon at RDP's calibrated sigma; the sigma "
        "each needs for the target)",
    )
    path = write_result("dp_accountants", {"delta": DELTA, "rows": rows, "env": machine()})
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
