"""The typed config schema (lepton_fed/config/schema.py in Hydra's ConfigStore).

Composition refuses, naming the key, what the schema does not allow: unknown keys (also
when added with ``+``, and inside a YAML file, whose name is given), values of the wrong
type, deletions; all are reported at once, as one ConfigError. Option files state only
what differs from the schema's defaults, and the composed configs are the ones the files
described before (checked against literal values, not against the schema itself).
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from lepton_fed.config import compose, conf_dir, precheck
from lepton_fed.config.schema import Config
from lepton_fed.config.validate import validate
from lepton_fed.errors import ConfigError


def _problems(overrides: list[str], **kw: object) -> list[str]:
    with pytest.raises(ConfigError) as ei:
        precheck(overrides, **kw)  # type: ignore[arg-type]
    assert ei.value.exit_code == 2
    return ei.value.problems


PRIVACY_KEYS = (
    "['accountant', 'clip', 'delta', 'epsilon', 'grad_sample_mode', "
    "'max_grad_norm', 'min_contributors', 'mode', 'noise_multiplier', "
    "'reproducible', 'secure_mode', 'wrap_bits']"
)


@pytest.mark.parametrize(
    "override, problem",
    [
        (
            "federation.rounds=abc",
            "federation.rounds must be a whole number, got 'abc'",
        ),
        ("federation.rounds=2.5", "federation.rounds must be a whole number, got 2.5"),
        (
            "federation.rounds=null",
            "federation.rounds must be a whole number, got null",
        ),
        (
            "federation.rounds=true",
            "federation.rounds must be a whole number, got True",
        ),
        ("client.lr=fast", "client.lr must be a number or null, got 'fast'"),
        ("secagg.enabled=maybe", "secagg.enabled must be true or false, got 'maybe'"),
        (
            "evaluation.server_data=sometimes",
            "evaluation.server_data must be true or false, got 'sometimes'",
        ),
        (
            "model.hidden=5",
            "model.hidden must be a list of whole numbers or null, got 5",
        ),
        (
            "model.hidden=[64,wide]",
            "model.hidden[1] must be a whole number, got 'wide'",
        ),
        (
            "data.features=age",
            "data.features must be a list of strings or null, got 'age'",
        ),
        (
            "observe.metrics_port=http",
            "observe.metrics_port must be a whole number or null, got 'http'",
        ),
        (
            "privacy.epsilonn=3",
            f"privacy.epsilonn: no such setting; settings under privacy are "
            f"{PRIVACY_KEYS}",
        ),
        (
            "+privacy.epsilonn=3",
            f"privacy.epsilonn: no such setting; settings under privacy "
            f"are {PRIVACY_KEYS}",
        ),
        (
            "++privacy.epsilonn=3",
            f"privacy.epsilonn: no such setting; settings under privacy "
            f"are {PRIVACY_KEYS}",
        ),
        (
            "compression.prune=magnitude:0.5",
            "compression.prune: no such setting; settings "
            "under compression are ['block_size', "
            "'topk_fraction', 'update']",
        ),
        (
            "~federation.rounds",
            "federation.rounds is a setting of the schema and cannot be "
            "deleted (~federation.rounds); set it instead "
            "(federation.rounds=VALUE)",
        ),
        (
            "federation.rounds=${nope}",
            "federation.rounds: Interpolation key 'nope' not found",
        ),
    ],
)
def test_schema_refuses_a_key_or_type_naming_it(override: str, problem: str) -> None:
    assert _problems([override]) == [problem]
    with pytest.raises(ConfigError) as ei:  # compose() alone gives the same sentence
        compose([override])
    assert ei.value.problems == [problem]


def test_every_refusal_is_reported_at_once_with_validate_problems() -> None:
    probs = _problems(
        [
            "federation.rounds=abc",
            "+privacy.epsilonn=3",
            "client.lr=fast",
            "secagg.enabled=maybe",
            "federation.bogus=1",
            "model=nope",
            "model.hidden=[a]",
            "attack.fraction=x",
        ]
    )
    keys = [
        "model=nope",
        "federation.rounds",
        "privacy.epsilonn",
        "client.lr",
        "secagg.enabled",
        "federation.bogus",
        "model.hidden[0]",
        "attack.fraction",
    ]
    assert sorted(p.split(":")[0].split(" ")[0] for p in probs) == sorted(keys), probs
    # value rules (validate) still come together with each other
    probs = _problems(
        [
            "federation.rounds=0",
            "federation.clients_per_round=9",
            "privacy=dpsgd",
            "privacy.delta=2",
        ]
    )
    assert len(probs) >= 3 and any(
        "privacy.delta must be in (0, 1)" in p for p in probs
    )


def test_interpolations_are_typed_and_hydra_ones_are_left_to_the_run() -> None:
    assert compose(["federation.rounds=${seed}", "seed=7"]).federation.rounds == 7
    assert _problems(["federation.rounds=${data.name}"]) == [
        "federation.rounds: While dereferencing interpolation '${data.name}': Value "
        "'breast_cancer' of type 'str' could not be converted to Integer"
    ]
    cfg = compose(["data.path=${hydra:runtime.cwd}/x.csv"])  # resolved in Hydra's run
    assert OmegaConf.to_container(cfg.data)["path"] == "${hydra:runtime.cwd}/x.csv"


@pytest.fixture
def broken_conf(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of conf/ with broken files; LEPTON_FED_CONF points compose at it."""
    d = tmp_path / "conf"
    shutil.copytree(conf_dir(), d)
    (d / "experiment" / "typo.yaml").write_text(
        "# @package _global_\n# lepton-fed simulate experiment=typo\nprivacy:\n  epsilonn: 3\n"
    )
    (d / "experiment" / "wrong_type.yaml").write_text(
        "# @package _global_\n# lepton-fed simulate experiment=wrong_type\n"
        "federation:\n  rounds: ten\n"
    )
    (d / "secagg" / "typo.yaml").write_text(
        "# lepton-fed simulate secagg=typo\nenabled: true\nsecurity_bitz: 30\n"
    )
    monkeypatch.setenv("LEPTON_FED_CONF", str(d))
    return d


