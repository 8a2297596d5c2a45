"""Prometheus metrics from the coordinator, for the federation's operators.

``observe.metrics_port=9100`` (or :class:`CoordinatorMetrics` ``(port=...)``) serves
``http://127.0.0.1:9100/metrics`` while the run goes; every metric is prefixed
``lepton_``:

- ``lepton_round`` (last finished round), ``lepton_rounds_total``, ``lepton_rounds_planned``,
  ``lepton_round_duration_seconds`` (histogram), ``lepton_run_finished`` (0/1);
- ``lepton_nodes{state=connected|sampled|replied|failed|declined}`` in the last round,
  ``lepton_node_outcomes_total{outcome=replied|failed|declined}``,
  ``lepton_declines_total{reason}``, ``lepton_failures_total{code}``;
- ``lepton_epsilon{node}``, ``lepton_epsilon_max``, ``lepton_epsilon_target``;
- ``lepton_bytes_total{direction=up|down}``;
- ``lepton_eval{source=server|federated, metric=accuracy|loss|auc}``.

The endpoint binds 127.0.0.1 unless told otherwise: the figures name nodes and their
privacy spend (the same the coordinator already sees), which an operator may not want
on every interface.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from lepton_fed.observe._exporter import Endpoint, endpoint, import_prometheus

__all__ = ["ROUND_BUCKETS", "CoordinatorMetrics"]

#: round duration histogram buckets, seconds
ROUND_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)


def _num(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        return None
    return float(v)


class CoordinatorMetrics:
    """A :class:`~lepton_fed.server.rounds.RoundObserver` updating Prometheus metrics.

    Args:
        port: serve ``/metrics`` on this port (0: a free one, see :attr:`port`);
            None: no server (read :attr:`registry` yourself).
        addr: interface to bind.
        rounds_planned: ``federation.rounds``.
        epsilon_target: the run's ``privacy.epsilon`` (the per-node budget), if any.
        info: labels of ``lepton_run_info`` (e.g. privacy mode, strategy).
    """

    def __init__(self, port: int | None = None, *, addr: str = "127.0.0.1",
                 rounds_planned: int | None = None, epsilon_target: float | None = None,
                 info: Mapping[str, str] | None = None) -> None:
        prom = import_prometheus()
        self.registry = prom.CollectorRegistry()
        r = self.registry
        g, c = prom.Gauge, prom.Counter
        self.round = g("lepton_round", "last finished round", registry=r)
        self.rounds = c("lepton_rounds", "rounds finished", registry=r)
        self.planned = g("lepton_rounds_planned", "rounds planned", registry=r)
        self.duration = prom.Histogram("lepton_round_duration_seconds", "round wall time",
                                       buckets=ROUND_BUCKETS, registry=r)
        self.finished = g("lepton_run_finished", "1 once the run wrote summary.json",
                          registry=r)
        self.nodes = g("lepton_nodes", "nodes in the last round by state", ["state"],
                       registry=r)
        self.outcomes = c("lepton_node_outcomes", "node replies by outcome", ["outcome"],
                          registry=r)
        self.declines = c("lepton_declines", "declined train requests by reason",
                          ["reason"], registry=r)
        self.failures = c("lepton_failures", "failed train requests by code", ["code"],
                          registry=r)
        self.epsilon = g("lepton_epsilon", "epsilon a node reported (its ledger)", ["node"],
                         registry=r)
        self.epsilon_max = g("lepton_epsilon_max", "epsilon so far (max over nodes, or the "
                             "server's under central DP)", registry=r)
        self.epsilon_target = g("lepton_epsilon_target", "the run's epsilon budget",
                                registry=r)
        self.bytes = c("lepton_bytes", "bytes on the wire", ["direction"], registry=r)
        self.eval = g("lepton_eval", "last evaluation of the global model",
                      ["source", "metric"], registry=r)
        if info:
            prom.Info("lepton_run", "run settings", registry=r).info(dict(info))
        if rounds_planned is not None:
            self.planned.set(rounds_planned)
        if epsilon_target is not None:
            self.epsilon_target.set(epsilon_target)
        self.endpoint: Endpoint | None = None
        if port is not None:
            self.endpoint = endpoint(port, self.registry, addr=addr)

    @property
    def port(self) -> int | None:
        """The bound port (None without a server)."""
        return self.endpoint.port if self.endpoint is not None else None

    def on_round(self, row: dict[str, Any]) -> None:
        """Update every metric from one round's row."""
        self.round.set(int(row.get("round", 0)))
        self.rounds.inc()
        secs = _num(row.get("seconds"))
        if secs is not None:
            self.duration.observe(secs)
        states = {"replied": "clients", "failed": "failed", "declined": "declined",
                  "sampled": "sampled", "connected": "connected"}
        for state, key in states.items():
            v = _num(row.get(key))
            if v is not None:
                self.nodes.labels(state).set(v)
                if state in ("replied", "failed", "declined"):
                    self.outcomes.labels(state).inc(v)
        for label, counter in (("declines", self.declines), ("failures", self.failures)):
            for k, v in (row.get(label) or {}).items():
                n = _num(v)
                if n:
                    counter.labels(str(k)).inc(n)
        self._epsilons(row.get("epsilon_per_node") or {})
        eps = _num(row.get("epsilon"))
        if eps is not None:
            self.epsilon_max.set(eps)
        for direction in ("up", "down"):
            b = _num(row.get(f"bytes_{direction}"))
            if b:
                self.bytes.labels(direction).inc(b)
        self._eval("server", row)
        if isinstance(row.get("federated"), Mapping):
            self._eval("federated", row["federated"])

    def _epsilons(self, per_node: Mapping[str, Any]) -> None:
        for node, v in per_node.items():
            e = _num(v)
            if e is not None:
                self.epsilon.labels(str(node)).set(e)

    def _eval(self, source: str, d: Mapping[str, Any]) -> None:
        for metric in ("accuracy", "loss", "auc"):
            v = _num(d.get(metric))
            if v is not None:
                self.eval.labels(source, metric).set(v)

    def on_finish(self, summary: dict[str, Any]) -> None:
        """Per-node epsilons from the summary; ``lepton_run_finished`` 1."""
        privacy = summary.get("privacy") or {}
        self._epsilons(privacy.get("per_client") or {})
        eps = _num(privacy.get("epsilon"))
        if eps is not None:
            self.epsilon_max.set(eps)
        self.finished.set(1)
