"""A per-member privacy statement: what a member's privacy officer signs off.

:func:`build_statement` reads a run directory (``config.yaml``, ``summary.json``,
``metrics.jsonl``) and, when given, the node's ledger directory and policy file, and
returns: the mechanism (mode, noise, clipping, accounting, who enforces the budget), the
epsilon and delta spent per node in this run and, from the ledger, over the ledger's
whole history (every run that spent on that data), what left the node in the clear,
and who could see what. :func:`render_statement` prints it.

The figures are what the run directory and the ledger record; the statement is as true
as they are (the ledger is digest-checked on load; the run directory is the
coordinator's record of what nodes reported).
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from lepton_fed.errors import ConfigError
from lepton_fed.observe._disclosure import clear_items, who_sees
from lepton_fed.policy import NodePolicy, load_policy, strict_default

__all__ = ["build_statement", "ledger_history", "render_statement"]

_MECHANISM = {
    "dpsgd": ("DP-SGD on each node (Opacus): per-example gradient clipping, Gaussian noise, "
              "Poisson sampling; sample-level (epsilon, delta)-DP for each node's dataset, "
              "accounted over every round on that data by the node's own ledger"),
    "central": ("central DP (DP-FedAvg): each node clips its update, the coordinator adds "
                "Gaussian noise to the sum; client-level (epsilon, delta)-DP of the "
                "released models, accounted by the coordinator"),
    "distributed": ("distributed DP (distributed discrete Gaussian, Kairouz, Liu & Steinke "
                    "2021): each node clips its update, rounds it to integers and adds its "
                    "own share of discrete Gaussian noise (from its CSPRNG) inside the secure "
                    "sum; node-level (epsilon, delta)-DP of the released models; nobody is "
                    "trusted to add noise, the trust rests on secure aggregation"),
    "none": "no differential privacy",
}
_ENFORCED = {"dpsgd": "each node, by its own ledger (a round that would exceed the budget "
                      "is declined)",
             "central": "the coordinator (trusted to add the noise)",
             "distributed": ("each node checks the run's plan against its policy's cap; the "
                             "coordinator counts the sums it unmasks and abandons a round "
                             "with fewer masked inputs than the noise is sized for; nobody "
                             "adds the noise for the nodes (secure aggregation must hold: "
                             "a coordinator faking dropouts after the masked inputs could "
                             "unmask a sum with fewer noise shares)"),
             "none": "nobody"}


def _read_json(p: Path) -> Any:
    return json.loads(p.read_text()) if p.is_file() else None


def _config(run_dir: Path) -> DictConfig:
    p = run_dir / "config.yaml"
    if not p.is_file():
        raise ConfigError(f"{run_dir} is not a run directory: it has no config.yaml")
    cfg = OmegaConf.load(p)
    if not isinstance(cfg, DictConfig) or "privacy" not in cfg or "secagg" not in cfg:
        raise ConfigError(f"{p} is not a lepton-fed run config (no privacy/secagg section)")
    return cfg


def _policy(cfg: DictConfig, policy_path: str | Path | None) -> tuple[NodePolicy, str]:
    if policy_path is not None:
        return load_policy(policy_path), f"the node's policy file {policy_path}"
    if "node_policy" in cfg:
        return (NodePolicy.from_mapping(cfg.node_policy),
                "the run config's node_policy (what simulated nodes held; a real node "
                "holds its own file: pass --policy)")
    return strict_default(), "the strict default of a real node without a policy file"


def ledger_history(ledger_dir: str | Path, *, delta: float,
                   accountant: str | None = None) -> list[dict[str, Any]]:
    """Per stored ledger (one per dataset): epsilon over its whole history at ``delta``,
    and per run id: rounds, steps and the epsilon of that run's events alone.

    ``accountant`` is the run's ``privacy.accountant`` (the one the node's budget checks
    use); None: the library's default.

    Raises:
        ConfigError: ``ledger_dir`` is not a directory.
        LedgerError: a stored ledger fails its checks (never read silently).
    """
    from lepton_fed.privacy.analysis import epsilon_for_history
    from lepton_fed.privacy.file_ledger import FileLedger

    d = Path(ledger_dir)
    if not d.is_dir():
        raise ConfigError(f"ledger directory {d} does not exist")
    store = FileLedger(d)
    kw: dict[str, Any] = {"accountant": accountant} if accountant else {}
    out = []
    for key in store.keys():
        ledger = store.load(key)
        runs: dict[str, list[Any]] = defaultdict(list)
        for e in ledger.events:
            runs[e.run_id or "(no run id)"].append(e)
        out.append({
            "dataset": key, "node_id": ledger.node_id, "events": len(ledger),
            "pending": len(ledger.pending),
            "epsilon_total": epsilon_for_history(ledger.history, delta=delta, **kw)
            if len(ledger) else 0.0,
            "runs": [{"run_id": rid, "rounds": sorted({e.round for e in evs
                                                       if e.round is not None}),
                      "steps": sum(e.steps for e in evs),
                      "epsilon_alone": epsilon_for_history([e.as_tuple() for e in evs],
                                                           delta=delta, **kw),
                      "first": evs[0].recorded_at, "last": evs[-1].recorded_at}
                     for rid, evs in runs.items()],
        })
    return out


def _rows(path: Path) -> list[dict[str, Any]]:
    out = []
    if path.is_file():
        for ln in path.read_text().splitlines():
            try:
                row = json.loads(ln)
            except json.JSONDecodeError:  # a line still being written
                continue
            if isinstance(row, dict):
                out.append(row)
    return out


def _live_summary(last: dict[str, Any]) -> dict[str, Any]:
    """What a run still going has said about its nodes (its last metrics row)."""
    per = last.get("epsilon_per_node") or {}
    return {"privacy": {"per_client": per}, "nodes": {"names": sorted(per)}}


def _nodes(summary: dict[str, Any], node: str | None) -> list[dict[str, Any]]:
    privacy = summary.get("privacy") or {}
    per = privacy.get("per_client") or {}
    stopped = privacy.get("stopped_clients") or {}
    nodes = summary.get("nodes") or {}
    names = sorted(set(nodes.get("names") or []) | set(per))
    if node is not None:
        if node not in names:
            raise ConfigError(f"node {node!r} is not in this run; its nodes are {names}")
        names = [node]
    return [{"name": n, "epsilon": per.get(n), "stopped_at_round": stopped.get(n),
             "refused": (nodes.get("refused") or {}).get(n),
             "declines": (nodes.get("declines") or {}).get(n, {}),
             "failures": (nodes.get("failures") or {}).get(n, {}),
             "late": (nodes.get("late") or {}).get(n, 0)} for n in names]


def build_statement(run_dir: str | Path, *, node: str | None = None,
                    ledger_dir: str | Path | None = None,
                    policy_path: str | Path | None = None) -> dict[str, Any]:
    """The statement as a JSON-ready dict (see the module docstring).

    Args:
        run_dir: a run directory (``config.yaml`` required; a run still going has no
            ``summary.json`` yet, and its per-node figures are then left out).
        node: only this node (a name in the run's ``summary.json``).
        ledger_dir: the node's ledger directory (``node_config["ledger-dir"]``).
        policy_path: the node's policy file (default: the run config's
            ``node_policy``, else the strict default).

    Raises:
        ConfigError: not a run directory, an unknown node, a bad policy, no ledger
            directory.
    """
    d = Path(run_dir)
    cfg = _config(d)
    summary = _read_json(d / "summary.json")
    mode = str(cfg.privacy.mode)
    if mode not in _MECHANISM:
        raise ConfigError(f"{d / 'config.yaml'}: unknown privacy.mode {mode!r}")
    privacy = (summary or {}).get("privacy") or {}
    delta = privacy.get("delta", cfg.privacy.get("delta"))
    policy, policy_source = _policy(cfg, policy_path)
    rows = _rows(d / "metrics.jsonl")
    last = rows[-1] if rows else {}
    mech: dict[str, Any] = {"mode": mode, "description": _MECHANISM[mode],
                            "enforced_by": _ENFORCED[mode],
                            "secure_aggregation": bool(cfg.secagg.enabled)}
    accountant = cfg.privacy.get("accountant")
    if mode != "none":
        mech |= {"delta": delta, "target_epsilon": cfg.privacy.get("epsilon"),
                 "accountant": str(accountant or "rdp"), "noise": privacy.get("noise")}
    if mode == "dpsgd":
        mech["max_grad_norm"] = cfg.privacy.get("max_grad_norm")
    if mode == "distributed":
        plan = privacy.get("plan") or {}
        mech |= {"clip": cfg.privacy.get("clip"), "releases": privacy.get("releases"),
                 "min_contributors": plan.get("min_contributors"),
                 "colluders": plan.get("colluders"), "honest_shares": plan.get("honest"),
                 "noise_multiplier": plan.get("noise_multiplier"),
                 "trusted": privacy.get("trusted", "secure aggregation")}
    if mode == "central":
        mech |= {"clip": cfg.privacy.get("clip"),
                 "noise_multiplier": privacy.get("noise_multiplier",
                                                 cfg.privacy.get("noise_multiplier"))}
    out: dict[str, Any] = {
        "run_dir": str(d), "finished": summary is not None,
        "rounds_completed": (summary or {}).get("rounds_completed", len(rows)),
        "rounds_planned": int(cfg.federation.rounds), "mechanism": mech,
        "spent": {"epsilon": privacy.get("epsilon", last.get("epsilon")), "delta": delta,
                  "scope": {"dpsgd": "max over nodes; each node's figure is its ledger's "
                                     "total on its data",
                            "central": "the released models, against everyone but the "
                                       "coordinator",
                            "distributed": "the released models (node-level), against "
                                           "everyone including the coordinator while "
                                           "secure aggregation holds",
                            "none": "nothing is bounded"}[mode]},
        "nodes": _nodes(summary or _live_summary(last), node) if summary or last else [],
        "policy": {"source": policy_source, **policy.to_mapping()},
        "left_in_clear": clear_items(cfg, policy, summary),
        "who_sees": who_sees(cfg),
    }
    if ledger_dir is not None:
        led_delta = float(delta) if delta is not None else float(policy.max_delta or 1e-5)
        hist = ledger_history(ledger_dir, delta=led_delta,
                              accountant=str(accountant) if accountant else None)
        out["ledger"] = {"dir": str(ledger_dir), "delta": led_delta, "datasets": hist,
                         "cap": policy.max_epsilon}
    return out


def render_statement(st: dict[str, Any]) -> str:
    """The statement as plain text."""
    from lepton_fed.observe.statement_text import render

    return render(st)
