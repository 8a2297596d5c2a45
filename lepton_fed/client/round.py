"""One client training or evaluation round, independent of Flower's message plumbing.

Order of operations (each step's guarantee depends on the previous one):
1. budget check (DP-SGD; distributed DP: one release under the run's plan,
   :mod:`lepton_fed.client.ddp_budget`): decline before touching the data if the round
   cannot be paid;
2. local training (DP-SGD via Opacus when ``privacy=dpsgd``);
3. update ``delta = w_local - w_global``; clipped to ``privacy.clip`` for central DP
   (and to the secure-aggregation bound when secagg is on);
4. encode for the wire (int8 / top-k with error feedback) when compression is on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord

from lepton_fed.client.attack import poison_labels, poison_update
from lepton_fed.client.dp import is_real_node
from lepton_fed.client.evaluate import EvalSums
from lepton_fed.client.local_data import node_data
from lepton_fed.client.node import NodeState
from lepton_fed.client.node_policy import node_policy
from lepton_fed.client.train import train_local
from lepton_fed.config.derived import secagg_weight, update_clip
from lepton_fed.data.schema import TabularData
from lepton_fed.models import (
    build_model,
    flatten_state,
    get_state,
    set_state,
    unflatten_state,
)
from lepton_fed.models.spec import model_spec
from lepton_fed.utils.device import resolve_device
from lepton_fed.utils.records import from_array_record, to_array_record
from lepton_fed.utils.seed import derive_seed

__all__ = ["BUDGET_EXHAUSTED", "Outcome", "evaluation_sums", "run_evaluate", "run_train_round"]

#: decline code: the node's privacy ledger cannot pay for the round
BUDGET_EXHAUSTED = "BUDGET_EXHAUSTED"
#: decline code: the node's policy does not let it send evaluation sums in the clear
METRICS_NOT_ALLOWED = "METRICS_NOT_ALLOWED"

#: reply fields that are protocol, not data: never filtered
_PROTOCOL_METRICS = frozenset({"declined", "unit-weight", "encoded", "server-round"})


@dataclass
class Outcome:
    """What a round produced: a reply ``record`` and ``metrics``, or a ``decline`` code."""

    record: ArrayRecord | ConfigRecord | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    decline: str | None = None
    detail: str = ""


def _clear(node: NodeState, metrics: dict[str, Any]) -> dict[str, Any]:
    """Only the metrics the node's policy lets it send in the clear. ``num-examples``,
    when not allowed, becomes 1 (the server then weights this node like every other)."""
    from lepton_fed.policy import filter_metrics

    out = filter_metrics(node_policy(node.context), metrics) | {
        k: v for k, v in metrics.items() if k in _PROTOCOL_METRICS}
    if "num-examples" in metrics and "num-examples" not in out:
        out["num-examples"] = 1
    return out


def run_train_round(
    node: NodeState, arrays: ArrayRecord, config: ConfigRecord,
    secagg_request: bytes | None = None,
) -> Outcome:
    """Train one round.

    Returns:
        The reply weights (ArrayRecord), or with secure aggregation the masked vector
        (ConfigRecord ``{"reply": bytes}``), or a decline code. With secure aggregation
        the metrics carry nothing per-client but ``declined`` and ``epsilon`` (no example
        count, no loss); without it, only what the node's policy allows in the clear.
    """
    cfg = node.cfg
    rnd = int(cast(int, config["server-round"]))
    pid = node.partition_id
    data = node_data(cfg, node.context).train
    X, model = _inputs_and_model(node, data)
    if cfg.privacy.mode == "dpsgd":
        from lepton_fed.privacy.dpsgd import dp_ready

        model = dp_ready(model, grad_sample_mode=str(cfg.privacy.grad_sample_mode),
                         model_name=str(cfg.model.name), num_features=data.num_features)
    global_state = from_array_record(arrays)
    set_state(model, global_state)
    seed = derive_seed(cfg.seed, "train", rnd, pid)
    metrics: dict[str, Any] = {"num-examples": int(len(data.y)), "unit-weight": 1, "declined": 0,
                               "server-round": rnd}

    dp = None
    if cfg.privacy.mode == "dpsgd":
        from lepton_fed.client.dp import reserve_dp_round

        decision = reserve_dp_round(node, cfg, data, round_=rnd)
        if decision.settings is None:
            return Outcome(decline=decision.decline or BUDGET_EXHAUSTED, detail=decision.detail,
                           metrics=_clear(node, {"epsilon": decision.epsilon}))
        dp = decision.settings
    charge = None
    if cfg.privacy.mode == "distributed":  # pay for the release before training
        from lepton_fed.client.ddp_budget import reserve_release
        from lepton_fed.policy.codes import SECAGG_REQUIRED
        from lepton_fed.privacy.distributed_config import plan_for_config

        if secagg_request is None:  # never a plain update, never an un-noised one
            return Outcome(decline=SECAGG_REQUIRED)
        plan = plan_for_config(cfg, int(flatten_state(global_state).size))
        charge = reserve_release(node, cfg, data, plan, round_=rnd)
        if charge.decline is not None:
            return Outcome(decline=charge.decline, detail=charge.detail,
                           metrics=_clear(node, {"epsilon": charge.epsilon}))

    res = train_local(
        model, X, poison_labels(node, cfg, data.y, len(data.class_names)),
        epochs=cfg.client.epochs, batch_size=cfg.client.batch_size, lr=cfg.client.lr,
        momentum=cfg.client.momentum, optimizer=cfg.client.optimizer,
        proximal_mu=_proximal_mu(config),
        device=resolve_device(cfg.device), seed=seed, dp=dp,
    )
    metrics["train-loss"] = float(res.loss) if np.isfinite(res.loss) else 0.0
    if dp is not None:
        from lepton_fed.client.dp import dp_report, record_round

        metrics["epsilon"] = record_round(node, cfg, dp, res, round_=rnd)
        metrics |= dp_report(node)  # epsilon-rdp/-pld, dp-* settings; policy-filtered below

    local_state = get_state(model)
    gvec = flatten_state(global_state)
    delta = flatten_state(local_state) - gvec
    clip = update_clip(cfg)
    if clip is not None:
        norm = float(np.sqrt(np.sum(delta * delta)))  # no BLAS: its threads stall under load
        metrics["update-norm"] = norm
        if norm > clip:
            delta *= clip / norm
    delta = poison_update(node, cfg, rnd, delta)  # simulated attackers only (conf/attack)
    if charge is not None and secagg_request is not None:  # distributed DP
        from lepton_fed.client.ddp_budget import settle_release
        from lepton_fed.client.secure import distributed_reply

        try:  # noise share, then mask
            reply = distributed_reply(node, secagg_request, delta,
                                      int(cast(int, config["ddp-rotation-seed"])))
        except BaseException:
            settle_release(node, cfg, charge, released=False)  # nothing left the node
            raise
        # settled on the ledger BEFORE the reply leaves the node; the node's own spend
        # stays on the node (the server knows the plan's epsilon)
        settle_release(node, cfg, charge, released=True)
        return Outcome(ConfigRecord({"reply": reply}), _clear(node, {"declined": 0}))
    if secagg_request is not None:
        from lepton_fed.client.secure import masked_reply

        reply = masked_reply(node, secagg_request, delta, secagg_weight(cfg, len(data.y)))
        kept: dict[str, Any] = {k: metrics[k] for k in ("declined", "epsilon") if k in metrics}
        return Outcome(ConfigRecord({"reply": reply}), _clear(node, kept))
    codec = cfg.compression["update"]
    if codec != "none":
        from lepton_fed.client.wire import encode_update

        return Outcome(encode_update(node, codec, delta, cfg, seed),
                       _clear(node, metrics | {"encoded": 1}))
    return Outcome(to_array_record(unflatten_state(gvec + delta, global_state)),
                   _clear(node, metrics))


def run_evaluate(node: NodeState, arrays: ArrayRecord) -> Outcome:
    """The global model ``arrays`` on this node's held-out rows: sums only, in the clear,
    when the node's policy allows ``evaluation`` in the clear."""
    from lepton_fed.policy import filter_metrics

    if not filter_metrics(node_policy(node.context), {"evaluation": 1}):
        return Outcome(decline=METRICS_NOT_ALLOWED)
    sums, _ = evaluation_sums(node, arrays)
    return Outcome(metrics=dict(sums))


