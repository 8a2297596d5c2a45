"""Robust aggregation under attack: clean vs 10/20/30 % malicious clients.

Run: ``python benchmarks/robustness.py [--rounds 10] [--attacks sign_flip,gaussian,...]``
(writes ``benchmarks/results/robustness.json``; in-process grid, no Ray; a few minutes).

Task: sklearn digits, IID over 10 clients, all 10 every round, MLP, the client defaults
(1 local epoch), ``--rounds`` rounds, seed 0; the server evaluates the final model on
the held-out split. Attackers are the ``attack`` config group's seeded partitions
(:mod:`lepton_fed.client.attack`), so with 10 clients 10/20/30 % is 1/2/3 attackers in
every round. Defences: FedAvg; Krum assuming up to 3 attackers
(``strategy.num_malicious_nodes=3``); coordinate-wise trimmed mean cutting 30 % each
side (``strategy.beta=0.3``); coordinate-wise median. Reported: final accuracy per
(attack, fraction, strategy) and the drop from that strategy's clean accuracy.

Needs the attack hook in ``lepton_fed/client/round.py`` (``poison_labels`` and
``poison_update``); the script refuses to run without it rather than report attacks
that never happened.
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import io
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import print_table, write_result  # noqa: E402

STRATEGIES: dict[str, list[str]] = {
    "fedavg": ["strategy=fedavg"],
    "krum": ["strategy=krum", "strategy.num_malicious_nodes=3"],
    "trimmed_mean": ["strategy=trimmed_mean", "strategy.beta=0.3"],
    "median": ["strategy=median"],
}
ATTACKS: dict[str, list[str]] = {
    "sign_flip": ["attack=sign_flip", "attack.scale=1.0"],
    "scaling": ["attack=scaling", "attack.factor=10.0"],
    "label_flip": ["attack=label_flip"],
    "gaussian": ["attack=gaussian", "attack.std=1.0"],
}
FRACTIONS = (0.1, 0.2, 0.3)


def _hook_present() -> bool:
    import lepton_fed.client.round as client_round

    src = inspect.getsource(client_round)
    return "poison_update(" in src and "poison_labels(" in src


def run_one(overrides: list[str], rounds: int) -> dict[str, Any]:
    """One in-process federation; its final accuracy and seconds."""
    from lepton_fed.client import app as client_module
    from lepton_fed.config import compose
    from lepton_fed.config.validate import raise_if, validate
    from lepton_fed.inprocess import InProcessGrid
    from lepton_fed.server.outputs import RunWriter
    from lepton_fed.server.rounds import run_federation

    cfg = compose(["data=digits", "model=mlp", "federation.num_clients=10",
                   "federation.clients_per_round=10", f"federation.rounds={rounds}",
                   f"federation.evaluate_every={rounds}", *overrides])
    raise_if(validate(cfg))
    logging.getLogger("flwr").setLevel(logging.ERROR)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as d, contextlib.redirect_stdout(io.StringIO()):
        s = run_federation(InProcessGrid(client_module.app, 10), cfg, RunWriter(d))
    return {"accuracy": float(s["final"]["accuracy"]), "failures": s["failures"],
            "seconds": time.perf_counter() - t0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--attacks", default=",".join(ATTACKS))
    args = ap.parse_args()
    if not _hook_present():
        raise SystemExit("lepton_fed/client/round.py does not call poison_labels/"
                         "poison_update (lepton_fed.client.attack): no attack would run")
    logging.getLogger("flwr").setLevel(logging.ERROR)
    attacks = [a for a in args.attacks.split(",") if a]
    results: list[dict[str, Any]] = []
    clean: dict[str, float] = {}
    for strat, sov in STRATEGIES.items():
        r = run_one(sov, args.rounds)
        clean[strat] = r["accuracy"]
        results.append({"strategy": strat, "attack": "none", "fraction": 0.0, **r})
        print(f"clean {strat}: {r['accuracy']:.4f} ({r['seconds']:.1f}s)", flush=True)
    for attack in attacks:
        for frac in FRACTIONS:
            for strat, sov in STRATEGIES.items():
                r = run_one([*sov, *ATTACKS[attack], f"attack.fraction={frac}"], args.rounds)
                results.append({"strategy": strat, "attack": attack, "fraction": frac, **r,
                                "drop_points": 100 * (clean[strat] - r["accuracy"])})
                print(f"{attack} {frac:.0%} {strat}: {r['accuracy']:.4f}", flush=True)
    for attack in attacks:
        rows = []
        for strat in STRATEGIES:
            accs = [next(x["accuracy"] for x in results if x["strategy"] == strat
                         and x["attack"] == attack and x["fraction"] == f) for f in FRACTIONS]
            rows.append([strat, clean[strat], *accs])
        print_table(["strategy", "clean", "10 %", "20 %", "30 %"], rows,
                    title=f"\nfinal accuracy, digits, attack={attack} {' '.join(ATTACKS[attack][1:])}")
    path = write_result("robustness", {
        "task": {"data": "digits", "partition": "iid", "model": "mlp", "num_clients": 10,
                 "clients_per_round": 10, "rounds": args.rounds, "seed": 0},
        "strategies": STRATEGIES, "attacks": {a: ATTACKS[a] for a in attacks},
        "clean": clean, "results": results})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
