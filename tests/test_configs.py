"""Every YAML under conf/ composes and validates; bad configs report every problem."""

from pathlib import Path

import pytest

from lepton_fed.config import conf_dir, precheck
from lepton_fed.errors import ConfigError

CONF = conf_dir()
GROUP_FILES = sorted(
    p for p in CONF.rglob("*.yaml")
    if p.parent != CONF and p.parent.name not in ("experiment", "debug", "local")
)


def test_every_yaml_starts_with_its_command():
    for p in CONF.rglob("*.yaml"):
        if p.parent.name == "local":
            continue
        first = [ln for ln in p.read_text().splitlines() if ln.strip()][0]
        if first.startswith("# @package"):
            first = p.read_text().splitlines()[1]
        assert first.startswith("# lepton-fed simulate"), p


@pytest.mark.parametrize("path", GROUP_FILES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_group_option_composes(path: Path):
    group, option = path.parent.name, path.stem
    extra = {
        "data": {"heart_disease", "mnist", "csv"},
        "partition": {"natural"},
    }
    if option in extra.get(group, set()):
        pytest.skip(f"{group}={option} needs data files; covered by the shared-data tests")
    ov = [f"{group}={option}"]
    if group == "model" and option == "cnn":
        ov.append("data=digits")
    if group == "secagg" and option == "on":
        ov.append("federation.clients_per_round=5")
    if group == "privacy" and option == "distributed":  # distributed noise needs the secure sum
        ov.append("secagg=on")
    precheck(ov)


@pytest.mark.shared_data
def test_experiments_compose(shared_data):
    precheck(["+experiment=heart_disease_4_hospitals",
              f"data.path={shared_data / 'fed_heart_disease'}"])
    precheck(["+experiment=digits_100_clients"])
    precheck(["+debug=default"])


def test_all_problems_reported_at_once_with_choices():
    with pytest.raises(ConfigError) as ei:
        precheck(["model=transformer", "federation.rounds=-1", "federation.num_clients=3",
                  "federation.clients_per_round=9", "data=csv", "secagg=on", "strategy=krum",
                  "federation.bogus=3", "privacy=dpsgd", "privacy.delta=2"])
    probs = ei.value.problems
    text = "\n".join(probs)
    for needle in ["model=transformer: unknown option; choose one of ['cnn', 'logreg', 'mlp']",
                   "federation.bogus: no such setting",
                   "federation.rounds must be a positive integer",
                   "clients_per_round (9) cannot exceed",
                   "needs data.path",
                   "secagg=on cannot be combined with strategy=krum",
                   "privacy.delta must be in (0, 1)"]:
        assert needle in text, needle
    assert ei.value.exit_code == 2


def test_sweep_checks_every_value():
    assert len(precheck(["model=mlp,logreg", "seed=1,2"], multirun=True)) == 4
    with pytest.raises(ConfigError, match="model=nope"):
        precheck(["model=mlp,nope"], multirun=True)


def test_missing_data_path_and_label(tmp_path):
    with pytest.raises(ConfigError) as ei:
        precheck(["data=heart_disease", f"data.path={tmp_path / 'none'}"])
    assert "does not exist" in str(ei.value)
    csv = tmp_path / "x.csv"
    csv.write_text("a,b,label\n1,2,0\n3,4,1\n")
    with pytest.raises(ConfigError, match="'target' does not exist"):
        precheck(["data=csv", f"data.path={csv}", "data.label=target"])


def test_unavailable_hardware_reported_and_secure_mode_accepted():
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA is present here")
    with pytest.raises(ConfigError) as ei:
        precheck(["privacy=dpsgd", "privacy.secure_mode=true", "device=cuda"])
    text = str(ei.value)
    assert "device=cuda but CUDA is not available" in text
    assert "secure_mode" not in text  # CSPRNG noise works on torch 2.x (no torchcsprng)
    precheck(["privacy=dpsgd", "privacy.secure_mode=true"])


def test_coordinator_without_data_needs_a_schema(tmp_path):
    with pytest.raises(ConfigError, match="data.schema: a federation whose coordinator holds no"):
        precheck(["data=csv", "data.label=y", "evaluation.server_data=false"])
    bad = tmp_path / "schema.yaml"
    bad.write_text("label: y\nclasses: [a]\nfeatures: [x, x]\n")
    with pytest.raises(ConfigError) as ei:
        precheck(["data=csv", "data.label=y", "evaluation.server_data=false",
                  f"data.schema={bad}", "evaluation.federated=maybe",
                  "federation.min_clients=9"])
    text = str(ei.value)
    assert "feature names must be unique" in text and "at least 2 distinct" in text
    assert "evaluation.federated='maybe'" in text and "min_clients (9) cannot exceed" in text
    # the bundled datasets imply their schema: no file needed, no data on the server
    precheck(["evaluation.server_data=false"])


def test_strategy_settings_checked_against_the_class():
    with pytest.raises(ConfigError, match=r"strategy.eta: not a setting of strategy=fedavg"):
        precheck(["strategy=fedavg", "+strategy.eta=0.1"])
    precheck(["strategy=fedadam", "strategy.eta=0.05"])


@pytest.mark.parametrize("path", sorted((CONF / "experiment").glob("*.yaml")),
                         ids=lambda p: p.stem)
def test_every_experiment_preset_composes_with_its_documented_command(path: Path, request):
    """Each preset (dp_* included) composes and validates with the command on its own
    first line; ../shared/data is the shared_data fixture (skipped when absent)."""
    import shlex

    lines = [ln for ln in path.read_text().splitlines() if ln.startswith("# lepton-fed")]
    args = shlex.split(lines[0].removeprefix("# lepton-fed simulate"))
    assert any(a.endswith(f"experiment={path.stem}") for a in args), lines[0]
    if any("../shared/data" in a for a in args):
        data = request.getfixturevalue("shared_data")
        args = [a.replace("../shared/data", str(data)) for a in args]
    if any("DATA.csv" in a for a in args):  # the preset's header says how to make it
        import subprocess
        import sys

        tmp = request.getfixturevalue("tmp_path") / "DATA.csv"
        subprocess.run([sys.executable, str(CONF.parent / "benchmarks" / "scale.py"),
                        "--make-data", str(tmp), "--rows", "2000"], check=True,
                       capture_output=True, timeout=120)
        args = [a.replace("DATA.csv", str(tmp)) for a in args]
    cfg = precheck(args)[0]
    if path.stem.startswith("dp_"):
        assert cfg.privacy.mode == "dpsgd" and cfg.privacy.epsilon > 0
