"""Fuzzing config values: what a user types (``validate``) and what a node receives from
the server (``parse_config`` + the node-policy check, the attack settings). 0 crashes:
every problem comes back as a sentence naming its key, or as a coded decline."""

import copy
import functools

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf

from lepton_fed.client.node import parse_config
from lepton_fed.config.attack import attack_problems
from lepton_fed.config.validate import validate
from lepton_fed.policy import NodePolicy, check_request, check_train_message

FUZZ = settings(max_examples=60, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

NUMERIC = [
    "federation.num_clients", "federation.clients_per_round", "federation.rounds",
    "federation.evaluate_every", "federation.node_wait", "federation.min_clients",
    "federation.num_cpus_per_client", "federation.round_timeout",
    "client.epochs", "client.batch_size", "client.lr", "client.momentum",
    "privacy.epsilon", "privacy.delta", "privacy.clip", "privacy.noise_multiplier",
    "privacy.max_grad_norm", "secagg.clip", "secagg.neighbours", "secagg.threshold",
    "secagg.security_bits", "secagg.timeout", "compression.topk_fraction", "partition.alpha",
    "data.test_fraction", "seed", "attack.fraction", "attack.std", "attack.scale",
    "strategy.beta", "strategy.eta",
]
NAMES = ["client.optimizer", "privacy.mode", "privacy.grad_sample_mode", "compression.update",
         "partition.name", "model.name", "device", "attack.name", "evaluation.federated"]
FLAGS = ["privacy.secure_mode", "privacy.reproducible", "secagg.enabled",
         "evaluation.server_data"]
_NONE_CRASHES: set[str] = set()  # validate() names every null where a number is needed
numbers = st.one_of(st.booleans(), st.integers(-10**12, 10**12),
                    st.floats(allow_nan=True, allow_infinity=True))
names = st.one_of(st.none(), st.text(max_size=12), st.sampled_from(
    ["none", "dpsgd", "central", "mlp", "cnn", "logreg", "auto", "cuda", "cpu", "topk", "int8",
     "gaussian", "sign_flip", "dirichlet", "natural", "sgd", "adam", "ghost", "true", ""]))
anything = st.one_of(st.none(), numbers, names, st.lists(st.integers(-3, 300), max_size=3),
                     st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))
typed_edits = st.lists(st.one_of(
    st.tuples(st.sampled_from(NUMERIC), numbers),
    st.tuples(st.sampled_from(sorted(set(NUMERIC) - _NONE_CRASHES)), st.none()),
    st.tuples(st.sampled_from(NAMES), names),
    st.tuples(st.sampled_from(FLAGS), st.one_of(st.booleans(), st.none())),
    st.tuples(st.just("model.hidden"), st.lists(st.integers(-3, 300), max_size=3))),
    min_size=1, max_size=3)
any_edits = st.lists(st.tuples(st.sampled_from(NUMERIC + NAMES + FLAGS + ["model.hidden",
                                                                          "resume"]), anything),
                     min_size=1, max_size=3)
groups = st.lists(st.sampled_from(["privacy=central", "privacy=dpsgd", "secagg=on",
                                   "strategy=fedadam", "strategy=krum", "compression=topk",
                                   "attack=gaussian", "model=logreg", "partition=dirichlet"]),
                  max_size=3, unique_by=lambda o: o.split("=")[0])


@functools.cache
def _composed(chosen):
    from lepton_fed.config import compose

    # untyped, as a checkpoint's or simulate(config=...)'s config may be: the typed schema
    # would refuse most of these values on assignment, before validate() sees them
    return OmegaConf.create(OmegaConf.to_container(compose(list(chosen))))


def _fuzzed(chosen, changes):
    cfg = copy.deepcopy(_composed(tuple(sorted(chosen))))
    OmegaConf.set_struct(cfg, False)
    for k, v in changes:
        OmegaConf.update(cfg, k, v, merge=False, force_add=True)
    return cfg


@FUZZ
@given(groups, typed_edits)
def test_validate_reports_any_number_as_a_sentence_and_never_crashes(chosen, changes):
    cfg = _fuzzed(chosen, changes)
    problems = validate(cfg)
    assert isinstance(problems, list) and all(isinstance(p, str) and p for p in problems)
    for k, v in dict(changes).items():  # an impossible count is always named
        if k in ("federation.rounds", "federation.num_clients", "client.epochs") and (
                (v is None and k != "client.epochs")  # null epochs = the DP rule's / 1
                or (v is not None and not isinstance(v, bool) and not v >= 1)):
            assert any(k in p for p in problems), (k, v, problems)
    assert isinstance(attack_problems(cfg), list)


# Found by this fuzzing (now fixed): validate() compared a value before checking its type,
# so `lepton-fed simulate client.lr=abc` ended in "unexpected TypeError" instead of naming
# the setting.
_WRONG_TYPE = [(k, "abc") for k in (
    "client.batch_size", "client.epochs", "client.lr", "compression.topk_fraction",
    "data.test_fraction", "federation.num_cpus_per_client", "partition.alpha", "privacy.clip",
    "privacy.delta", "privacy.epsilon", "privacy.max_grad_norm", "privacy.noise_multiplier",
    "secagg.clip")] + [(k, None) for k in (
        "compression.topk_fraction", "data.test_fraction", "partition.alpha")] + [
    ("secagg.neighbours", True)]


@pytest.mark.parametrize("key, value", _WRONG_TYPE)
def test_validate_names_a_setting_of_the_wrong_type(key, value):
    chosen = {"privacy.max_grad_norm": ["privacy=dpsgd"], "partition.alpha": [
        "partition=dirichlet"]}.get(key) or {"privacy": ["privacy=central"],
                                            "secagg": ["secagg=on"]}.get(key.split(".")[0], [])
    problems = validate(_fuzzed(chosen, [(key, value)]))
    assert any(key in p for p in problems)


@FUZZ
@given(groups, any_edits, st.sampled_from(["open", "strict"]))
def test_a_node_checks_any_config_the_server_sends_without_crashing(chosen, changes,
                                                                    policy_name):
    cfg = _fuzzed(chosen, changes)
    text = OmegaConf.to_yaml(cfg)
    node_cfg = parse_config(text)  # what a node builds from the setup message
    pol = NodePolicy.from_mapping(_composed((f"node_policy={policy_name}",)).node_policy,
                                  source="node_policy")
    declines = check_request(pol, node_cfg)
    declines += check_train_message(pol, node_cfg, has_secagg_request=False)
    assert all(d.code and d.detail for d in declines)


@FUZZ
@given(st.text(max_size=200))
def test_a_node_refuses_any_malformed_config_text_with_a_value_error(text):
    try:
        cfg = parse_config(text)
    except ValueError as exc:
        assert str(exc)
    else:
        assert all(k in cfg for k in ("data", "model", "privacy", "federation"))
