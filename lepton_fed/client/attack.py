"""Malicious virtual clients, for robustness experiments in SIMULATION only.

The ``attack`` config group picks an attack and the fraction of virtual clients that run
it; the attackers are a seeded choice of partitions (:func:`attackers`), the same in
every round. A node that reads its own data (``node_config["data-path"]``: a real node)
never attacks, whatever the run config says.

Attacks (Byzantine clients skip every honest step, so they act AFTER the clip):

* ``sign_flip``: sends ``-scale * delta`` (its honest update reversed);
* ``scaling``: sends ``factor * delta`` (boosted, as a model-replacement attacker);
* ``label_flip``: trains on labels ``c - 1 - y`` (``c`` classes), then behaves honestly;
* ``gaussian``: sends ``N(0, std^2)`` noise in place of its update (seeded per round).

The client round calls :func:`poison_labels` before local training and
:func:`poison_update` on the clipped update before it is encoded; both return their
input unchanged on an honest node.
"""

from __future__ import annotations

import random

import numpy as np
from omegaconf import DictConfig

from lepton_fed.client.node import NodeState
from lepton_fed.utils.seed import derive_seed

__all__ = ["attackers", "is_attacker", "poison_labels", "poison_update"]

def attackers(cfg: DictConfig) -> frozenset[int]:
    """Partition ids of the malicious clients: ``round(fraction * num_clients)`` of
    them, chosen with a seed derived from ``cfg.seed``."""
    a = cfg.get("attack")
    if a is None or a.get("name", "none") == "none":
        return frozenset()
    n = int(cfg.federation.num_clients)
    k = int(round(float(a.fraction) * n))
    return frozenset(random.Random(derive_seed(cfg.seed, "attack")).sample(range(n), k))


def is_attacker(node: NodeState, cfg: DictConfig) -> bool:
    """Whether this node is a malicious VIRTUAL client of ``cfg``'s attack."""
    nc = node.context.node_config
    if "data-path" in nc or "partition-id" not in nc:
        return False
    return node.partition_id in attackers(cfg)


def poison_labels(node: NodeState, cfg: DictConfig, y: np.ndarray, num_classes: int
                  ) -> np.ndarray:
    """The labels this node trains on: flipped (``c - 1 - y``) for a label-flip attacker."""
    if cfg.get("attack") is None or cfg.attack.name != "label_flip" or not is_attacker(node, cfg):
        return y
    flipped: np.ndarray = (num_classes - 1 - np.asarray(y)).astype(np.asarray(y).dtype)
    return flipped


def poison_update(node: NodeState, cfg: DictConfig, rnd: int, delta: np.ndarray) -> np.ndarray:
    """The update this node sends: attacked for a sign-flip, scaling or Gaussian attacker."""
    a = cfg.get("attack")
    if a is None or a.name in ("none", "label_flip") or not is_attacker(node, cfg):
        return delta
    if a.name == "sign_flip":
        out: np.ndarray = (-float(a.scale) * delta).astype(delta.dtype)
    elif a.name == "scaling":
        out = (float(a.factor) * delta).astype(delta.dtype)
    else:
        rng = np.random.default_rng(derive_seed(cfg.seed, "attack", rnd, node.partition_id))
        out = rng.normal(0.0, float(a.std), size=delta.shape).astype(delta.dtype)
    return out
