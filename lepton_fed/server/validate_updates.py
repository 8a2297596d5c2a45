"""Server-side checks of every client update before anything is computed from it.

A client's reply is untrusted input. Before aggregation (and before central DP clips and
noises the sum) each reply must be for THIS round's message, the only reply to it, carry
the model's exact keys, shapes and dtype (or an encoded update that decodes to the
model's size), hold only finite values, weigh a finite, non-negative number of examples,
report finite metrics, and, when a clip applies and the update travels unencoded, have
an L2 norm within the clip. A reply that fails is rejected for the round with one
reason code (``INVALID_UPDATE_*``, recorded as that node's failure); the others
aggregate. Under secure aggregation the server sees only the unmasked SUM, which is
checked for finite values and the model's shapes (:func:`check_aggregate`).

Encoded updates (``compression.update=int8|topk``) are not held to the clip: their
decoded norm may exceed it legitimately (top-k's error feedback); central DP re-clips
every decoded update at the server instead (:func:`~.aggregate.sum_updates`).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
from flwr.app import ArrayRecord, Message, MetricRecord

__all__ = [
    "INVALID_DTYPE", "INVALID_DUPLICATE", "INVALID_ENCODING", "INVALID_METRICS",
    "INVALID_MISSING", "INVALID_NONFINITE", "INVALID_NORM", "INVALID_SHAPE", "INVALID_WEIGHT",
    "STALE_ROUND", "Rejection", "check_aggregate", "check_update", "rejected_epsilons",
    "validate_replies",
]

INVALID_NONFINITE = "INVALID_UPDATE_NONFINITE"
INVALID_SHAPE = "INVALID_UPDATE_SHAPE"
INVALID_DTYPE = "INVALID_UPDATE_DTYPE"
INVALID_NORM = "INVALID_UPDATE_NORM"
INVALID_WEIGHT = "INVALID_UPDATE_WEIGHT"
INVALID_METRICS = "INVALID_UPDATE_METRICS"
INVALID_ENCODING = "INVALID_UPDATE_ENCODING"
INVALID_MISSING = "INVALID_UPDATE_MISSING"
INVALID_DUPLICATE = "INVALID_UPDATE_DUPLICATE"
STALE_ROUND = "INVALID_UPDATE_STALE_ROUND"

#: relative slack on the clip: the client clips in float32 and sends w_global + delta,
#: from which the server recomputes delta (rounding moves the norm by ~1e-7 relative)
NORM_SLACK = 1e-4


@dataclass(frozen=True)
class Rejection:
    """A reply refused for the round: the message, its reason code and a detail."""

    reply: Message
    code: str
    detail: str


def _arrays(content: Any) -> ArrayRecord | None:
    rec = content.get("arrays") if hasattr(content, "get") else None
    return rec if isinstance(rec, ArrayRecord) else None


def _plain_update(rec: ArrayRecord, gstate: Mapping[str, np.ndarray]
                  ) -> tuple[str, str] | np.ndarray:
    """The flat update of a full-weights reply, or (code, detail)."""
    if list(rec.keys()) != list(gstate):
        return INVALID_SHAPE, f"keys {sorted(rec.keys())[:8]} are not the model's"
    parts = []
    for k, ref in gstate.items():
        a = rec[k]
        if tuple(a.shape) != ref.shape:
            return INVALID_SHAPE, f"{k} has shape {tuple(a.shape)}, the model {ref.shape}"
        if str(a.dtype) != str(ref.dtype):
            return INVALID_DTYPE, f"{k} has dtype {a.dtype}, the model {ref.dtype}"
        try:
            v = a.numpy()
        except Exception as exc:  # noqa: BLE001 - a malformed buffer is a rejection
            return INVALID_ENCODING, f"{k} does not deserialize: {type(exc).__name__}"
        if v.shape != ref.shape or v.dtype != ref.dtype:
            return INVALID_SHAPE, f"{k} deserializes to {v.shape} {v.dtype}"
        if not np.all(np.isfinite(v)):
            return INVALID_NONFINITE, f"{k} has non-finite values"
        parts.append(v.astype(np.float64).ravel() - ref.astype(np.float64).ravel())
    return np.concatenate(parts) if parts else np.zeros(0)


def _encoded_update(rec: ArrayRecord, gstate: Mapping[str, np.ndarray], codec: str
                    ) -> tuple[str, str] | np.ndarray:
    from lepton_fed.compression.wire import decode_payload

    size = int(sum(v.size for v in gstate.values()))
    try:
        payload = OrderedDict((k, rec[k].numpy()) for k in rec.keys())
        vec = decode_payload(payload, codec, size)
    except Exception as exc:  # noqa: BLE001 - whatever the codec raises is a rejection
        msg = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
        code = INVALID_NONFINITE if "non-finite" in msg else INVALID_ENCODING
        return code, f"{codec} payload: {msg}"
    return vec


def _finite_number(v: Any) -> bool:
    return (isinstance(v, int | float) and not isinstance(v, bool)
            and math.isfinite(float(v)))


def _check_metrics(metrics: Any, weight_key: str) -> tuple[str, str] | None:
    if not isinstance(metrics, MetricRecord):
        return INVALID_WEIGHT, "the reply has no metrics record"
    w = metrics.get(weight_key)
    if not _finite_number(w) or float(cast(float, w)) < 0:
        return INVALID_WEIGHT, f"{weight_key}={w!r} is not a finite number >= 0"
    for k, v in metrics.items():
        vals = v if isinstance(v, list) else [v]
        # an epsilon may be inf (a spent budget): it is recorded, never aggregated
        if k != "epsilon" and any(isinstance(x, float) and not math.isfinite(x) for x in vals):
            return INVALID_METRICS, f"metric {k!r} is not finite"
    return None


def check_update(content: Any, gstate: Mapping[str, np.ndarray], *, codec: str = "none",
                 clip: float | None = None, weight_key: str = "num-examples",
                 ) -> tuple[str, str] | None:
    """None when one reply's content is a usable update, else ``(code, detail)``.

    Args:
        content: the reply's RecordDict (``arrays`` + ``metrics``).
        gstate: the global model the round sent (keys, shapes, dtypes to match).
        codec: ``compression.update`` of the run.
        clip: the L2 bound clients clip to (None: no bound applies).
        weight_key: the metric the strategy weights by.
    """
    rec = _arrays(content)
    if rec is None:
        return INVALID_MISSING, "the reply carries no arrays record"
    bad = _check_metrics(content.get("metrics"), weight_key)
    if bad is not None:
        return bad
    update = _plain_update(rec, gstate) if codec == "none" else _encoded_update(rec, gstate, codec)
    if isinstance(update, tuple):
        return update
    if clip is not None and codec == "none":
        norm = float(np.sqrt(np.sum(update * update)))
        if norm > clip * (1 + NORM_SLACK) + 1e-9:
            return INVALID_NORM, f"update norm {norm:.6g} exceeds the clip {clip:.6g}"
    return None


def validate_replies(
    replies: Iterable[Message], gstate: Mapping[str, np.ndarray], *, rnd: int,
    sent: Mapping[str, int], codec: str = "none", clip: float | None = None,
    weight_key: str = "num-examples", name: Callable[[Message], str] | None = None,
) -> tuple[list[Message], list[Rejection]]:
    """Split one round's answers into usable replies and rejections.

    The usable replies are returned ordered by node name (``name``), so aggregation sums
    in the same order whichever node answered first (bit-identical reruns).

    Args:
        rnd: the round; a reply whose ``server-round`` metric names another is stale.
        sent: this round's request message ids -> node; a reply to any other message
            (a replay from an earlier round) is stale; a second reply to one is a duplicate.
    """
    ok: list[Message] = []
    bad: list[Rejection] = []
    seen: set[str] = set()
    for r in replies:
        to = r.metadata.reply_to_message_id
        metrics = r.content.get("metrics") if hasattr(r.content, "get") else None
        echoed = metrics.get("server-round") if isinstance(metrics, MetricRecord) else None
        if to not in sent or (echoed is not None and echoed != rnd):
            bad.append(Rejection(r, STALE_ROUND, f"reply to message {to[:12]!r} (round "
                                 f"{echoed}) is not for round {rnd}"))
            continue
        if to in seen:
            bad.append(Rejection(r, INVALID_DUPLICATE, "a second reply to the same request"))
            continue
        seen.add(to)
        why = check_update(r.content, gstate, codec=codec, clip=clip, weight_key=weight_key)
        if why is None:
            ok.append(r)
        else:
            bad.append(Rejection(r, *why))
    if name is not None:
        ok.sort(key=lambda m: (name(m), sent.get(m.metadata.reply_to_message_id, 0)))
    return ok, bad


def check_aggregate(reply: Message, gstate: Mapping[str, np.ndarray]) -> str | None:
    """None when a secure round's aggregate (``w_global + mean update``) has the
    model's keys and shapes and finite values, else a reason code."""
    rec = _arrays(reply.content)
    if rec is None or list(rec.keys()) != list(gstate):
        return INVALID_SHAPE
    for k, ref in gstate.items():
        v = rec[k].numpy()
        if v.shape != ref.shape:
            return INVALID_SHAPE
        if not np.all(np.isfinite(v)):
            return INVALID_NONFINITE
    return None


def rejected_epsilons(rejections: Iterable[Rejection], name: Callable[[Message], str],
                      ) -> dict[str, float]:
    """Epsilons that rejected replies report (a rejected update still cost its node
    privacy: the spend is recorded even though the update is not used)."""
    out: dict[str, float] = {}
    for j in rejections:
        m = j.reply.content.get("metrics") if hasattr(j.reply.content, "get") else None
        eps = m.get("epsilon") if isinstance(m, MetricRecord) else None
        if _finite_number(eps) or (isinstance(eps, float) and eps == math.inf):
            out[name(j.reply)] = max(out.get(name(j.reply), 0.0), float(cast(float, eps)))
    return out
