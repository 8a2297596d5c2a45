"""Before round 1, and for every node that joins or restarts later: the setup exchange.

Each node gets the run config (with the federation's schema inlined), checks it against
its own policy and its file against the schema, and either declines with a code (it is
then never sampled in this run), fails with a code, or replies with its name and the
feature sums, sums of squares and count of its training rows (for the shared scaler).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import cast

import numpy as np
from flwr.app import ConfigRecord, Message, RecordDict
from flwr.serverapp import Grid

from lepton_fed.data.preprocess import FeatureStats
from lepton_fed.errors import RunFailed
from lepton_fed.server.exchange import decline_code, error_code, exchange
from lepton_fed.server.registry import NodeRegistry

__all__ = ["SetupResult", "no_node_accepted", "setup_nodes", "wait_for_nodes"]


@dataclass
class SetupResult:
    """How many nodes accepted, the statistics of those that sent them, the bytes moved."""

    stats: list[FeatureStats] = field(default_factory=list)
    accepted: int = 0
    bytes_down: int = 0
    bytes_up: int = 0


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
                timeout: float, num_features: int) -> SetupResult:
    """Send the setup to ``nodes``; record names, declines and failures in ``reg``.

    Statistics that are not ``num_features`` finite sums with a positive count, or whose
    means would overflow the float32 scaler, are refused (``INVALID_REPLY``) and that node
    is not used.
    """
    res = SetupResult()
    msgs = [Message(RecordDict({"config": ConfigRecord({"config-yaml": node_yaml})}),
                    dst_node_id=nid, message_type="query.setup") for nid in nodes]
    ex = exchange(grid, msgs, timeout, reg.learn_name)
    res.bytes_down, res.bytes_up = ex.bytes_down, ex.bytes_up
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
    return res


def no_node_accepted(reg: NodeRegistry) -> RunFailed:
    """The error when no node accepted the run, with every reason code by node."""
    parts = [f"{n}: {c}" for n, c in reg.summary()["refused"].items()]  # type: ignore[attr-defined]
    return RunFailed("no node accepted the run" + (": " + "; ".join(parts) if parts else
                                                    " (no node answered the setup)"))
