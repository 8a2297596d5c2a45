"""The Flower ClientApp: wiring only. Message types it answers:

- ``query.setup``: checks the run config against the NODE POLICY (declines with a code if
  it is outside it), checks the node's file against the federation's schema, stores the
  config; replies with its name and, when its policy allows ``feature-stats`` in the
  clear, the feature sums/counts of its training rows for the shared scaler. With secure
  aggregation on, the setup may carry a round-key advertisement request (``secagg``):
  a node that ACCEPTED the run answers it in the same reply (signed round keys, as for
  ``query.secagg_advertise``); a node that declines or fails advertises nothing.
- ``train``: one local round; replies with weights (or an encoded update) and metrics,
  or a ``decline`` {code, detail} reply (privacy budget, policy, missing secure
  aggregation, a node that restarted and needs the setup again). With secure aggregation
  the request carries a masked-input request and the reply carries only the masked vector.
- ``evaluate``: the global model on the node's held-out rows; replies with sums only.
- ``query.secagg_advertise`` / ``query.secagg_unmask``: the other secure-aggregation
  stages (see :mod:`lepton_fed.server.secure`); ``secagg.slot`` (``train``, default, or
  ``eval``) picks the protocol state they use.
- ``query.secagg_evaluate``: federated evaluation under secure aggregation: the global
  model on the node's held-out rows, returned only as a masked evaluation vector (eval
  slot); the node's sums never leave it in the clear.

Everything the server sends is untrusted input. Any exception becomes an error reply
carrying a reason code only (:mod:`lepton_fed.client.codes`); details stay in the node's log.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, cast

import numpy as np
from flwr.app import (
    ArrayRecord,
    ConfigRecord,
    Context,
    Message,
    MetricRecord,
    RecordDict,
)
from flwr.clientapp import ClientApp

from lepton_fed.client import codes
from lepton_fed.client.local_data import node_data
from lepton_fed.client.node import NodeState, parse_config
from lepton_fed.client.node_policy import node_policy
from lepton_fed.client.round import run_evaluate, run_train_round
from lepton_fed.data.preprocess import FeatureStats

__all__ = ["app"]

app = ClientApp()

Handler = Callable[[Message, Context], Message]


def _coded(fn: Handler) -> Handler:
    """Turn every exception into a coded error reply (nothing from the data leaks)."""

    @functools.wraps(fn)
    def wrapper(msg: Message, context: Context) -> Message:
        try:
            return fn(msg, context)
        except Exception as exc:  # noqa: BLE001 - the reply carries a code, the log the rest
            return codes.error_reply(msg, exc, _name(context))

    return wrapper


def _name(context: Context) -> str:
    """The node's name: its roster name on a real node, ``partition-<i>`` in simulation."""
    nc = context.node_config
    return str(nc.get("node-name", "") or "") or (
        f"partition-{nc['partition-id']}" if "partition-id" in nc else "")


def _policy_decline(msg: Message, node: NodeState, cfg: Any) -> Message | None:
    from lepton_fed.policy import check_request
    from lepton_fed.secagg.settings import config_security_bits

    # the node computes the secure-aggregation level itself from k, t and the cohort size,
    # rather than trusting the level the server's config states
    declines = check_request(node_policy(node.context), cfg, security_level=config_security_bits)
    if not declines:
        return None
    first = declines[0]
    detail = "; ".join(f"{d.code}: {d.detail}" for d in declines)
    return codes.decline_reply(msg, first.code, detail, node_name=_name(node.context))


@app.query("setup")
@_coded
def setup(msg: Message, context: Context) -> Message:
    """Check the run config against the policy, store it; reply with feature statistics."""
    node = NodeState(context)
    yaml_text = str(msg.content["config"]["config-yaml"])
    cfg = parse_config(yaml_text)
    declined = _policy_decline(msg, node, cfg)
    if declined is not None:
        return declined
    data = node_data(cfg, context).train
    node.set("config-yaml", yaml_text)
    content = RecordDict({"node": ConfigRecord({"name": _name(context)})})
    from lepton_fed.policy import filter_metrics

    if filter_metrics(node_policy(context), {"feature-stats": 1}):  # the policy allows it
        st = FeatureStats.of(data.X)
        content["metrics"] = MetricRecord({
            "count": st.count, "sum": st.sum.tolist(), "sumsq": st.sumsq.tolist()})
    sa = cfg.get("secagg")
    if "secagg" in msg.content and sa is not None and bool(sa.get("enabled", False)):
        # only now, with the run accepted: the round keys, signed with the identity key
        from lepton_fed.client.secure import setup_advertisement

        keys = setup_advertisement(node, msg.content["secagg"], _name(context))
        if keys is not None:
            content["secagg"] = ConfigRecord({"reply": keys})
    return Message(content, reply_to=msg)


def _configured(msg: Message, node: NodeState) -> Message | None:
    """A NEEDS_SETUP decline when this node has no run config (it restarted)."""
    if node.get("config-yaml") is None:
        return codes.decline_reply(msg, codes.NEEDS_SETUP, node_name=_name(node.context))
    return None


