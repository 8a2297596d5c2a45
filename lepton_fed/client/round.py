"""One client training round, independent of Flower's message plumbing.

Order of operations (each step's guarantee depends on the previous one):
1. budget check (DP-SGD): decline before touching the data if the round cannot be paid;
2. local training (DP-SGD via Opacus when ``privacy=dpsgd``);
3. update ``delta = w_local - w_global``; clipped to ``privacy.clip`` for central DP
   (and to the secure-aggregation bound when secagg is on);
4. encode for the wire (int8 / top-k with error feedback) when compression is on.
"""

from __future__ import annotations

from typing import Any, cast

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord

from lepton_fed.client.node import NodeState, node_train_data
from lepton_fed.client.train import train_local
from lepton_fed.config.derived import secagg_weight, update_clip
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

__all__ = ["run_train_round"]


def run_train_round(
    node: NodeState, arrays: ArrayRecord, config: ConfigRecord,
    secagg_request: bytes | None = None,
) -> tuple[ArrayRecord | ConfigRecord | None, dict[str, Any]]:
    """Train one round.

    Returns:
        ``(record, metrics)``: the reply weights (ArrayRecord), or with secure
        aggregation the masked vector (ConfigRecord ``{"reply": bytes}``), or None when
        the round is declined. With secure aggregation the metrics carry nothing
        per-client but ``declined`` and ``epsilon`` (no example count, no loss).
    """
    cfg = node.cfg
    # one intra-op thread per CPU given to the client: torch's default (all cores) is
    # up to 100x slower for these small models when clients share the cores
    torch.set_num_threads(max(1, int(cfg.federation.num_cpus_per_client)))
    rnd = int(cast(int, config["server-round"]))
    pid = node.partition_id
    data = node_train_data(cfg, node.context)
    scaler = node.scaler
    X = scaler.transform(data.X) if scaler is not None else data.X
    spec = model_spec(cfg.model, num_features=data.num_features,
                      num_classes=len(data.class_names), input_shape=data.input_shape)
    model = build_model(spec)
    if cfg.privacy.mode == "dpsgd":
        from lepton_fed.privacy.dpsgd import dp_ready

        model = dp_ready(model, grad_sample_mode=str(cfg.privacy.grad_sample_mode),
                         model_name=str(cfg.model.name), num_features=data.num_features)
    global_state = from_array_record(arrays)
    set_state(model, global_state)
    seed = derive_seed(cfg.seed, "train", rnd, pid)
    metrics: dict[str, Any] = {"num-examples": int(len(data.y)), "unit-weight": 1, "declined": 0}

    dp = None
    if cfg.privacy.mode == "dpsgd":
        from lepton_fed.client.dp import dp_settings_or_decline

        fingerprint = node.get("data-fp")
        if fingerprint is None:
            from lepton_fed.privacy.accounting import dataset_fingerprint

            fingerprint = dataset_fingerprint(data.X, data.y)
            node.set("data-fp", fingerprint)
        dp, eps_so_far = dp_settings_or_decline(node, cfg, n=len(data.y),
                                                fingerprint=fingerprint, round_=rnd,
                                                num_features=data.num_features)
        if dp is None:
            metrics.update({"declined": 1, "epsilon": eps_so_far, "num-examples": 0})
            return None, metrics

    res = train_local(
        model, X, data.y,
        epochs=cfg.client.epochs, batch_size=cfg.client.batch_size, lr=cfg.client.lr,
        momentum=cfg.client.momentum, optimizer=cfg.client.optimizer,
        proximal_mu=float(cast(float, config.get("proximal-mu", 0.0))),
        device=resolve_device(cfg.device), seed=seed, dp=dp,
    )
    metrics["train-loss"] = float(res.loss) if np.isfinite(res.loss) else 0.0
    if dp is not None:
        from lepton_fed.client.dp import record_round

        metrics["epsilon"] = record_round(node, cfg, dp, res, fingerprint=fingerprint,
                                          round_=rnd)

    local_state = get_state(model)
    gvec = flatten_state(global_state)
    delta = flatten_state(local_state) - gvec
    clip = update_clip(cfg)
    if clip is not None:
        norm = float(np.sqrt(np.sum(delta * delta)))  # no BLAS: its threads stall under load
        metrics["update-norm"] = norm
        if norm > clip:
            delta *= clip / norm
    if secagg_request is not None:
        from lepton_fed.client.secure import masked_reply

        reply = masked_reply(node, secagg_request, delta, secagg_weight(cfg, len(data.y)))
        kept: dict[str, Any] = {k: metrics[k] for k in ("declined", "epsilon") if k in metrics}
        return ConfigRecord({"reply": reply}), kept
    codec = cfg.compression["update"]
    if codec != "none":
        from lepton_fed.client.wire import encode_update

        return encode_update(node, codec, delta, cfg, seed), metrics | {"encoded": 1}
    return to_array_record(unflatten_state(gvec + delta, global_state)), metrics

