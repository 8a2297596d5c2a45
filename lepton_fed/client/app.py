"""The Flower ClientApp: wiring only. Message types it answers:

- ``query.setup``: stores the run config; replies with feature sums/counts for the scaler.
- ``train``: one local round; replies with weights (or an encoded update) and metrics,
  or a ``declined`` reply when the node's privacy budget cannot pay for the round.
  With secure aggregation the request carries a masked-input request and the reply
  carries only the masked vector.
- ``query.secagg_advertise`` / ``query.secagg_share_keys`` / ``query.secagg_unmask``: the other secure-aggregation
  stages (see :mod:`lepton_fed.server.secure`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

from flwr.app import (
    ArrayRecord,
    ConfigRecord,
    Context,
    Message,
    MetricRecord,
    RecordDict,
)
from flwr.clientapp import ClientApp

from lepton_fed.client.node import NodeState, node_train_data
from lepton_fed.client.round import run_train_round
from lepton_fed.client.secure import load_client, save_client
from lepton_fed.data.preprocess import FeatureStats
from lepton_fed.secagg import SecAggClient

__all__ = ["app"]

app = ClientApp()


@app.query("setup")
def setup(msg: Message, context: Context) -> Message:
    """Store the run config; reply with this node's feature statistics."""
    node = NodeState(context)
    node.set("config-yaml", str(msg.content["config"]["config-yaml"]))
    data = node_train_data(node.cfg, context)
    st = FeatureStats.of(data.X)
    return Message(
        RecordDict({"metrics": MetricRecord({
            "count": st.count, "sum": st.sum.tolist(), "sumsq": st.sumsq.tolist(),
        })}),
        reply_to=msg,
    )


@app.train()
def train(msg: Message, context: Context) -> Message:
    """One local training round."""
    node = NodeState(context)
    extra = msg.content.get("lepton")
    if extra is not None and "scaler-mean" in extra:
        node.set("scaler-mean", list(cast(list[float], extra["scaler-mean"])))
        node.set("scaler-scale", list(cast(list[float], extra["scaler-scale"])))
    request = (bytes(cast(bytes, msg.content["secagg"]["request"]))
               if "secagg" in msg.content else None)
    record, metrics = run_train_round(node, cast(ArrayRecord, msg.content["arrays"]),
                                      cast(ConfigRecord, msg.content["config"]),
                                      secagg_request=request)
    content = RecordDict({"metrics": MetricRecord(metrics)})
    if isinstance(record, ConfigRecord):
        content["secagg"] = record
    elif record is not None:
        content["arrays"] = record
    return Message(content, reply_to=msg)


@app.query("secagg_advertise")
def secagg_advertise(msg: Message, context: Context) -> Message:
    """Secure aggregation, once per run: signed round keys for the next rounds."""
    return _secagg_step(msg, context, SecAggClient.advertise)


@app.query("secagg_share_keys")
def secagg_share_keys(msg: Message, context: Context) -> Message:
    """Secure aggregation, robust mode: encrypted key shares for the neighbours."""
    return _secagg_step(msg, context, SecAggClient.share_keys)


@app.query("secagg_unmask")
def secagg_unmask(msg: Message, context: Context) -> Message:
    """Secure aggregation: shares that remove the masks of this round."""
    return _secagg_step(msg, context, SecAggClient.unmask)


def _secagg_step(
    msg: Message, context: Context, step: Callable[[SecAggClient, bytes], bytes]
) -> Message:
    """Runs one secure-aggregation step on the node's saved client state."""
    node = NodeState(context)
    client = load_client(node)
    reply = step(client, bytes(cast(bytes, msg.content["secagg"]["request"])))
    save_client(node, client)
    return Message(RecordDict({"secagg": ConfigRecord({"reply": reply})}), reply_to=msg)
