"""One send-and-receive with every reply attributed to the node it was SENT to.

Flower answers a message that cannot be delivered (a node that vanished, an expired
TTL) with an error reply created by the SuperLink, whose source id is not the node's; so
replies are matched to requests by ``reply_to_message_id``. Replies are sorted into
answers, declines (a ``decline`` record with a reason code) and errors (Flower error
replies; lepton-fed nodes put a ``lepton-fed:CODE`` reason in them), and nodes that did
not answer in time are listed as missing.

Stragglers (H5): a caller that passes ``overdue`` (request id -> node, kept across
exchanges) has every request that missed its deadline remembered there; each later
exchange pulls those ids too, and a reply to one of them (pulled so, or handed back by
the grid among this exchange's replies) is ``late``: discarded, never among ``ok``. A
reply to a request this exchange does not know at all stays among ``ok`` for the
stale-reply check (:func:`~lepton_fed.server.validate_updates.validate_replies`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

from flwr.app import Message
from flwr.serverapp import Grid

from lepton_fed.utils.records import content_bytes

__all__ = [
    "MAX_OVERDUE",
    "Exchange",
    "decline_code",
    "error_code",
    "error_node_name",
    "exchange",
    "exchange_record",
    "remember_overdue",
    "reply_node_name",
    "take_late",
]


@dataclass
class Exchange:
    """Replies of one exchange, by kind; ``node_of`` maps every reply to its node."""

    ok: list[Message] = field(default_factory=list)
    declined: list[Message] = field(default_factory=list)
    errors: list[Message] = field(default_factory=list)
    missing: list[int] = field(default_factory=list)
    late: list[tuple[int, Message]] = field(default_factory=list)  # (node, reply) past
    # an earlier exchange's deadline
    node_of: dict[str, int] = field(default_factory=dict)
    bytes_down: int = 0
    bytes_up: int = 0
    seconds: float = 0.0  # wall time of send_and_receive (and pulling late replies)

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


#: requests remembered as overdue at most (the oldest are forgotten first)
MAX_OVERDUE = 4096


def exchange(grid: Grid, msgs: list[Message], timeout: float,
             names: Callable[[int, str], None] | None = None, *,
             overdue: dict[str, int] | None = None) -> Exchange:
    """Send ``msgs``, wait up to ``timeout`` seconds, classify the replies; ``names``
    (e.g. ``NodeRegistry.learn_name``) learns the names declines and errors carry.

    ``overdue`` (updated in place): requests of earlier exchanges still unanswered; the
    ones this exchange leaves unanswered are added (at most :data:`MAX_OVERDUE`)."""
    ex = Exchange(bytes_down=sum(content_bytes(m.content) for m in msgs))
    if not msgs:
        return ex
    t0 = time.monotonic()
    replies = list(grid.send_and_receive(msgs, timeout=timeout))
    ex.node_of = {m.metadata.message_id: m.metadata.dst_node_id for m in msgs}
    if overdue is not None:  # H5: stragglers
        replies, ex.late = take_late(grid, replies, ex.node_of, overdue)
    ex.seconds = time.monotonic() - t0
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
    if overdue is not None:
        remember_overdue(ex.node_of, answered, overdue)
    return ex


def exchange_record(message_type: str, sent: int, answered: int, seconds: float,
                    bytes_up: int, bytes_down: int) -> dict[str, Any]:
    """One exchange as a round's metrics row lists it (``exchanges``): what a benchmark
    or an operator needs to see where a round's time goes, without patching the loop."""
    return {"type": message_type, "sent": sent, "answered": answered,
            "seconds": round(seconds, 4), "bytes_up": bytes_up, "bytes_down": bytes_down}


def take_late(grid: Grid, replies: list[Message], sent: Mapping[str, int],
              overdue: dict[str, int]) -> tuple[list[Message], list[tuple[int, Message]]]:
    """Pull the ``overdue`` requests' replies too and split off every reply to one of them
    (pulled, or among ``replies``) as late ``(node, reply)``; a Flower error reply to one
    (e.g. its TTL expired) is dropped. Answered ids leave ``overdue``. Returns the other
    replies and the late ones."""
    if overdue:
        replies = replies + list(grid.pull_messages(list(overdue)))
    rest: list[Message] = []
    late: list[tuple[int, Message]] = []
    for r in replies:
        to = r.metadata.reply_to_message_id
        if to in overdue and to not in sent:
            nid = overdue.pop(to)
            if not r.has_error():
                late.append((nid, r))
        else:
            rest.append(r)
    return rest, late


def remember_overdue(sent: Mapping[str, int], answered: set[int],
                     overdue: dict[str, int]) -> None:
    """Add the requests in ``sent`` (id -> node) whose node did not answer to ``overdue``,
    keeping the newest :data:`MAX_OVERDUE`."""
    for mid, nid in sent.items():
        if nid not in answered:
            overdue[mid] = nid
    for old in list(overdue)[:max(0, len(overdue) - MAX_OVERDUE)]:
        del overdue[old]
