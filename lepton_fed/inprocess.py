"""An in-process federation: a Flower ``Grid`` that delivers messages straight to a
``ClientApp`` in this process, one ``Context`` per node.

It runs the real ServerApp round loop and the real ClientApp handlers without Ray or
a SuperLink -- for fast tests and for measuring protocol cost apart from transport.
Message metadata (ids, source/destination nodes) is set as Flower's own grids set it.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterable
from typing import Any

from flwr.app import Context, Error, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid
from flwr.supercore.run import Run

__all__ = ["InProcessGrid"]


def _set_identity(run_id: int) -> None:
    from flwr.supercore.task_identity import TaskIdentity

    TaskIdentity.run_id = run_id
    TaskIdentity.task_id = 1
    TaskIdentity.node_id = 0


class InProcessGrid(Grid):
    """Deliver each message synchronously to ``client_app`` for its destination node.

    Args:
        client_app: the real ClientApp to run.
        num_nodes: nodes 1..num_nodes get ``partition-id`` 0..num_nodes-1.
        drop: optional predicate ``(node_id, message) -> bool``; True makes that node
            not answer that message (a dropout, as a timeout looks to the server).
        node_configs: optional node_config per node (e.g. a real node's ``data-path``),
            replacing the simulated ``partition-id``.
        bundle: a simulation bundle directory (:mod:`lepton_fed.sim_bundle`: keys,
            signed roster, node policy) given to every simulated node as
            ``node_config["sim-bundle"]``.
    """

    def __init__(
        self,
        client_app: ClientApp,
        num_nodes: int,
        *,
        run_id: int = 1,
        drop: Callable[[int, Message], bool] | None = None,
        node_configs: list[dict[str, Any]] | None = None,
        bundle: str | os.PathLike[str] | None = None,
    ) -> None:
        self.app = client_app
        self.run_id = run_id
        self.drop = drop
        _set_identity(run_id)
        self.contexts = {
            nid: Context(run_id=run_id, node_id=nid,
                         node_config=dict(node_configs[nid - 1]) if node_configs else
                         {"partition-id": nid - 1, "num-partitions": num_nodes},
                         state=RecordDict(), run_config={})
            for nid in range(1, num_nodes + 1)
        }
        if bundle is not None:
            for ctx in self.contexts.values():
                ctx.node_config["sim-bundle"] = str(bundle)
        self._pending: dict[str, Message] = {}
        self.seen: list[Message] = []  # every reply the server received, for audits

    @property
    def run(self) -> None:  # type: ignore[override]  # no Flower Run in-process
        """Always ``None``: an in-process federation has no Flower ``Run`` record."""
        return None

    def set_run(self, run_id: Run | int) -> None:
        """Use ``run_id`` (a ``Run`` or its id) as this grid's run id."""
        self.run_id = run_id.run_id if isinstance(run_id, Run) else run_id

    def get_node_ids(self) -> Iterable[int]:
        """The simulated node ids, ``1..num_nodes``."""
        return list(self.contexts)

    def create_message(self, content: RecordDict, message_type: str, dst_node_id: int,
                       group_id: str, ttl: float | None = None) -> Message:
        """A message to ``dst_node_id``; its id and source node are set when it is delivered."""
        return Message(content, dst_node_id=dst_node_id, message_type=message_type,
                       group_id=group_id, ttl=ttl)

    def _deliver(self, msg: Message) -> Message | None:
        nid = msg.metadata.dst_node_id
        msg.metadata.__dict__["_message_id"] = uuid.uuid4().hex
        msg.metadata.__dict__["_src_node_id"] = 0
        if self.drop is not None and self.drop(nid, msg):
            return None
        try:
            reply = self.app(msg, self.contexts[nid])
        except Exception as exc:  # noqa: BLE001 - becomes an error reply, as in Flower
            reply = Message(Error(code=0, reason=f"{type(exc).__name__}: {exc}"), reply_to=msg)
        reply.metadata.__dict__["_src_node_id"] = nid
        self.seen.append(reply)
        return reply

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        """Deliver each message now and return their ids; a dropped node's reply never arrives."""
        ids = []
        for m in messages:
            r = self._deliver(m)
            if r is not None:
                self._pending[m.metadata.message_id] = r
            ids.append(m.metadata.message_id)
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        """The replies to ``message_ids`` that arrived and were not pulled yet (each only once)."""
        return [self._pending.pop(i) for i in message_ids if i in self._pending]

    def send_and_receive(self, messages: Iterable[Message], *,
                         timeout: float | None = None) -> Iterable[Message]:
        """Deliver each message and return the replies, in order; dropped nodes give none.

        ``timeout`` is unused: delivery is synchronous.
        """
        del timeout  # delivery is synchronous: a dropped node simply never answers
        return [r for m in messages if (r := self._deliver(m)) is not None]
