"""``lepton-fed privacy``: the epsilon a planned run would spend, without training.

Examples::

    lepton-fed privacy --mode dpsgd --rounds 5 --examples 144 --batch-size 16 --sigma 0.88
    lepton-fed privacy --mode dpsgd --rounds 5 --examples 144 --batch-size 16 \\
        --target-epsilon 8
    lepton-fed privacy --mode central --rounds 20 --clients-per-round 10 --sigma 1.0
    lepton-fed privacy --mode distributed --rounds 20 --clients-per-round 20 --dim 650 \
        --target-epsilon 3
    lepton-fed privacy statement RUN_DIR [--node NAME] [--ledger-dir DIR]
    lepton-fed privacy --mode dpsgd --rounds 5 --examples 144 --batch-size 16 \\
        --target-epsilon 8 --accountant rdp

Both accountants' epsilons are printed; ``--accountant`` (default pld, as
``privacy.accountant``) is the one that calibrates sigma for ``--target-epsilon``. Both
are upper bounds on the true epsilon; PLD (privacy loss distributions) is the tighter.

dpsgd: sample-level epsilon of ONE client, assuming it trains in every round (the
worst case: a client sampled less often spends less; client sampling is not used
for amplification). Poisson sampling rate and steps are what Opacus runs
(``q = 1/ceil(examples/batch)``).
central: client-level epsilon of the released global models; every round counts in
full (no amplification by client sampling), so ``--clients-per-round`` only sets
the noise std on the mean, ``sigma*clip/m``.
distributed: client-level epsilon when every node adds a discrete Gaussian share inside
the secure sum (Kairouz, Liu & Steinke 2021): the plan (field granularity gamma, noise
share, wrap-around bound) for ``--dim`` parameters, sized for ``--min-contributors``
honest shares (``--colluding-fraction`` of the cohort assumed to collude).
``privacy statement RUN_DIR``: what a member's privacy officer signs off (see
``lepton-fed privacy statement --help``).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from typing import Any

from lepton_fed.errors import ConfigError, format_error
from lepton_fed.privacy.pld import ACCOUNTANTS, DEFAULT_ACCOUNTANT

__all__ = ["register", "run"]


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add the ``privacy`` subcommand to the ``lepton-fed`` parser."""
    p = subparsers.add_parser(
        "privacy",
        help="epsilon a planned configuration would spend (or the sigma it needs)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--mode", choices=["dpsgd", "central", "distributed"], default="dpsgd"
    )
    p.add_argument("--rounds", type=int, required=True, help="federated rounds")
    p.add_argument(
        "--local-epochs", type=int, default=1, help="dpsgd: epochs per round"
    )
    p.add_argument("--batch-size", type=int, help="dpsgd: expected Poisson batch size")
    p.add_argument(
        "--examples", type=int, help="dpsgd: training examples of the client"
    )
    p.add_argument(
        "--clients-per-round", type=int, help="central: clients averaged per round"
    )
    p.add_argument(
        "--clip",
        type=float,
        default=1.0,
        help="central/distributed: update clipping norm",
    )
    p.add_argument("--dim", type=int, help="distributed: model parameters")
    p.add_argument(
        "--min-contributors",
        type=int,
        help="distributed: smallest cohort the noise is sized for "
        "(default --clients-per-round)",
    )
    p.add_argument(
        "--colluding-fraction",
        type=float,
        default=0.05,
        help="distributed: share of the cohort assumed to collude (default 0.05)",
    )
    p.add_argument(
        "--bits", type=int, default=32, help="distributed: field bits (default 32)"
    )
    p.add_argument(
        "--wrap-bits",
        type=float,
        default=40.0,
        help="distributed: wrap-around probability <= 2^-wrap_bits (default 40)",
    )
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument(
        "--sigma", type=float, help="noise multiplier: print the epsilon it spends"
    )
    g.add_argument(
        "--target-epsilon", type=float, help="print the sigma this epsilon needs"
    )
    p.add_argument(
        "--delta", type=float, default=1e-5, help="target delta (default 1e-5)"
    )
    p.add_argument(
        "--accountant",
        choices=list(ACCOUNTANTS),
        default=DEFAULT_ACCOUNTANT,
        help=f"accountant that calibrates sigma (default {DEFAULT_ACCOUNTANT}); "
        "both epsilons are printed",
    )
    p.add_argument(
        "--json", action="store_true", help="print one JSON object instead of text"
    )
    p.set_defaults(func=run)


