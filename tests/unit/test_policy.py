"""Node policies: loading (every problem at once), the strict default, and every way a
server's config can try to loosen a node's limits, each declined with its code."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from lepton_fed.errors import ConfigError
from lepton_fed.policy import (
    DECLINE_CODES,
    Decline,
    NodePolicy,
    allowed_clear_metrics,
    check_policy_config,
    check_request,
    check_train_message,
    filter_metrics,
    load_policy,
    open_policy,
    strict_default,
)
from lepton_fed.policy import codes as C


@pytest.fixture(scope="module")
def base_cfg():
    """A request the strict default accepts (DP-SGD eps 3, secagg on, 5 per round)."""
    from lepton_fed.config import compose

    cfg = compose(["privacy=dpsgd", "privacy.epsilon=3.0", "secagg=on",
                   "federation.num_clients=5", "federation.clients_per_round=5",
                   "model=logreg"])
    return _with(cfg, **{"secagg.security_bits": 64})


def _with(cfg, **dotted):
    out = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    for k, v in dotted.items():
        if v is _DROP:
            parent, _, leaf = k.rpartition(".")
            OmegaConf.select(out, parent).pop(leaf)
        else:
            OmegaConf.update(out, k, v, force_add=True)
    return out


_DROP = object()


def test_base_request_is_accepted_by_strict_and_open(base_cfg):
    assert check_request(strict_default(), base_cfg) == []
    assert check_request(open_policy(), base_cfg) == []


DOWNGRADES = [
    ({"privacy.mode": "none"}, C.PRIVACY_MODE, "privacy.mode"),
    ({"privacy.mode": "central"}, C.PRIVACY_MODE, "privacy.mode"),
    ({"privacy.epsilon": 1e6}, C.EPSILON_CAP, "privacy.epsilon"),
    ({"privacy.epsilon": None, "privacy.noise_multiplier": 0.01}, C.EPSILON_CAP,
     "privacy.epsilon"),
    ({"privacy.delta": 0.1}, C.DELTA, "privacy.delta"),
    ({"privacy.delta": None}, C.DELTA, "privacy.delta"),
    ({"secagg.enabled": False}, C.SECAGG_REQUIRED, "secagg.enabled"),
    ({"secagg.security_bits": 20}, C.SECURITY_LEVEL, "40"),
    ({"secagg.security_bits": _DROP}, C.SECURITY_LEVEL, "unknown"),
    ({"secagg.neighbours": 4, "secagg.threshold": 2}, C.SECURITY_LEVEL, "secagg.threshold"),
    ({"secagg.colluding_fraction": 0.01}, C.SECURITY_LEVEL, "secagg.colluding_fraction"),
    ({"federation.clients_per_round": 2}, C.COHORT_SIZE, "federation.clients_per_round"),
    ({"model.name": "transformer"}, C.MODEL, "model.name"),
    ({"privacy.reproducible": True}, C.REPRODUCIBLE_NOISE, "privacy.reproducible"),
    ({"secagg.trust_on_first_use": True}, C.TOFU_KEYS, "secagg.trust_on_first_use"),
    ({"privacy.epsilon": "lots"}, C.MALFORMED_REQUEST, "privacy.epsilon"),
    ({"federation.clients_per_round": _DROP}, C.MALFORMED_REQUEST, "missing"),
]


@pytest.mark.parametrize(("change", "code", "named"), DOWNGRADES,
                         ids=[f"{d[1]}-{i}" for i, d in enumerate(DOWNGRADES)])
def test_each_downgrade_is_declined_with_its_code(base_cfg, change, code, named):
    declines = check_request(strict_default(), _with(base_cfg, **change))
    assert [d.code for d in declines] == [code]
    (d,) = declines
    assert named in d.detail
    assert code in DECLINE_CODES


def test_too_many_rounds_when_the_policy_limits_them(base_cfg):
    policy = NodePolicy(max_rounds=100)
    assert check_request(policy, base_cfg) == []
    (d,) = check_request(policy, _with(base_cfg, **{"federation.rounds": 10_000}))
    assert d.code == C.ROUNDS and "100" in d.detail


def test_every_problem_is_reported_at_once(base_cfg):
    bad = _with(base_cfg, **{"privacy.epsilon": 50.0, "privacy.delta": 0.01,
                             "secagg.enabled": False, "federation.clients_per_round": 1,
                             "model.name": "cnn2", "privacy.reproducible": True})
    codes = {d.code for d in check_request(strict_default(), bad)}
    assert codes == {C.EPSILON_CAP, C.DELTA, C.SECAGG_REQUIRED, C.COHORT_SIZE, C.MODEL,
                     C.REPRODUCIBLE_NOISE}
    # the simulation default takes the same request
    assert check_request(open_policy(), bad) == []


def test_details_name_settings_not_data(compose_cfg, tmp_path):
    csv = tmp_path / "patients.csv"
    csv.write_text("age,label\n61,1\n")
    cfg = _with(compose_cfg("data=csv", f"data.path={csv}", "data.label=label"),
                **{"privacy.epsilon": 1e6})
    declines = check_request(strict_default(), cfg)
    assert declines
    for d in declines:
        assert "patients" not in d.detail and "61" not in d.detail


def test_the_node_can_compute_the_level_itself(base_cfg):
    def mine(cfg, gamma):
        assert gamma == 0.05
        return 12.0  # the node's own computation beats the server's claim of 64

    (d,) = check_request(strict_default(), base_cfg, security_level=mine)
    assert d.code == C.SECURITY_LEVEL and "computed by this node" in d.detail
    assert check_request(strict_default(), base_cfg, security_level=lambda c, g: 80.0) == []


def test_a_train_message_without_secagg_is_refused(base_cfg):
    plain = _with(base_cfg, **{"secagg.enabled": False})
    (d,) = check_train_message(strict_default(), plain, has_secagg_request=False)
    assert d.code == C.SECAGG_REQUIRED
    # an open node still refuses when the run itself turned secure aggregation on
    (d,) = check_train_message(open_policy(), base_cfg, has_secagg_request=False)
    assert d.code == C.SECAGG_REQUIRED
    assert check_train_message(open_policy(), plain, has_secagg_request=False) == []
    assert check_train_message(strict_default(), base_cfg, has_secagg_request=True) == []


def test_clear_metrics():
    sent = {"num-examples": 120, "train-loss": 0.3, "update-norm": 2.0, "epsilon": 1.1,
            "declined": 0, "unit-weight": 1}
    strict = filter_metrics(strict_default(), sent)
    assert strict == {"epsilon": 1.1, "declined": 0, "unit-weight": 1}
    assert filter_metrics(open_policy(), sent) == sent
    only = NodePolicy(clear_metrics=frozenset({"train-loss"}))
    assert allowed_clear_metrics(only) == {"train-loss", "declined"}
    assert filter_metrics(only, sent) == {"train-loss": 0.3, "declined": 0}


def test_strict_default_values():
    p = strict_default()
    assert p == NodePolicy()
    assert p.privacy_modes == {"dpsgd"} and p.max_epsilon == 8.0 and p.max_delta == 1e-5
    assert p.require_secagg and p.min_security_bits == 40.0
    assert p.min_clients_per_round == 3 and p.models == {"logreg", "mlp", "cnn"}
    assert not p.allow_tofu_keys and not p.allow_reproducible_noise
    assert "num-examples" not in allowed_clear_metrics(p)


@pytest.mark.parametrize(("option", "expected"), [("strict", strict_default),
                                                  ("open", open_policy)])
def test_hydra_group_matches_the_code(option, expected):
    from lepton_fed.config import compose

    cfg = compose([f"node_policy={option}"])
    assert NodePolicy.from_mapping(cfg.node_policy) == expected()
    assert check_policy_config(cfg) == []


def test_load_policy_reports_every_problem_at_once(tmp_path):
    p = tmp_path / "policy.yaml"
    p.write_text("max_epsilon: -1\nmax_delta: 2\nprivacy_modes: [dpsgd, local]\n"
                 "require_secagg: 1\nmin_clients_per_round: 2.5\nallow_everything: true\n"
                 "colluding_fraction: 1.5\nclear_metrics: epsilon\n")
    with pytest.raises(ConfigError) as ei:
        load_policy(p)
    text = "\n".join(ei.value.problems)
    assert len(ei.value.problems) == 8
    for key in ("max_epsilon", "max_delta", "privacy_modes", "require_secagg",
                "min_clients_per_round", "allow_everything", "colluding_fraction",
                "clear_metrics"):
        assert key in text, key
    assert "'local'" in text and str(p) in text


def test_load_policy_keeps_strict_defaults_for_missing_keys(tmp_path):
    p = tmp_path / "policy.yaml"
    p.write_text("max_epsilon: 2.0\nmax_delta: 1.0e-3\nclear_metrics: [epsilon, train-loss]\n")
    got = load_policy(p)
    assert got == NodePolicy(max_epsilon=2.0, max_delta=1e-3,
                             clear_metrics=frozenset({"epsilon", "train-loss"}))
    assert got.require_secagg and got.privacy_modes == {"dpsgd"}
    assert NodePolicy.from_mapping(got.to_mapping()) == got


@pytest.mark.parametrize(("text", "match"), [("[1, 2]", "mapping"),
                                             ("a: [unclosed", "YAML")])
def test_load_policy_refuses_bad_files(tmp_path, text, match):
    p = tmp_path / "policy.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError, match=match):
        load_policy(p)
    with pytest.raises(ConfigError, match="cannot be read"):
        load_policy(tmp_path / "missing.yaml")


def test_check_policy_config_lists_problems(base_cfg):
    bad = _with(base_cfg, node_policy={"max_epsilon": 0, "colour": "red"})
    probs = check_policy_config(bad)
    assert len(probs) == 2 and any("colour" in p for p in probs)
    assert check_policy_config(base_cfg) == []


def test_decline_codes_are_a_closed_set():
    with pytest.raises(ValueError, match="unknown decline code"):
        Decline("PLEASE", "x")
    assert all(k == v for k, v in vars(C).items() if k.isupper() and k != "DECLINE_CODES")
    assert set(DECLINE_CODES) == {v for k, v in vars(C).items()
                                  if k.isupper() and k != "DECLINE_CODES"}
