"""Turning one round's replies into the strategy's input.

Plain rounds hand the replies to the strategy unchanged. Rounds whose aggregate must be
formed first -- central DP (uniform mean of clipped updates plus Gaussian noise on the
SUM) and secure aggregation (the server only learns the sum) -- reduce the round to one
synthetic reply carrying ``w_global + mean_update``; every FedAvg-family strategy then
applies its server rule (plain mean, or FedAdam/FedYogi/FedAdagrad) to that mean.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, cast

import numpy as np
from flwr.app import ArrayRecord, Message, MetricRecord, RecordDict

from lepton_fed.models import flatten_state, unflatten_state
from lepton_fed.utils.records import from_array_record, to_array_record

__all__ = ["decode_replies", "mean_update_reply", "reply_update", "sum_updates"]


def reply_update(
    content: RecordDict, global_state: OrderedDict[str, np.ndarray], codec: str
) -> np.ndarray:
    """The flat update ``w_local - w_global`` a reply carries (decoding if encoded)."""
    if codec != "none":
        from lepton_fed.compression.wire import decode_payload

        return decode_payload(from_array_record(cast(ArrayRecord, content["arrays"])), codec,
                              flatten_state(global_state).size)
    local = flatten_state(from_array_record(cast(ArrayRecord, content["arrays"])))
    update: np.ndarray = local - flatten_state(global_state)
    return update


def sum_updates(
    replies: list[Message], global_state: OrderedDict[str, np.ndarray], codec: str,
    clip: float | None = None,
) -> np.ndarray:
    """Sum of the replies' updates (uniform weights), each re-clipped to L2 norm ``clip``.

    Central DP's sensitivity is ``clip``; the node clips before encoding, but a codec's
    decoded update can be longer (top-k with error feedback sends residual mass from
    earlier rounds), so the server clips every DECODED update again before summing.
    """
    total = np.zeros(flatten_state(global_state).size)
    for m in replies:
        u = reply_update(m.content, global_state, codec)
        if clip is not None:
            norm = float(np.sqrt(np.sum(u * u)))
            if norm > clip:
                u *= clip / norm
        total += u
    return total


def mean_update_reply(
    global_state: OrderedDict[str, np.ndarray],
    mean_update: np.ndarray,
    metrics: dict[str, Any] | None = None,
) -> Message:
    """One synthetic reply whose weights are ``w_global + mean_update`` (weight 1)."""
    new = unflatten_state(flatten_state(global_state) + mean_update, global_state)
    m = {"num-examples": 1, "unit-weight": 1} | (metrics or {})
    content = RecordDict({"arrays": to_array_record(new), "metrics": MetricRecord(m)})
    return _synthetic(content)


def decode_replies(
    replies: list[Message], global_state: OrderedDict[str, np.ndarray], codec: str
) -> list[Message]:
    """Replies with encoded updates rewritten to full weights, for the strategy."""
    if codec == "none":
        return replies
    out = []
    g = flatten_state(global_state)
    for m in replies:
        w = unflatten_state(g + reply_update(m.content, global_state, codec), global_state)
        metrics = {k: v for k, v in cast(MetricRecord, m.content["metrics"]).items()
                   if k != "encoded"}
        content = RecordDict({"arrays": to_array_record(w), "metrics": MetricRecord(metrics)})
        out.append(_synthetic(content))
    return out


def _synthetic(content: RecordDict) -> Message:
    """A reply-shaped message that is never sent (only read by ``aggregate_train``)."""
    return Message(content=content, dst_node_id=0, message_type="train")
