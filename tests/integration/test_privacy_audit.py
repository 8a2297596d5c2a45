"""`lepton-fed audit`: on a deliberately broken DP-SGD (no noise) the one-run lower bound
exceeds the accounted epsilon and the command fails; on the real mechanism the bound
stays below it and the command passes. In-process, seconds."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
import torch

from lepton_fed.cli import audit as cli_audit

# digits over 5 clients, logistic regression, full-batch DP-SGD: a small, fast run
RUN = ["data=digits", "model=logreg", "federation.num_clients=5",
       "federation.clients_per_round=5", "federation.rounds=4", "privacy=dpsgd",
       "privacy.epsilon=0.5", "client.batch_size=1000", "client.epochs=4",
       "client.lr=0.3", "client.momentum=0.0", "privacy.max_grad_norm=1.0"]


@pytest.fixture
def no_noise(monkeypatch):
    """The deliberately broken mechanism: DP-SGD's Gaussian draws are all zero, while
    sigma, the ledger and the reported epsilon stay as if the noise were there."""
    import lepton_fed.privacy.noise as noise

    def zeros(self, std, shape, *, device="cpu", dtype=torch.float32):
        return torch.zeros(tuple(shape), dtype=dtype, device=device)

    monkeypatch.setattr(noise.OSNoise, "gaussian", zeros)
    monkeypatch.setattr(noise.SecureNoise, "gaussian", zeros)


def _cli(argv, capsys):
    parser = argparse.ArgumentParser(prog="lepton-fed")
    cli_audit.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["audit", *argv])
    code = args.func(args)
    return code, capsys.readouterr()


def test_broken_mechanism_is_caught(no_noise, compose_cfg):
    r = cli_audit.run_audit(compose_cfg(*RUN), canaries=100,
                            rng=np.random.default_rng(0))
    assert r["epsilon_accounted"] == pytest.approx(0.5, rel=1e-6)
    assert r["epsilon_lower_bound"] > r["epsilon_accounted"]
    assert not r["passed"] and r["canary_auc"] > 0.85


def test_broken_mechanism_fails_the_command(no_noise, capsys):
    code, out = _cli([*RUN, "--canaries", "100", "--json"], capsys)
    rep = json.loads(out.out)
    assert code == 1 and rep["passed"] is False
    assert rep["epsilon_lower_bound"] > rep["epsilon_accounted"]


def test_real_mechanism_passes(capsys):
    code, out = _cli([*RUN, "--canaries", "100"], capsys)
    assert code == 0, out.out
    assert "PASS: the empirical lower bound is below the accounted epsilon" in out.out


def test_real_mechanism_bound_is_below_epsilon(compose_cfg):
    r = cli_audit.run_audit(compose_cfg(*RUN), canaries=100)
    assert r["passed"] and r["epsilon_lower_bound"] <= r["epsilon_accounted"]
    assert 0.0 <= r["mia_auc"] <= 1.0 and r["rounds_completed"] == 4


def test_configs_the_audit_cannot_run_are_refused_before_training(compose_cfg):
    from lepton_fed.errors import ConfigError

    with pytest.raises(ConfigError, match="privacy.mode=central"):
        cli_audit.run_audit(compose_cfg("privacy=central"))
    with pytest.raises(ConfigError, match="secagg=on"):
        cli_audit.run_audit(compose_cfg(*RUN, "secagg=on"))
