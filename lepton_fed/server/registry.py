"""The server's view of the federation's nodes: who is set up, who declined and why,
who needs the run config again, and which nodes a round samples.

Node ids are Flower's (random per run in simulation, assigned at registration in a real
federation); every log line and summary names a node by the NAME it reported at setup
(its roster name on a real node, ``partition-<i>`` in simulation), so a failure is
attributed to the right node. Sampling is seeded and ordered by name, so the same config
and seed sample the same nodes whatever ids Flower assigned.
"""

from __future__ import annotations

import random
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field

from flwr.serverapp import Grid

__all__ = ["NodeRegistry"]


@dataclass
class NodeRegistry:
    """Book-keeping over node ids; no I/O except reading ``grid.get_node_ids()``."""

    names: dict[int, str] = field(default_factory=dict)
    ready: set[int] = field(default_factory=set)
    refused: dict[int, str] = field(default_factory=dict)  # node -> code (for the run)
    needs_setup: set[int] = field(default_factory=set)
    scaler_sent: set[int] = field(default_factory=set)
    declines: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    failures: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    late: Counter[str] = field(default_factory=Counter)  # discarded late replies by name
    # node -> the SuperLink's ``last_activated_at`` when the node was set up: a node that
    # restarted (or came back after the SuperLink marked it offline) has a newer one
    activated: dict[int, str] = field(default_factory=dict)
    _seen: dict[int, str] = field(default_factory=dict)  # activations at to_set_up()

    def name(self, nid: int) -> str:
        """The node's reported name, or ``node-<id>`` before it reported one."""
        return self.names.get(nid) or f"node-{nid}"

    def set_up(self, nid: int, name: str) -> None:
        """The node accepted the setup under ``name``: it is ready to be sampled.

        It will be sent the scaler again, and its current activation time is recorded (a newer
        one later means it restarted).
        """
        if name:
            self.names[nid] = name
        self.ready.add(nid)
        self.needs_setup.discard(nid)
        self.scaler_sent.discard(nid)
        self.activated[nid] = self._seen.get(nid, "")

    def learn_name(self, nid: int, name: str) -> None:
        """A name a node reported in a decline or error reply (kept if none known)."""
        if name and nid not in self.names:
            self.names[nid] = name[:64]

    def refuse(self, nid: int, code: str) -> None:
        """The node declined the run itself (its policy): never sampled again."""
        self.refused[nid] = code
        self.ready.discard(nid)
        self.record_decline(nid, code)

    def record_decline(self, nid: int, code: str) -> None:
        """Count a decline by its code; ``NEEDS_SETUP`` sends the node back to setup."""
        self.declines[self.name(nid)][code] += 1
        if code == "NEEDS_SETUP":
            self.ready.discard(nid)
            self.needs_setup.add(nid)

    def record_failure(self, nid: int, code: str) -> None:
        """Count a failure by its short code (a Flower error's text is not kept)."""
        self.failures[self.name(nid)][code.split(":")[0].strip()[:64]] += 1

    def record_late(self, nid: int) -> None:
        """A reply of the node arrived after its round's deadline (it was discarded)."""
        self.late[self.name(nid)] += 1

    def to_set_up(self, grid: Grid) -> list[int]:
        """Connected nodes that need the setup: new ones, and set-up nodes that were
        activated again since their setup (a node that restarted keeps its node id but
        has lost its run config and round keys) or were gone and came back.

        Set-up nodes that are no longer connected, or were activated again, lose their
        setup here. Restarts are seen through the SuperLink's ``last_activated_at`` (one
        ``grid.get_nodes()`` call, no message to any node); a grid that does not report
        it (empty string) is judged by connection alone."""
        self._seen = {int(n.node_id): str(n.last_activated_at or "")
                      for n in grid.get_nodes()}
        seen = self._seen
        for nid in [n for n in self.ready
                    if n not in seen or seen[n] != self.activated.get(n, seen[n])]:
            self.ready.discard(nid)
            self.needs_setup.add(nid)
        connected = set(seen)
        return sorted((connected - self.ready - set(self.refused))
                      | (self.needs_setup & connected))

    def sample(self, grid: Grid, k: int, seed: int, *, minimum: int, wait_s: float,
               poll_s: float = 0.5) -> list[int]:
        """Up to ``k`` set-up, connected nodes, seeded and ordered by name.

        Waits up to ``wait_s`` for ``k`` eligible nodes; then returns what there is if at
        least ``minimum`` are eligible, else an empty list (the caller ends the round).
        """
        deadline = time.monotonic() + wait_s
        while True:
            connected = set(grid.get_node_ids())
            eligible = sorted(self.ready & connected, key=lambda n: (self.name(n), n))
            if len(eligible) >= k or time.monotonic() >= deadline:
                break
            time.sleep(poll_s)
        if len(eligible) < minimum:
            return []
        return random.Random(seed).sample(eligible, min(k, len(eligible)))

    def summary(self) -> dict[str, object]:
        """``nodes`` block of summary.json: names, declines and failures by reason, and
        late replies (discarded) per node."""
        return {
            "names": sorted(self.name(n) for n in self.ready | set(self.refused)),
            "refused": {self.name(n): c for n, c in sorted(self.refused.items())},
            "declines": {k: dict(v) for k, v in sorted(self.declines.items())},
            "failures": {k: dict(v) for k, v in sorted(self.failures.items())},
            "late": dict(sorted(self.late.items())),
        }