def evaluation_sums(node: NodeState, arrays: ArrayRecord) -> tuple[EvalSums, int]:
    """The global model ``arrays`` on this node's held-out rows: its sums and the number
    of classes, WITHOUT the policy gate -- for secure evaluation, where the sums leave
    the node only inside a masked vector (:func:`lepton_fed.client.secure.masked_eval_reply`)."""
    from lepton_fed.client.evaluate import eval_sums

    cfg = node.cfg
    test = node_data(cfg, node.context).test
    X, model = _inputs_and_model(node, test)
    set_state(model, from_array_record(arrays))
    return eval_sums(model, X, test.y, resolve_device(cfg.device)), len(test.class_names)


def _proximal_mu(config: ConfigRecord) -> float:
    """FedProx's mu from the train message: untrusted, so a finite number >= 0."""
    raw = config.get("proximal-mu", 0.0)
    mu = float(cast(float, raw)) if isinstance(raw, int | float) else float("nan")
    if not (np.isfinite(mu) and mu >= 0):
        raise ValueError("proximal-mu must be a finite number >= 0")
    return mu


def _inputs_and_model(node: NodeState, data: TabularData) -> tuple[np.ndarray, torch.nn.Module]:
    """``data``'s features scaled with the federation's scaler, and a fresh model of the
    run's architecture for them."""
    cfg = node.cfg
    # a simulated client: one intra-op thread per CPU given to it (torch's default, all
    # cores, is up to 100x slower for these small models when clients share the cores);
    # a real node's threads are its operator's business, not the server's
    if not is_real_node(node):
        torch.set_num_threads(max(1, int(cfg.federation.num_cpus_per_client)))
    scaler = node.scaler
    X = scaler.transform(data.X) if scaler is not None else data.X
    spec = model_spec(cfg.model, num_features=data.num_features,
                      num_classes=len(data.class_names), input_shape=data.input_shape)
    return X, build_model(spec)