@pytest.mark.parametrize(
    "override, problem",
    [
        (
            "experiment=typo",
            "in conf/experiment/typo.yaml: privacy.epsilonn: no such setting; "
            f"settings under privacy are {PRIVACY_KEYS}",
        ),
        (
            "experiment=wrong_type",
            "in conf/experiment/wrong_type.yaml: federation.rounds must "
            "be a whole number, got 'ten'",
        ),
        (
            "secagg=typo",
            "in conf/secagg/typo.yaml: secagg.security_bitz: no such setting; "
            "settings under secagg are ['clip', 'colluding_fraction', "
            "'correctness_bits', 'dropout_rate', 'enabled', 'max_weight', "
            "'min_cohort', 'neighbours', 'security_bits', 'threshold', 'timeout']",
        ),
    ],
)
def test_a_broken_yaml_file_is_named_with_its_key(
    broken_conf: Path, override: str, problem: str
) -> None:
    assert _problems([override]) == [problem]


def test_composed_configs_are_typed() -> None:
    cfg = compose(["federation.rounds=3", "privacy.epsilon=3", "secagg.max_weight=100"])
    assert OmegaConf.get_type(cfg) is Config
    assert cfg.privacy.epsilon == 3.0 and isinstance(cfg.privacy.epsilon, float)
    assert isinstance(cfg.secagg.max_weight, float)
    with pytest.raises(Exception, match="federation.rounds"):
        cfg.federation.rounds = "many"  # a composed config stays typed


def test_strategy_stays_open_and_is_checked_against_its_class() -> None:
    cfg = precheck(["strategy=fedadam", "strategy.eta=0.05"])[0]
    assert cfg.strategy.eta == 0.05
    assert _problems(["strategy=fedavg", "+strategy.eta=0.1"]) == [
        "strategy.eta: not a setting of strategy=fedavg (lepton_fed.strategies.FedAvg); "
        "its settings are []"
    ]
    assert _problems(["strategy=fedadam", "+strategy.eta=0.1"]) == [
        "+strategy.eta: strategy.eta is already set; drop the + (strategy.eta=VALUE)"
    ]


# --- option files state only what differs from the schema ---------------------------

#: the key that names an option; an option file may restate it even when it equals the
#: schema's default (secagg=off says ``enabled: false``)
SELECTOR = {
    "privacy": "mode",
    "secagg": "enabled",
    "compression": "update",
    "attack": "name",
}
#: groups whose option files are also standalone files and so stay complete: a node
#: operator passes conf/node_policy/*.yaml to ``lepton-fed node join --policy``
COMPLETE = ("node_policy",)
TYPED_GROUPS = sorted(
    f.name
    for f in dataclasses.fields(Config)
    if dataclasses.is_dataclass(f.default_factory) and f.name not in COMPLETE
)  # strategy is open


