"""Before round 1, and for every node that joins or restarts later: the setup exchange.

Each node gets the run config (with the federation's schema inlined), checks it against
its own policy and its file against the schema, and either declines with a code (it is
then never sampled in this run), fails with a code, or replies with its name and the
feature sums, sums of squares and count of its training rows (for the shared scaler).

With secure aggregation (``secure`` given) the setup message also carries the node's
round-key advertisement request (``secagg`` record, as in ``query.secagg_advertise``),
and a node that ACCEPTS the run answers it in its setup reply: its signed round keys for
the run's rounds, collected and checked by the
:class:`~lepton_fed.server.secure.SecureAggregator` exactly as an in-round
advertisement. A node that declines or fails advertises nothing; a node whose reply
carries no (or a refused) advertisement is asked again in its first round. Rounds then
need no separate advertisement exchange.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

import numpy as np
from flwr.app import ConfigRecord, Message, RecordDict
from flwr.serverapp import Grid

from lepton_fed.data.preprocess import FeatureStats
from lepton_fed.errors import RunFailed
from lepton_fed.server.exchange import (
    Exchange,
    decline_code,
    error_code,
    exchange,
    exchange_record,
)
from lepton_fed.server.registry import NodeRegistry

if TYPE_CHECKING:
    from lepton_fed.server.secure import SecureAggregator

__all__ = ["SetupResult", "no_node_accepted", "setup_nodes", "wait_for_nodes"]


@dataclass
class SetupResult:
    """How many nodes accepted, the statistics of those that sent them, the bytes moved."""

    stats: list[FeatureStats] = field(default_factory=list)
    accepted: int = 0
    bytes_down: int = 0
    bytes_up: int = 0
    exchange: dict[str, Any] | None = None  # exchange_record() of the setup exchange


def wait_for_nodes(grid: Grid, n: int, timeout: float, *, minimum: int,
                   poll_s: float = 0.2) -> list[int]:
    """Wait up to ``timeout`` s for ``n`` nodes; settle for ``minimum`` after that.

    Raises:
        RunFailed: fewer than ``minimum`` nodes connected in time.
    """
    t0 = time.monotonic()
    while len(ids := sorted(grid.get_node_ids())) < n:
        if time.monotonic() - t0 > timeout:
            if len(ids) >= minimum:
                return ids
            raise RunFailed(f"only {len(ids)} of {n} nodes connected within {timeout:.0f} s "
                            f"(at least {minimum} needed)")
        time.sleep(poll_s)
    return ids


def setup_nodes(grid: Grid, reg: NodeRegistry, nodes: list[int], node_yaml: str,
                timeout: float, num_features: int,
                secure: SecureAggregator | None = None) -> SetupResult:
    """Send the setup to ``nodes``; record names, declines and failures in ``reg``.

    Statistics that are not ``num_features`` finite sums with a positive count, or whose
    means would overflow the float32 scaler, are refused (``INVALID_REPLY``) and that node
    is not used. With ``secure``, each message carries the node's advertisement request
    and the round keys of the nodes that accepted are handed to ``secure``.
    """
    res = SetupResult()
    adverts = secure.setup_requests(nodes) if secure is not None else {}
    msgs = []
    for nid in nodes:
        content = RecordDict({"config": ConfigRecord({"config-yaml": node_yaml})})
        if nid in adverts:
            content["secagg"] = ConfigRecord({"request": adverts[nid]})
        msgs.append(Message(content, dst_node_id=nid, message_type="query.setup"))
    keys: dict[int, bytes] = {}
    try:
        ex = exchange(grid, msgs, timeout, reg.learn_name)
        _record(ex, reg, res, num_features, keys)
    finally:  # the advertisement stage ends even when the exchange failed
        if secure is not None:
            secure.collect_setup(keys)
    return res


def _record(ex: Exchange, reg: NodeRegistry, res: SetupResult, num_features: int,
            keys: dict[int, bytes]) -> None:
    """Books the setup replies into ``reg``/``res``; the round keys of the nodes that
    were set up go into ``keys``."""
    res.bytes_down, res.bytes_up = ex.bytes_down, ex.bytes_up
    res.exchange = exchange_record("query.setup", len(ex.node_of), len(ex.ok), ex.seconds,
                                   ex.bytes_up, ex.bytes_down)
    for r in ex.declined:
        reg.refuse(ex.node(r), decline_code(r))
    for r in ex.errors:  # a node whose file does not fit the run is not asked again
        nid = ex.node(r)
        reg.refused[nid] = error_code(r)
        reg.record_failure(nid, error_code(r))
    for r in ex.ok:
        nid = ex.node(r)
        if "metrics" not in r.content:  # its policy keeps its feature statistics
            reg.set_up(nid, str(r.content["node"]["name"])[:64] if "node" in r.content else "")
            res.accepted += 1
            _take_keys(r, nid, keys)
            continue
        try:
            m = r.content["metrics"]
            st = FeatureStats(int(cast(int, m["count"])), np.asarray(m["sum"], np.float64),
                              np.asarray(m["sumsq"], np.float64))
            name = str(r.content["node"]["name"])[:64] if "node" in r.content else ""
        except (KeyError, TypeError, ValueError):
            st = None
        if (st is None or st.count <= 0 or st.sum.shape != (num_features,)
                or st.sumsq.shape != (num_features,)
                or not (np.all(np.isfinite(st.sum)) and np.all(np.isfinite(st.sumsq)))
                # beyond float32 once averaged: the scaler would overflow for everyone
                or np.max(np.abs(st.sum)) / st.count > 1e18
                or np.max(st.sumsq) / st.count > 1e36 or np.min(st.sumsq) < 0):
            reg.refused[nid] = "INVALID_REPLY"
            reg.record_failure(nid, "INVALID_REPLY")
            continue
        reg.set_up(nid, name)
        res.accepted += 1
        res.stats.append(st)
        _take_keys(r, nid, keys)


def _take_keys(reply: Message, nid: int, keys: dict[int, bytes]) -> None:
    """The advertisement a setup reply carries (untrusted: only bytes are taken; their
    content is checked by the secure-aggregation server)."""
    rec = reply.content.get("secagg")
    value = rec.get("reply") if isinstance(rec, ConfigRecord) else None
    if isinstance(value, bytes):
        keys[nid] = value


def no_node_accepted(reg: NodeRegistry) -> RunFailed:
    """The error when no node accepted the run, with every reason code by node."""
    parts = [f"{n}: {c}" for n, c in reg.summary()["refused"].items()]  # type: ignore[attr-defined]
    return RunFailed("no node accepted the run" + (": " + "; ".join(parts) if parts else
                                                    " (no node answered the setup)"))