def _problems(args: argparse.Namespace) -> list[str]:
    out: list[str] = []

    def need(flag: str, value: Any, ok: bool, rule: str) -> None:
        if value is None:
            out.append(f"{flag} is required for --mode {args.mode}")
        elif not ok:
            out.append(f"{flag}={value} is invalid: {rule}")

    need(
        "--rounds",
        args.rounds,
        args.rounds is not None and args.rounds >= 1,
        "must be >= 1",
    )
    d = args.delta
    if not (math.isfinite(d) and 0 < d < 1):
        out.append(f"--delta={d} is invalid: must be in (0, 1)")
    if args.sigma is not None and not (math.isfinite(args.sigma) and args.sigma > 0):
        out.append(f"--sigma={args.sigma} is invalid: must be > 0")
    t = args.target_epsilon
    if t is not None and not (math.isfinite(t) and t > 0):
        out.append(f"--target-epsilon={t} is invalid: must be > 0")
    if args.mode == "dpsgd":
        b, n, e = args.batch_size, args.examples, args.local_epochs
        need("--batch-size", b, b is not None and b >= 1, "must be >= 1")
        need("--examples", n, n is not None and n >= 1, "must be >= 1")
        need("--local-epochs", e, e is not None and e >= 1, "must be >= 1")
    else:
        m = args.clients_per_round
        need("--clients-per-round", m, m is not None and m >= 1, "must be >= 1")
        if not (math.isfinite(args.clip) and args.clip > 0):
            out.append(f"--clip={args.clip} is invalid: must be > 0")
    if args.mode == "distributed":
        dim = args.dim
        need("--dim", dim, dim is not None and dim >= 1, "must be >= 1")
        f = args.colluding_fraction
        if not (math.isfinite(f) and 0 <= f < 1):
            out.append(f"--colluding-fraction={f} is invalid: must be in [0, 1)")
    return out


def _plan(args: argparse.Namespace) -> dict[str, Any]:
    from lepton_fed.privacy import analysis as pa

    r, d, acc = args.rounds, args.delta, args.accountant
    res: dict[str, Any] = {
        "mode": args.mode,
        "rounds": r,
        "delta": d,
        "accountant": acc,
    }
    if args.mode == "distributed":
        return _distributed_plan(args, res)
    if args.mode == "dpsgd":
        sch = pa.local_schedule(
            num_examples=args.examples,
            batch_size=args.batch_size,
            epochs=args.local_epochs,
        )
        steps = r * sch.steps
        res.update(
            examples=args.examples,
            batch_size=args.batch_size,
            local_epochs=args.local_epochs,
            sample_rate=sch.sample_rate,
            steps_per_epoch=sch.steps_per_epoch,
            steps=steps,
        )
        if args.sigma is not None:
            res["sigma"] = args.sigma
        else:
            res["sigma"] = pa.noise_multiplier_for(
                target_epsilon=args.target_epsilon,
                delta=d,
                sample_rate=sch.sample_rate,
                steps=steps,
                accountant=acc,
            )
            res["target_epsilon"] = args.target_epsilon
        for a in ACCOUNTANTS:
            res[f"epsilon_{a}"] = pa.epsilon_for(
                noise_multiplier=res["sigma"],
                sample_rate=sch.sample_rate,
                steps=steps,
                delta=d,
                accountant=a,
            )
        res["delta_above_1_over_n"] = d >= 1.0 / args.examples
    else:
        m = args.clients_per_round
        if args.sigma is not None:
            res["sigma"] = args.sigma
        else:
            res["sigma"] = pa.central_noise_multiplier_for(
                target_epsilon=args.target_epsilon, delta=d, rounds=r, accountant=acc
            )
            res["target_epsilon"] = args.target_epsilon
        for a in ACCOUNTANTS:
            res[f"epsilon_{a}"] = pa.central_epsilon(
                noise_multiplier=res["sigma"], rounds=r, delta=d, accountant=a
            )
        res.update(
            clients_per_round=m,
            clip=args.clip,
            noise_std_sum=res["sigma"] * args.clip,
            noise_std_mean=res["sigma"] * args.clip / m,
        )
    res["epsilon"] = res[f"epsilon_{acc}"]
    return res