def _option_files() -> list[Path]:
    d = conf_dir()
    return sorted(
        p for g in TYPED_GROUPS if (d / g).is_dir() for p in (d / g).glob("*.yaml")
    )


@pytest.mark.parametrize(
    "path", _option_files(), ids=lambda p: f"{p.parent.name}/{p.stem}"
)
def test_option_files_state_only_what_differs_from_the_schema(path: Path) -> None:
    group = path.parent.name
    node = OmegaConf.load(path) or OmegaConf.create({})
    body = OmegaConf.to_container(node)
    assert isinstance(body, dict)
    body.pop("defaults", None)
    if path.read_text().startswith("# @package _global_"):
        assert set(body) == {group}, path  # a global option touches its own group only
        body = body[group]
    defaults = OmegaConf.to_container(OmegaConf.structured(Config))[group]
    same = sorted(
        k
        for k, v in body.items()
        if k in defaults and v == defaults[k] and k != SELECTOR.get(group)
    )
    assert not same, f"{path}: {same} repeat the schema's defaults"
    assert set(body) <= set(defaults), path


@pytest.mark.parametrize("option", ["open", "strict"])
def test_node_policy_files_are_complete_policies(option: str) -> None:
    """Read alone (``node join --policy``), a policy file must say everything: the same
    values as the composed group, which the schema completes."""
    alone = OmegaConf.to_container(
        OmegaConf.load(conf_dir() / "node_policy" / f"{option}.yaml")
    )
    composed = OmegaConf.to_container(compose([f"node_policy={option}"]).node_policy)
    assert alone == composed


def test_option_files_shrank_to_their_differences() -> None:
    d = conf_dir()
    lines = {
        p: [ln for ln in p.read_text().splitlines() if ln and not ln.startswith("#")]
        for p in (d / "secagg").glob("*.yaml")
    }
    assert {p.stem: v for p, v in lines.items()} == {
        "off": ["enabled: false"],
        "on": ["enabled: true"],
    }
    assert [
        ln
        for ln in (d / "federation" / "default.yaml").read_text().splitlines()
        if ln and not ln.startswith("#")
    ] == []


def test_the_default_options_compose_to_the_documented_values() -> None:
    """Literal values of the files before the schema (so moving a default into the
    schema cannot change a run)."""
    cfg = compose([])
    assert OmegaConf.to_container(cfg.secagg) == {
        "enabled": False,
        "security_bits": 40.0,
        "colluding_fraction": 0.05,
        "dropout_rate": 0.05,
        "correctness_bits": 20.0,
        "neighbours": None,
        "threshold": None,
        "clip": None,
        "timeout": 120.0,
        "max_weight": 10000.0,
        "min_cohort": 3,
    }
    f = compose(["secagg=on"]).federation
    assert (
        f.num_clients,
        f.clients_per_round,
        f.rounds,
        f.round_timeout,
        f.evaluate_every,
        f.min_clients,
    ) == (5, 5, 10, 600.0, 1, 1)
    p = compose(["privacy=central"]).privacy
    assert (p.mode, p.delta, p.noise_multiplier, p.clip, p.accountant) == (
        "central",
        1e-5,
        1.0,
        1.0,
        "pld",
    )
    p = compose(["privacy=distributed"]).privacy
    assert (p.epsilon, p.clip, p.wrap_bits, p.accountant, p.min_contributors) == (
        3.0,
        1.0,
        40.0,
        "rdp",
        None,
    )
    dp = compose(["privacy=dpsgd"])
    assert (
        dp.privacy.epsilon,
        dp.privacy.delta,
        dp.privacy.max_grad_norm,
        dp.model.name,
    ) == (3.0, 1e-5, None, "logreg")
    strict = compose(["node_policy=strict"]).node_policy
    assert (
        list(strict.privacy_modes),
        strict.max_epsilon,
        strict.require_secagg,
        strict.colluding_fraction,
        strict.max_rounds,
    ) == (["dpsgd"], 8.0, True, 0.05, None)
    c = compose(["compression=topk"]).compression
    assert (c["update"], c.topk_fraction, c.block_size) == ("topk", 0.05, 256)
    a = compose(["attack=gaussian"]).attack
    assert (a.name, a.fraction, a.std, a.scale) == ("gaussian", 0.2, 1.0, None)


# --- validate's type table agrees with the schema ------------------------------------