def _take_scaler(msg: Message, node: NodeState) -> None:
    """Store the federation's scaler when the message carries it (first contact).

    Untrusted input: two float lists of the same non-zero length, finite, every scale
    positive; anything else is refused (``ValueError``: ``INVALID_REQUEST``) before the
    node stores it or trains with it.
    """
    extra = msg.content.get("lepton")
    if extra is None or "scaler-mean" not in extra:
        return
    try:
        mean = np.asarray(cast(list[float], extra["scaler-mean"]), np.float64)
        scale = np.asarray(cast(list[float], extra.get("scaler-scale")), np.float64)
    except (TypeError, ValueError):
        raise ValueError("scaler-mean/scaler-scale are not lists of numbers") from None
    if mean.ndim != 1 or mean.size == 0 or scale.shape != mean.shape:
        raise ValueError("scaler-mean and scaler-scale must be two lists of the same length")
    if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(scale)) and np.all(scale > 0)):
        raise ValueError("the scaler must be finite with every scale > 0")
    node.set("scaler-mean", [float(v) for v in mean])
    node.set("scaler-scale", [float(v) for v in scale])


@app.train()
def train(msg: Message, context: Context) -> Message:
    """One local training round (and the node's own metrics when it exports them:
    ``node_config["metrics-port"]``)."""
    reply = _train(msg, context)
    if context.node_config.get("metrics-port"):
        from lepton_fed.observe.node_exporter import observe_train_reply

        observe_train_reply(context.node_config, node=_name(context), reply=reply,
                            epsilon_cap=node_policy(context).max_epsilon)
    return reply


@_coded
def _train(msg: Message, context: Context) -> Message:
    """One local training round."""
    node = NodeState(context)
    if (need := _configured(msg, node)) is not None:
        return need
    cfg = node.cfg
    if (declined := _policy_decline(msg, node, cfg)) is not None:
        return declined
    from lepton_fed.policy import check_train_message

    unmasked = check_train_message(node_policy(context), cfg,
                                   has_secagg_request="secagg" in msg.content)
    if unmasked:  # a secure-aggregation node never sends a plain update
        return codes.decline_reply(msg, unmasked[0].code, unmasked[0].detail, node_name=_name(context))
    _take_scaler(msg, node)
    request = None
    if "secagg" in msg.content:
        from lepton_fed.client.secure import request_bytes

        request = request_bytes(msg.content["secagg"])
    out = run_train_round(node, cast(ArrayRecord, msg.content["arrays"]),
                          cast(ConfigRecord, msg.content["config"]),
                          secagg_request=request)
    if out.decline is not None:
        return codes.decline_reply(msg, out.decline, out.detail, out.metrics, _name(context))
    content = RecordDict({"metrics": MetricRecord(out.metrics)})
    if isinstance(out.record, ConfigRecord):
        content["secagg"] = out.record
    elif out.record is not None:
        content["arrays"] = out.record
    return Message(content, reply_to=msg)


@app.evaluate()
@_coded
def evaluate(msg: Message, context: Context) -> Message:
    """The global model on this node's held-out rows: sums only."""
    node = NodeState(context)
    if (need := _configured(msg, node)) is not None:
        return need
    _take_scaler(msg, node)
    out = run_evaluate(node, cast(ArrayRecord, msg.content["arrays"]))
    if out.decline is not None:
        return codes.decline_reply(msg, out.decline, out.detail, node_name=_name(context))
    return Message(RecordDict({"metrics": MetricRecord(out.metrics)}), reply_to=msg)


@app.query("secagg_advertise")
@_coded
def secagg_advertise(msg: Message, context: Context) -> Message:
    """Secure aggregation, once per run: signed round keys for the next rounds."""
    return _secagg_step(msg, context, "advertise")


@app.query("secagg_unmask")
@_coded
def secagg_unmask(msg: Message, context: Context) -> Message:
    """Secure aggregation: shares that remove the masks of this round."""
    return _secagg_step(msg, context, "unmask")


@app.query("secagg_evaluate")
@_coded
def secagg_evaluate(msg: Message, context: Context) -> Message:
    """Secure federated evaluation: the masked evaluation vector of the global model."""
    from lepton_fed.client.secure import request_bytes, secure_eval_reply

    node = NodeState(context)
    if (need := _configured(msg, node)) is not None:
        return need
    if (declined := _policy_decline(msg, node, node.cfg)) is not None:
        return declined
    _take_scaler(msg, node)
    reply = secure_eval_reply(node, request_bytes(msg.content["secagg"]),
                              cast(ArrayRecord, msg.content["arrays"]))
    return Message(RecordDict({"secagg": ConfigRecord({"reply": reply})}), reply_to=msg)


def _secagg_step(msg: Message, context: Context, step: str) -> Message:
    """Runs one secure-aggregation step (``advertise``/``unmask``) on the node's saved
    client state of the request's slot."""
    from lepton_fed.client.secure import (
        load_client,
        request_bytes,
        save_client,
        slot_of,
    )

    node = NodeState(context)
    if (need := _configured(msg, node)) is not None:
        return need
    rec = msg.content["secagg"]
    slot = slot_of(rec.get("slot"))
    client = load_client(node, slot)
    reply = getattr(client, step)(request_bytes(rec))
    save_client(node, client, slot)
    return Message(RecordDict({"secagg": ConfigRecord({"reply": reply})}), reply_to=msg)
