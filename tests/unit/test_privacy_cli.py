"""`lepton-fed privacy`: numbers for a planned run, clear errors naming the flag."""

from __future__ import annotations

import argparse
import json

import pytest

from lepton_fed.cli import privacy as cli

#: A DP-SGD plan: 5 rounds over 144 examples in batches of 16.
PLAN = ["--rounds", "5", "--examples", "144", "--batch-size", "16"]


def run(argv, capsys):
    parser = argparse.ArgumentParser(prog="lepton-fed")
    cli.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["privacy", *argv])
    code = args.func(args)
    out = capsys.readouterr()
    return code, out.out, out.err


def _rdp_epsilon(sigma: float, steps: int = 45, q: float = 1 / 9) -> float:
    """dp_accounting's RDP accountant on the plan, independently of lepton-fed."""
    from dp_accounting import GaussianDpEvent, PoissonSampledDpEvent
    from dp_accounting.rdp import RdpAccountant

    acc = RdpAccountant()
    acc.compose(PoissonSampledDpEvent(q, GaussianDpEvent(sigma)), steps)
    return float(acc.get_epsilon(1e-5))


def test_dpsgd_sigma_prints_epsilon(capsys):
    code, out, _ = run([*PLAN, "--sigma", "0.879", "--accountant", "rdp"], capsys)
    assert code == 0
    want = _rdp_epsilon(0.879)
    assert f"epsilon: {want:.4f} at delta 1e-05 (sigma 0.879, RDP)" in out
    assert "45 steps" in out and "every round" in out
    assert "same run under PLD: epsilon 6.99" in out


def test_default_accountant_is_pld_and_both_epsilons_are_shown(capsys):
    from dp_accounting import GaussianDpEvent, PoissonSampledDpEvent
    from dp_accounting.pld import PLDAccountant

    code, out, _ = run([*PLAN, "--sigma", "0.879", "--json"], capsys)
    res = json.loads(out)
    acc = PLDAccountant(value_discretization_interval=1e-4)
    acc.compose(PoissonSampledDpEvent(1 / 9, GaussianDpEvent(0.879)), 45)
    assert code == 0 and res["accountant"] == "pld"
    assert res["epsilon"] == res["epsilon_pld"]
    assert res["epsilon_pld"] == pytest.approx(acc.get_epsilon(1e-5), rel=1e-3)
    assert res["epsilon_rdp"] == pytest.approx(_rdp_epsilon(0.879), rel=1e-9)
    assert res["epsilon_pld"] < res["epsilon_rdp"]


def test_target_calibrates_with_the_chosen_accountant(capsys):
    _, out, _ = run([*PLAN, "--target-epsilon", "3", "--json"], capsys)
    pld = json.loads(out)
    _, out, _ = run([*PLAN, "--target-epsilon", "3", "--json", "--accountant", "rdp"], capsys)
    rdp = json.loads(out)
    assert pld["epsilon_pld"] <= 3.0 and rdp["epsilon_rdp"] <= 3.0
    assert pld["epsilon_pld"] == pytest.approx(3.0, rel=1e-4)
    assert pld["sigma"] < rdp["sigma"]  # the tighter accountant needs less noise


def test_dpsgd_target_prints_sigma_json(capsys):
    code, out, _ = run(
        [*PLAN, "--target-epsilon", "8", "--local-epochs", "1", "--json",
         "--accountant", "rdp"], capsys
    )
    res = json.loads(out)
    assert code == 0
    # the smallest sigma that meets the target: 8 at sigma, above 8 just below it
    assert res["epsilon"] <= 8.0 and res["steps"] == 45
    assert _rdp_epsilon(res["sigma"]) <= 8.0 + 1e-9 < _rdp_epsilon(res["sigma"] * 0.999)
    assert res["sample_rate"] == pytest.approx(1 / 9)


def test_central_prints_epsilon_and_noise(capsys):
    code, out, _ = run(
        [
            "--mode",
            "central",
            "--rounds",
            "1",
            "--clients-per-round",
            "4",
            "--sigma",
            "1.0",
        ],
        capsys,
    )
    assert code == 0
    assert "under RDP: epsilon 4.7285" in out
    assert "0.25 on their mean" in out


def test_delta_warning_when_above_one_over_n(capsys):
    _, out, _ = run(
        [
            "--rounds",
            "1",
            "--examples",
            "100",
            "--batch-size",
            "10",
            "--sigma",
            "1",
            "--delta",
            "0.05",
        ],
        capsys,
    )
    assert "warning: delta" in out


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        ([*PLAN, "--sigma", "1", "--delta", "1"], "--delta"),
        ([*PLAN, "--target-epsilon", "0"], "--target-epsilon"),
        ([*PLAN, "--sigma", "-1"], "--sigma"),
        (
            [
                "--rounds",
                "0",
                "--examples",
                "144",
                "--batch-size",
                "16",
                "--sigma",
                "1",
            ],
            "--rounds",
        ),
        (["--rounds", "5", "--batch-size", "16", "--sigma", "1"], "--examples"),
        (["--rounds", "5", "--examples", "144", "--sigma", "1"], "--batch-size"),
        ([*PLAN, "--sigma", "1", "--local-epochs", "0"], "--local-epochs"),
        (["--mode", "central", "--rounds", "5", "--sigma", "1"], "--clients-per-round"),
    ],
)
def test_bad_input_exits_2_naming_the_flag(argv, flag, capsys):
    code, out, err = run(argv, capsys)
    assert code == 2
    assert flag in err and out == ""


def test_unreachable_target_is_a_clear_error(capsys):
    code, _, err = run(
        [
            "--rounds",
            "50",
            "--examples",
            "10",
            "--batch-size",
            "10",
            "--target-epsilon",
            "0.0001",
        ],
        capsys,
    )
    assert code == 2 and "unreachable" in err


def test_sigma_and_target_are_exclusive(capsys):
    with pytest.raises(SystemExit) as info:
        run(
            [
                "--rounds",
                "5",
                "--examples",
                "1",
                "--batch-size",
                "1",
                "--sigma",
                "1",
                "--target-epsilon",
                "1",
            ],
            capsys,
        )
    assert info.value.code == 2