@pytest.mark.parametrize(
    "key, value, words",
    [
        ("secagg.security_bits", "many", "a number"),  # numbers the schema declares
        ("privacy.min_contributors", 2.5, "a whole number"),
        ("observe.metrics_port", "http", "a whole number or null"),
        ("federation.rounds", None, "a number"),  # not nullable in the schema
    ],
)
def test_validate_checks_every_number_of_the_schema_on_untyped_configs(
    key, value, words
):
    """validate() also checks configs that never went through the schema (a checkpoint,
    a config a node parsed from YAML): its type table is the schema's own numbers."""
    plain = OmegaConf.create(OmegaConf.to_container(compose([])))
    OmegaConf.update(plain, key, value)
    problems = validate(plain)
    want = f"{key} must be {words.removesuffix(' or null')}, got"
    assert any(p.startswith(want) for p in problems), problems


# --- federation.ray_address and GPUs against the engine ------------------------------


@pytest.mark.parametrize(
    "address",
    ["10.0.0.5:6379", "head.example:6379", "auto", "'ray://head.example:10001'"],
)
def test_a_ray_address_is_accepted_for_the_ray_engine(address: str) -> None:
    cfg = precheck([f"federation.ray_address={address}"])[0]
    assert cfg.federation.ray_address == address.strip("'")


@pytest.mark.parametrize(
    "address", ["head", "6379", "head:0", "head:99999", "http://h:1", "'a b:1'"]
)
def test_a_malformed_ray_address_is_named(address: str) -> None:
    (p,) = _problems([f"federation.ray_address={address}"])
    assert p.startswith(
        f"federation.ray_address={address.strip(chr(39))!r}: expected "
        "HOST:PORT of a running Ray head"
    ), p


def test_a_ray_address_without_ray_is_refused() -> None:
    (p,) = _problems(["federation.ray_address=10.0.0.5:6379"], engine="in-process")
    assert p == (
        "federation.ray_address=10.0.0.5:6379: only the Ray simulation engine joins "
        "a Ray cluster, and this run uses the in-process engine (no Ray); set "
        "federation.ray_address=null"
    )
    (p,) = _problems(["federation.ray_address=10.0.0.5:6379"], deployment=True)
    assert "this run uses a real federation" in p
    with pytest.raises(ValueError, match="engine='spark'"):
        validate(compose([]), engine="spark")


def test_gpus_per_client_need_cuda_here_unless_a_cluster_provides_them() -> None:
    import torch

    assert _problems(["federation.num_gpus_per_client=-1"]) == [
        "federation.num_gpus_per_client must be >= 0, got -1.0"
    ]
    # a cluster's workers may have GPUs this driver lacks
    precheck(
        ["federation.num_gpus_per_client=0.25", "federation.ray_address=10.0.0.5:6379"]
    )
    precheck(["federation.num_gpus_per_client=0.25"], engine="in-process")
    if torch.cuda.is_available():
        assert precheck(["federation.num_gpus_per_client=0.25"])[0]
        return
    assert _problems(["federation.num_gpus_per_client=0.25"]) == [
        "federation.num_gpus_per_client=0.25 but CUDA is not available here "
        "(torch.cuda.is_available() is False), so Ray could never place a client; use "
        "federation.num_gpus_per_client=0, or federation.ray_address=HOST:PORT for a Ray "
        "cluster whose workers have GPUs"
    ]


# --- settings the chosen option never reads -------------------------------------------


def test_another_options_setting_is_named_not_ignored() -> None:
    assert _problems(["attack=sign_flip", "attack.std=2"]) == [
        "attack.std is not a setting of attack=sign_flip (its setting is attack.scale); "
        "set attack.std=null or choose the attack that reads it"
    ]
    assert _problems(["attack.scale=2"]) == [
        "attack.scale is not a setting of attack=none (it has no parameter); set "
        "attack.scale=null or choose the attack that reads it"
    ]
    assert _problems(["privacy=central", "privacy.wrap_bits=30"]) == [
        "privacy.wrap_bits is a setting of privacy=distributed only (privacy=central never "
        "reads it); set privacy.wrap_bits=null"
    ]
    precheck(["attack=gaussian", "attack.std=2"])
    precheck(["privacy=distributed", "secagg=on", "privacy.min_contributors=3"])


def test_an_impossible_count_is_named_beside_a_type_problem() -> None:
    cfg = OmegaConf.create(
        OmegaConf.to_container(compose([]))
    )  # untyped, like a checkpoint
    cfg.federation.rounds = 0
    cfg.client.lr = True
    assert validate(cfg) == [
        "client.lr must be a number, got True",
        "federation.rounds must be a positive integer, got 0",
    ]
