"""What a node tells the coordinator when it does not do what was asked: reason CODES.

Guarantee: a decline or an error reply carries a code from the fixed set below and, at
most, names of config keys or schema columns -- never a value computed from the node's
data, an exception's text, or a file path. The full exception is logged on the node only
(its operator sees it; the coordinator does not). Flower would otherwise forward
``str(exception)`` to the server, and exception texts can hold data (a coordinate of an
update, an example count) or local paths.
"""

from __future__ import annotations

import logging
import traceback

from flwr.app import ConfigRecord, Error, Message, MetricRecord, RecordDict

__all__ = [
    "DATA_UNAVAILABLE",
    "ERROR_CODES",
    "INTERNAL",
    "INVALID_REQUEST",
    "NEEDS_SETUP",
    "SCHEMA_MISMATCH",
    "SECAGG_ABORT",
    "decline_reply",
    "error_reply",
]

log = logging.getLogger("lepton_fed.node")

#: the node has no run config (it restarted): the server should send the setup again
NEEDS_SETUP = "NEEDS_SETUP"
#: the node's file differs from the federation's schema (columns named in the detail)
SCHEMA_MISMATCH = "SCHEMA_MISMATCH"
#: the node's data file is missing or unreadable
DATA_UNAVAILABLE = "DATA_UNAVAILABLE"
#: the secure-aggregation protocol refused the request (see the node's log)
SECAGG_ABORT = "SECAGG_ABORT"
#: the request was malformed (wrong shapes, missing records, bad values)
INVALID_REQUEST = "INVALID_REQUEST"
#: anything else (see the node's log)
INTERNAL = "INTERNAL"

#: Flower error codes (``Error.code``) used for each reason; Flower reserves small codes.
ERROR_CODES = {NEEDS_SETUP: 4101, SCHEMA_MISMATCH: 4103,
               DATA_UNAVAILABLE: 4104, SECAGG_ABORT: 4105, INVALID_REQUEST: 4106,
               INTERNAL: 4199}


def decline_reply(msg: Message, code: str, detail: str = "",
                  metrics: dict[str, float | int] | None = None, node_name: str = "") -> Message:
    """A normal reply saying the node declines: ``decline`` {code, detail, node} and
    metrics ``declined=1`` (plus e.g. the node's epsilon so far when its policy allows)."""
    content = RecordDict({
        "metrics": MetricRecord({"declined": 1, "num-examples": 0, **(metrics or {})}),
        "decline": ConfigRecord({"code": code, "detail": detail, "node": node_name[:64]}),
    })
    return Message(content, reply_to=msg)


def _code_of(exc: BaseException) -> tuple[str, str]:
    from lepton_fed.data.contract import SchemaMismatch
    from lepton_fed.errors import ProtocolAbort

    if isinstance(exc, SchemaMismatch):
        return SCHEMA_MISMATCH, "columns: " + ", ".join(exc.columns)
    if isinstance(exc, ProtocolAbort):
        return SECAGG_ABORT, ""
    if isinstance(exc, FileNotFoundError | PermissionError | IsADirectoryError):
        return DATA_UNAVAILABLE, ""
    if isinstance(exc, KeyError | TypeError | ValueError):
        return INVALID_REQUEST, ""
    return INTERNAL, ""


def error_reply(msg: Message, exc: BaseException, node_name: str = "") -> Message:
    """An error reply with a code (and the node's name) only; the exception is logged on
    the node. Reason format: ``lepton-fed:CODE [node=NAME] [(detail)]``."""
    code, detail = _code_of(exc)
    log.error("declining %s with %s: %s\n%s", msg.metadata.message_type, code, exc,
              "".join(traceback.format_exception(exc)))
    name = "".join(ch for ch in node_name if ch.isalnum() or ch in "-_.")[:64]
    reason = (f"lepton-fed:{code}" + (f" node={name}" if name else "")
              + (f" ({detail})" if detail else ""))
    return Message(Error(code=ERROR_CODES[code], reason=reason), reply_to=msg)
