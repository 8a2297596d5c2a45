"""Malicious virtual clients (``attack`` group) against FedAvg and robust aggregation.

The federation tests run the real client round, so they need its attack hook
(``poison_labels``/``poison_update`` from :mod:`lepton_fed.client.attack` in
``lepton_fed/client/round.py``); without it no attack happens and they fail.
"""

import numpy as np
from flwr.app import Context, RecordDict

from lepton_fed.client import app as client_module
from lepton_fed.client.attack import (
    attackers,
    is_attacker,
    poison_labels,
    poison_update,
)
from lepton_fed.client.node import NodeState
from lepton_fed.config.attack import attack_problems
from lepton_fed.inprocess import InProcessGrid
from lepton_fed.server.outputs import RunWriter
from lepton_fed.server.rounds import run_federation


def _node(pid=None, **nc):
    if pid is not None:
        nc |= {"partition-id": pid, "num-partitions": 10}
    return NodeState(Context(run_id=1, node_id=pid or 1, node_config=nc, state=RecordDict(),
                             run_config={}))


def test_attack_configs_are_checked(compose_cfg):
    assert attack_problems(compose_cfg("attack=sign_flip")) == []
    bad = attack_problems(compose_cfg("attack=gaussian", "attack.fraction=1.5",
                                      "attack.std=-1"))
    assert bad == ["attack.fraction must be a number in [0, 1], got 1.5",
                   "attack.std must be a finite number > 0, got -1.0"]
    assert attack_problems(compose_cfg("attack=scaling", "attack.name=nonsense")) == [
        "attack.name='nonsense': choose one of ['gaussian', 'label_flip', 'none', "
        "'scaling', 'sign_flip']"]


def test_attackers_are_a_seeded_fraction_and_real_nodes_never_attack(compose_cfg):
    cfg = compose_cfg("attack=sign_flip", "attack.fraction=0.3", "federation.num_clients=10",
                      "federation.clients_per_round=10")
    a = attackers(cfg)
    assert len(a) == 3 and a == attackers(cfg) and a <= set(range(10))
    assert a != attackers(compose_cfg("attack=sign_flip", "attack.fraction=0.3", "seed=1",
                                      "federation.num_clients=10",
                                      "federation.clients_per_round=10"))
    assert attackers(compose_cfg()) == frozenset()
    everyone = compose_cfg("attack=sign_flip", "attack.fraction=1.0")
    assert is_attacker(_node(0), everyone)
    real = _node(**{"data-path": "/data/hospital.csv"})
    assert not is_attacker(real, everyone)
    d = np.ones(4, np.float32)
    assert poison_update(real, everyone, 1, d) is d


def test_each_attack_changes_what_an_attacker_sends(compose_cfg):
    d = np.array([1.0, -2.0, 0.5], np.float32)
    y = np.array([0, 1, 9])
    node = _node(0)
    full = ("attack.fraction=1.0",)
    assert np.array_equal(poison_update(node, compose_cfg("attack=sign_flip", "attack.scale=2",
                                                          *full), 1, d), -2 * d)
    assert np.array_equal(poison_update(node, compose_cfg("attack=scaling", *full), 1, d), 10 * d)
    g = compose_cfg("attack=gaussian", "attack.std=3", *full)
    n1, n1b, n2 = (poison_update(node, g, r, d) for r in (1, 1, 2))
    assert np.array_equal(n1, n1b) and not np.array_equal(n1, n2) and n1.dtype == d.dtype
    flip = compose_cfg("attack=label_flip", *full)
    assert poison_labels(node, flip, y, 10).tolist() == [9, 8, 0]
    assert poison_update(node, flip, 1, d) is d
    assert poison_labels(node, compose_cfg("attack=sign_flip", *full), y, 10) is y


def _acc(cfg, d):
    return run_federation(InProcessGrid(client_module.app, cfg.federation.num_clients), cfg,
                          RunWriter(d))["final"]["accuracy"]


def test_gaussian_attackers_wreck_fedavg_but_not_the_median(compose_cfg, tmp_path):
    base = ("data=digits", "federation.num_clients=10", "federation.clients_per_round=10",
            "federation.rounds=5", "federation.evaluate_every=5")
    attack = ("attack=gaussian", "attack.fraction=0.3", "attack.std=1.0")
    acc = {(s, a): _acc(compose_cfg(*base, f"strategy={s}", *(attack if a else ())),
                        tmp_path / f"{s}-{a}")
           for s in ("fedavg", "median") for a in (False, True)}
    assert acc["fedavg", False] > 0.85 and acc["median", False] > 0.85, acc
    assert acc["fedavg", True] < acc["fedavg", False] - 0.15, acc  # the attack bites
    assert acc["median", True] > acc["median", False] - 0.05, acc  # the defence holds


def test_boosted_updates_are_rejected_under_central_dp(compose_cfg, tmp_path):
    cfg = compose_cfg("privacy=central", "privacy.noise_multiplier=0.1", "model=logreg",
                      "attack=scaling", "attack.fraction=0.4", "federation.num_clients=5",
                      "federation.clients_per_round=5", "federation.rounds=2")
    s = run_federation(InProcessGrid(client_module.app, 5), cfg, RunWriter(tmp_path))
    bad = {f"partition-{p}" for p in attackers(cfg)}
    assert len(bad) == 2
    assert s["nodes"]["failures"] == {n: {"INVALID_UPDATE_NORM": 2} for n in sorted(bad)}


def test_sign_flippers_move_fedavg_but_not_krum_or_the_trimmed_mean(compose_cfg, tmp_path):
    base = ("data=digits", "federation.num_clients=10", "federation.clients_per_round=10",
            "federation.rounds=5", "federation.evaluate_every=5")
    attack = ("attack=sign_flip", "attack.fraction=0.2", "attack.scale=5")
    defences = {"fedavg": (), "krum": ("strategy.num_malicious_nodes=2",),
                "trimmed_mean": ("strategy.beta=0.2",)}
    drop = {}
    for s, extra in defences.items():
        cfg = (*base, f"strategy={s}", *extra)
        drop[s] = (_acc(compose_cfg(*cfg), tmp_path / f"{s}-clean")
                   - _acc(compose_cfg(*cfg, *attack), tmp_path / f"{s}-attacked"))
    assert drop["fedavg"] > 0.15, drop
    assert drop["krum"] < 0.05 and drop["trimmed_mean"] < 0.05, drop
