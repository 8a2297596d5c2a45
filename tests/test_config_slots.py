"""Preset slots (``experiment=``/``debug=`` without ``+``) and strategy compatibility read from
the strategy class, so that a custom ``strategy._target_`` is checked like the bundled ones."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from lepton_fed.config import conf_dir, precheck
from lepton_fed.config.compose import plain_slots
from lepton_fed.errors import ConfigError

PRESETS = sorted(p.stem for p in (conf_dir() / "experiment").glob("*.yaml"))
NO_DATA = [p for p in PRESETS if p in ("digits_100_clients", "dp_digits_10_clients")]


@pytest.mark.parametrize("preset", NO_DATA)
def test_preset_without_plus_is_the_same_config_as_with_plus(preset):
    plain = precheck([f"experiment={preset}"])[0]
    plus = precheck([f"+experiment={preset}"])[0]
    assert OmegaConf.to_container(plain) == OmegaConf.to_container(plus)
    assert plain != precheck([])[0]  # the preset did change something
    assert plain.data.name == "digits"


def test_debug_slot_and_both_slots_together():
    cfg = precheck(["debug=default"])[0]
    assert (cfg.device, cfg.federation.rounds, cfg.federation.num_clients) == (
        "cpu",
        2,
        3,
    )
    both = precheck(["experiment=digits_100_clients", "+debug=default"])[0]
    assert (
        both.data.name == "digits" and both.federation.num_clients == 3
    )  # debug comes last


def test_presets_sweep_without_plus():
    cfgs = precheck(
        ["experiment=digits_100_clients,dp_digits_10_clients"], multirun=True
    )
    assert [c.federation.num_clients for c in cfgs] == [100, 10]


def test_unknown_preset_names_the_choices():
    with pytest.raises(ConfigError) as ei:
        precheck(["experiment=nope"])
    (problem,) = ei.value.problems
    assert problem.startswith("experiment=nope: unknown option; choose one of [")
    assert all(p in problem for p in PRESETS)


def test_plain_slots_rewrites_only_the_slot_groups():
    ov = [
        "+experiment=a",
        "+debug=default",
        "+strategy.eta=0.1",
        "experiment=b",
        "x=+experiment",
    ]
    assert plain_slots(ov) == [
        "experiment=a",
        "debug=default",
        "+strategy.eta=0.1",
        "experiment=b",
        "x=+experiment",
    ]


def test_every_preset_header_shows_the_plain_form():
    for p in (conf_dir() / "experiment").glob("*.yaml"):
        line = [
            ln for ln in p.read_text().splitlines() if ln.startswith("# lepton-fed")
        ][0]
        assert f" experiment={p.stem}" in line and "+experiment" not in line, p


# --- secure aggregation / central DP compatibility from the class -------------------


@pytest.fixture
def custom_strategies(tmp_path, monkeypatch):
    (tmp_path / "my_strategies.py").write_text(
        textwrap.dedent("""
        from flwr.serverapp.strategy import FedAvg as FlowerFedAvg
        from lepton_fed.strategies import FedAvg, Krum

        class SumBased(FedAvg):        # inherits secagg_compatible = True
            pass

        class PicksOne(Krum):          # inherits secagg_compatible = False
            pass

        class Undeclared(FlowerFedAvg):  # says nothing: not trusted with secagg
            pass

        class Declared(FlowerFedAvg):
            secagg_compatible = True
    """)
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "my_strategies"
    sys.modules.pop("my_strategies", None)


SECAGG = ["secagg=on", "federation.clients_per_round=5"]
CENTRAL = ["privacy=central", "privacy.noise_multiplier=1.0"]


def _problems(overrides: list[str]) -> list[str]:
    try:
        precheck(overrides)
    except ConfigError as exc:
        return exc.problems
    return []


@pytest.mark.parametrize("mode", [SECAGG, CENTRAL], ids=["secagg", "central"])
@pytest.mark.parametrize(
    "cls,ok",
    [
        ("SumBased", True),
        ("Declared", True),
        ("PicksOne", False),
        ("Undeclared", False),
    ],
)
def test_custom_target_is_checked_by_its_class_attribute(
    custom_strategies, mode, cls, ok
):
    probs = _problems([*mode, f"strategy._target_={custom_strategies}.{cls}"])
    relevant = [p for p in probs if "secagg_compatible" in p]
    assert (relevant == []) == ok, probs
    if not ok:
        assert f"({custom_strategies}.{cls})" in relevant[0]
        assert "fedavg" in relevant[0]


@pytest.mark.parametrize("strategy", ["krum", "median", "trimmed_mean"])
def test_bundled_robust_strategies_are_refused(strategy):
    for mode in (SECAGG, CENTRAL):
        probs = _problems([*mode, f"strategy={strategy}"])
        assert any(
            f"strategy={strategy}" in p and "secagg_compatible" in p for p in probs
        ), probs


@pytest.mark.parametrize(
    "strategy", ["fedavg", "fedprox", "fedadam", "fedyogi", "fedadagrad"]
)
def test_bundled_mean_strategies_are_accepted(strategy):
    for mode in (SECAGG, CENTRAL):
        assert not [
            p
            for p in _problems([*mode, f"strategy={strategy}"])
            if "secagg_compatible" in p
        ]


def test_strategy_files_agree_with_their_classes():
    # every bundled option names a class that declares the attribute explicitly
    import importlib

    for p in (conf_dir() / "strategy").glob("*.yaml"):
        mod, _, name = OmegaConf.load(p)._target_.rpartition(".")
        cls = getattr(importlib.import_module(mod), name)
        assert isinstance(cls.__dict__.get("secagg_compatible"), bool), p


@pytest.mark.parametrize("spelling", ["experiment", "+experiment"])
def test_simulate_hands_hydra_the_preset_in_either_spelling(spelling, tmp_path):
    # --cfg job: Hydra composes and prints the job config, then stops (no Ray, no run)
    import os
    import subprocess

    script = Path(sys.executable).with_name("lepton-fed")
    if not script.is_file():
        pytest.skip(f"console script {script} not installed (pip install -e .)")
    env = dict(os.environ, FLWR_TELEMETRY_ENABLED="0")
    p = subprocess.run(
        [str(script), "simulate", f"{spelling}=digits_100_clients", "debug=default", "--cfg", "job"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert p.returncode == 0, p.stderr
    cfg = OmegaConf.create(p.stdout)
    assert cfg.data.name == "digits" and cfg.federation.num_clients == 3
    assert not (tmp_path / "outputs").exists()
