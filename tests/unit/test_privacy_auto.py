"""DP defaults: the rule's choices over a grid of (n, rounds, epsilon) are sane and
deterministic, user values win key by key, and a node trains exactly the schedule its
ledger reserved."""

from __future__ import annotations

import itertools
import math

import pytest
from omegaconf import OmegaConf

from lepton_fed.privacy.analysis import local_schedule, noise_multiplier_for
from lepton_fed.privacy.auto import (
    AUTO_KEYS,
    MAX_BATCH,
    MAX_LOCAL_STEPS,
    PATH,
    check_auto_config,
    choice_for,
    choose,
    momentum_gain,
)

GRID = list(itertools.product([5, 30, 72, 144, 500, 1024, 5000, 60000],
                              [1, 5, 8, 10, 20, 100], ["logreg", "mlp"], [0.0, 0.9]))


@pytest.mark.parametrize(("n", "rounds", "model", "m"), GRID)
def test_choices_are_sane(n, rounds, model, m):
    c = choose(n=n, rounds=rounds, model=model, momentum=m)
    assert c.batch_size == min(n, MAX_BATCH)
    sch = local_schedule(num_examples=n, batch_size=c.batch_size, epochs=c.epochs)
    assert c.local_steps == sch.steps >= 1
    assert c.epochs >= 1
    # at most the per-round cap unless one epoch alone has more steps
    assert c.local_steps <= max(MAX_LOCAL_STEPS, sch.steps_per_epoch)
    assert c.max_grad_norm == 1.0
    assert 0 < c.lr < 100 and math.isfinite(c.lr)
    # the whole run's path length (lr x clip x momentum-weighted steps x rounds) is the
    # family's, whatever n, rounds or momentum
    path = c.lr * c.max_grad_norm * momentum_gain(c.local_steps, m) * rounds
    assert path == pytest.approx(PATH[model])
    assert set(c.auto) == set(AUTO_KEYS)
    assert choose(n=n, rounds=rounds, model=model, momentum=m) == c  # deterministic


@pytest.mark.parametrize(("n", "rounds", "eps"),
                         list(itertools.product([45, 72, 500], [5, 8, 20], [1.0, 3.0, 8.0])))
def test_schedule_calibrates_for_every_target(n, rounds, eps):
    """The chosen schedule is one the accountant can meet for each target, with a
    moderate sigma (full batch: no tiny sigma where PLD and RDP both get loose)."""
    c = choose(n=n, rounds=rounds, model="logreg")
    sch = local_schedule(num_examples=n, batch_size=c.batch_size, epochs=c.epochs)
    sigma = noise_multiplier_for(target_epsilon=eps, delta=1e-5, sample_rate=sch.sample_rate,
                                 steps=rounds * sch.steps, accountant="pld")
    assert 1.0 < sigma < 100.0


def test_more_rounds_fewer_local_steps_and_smaller_lr():
    a, b = (choose(n=100, rounds=r, model="logreg") for r in (5, 20))
    assert a.local_steps > b.local_steps
    assert a.lr * a.local_steps > b.lr * b.local_steps


def test_user_values_win_key_by_key():
    c = choose(n=72, rounds=8, model="logreg", batch_size=16, lr=0.3)
    assert c.batch_size == 16 and c.lr == 0.3
    assert c.auto == ("client.epochs", "privacy.max_grad_norm")
    assert c.lr_at(1, 8) == c.lr_at(8, 8) == 0.3  # a user lr is never rescheduled
    d = choose(n=72, rounds=8, model="logreg", batch_size=16, epochs=2, lr=0.3,
               max_grad_norm=0.5)
    assert d.auto == () and d.max_grad_norm == 0.5 and d.epochs == 2


def test_auto_lr_decays_linearly_and_keeps_its_mean():
    c = choose(n=72, rounds=8, model="logreg")
    lrs = [c.lr_at(r, 8) for r in range(1, 9)]
    assert all(a > b for a, b in zip(lrs, lrs[1:], strict=False))
    assert sum(lrs) / 8 == pytest.approx(c.lr)


def test_adam_gets_a_fixed_lr():
    assert choose(n=72, rounds=8, model="mlp", optimizer="adam").lr == 0.01


def test_choice_for_reads_nulls_from_the_config():
    cfg = OmegaConf.create({
        "federation": {"rounds": 8}, "model": {"name": "logreg"},
        "client": {"batch_size": None, "epochs": 3, "lr": None, "momentum": 0.9,
                   "optimizer": "sgd"},
        "privacy": {"max_grad_norm": None}})
    c = choice_for(cfg, 72)
    assert c.epochs == 3 and c.batch_size == 72
    assert set(c.auto) == {"client.batch_size", "client.lr", "privacy.max_grad_norm"}


def test_check_auto_config_names_bad_values():
    cfg = OmegaConf.create({"client": {"batch_size": 0, "epochs": 1.5, "lr": -1},
                            "privacy": {"max_grad_norm": None}})
    problems = check_auto_config(cfg)
    assert any("client.batch_size must be an integer >= 1" in p for p in problems)
    assert any("client.epochs must be an integer >= 1" in p for p in problems)
    assert any("client.lr must be a number > 0 or null" in p for p in problems)
    ok = OmegaConf.create({"client": {"batch_size": None, "epochs": None, "lr": None},
                           "privacy": {"max_grad_norm": 1.0}})
    assert check_auto_config(ok) == []


def test_bad_sizes_are_refused():
    with pytest.raises(ValueError, match="n and rounds"):
        choose(n=0, rounds=5, model="logreg")
