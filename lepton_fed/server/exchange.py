"""One send-and-receive with every reply attributed to the node it was SENT to.

Flower answers a message that cannot be delivered (a node that vanished, an expired
TTL) with an error reply created by the SuperLink, whose source id is not the node's; so
replies are matched to requests by ``reply_to_message_id``. Replies are sorted into
answers, declines (a ``decline`` record with a reason code) and errors (Flower error
replies; lepton-fed nodes put a ``lepton-fed:CODE`` reason in them), and nodes that did
not answer in time are listed as missing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import cast

from flwr.app import Message
from flwr.serverapp import Grid

from lepton_fed.utils.records import content_bytes

__all__ = ["Exchange", "decline_code", "error_code", "error_node_name", "exchange",
           "reply_node_name"]


@dataclass
class Exchange:
    """Replies of one exchange, by kind; ``node_of`` maps every reply to its node."""

    ok: list[Message] = field(default_factory=list)
    declined: list[Message] = field(default_factory=list)
    errors: list[Message] = field(default_factory=list)
    missing: list[int] = field(default_factory=list)
    node_of: dict[str, int] = field(default_factory=dict)
    bytes_down: int = 0
    bytes_up: int = 0

    def node(self, reply: Message) -> int:
        """The node a reply answers for (the destination of the request)."""
        return self.node_of.get(reply.metadata.reply_to_message_id, reply.metadata.src_node_id)


def error_code(reply: Message) -> str:
    """A short reason of an error reply: a lepton-fed node's ``CODE``, or for an error
    Flower itself raised (a crashed app process, an undeliverable message)
    ``FLOWER_<code>: <last line of Flower's reason>``."""
    reason = (reply.error.reason or "").strip()
    if reason.startswith("lepton-fed:"):
        return reason[len("lepton-fed:"):].split()[0]
    last = reason.splitlines()[-1][:200] if reason else ""
    return f"FLOWER_{reply.error.code}" + (f": {last}" if last else "")


def error_node_name(reply: Message) -> str:
    """The node name a lepton-fed error reply carries (``node=NAME``), or ''."""
    reason = (reply.error.reason or "").strip()
    if not reason.startswith("lepton-fed:"):
        return ""
    for tok in reason.split()[1:]:
        if tok.startswith("node="):
            return tok[5:69]
    return ""


def decline_code(reply: Message) -> str:
    """The reason code of a decline reply."""
    return str(cast(str, reply.content["decline"]["code"]))[:64]


def reply_node_name(reply: Message) -> str:
    """The node name a decline or lepton-fed error reply carries, or ''."""
    if reply.has_error():
        return error_node_name(reply)
    if "decline" in reply.content:
        return str(reply.content["decline"].get("node", ""))[:64]
    return ""


def exchange(grid: Grid, msgs: list[Message], timeout: float,
             names: Callable[[int, str], None] | None = None) -> Exchange:
    """Send ``msgs``, wait up to ``timeout`` seconds, classify the replies; ``names``
    (e.g. ``NodeRegistry.learn_name``) learns the names declines and errors carry."""
    ex = Exchange(bytes_down=sum(content_bytes(m.content) for m in msgs))
    if not msgs:
        return ex
    replies = list(grid.send_and_receive(msgs, timeout=timeout))
    ex.node_of = {m.metadata.message_id: m.metadata.dst_node_id for m in msgs}
    answered: set[int] = set()
    for r in replies:
        answered.add(ex.node(r))
        if names is not None:
            names(ex.node(r), reply_node_name(r))
        if r.has_error():
            ex.errors.append(r)
        elif "decline" in r.content:
            ex.declined.append(r)
        else:
            ex.bytes_up += content_bytes(r.content)
            ex.ok.append(r)
    ex.missing = sorted({m.metadata.dst_node_id for m in msgs} - answered)
    return ex
