"""Prometheus metrics on a member node, for its own operator (optional).

A node whose ``node_config`` has ``metrics-port`` (on a real node:
``lepton-fed node join ... --metrics-port 9101``)
serves ``http://127.0.0.1:<port>/metrics`` with:

- ``lepton_node_epsilon{node}``: epsilon its ledger has counted on its data (every run);
- ``lepton_node_epsilon_cap{node}``: its policy's ``max_epsilon`` (absent when uncapped);
- ``lepton_node_budget_used_ratio{node}``: epsilon / cap;
- ``lepton_node_rounds_trained_total{node}``, ``lepton_node_rounds_declined_total{node,
  reason}``, ``lepton_node_rounds_failed_total{node}`` (error replies).

The ClientApp calls :func:`observe_train_reply` (or :func:`observe_node_round`) once per
train request. Without ``metrics-port`` (or with 0) it returns at once (nothing
imported, nothing served); a missing
``prometheus-client`` or a taken port is logged once and never fails the round: the
node's monitoring must not change what the node does.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Mapping
from typing import Any

from lepton_fed.observe._exporter import Endpoint, endpoint, import_prometheus

__all__ = ["NodeMetrics", "observe_node_round", "observe_train_reply"]

log = logging.getLogger(__name__)

_LOCK = threading.Lock()
_NODES: dict[int, NodeMetrics | None] = {}  # port -> metrics (None: could not start)


class NodeMetrics:
    """One node's metrics registry (and its ``/metrics`` server when ``port`` is given).

    Args:
        node: the node's name (label ``node``).
        port: serve on this port (0: a free one); None: no server.
        addr: interface to bind (loopback by default: the figures are the node's own).
    """

    def __init__(self, node: str, *, port: int | None = None,
                 addr: str = "127.0.0.1") -> None:
        prom = import_prometheus()
        self.node = node
        self.registry = prom.CollectorRegistry()
        r = self.registry
        self.epsilon = prom.Gauge("lepton_node_epsilon", "epsilon counted on this node's "
                                  "data (its ledger, every run)", ["node"], registry=r)
        self.cap = prom.Gauge("lepton_node_epsilon_cap", "the node policy's max_epsilon",
                              ["node"], registry=r)
        self.ratio = prom.Gauge("lepton_node_budget_used_ratio", "epsilon / max_epsilon",
                                ["node"], registry=r)
        self.trained = prom.Counter("lepton_node_rounds_trained", "rounds trained",
                                    ["node"], registry=r)
        self.declined = prom.Counter("lepton_node_rounds_declined", "rounds declined",
                                     ["node", "reason"], registry=r)
        self.failed = prom.Counter("lepton_node_rounds_failed", "train requests answered "
                                   "with an error", ["node"], registry=r)
        self.endpoint: Endpoint | None = (
            endpoint(port, r, addr=addr) if port is not None else None)

    def record_train(self, *, epsilon: float | None, epsilon_cap: float | None,
                     declined: str | None, failed: bool = False) -> None:
        """One train request: trained, declined with code ``declined``, or ``failed``."""
        if failed:
            self.failed.labels(self.node).inc()
        elif declined:
            self.declined.labels(self.node, declined).inc()
        else:
            self.trained.labels(self.node).inc()
        cap = epsilon_cap if epsilon_cap is not None and math.isfinite(epsilon_cap) else None
        if cap is not None:
            self.cap.labels(self.node).set(cap)
        if epsilon is not None and math.isfinite(epsilon):
            self.epsilon.labels(self.node).set(epsilon)
            if cap:
                self.ratio.labels(self.node).set(epsilon / cap)


def _for_port(node: str, port: int, addr: str) -> NodeMetrics | None:
    with _LOCK:
        if port not in _NODES:
            try:
                _NODES[port] = NodeMetrics(node, port=port, addr=addr)
            except (ImportError, OSError, ValueError) as exc:
                log.warning("node metrics are off: %s", exc)
                _NODES[port] = None
        return _NODES[port]


def observe_node_round(node_config: Mapping[str, Any], *, node: str,
                       epsilon: float | None, epsilon_cap: float | None,
                       declined: str | None, failed: bool = False) -> None:
    """Record one train request on the node's exporter, if ``node_config`` asks for one
    (``metrics-port``, optional ``metrics-addr``). Never raises."""
    raw = node_config.get("metrics-port")
    if raw is None or str(raw).strip() in ("", "0"):
        return
    try:
        port = int(str(raw))
        metrics = _for_port(node or "node", port, str(node_config.get("metrics-addr") or
                                                     "127.0.0.1"))
        if metrics is not None:
            metrics.record_train(epsilon=epsilon, epsilon_cap=epsilon_cap,
                                 declined=declined, failed=failed)
    except Exception as exc:  # noqa: BLE001 - monitoring must not fail the round
        log.warning("node metrics: %s", exc)


def observe_train_reply(node_config: Mapping[str, Any], *, node: str, reply: Any,
                        epsilon_cap: float | None) -> None:
    """:func:`observe_node_round` from the train reply the node is about to send (a
    Flower ``Message``): an error reply counts as failed, a ``decline`` record as
    declined with its code, anything else as trained; the epsilon is the one in the
    reply's metrics (absent when the node's policy keeps it). Never raises."""
    raw = node_config.get("metrics-port")
    if raw is None or str(raw).strip() in ("", "0"):
        return
    try:
        if not reply.has_content():
            observe_node_round(node_config, node=node, epsilon=None,
                               epsilon_cap=epsilon_cap, declined=None, failed=True)
            return
        content = reply.content
        eps = content["metrics"].get("epsilon") if "metrics" in content else None
        code = str(content["decline"]["code"]) if "decline" in content else None
        observe_node_round(node_config, node=node,
                           epsilon=float(eps) if isinstance(eps, int | float) else None,
                           epsilon_cap=epsilon_cap, declined=code)
    except Exception as exc:  # noqa: BLE001 - monitoring must not fail the round
        log.warning("node metrics: %s", exc)
