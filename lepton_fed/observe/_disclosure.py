"""What leaves a node in the clear and who sees what, derived from a run's config and a
node's policy. Mirrors the node's code (``lepton_fed/client/round.py``, ``app.py``) and
``lepton_fed/privacy/README.md``; ``tests/unit/test_observe_statement.py`` checks the
train metrics against what real nodes send.
"""

from __future__ import annotations

from typing import Any

from lepton_fed.config.derived import update_clip
from lepton_fed.policy import NodePolicy, filter_metrics

__all__ = ["clear_items", "train_metrics_in_clear", "who_sees"]

#: reply fields that are protocol, not data (never filtered by the policy)
_PROTOCOL = frozenset({"declined", "unit-weight", "encoded", "server-round"})


def train_metrics_in_clear(cfg: Any, policy: NodePolicy) -> list[str]:
    """Names of the metrics a node's train reply carries in the clear."""
    mode, secagg = str(cfg.privacy.mode), bool(cfg.secagg.enabled)
    names = {"num-examples", "unit-weight", "declined", "train-loss", "server-round"}
    if mode == "dpsgd":  # client/dp.py record_round + dp_report
        names |= {"epsilon", "epsilon-rdp", "epsilon-pld", "dp-batch-size", "dp-epochs",
                  "dp-lr", "dp-clip", "dp-local-steps", "dp-noise-multiplier"}
    if update_clip(cfg) is not None:
        names.add("update-norm")
    codec = str(cfg.compression["update"]) if "compression" in cfg else "none"
    if secagg:  # (privacy=distributed always runs under secure aggregation)
        names &= {"declined", "epsilon"}
    elif codec != "none":
        names.add("encoded")
    kept = set(filter_metrics(policy, dict.fromkeys(names, 0))) | (names & _PROTOCOL)
    if "num-examples" in names and "num-examples" not in kept:
        kept.add("num-examples (replaced by 1: the policy keeps the count)")
    return sorted(kept)


def _update(cfg: Any) -> str:
    mode, secagg = str(cfg.privacy.mode), bool(cfg.secagg.enabled)
    if mode == "distributed":  # client/secure.py distributed_reply (secagg is required)
        return (f"its update, clipped to {cfg.privacy.clip}, rotated and rounded to integers "
                "with its own discrete Gaussian noise share added, masked (secure "
                "aggregation): the coordinator learns only the cohort's sum, which already "
                "carries every contributor's noise share")
    if secagg:
        base = ("its update, masked (secure aggregation): the coordinator learns only the "
                "sum over the round's cohort")
        return base + (", exact and un-noised (the coordinator adds the central noise to "
                       "the sum)" if mode == "central" else "")
    if mode == "dpsgd":
        return ("its DP-SGD update (clipped per example, noised on the node) in the clear "
                "to the coordinator")
    if mode == "central":
        return (f"its update, clipped to {cfg.privacy.clip} but NOT noised, in the clear to "
                "the coordinator (which adds the noise after seeing it)")
    return "its exact update in the clear to the coordinator (no differential privacy)"


def clear_items(cfg: Any, policy: NodePolicy, summary: dict[str, Any] | None) -> list[str]:
    """What left (or, for a run still going, leaves) a member node, one item a line."""
    items = ["its name and, each round, whether it answered, declined (with a code) or "
             "failed, and how long it took"]
    if filter_metrics(policy, {"feature-stats": 1}):
        items.append("at setup: per-feature count, sum and sum of squares of its training "
                     "rows (for the shared scaler)"
                     + (f"; scaler used: {summary['scaler']}" if summary and
                        summary.get("scaler") else ""))
    else:
        items.append("at setup: no feature statistics (its policy keeps them)")
    items.append("each round it trained: " + _update(cfg))
    items.append("each round it trained, metrics: "
                 + ", ".join(train_metrics_in_clear(cfg, policy)))
    ev = cfg.get("evaluation")
    fed = str(ev.get("federated", "auto")).lower() if ev is not None else "false"
    on = fed == "true" or (fed == "auto" and ev is not None and not bool(ev.server_data))
    if on and bool(cfg.secagg.enabled):  # server/secure.py secure_evaluate
        items.append("each evaluation: its sums over its held-out rows only inside a masked "
                     "vector (query.secagg_evaluate, secure aggregation): the coordinator "
                     "learns the federation's totals (accuracy, loss, binned AUC over the "
                     "contributors), never a node's; no evaluation sum leaves a node in the "
                     "clear (the totals are not noised: no epsilon covers them)")
    elif on and filter_metrics(policy, {"evaluation": 1}):
        items.append("each evaluation: exact sums over its held-out rows (count, correct, "
                     "loss sum; score histograms per class for binary tasks), not noised: "
                     "no epsilon covers them")
    elif on:
        items.append("evaluation: nothing (its policy keeps evaluation sums; it declines)")
    if bool(cfg.secagg.enabled):
        items.append("secure aggregation: signed public keys and key shares encrypted to "
                     "its neighbours (reveal nothing alone)")
    if str(cfg.privacy.mode) == "dpsgd":
        items.append("its epsilon reveals its dataset size approximately (q depends on n)")
    return items


def who_sees(cfg: Any) -> list[dict[str, str]]:
    """Each party and what it could see, for this run's modes."""
    mode, secagg = str(cfg.privacy.mode), bool(cfg.secagg.enabled)
    eps = {"dpsgd": "covered by each node's sample-level epsilon",
           "central": "covered by the run's client-level epsilon",
           "distributed": "covered by the run's node-level epsilon",
           "none": "covered by no epsilon"}[mode]
    coord = ("every clear item above; only the SUM of the cohort's updates" if secagg
             else "every clear item above and every node's individual update")
    if mode == "distributed":
        coord += ("; the noise is in the sum before it is unmasked and nobody is trusted to "
                  "add it, so the epsilon protects against the coordinator too, as long as "
                  "secure aggregation holds: a coordinator that fakes dropouts after the "
                  "masked inputs arrived could unmask a sum with fewer noise shares (abandoning "
                  "a round with fewer masked inputs than the noise is sized for, before "
                  "unmasking, is the coordinator's own rule)")
    elif mode == "central":
        coord += "; the central noise is its own duty, so the epsilon does NOT protect " \
                 "against it"
    elif mode == "dpsgd":
        coord += "; updates are noised on the nodes, so the epsilon protects against it too"
    out = [{"party": "coordinator (server operator)", "sees": coord},
           {"party": "other member nodes",
            "sees": f"the run config and each round's global model ({eps})"
                    + ("; secure-aggregation public keys and encrypted shares" if secagg
                       else "")},
           {"party": "readers of the run directory",
            "sees": "metrics.jsonl and summary.json: per-node epsilon, declines and "
                    "failures by node, aggregate figures"},
           {"party": "users of the final model or serving artifact",
            "sees": f"the final global model and its manifest ({eps})"}]
    return out