def _distributed_plan(args: argparse.Namespace, res: dict[str, Any]) -> dict[str, Any]:
    from lepton_fed.privacy.distributed import plan_distributed, plan_for_noise
    from lepton_fed.privacy.distributed_config import colluders_for

    m = args.clients_per_round
    nmin = args.min_contributors if args.min_contributors is not None else m
    kw: dict[str, Any] = dict(
        delta=args.delta,
        rounds=args.rounds,
        clip=args.clip,
        dim=args.dim,
        min_contributors=nmin,
        max_contributors=m,
        colluders=colluders_for(m, args.colluding_fraction),
        bits=args.bits,
        wrap_bits=args.wrap_bits,
    )
    if args.sigma is not None:
        plan = plan_for_noise(noise_multiplier=args.sigma, **kw)
    else:
        plan = plan_distributed(epsilon=args.target_epsilon, **kw)
        res["target_epsilon"] = args.target_epsilon
    res.update(
        plan.to_dict(),
        accountant="zcdp (Kairouz-Liu-Steinke Prop. 14) via RDP",
        clients_per_round=m,
        min_contributors=nmin,
    )
    res["epsilon"] = plan.epsilon_after(args.rounds)
    return res


def _text(res: dict[str, Any]) -> str:
    if res["mode"] == "distributed":
        keys = (
            "epsilon",
            "noise_multiplier",
            "central_std",
            "min_contributors",
            "clients_per_round",
        )
        head = (
            "mode: distributed (client-level DP; each node adds a discrete Gaussian "
            "share inside the secure sum; the server adds nothing)"
        )
        body = [f"{k}: {res[k]}" for k in keys if k in res]
        rest = [
            f"{k}: {v}"
            for k, v in sorted(res.items())
            if k not in keys and k not in ("mode",)
        ]
        return "\n".join([head, *body, *rest])
    lines: list[str] = []
    if res["mode"] == "dpsgd":
        lines += [
            "mode: dpsgd (sample-level DP for one client; assumes it trains in every "
            "round, the worst case; no amplification by client sampling)",
            f"schedule: {res['examples']} examples, batch {res['batch_size']}: Poisson "
            f"q = {res['sample_rate']:.6g}, {res['steps_per_epoch']} steps/epoch x "
            f"{res['local_epochs']} epochs x {res['rounds']} rounds = {res['steps']} steps",
        ]
    else:
        lines += [
            "mode: central (client-level DP of the released models; every round counts "
            "in full, no amplification by client sampling; the aggregator is trusted)",
            f"noise: std {res['noise_std_sum']:.6g} on the sum of {res['clients_per_round']} "
            f"clipped updates = {res['noise_std_mean']:.6g} on their mean (clip {res['clip']:g})",
        ]
    acc = res["accountant"]
    other = next(a for a in ACCOUNTANTS if a != acc)
    if "target_epsilon" in res:
        lines.append(
            f"sigma needed: {res['sigma']:.6g} (epsilon {res['epsilon']:.4f} <= target "
            f"{res['target_epsilon']:g} at delta {res['delta']:g}, {acc.upper()})"
        )
    else:
        lines.append(
            f"epsilon: {res['epsilon']:.4f} at delta {res['delta']:g} (sigma {res['sigma']:g}, "
            f"{acc.upper()})"
        )
    lines.append(
        f"same run under {other.upper()}: epsilon {res[f'epsilon_{other}']:.4f} "
        "(both are upper bounds; PLD is the tighter)"
    )
    if res.get("delta_above_1_over_n"):
        lines.append(
            f"warning: delta {res['delta']:g} >= 1/examples; a mechanism that publishes one "
            "random record outright satisfies such a delta. Use delta << 1/n."
        )
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Print the plan; return 0, or the ConfigError exit code on bad input."""
    try:
        problems = _problems(args)
        if problems:
            raise ConfigError(problems)
        try:
            res = _plan(args)
        except ValueError as e:
            raise ConfigError(str(e)) from e
    except ConfigError as e:  # the CLI guard's format (lepton_fed.errors.format_error)
        print(format_error(e), file=sys.stderr)
        return e.exit_code
    print(json.dumps(res, sort_keys=True) if args.json else _text(res))
    return 0
