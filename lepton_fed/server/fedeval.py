"""Federated evaluation: nodes evaluate the global model on their own held-out rows and
reply with sums; the server adds them up.

Federation-wide figures are example-weighted over the nodes that answered: accuracy =
sum(correct) / sum(n), loss = sum(loss sums) / sum(n), and for binary tasks a binned AUC
from the summed score histograms. A node whose policy does not let it send evaluation sums
in the clear declines (``METRICS_NOT_ALLOWED``) and is counted, not guessed.
"""

from __future__ import annotations

from typing import Any, cast

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid

from lepton_fed.models.predict import binned_auc
from lepton_fed.server.exchange import Exchange, decline_code, error_code, exchange
from lepton_fed.server.registry import NodeRegistry

__all__ = ["combine", "federated_evaluate"]


def combine(replies: list[MetricRecord]) -> dict[str, Any] | None:
    """Federation-wide ``accuracy``, ``loss``, ``auc`` (binary) and ``n`` from sums."""
    n = sum(float(cast(float, r["eval-n"])) for r in replies)
    if n <= 0:
        return None
    out: dict[str, Any] = {
        "accuracy": sum(float(cast(float, r["eval-correct"])) for r in replies) / n,
        "loss": sum(float(cast(float, r["eval-loss-sum"])) for r in replies) / n,
        "n": int(n),
    }
    hists = [r for r in replies if "eval-hist-neg" in r]
    if hists:
        neg = np.sum([np.asarray(r["eval-hist-neg"], float) for r in hists], axis=0)
        pos = np.sum([np.asarray(r["eval-hist-pos"], float) for r in hists], axis=0)
        out["auc"] = binned_auc(neg, pos)
    return out


def federated_evaluate(
    grid: Grid, reg: NodeRegistry, arrays: ArrayRecord, nodes: list[int],
    scaler: ConfigRecord, timeout: float,
) -> tuple[dict[str, Any] | None, Exchange]:
    """Ask ``nodes`` to evaluate ``arrays``; returns the combined figures (or None).

    The combined figures carry ``nodes`` (how many answered) and ``per_node``
    {name: accuracy} (what the server received in the clear anyway).
    """
    msgs = []
    for nid in nodes:
        content = RecordDict({"arrays": arrays})
        if nid not in reg.scaler_sent:
            content["lepton"] = scaler
        msgs.append(Message(content, dst_node_id=nid, message_type="evaluate"))
    ex = exchange(grid, msgs, timeout, reg.learn_name)
    for r in ex.declined:
        reg.record_decline(ex.node(r), decline_code(r))
    for r in ex.errors:
        reg.record_failure(ex.node(r), error_code(r))
    for r in ex.ok:
        reg.scaler_sent.add(ex.node(r))
    recs = [cast(MetricRecord, r.content["metrics"]) for r in ex.ok]
    out = combine(recs)
    if out is not None:
        out["nodes"] = len(recs)
        out["per_node"] = {
            reg.name(ex.node(r)): float(cast(float, m["eval-correct"])) / float(cast(float, m["eval-n"]))
            for r, m in zip(ex.ok, recs, strict=True) if float(cast(float, m["eval-n"])) > 0
        }
    return out, ex
