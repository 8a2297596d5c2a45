"""The progress bar (rich) and the observers a config asks for."""

import io

import pytest
from omegaconf import OmegaConf

from lepton_fed.errors import ConfigError
from lepton_fed.observe import close_observers, observers_for
from lepton_fed.observe.factory import check_observe_config
from lepton_fed.observe.progress import ProgressObserver, eta_seconds


class _Tty(io.StringIO):
    def isatty(self):
        return True


def test_eta_from_the_rounds_finished():
    assert eta_seconds(0.0, 0, 10) is None
    assert eta_seconds(30.0, 3, 10) == pytest.approx(70.0)
    assert eta_seconds(30.0, 10, 10) == 0.0


def test_bar_draws_rounds_figures_and_eta_on_a_terminal():
    out = _Tty()
    p = ProgressObserver(4, file=out)
    assert p.enabled
    p.on_round({"round": 1, "accuracy": 0.81234, "epsilon": 0.5, "seconds": 10.0})
    text = out.getvalue()
    assert "1/4" in text and "acc 0.812" in text and "eps 0.50" in text
    assert "ETA 0:00:30" in text  # three rounds of 10 s left
    p.on_round({"round": 2, "accuracy": None, "epsilon": 0.7, "seconds": 10.0})
    assert "2/4" not in out.getvalue()  # redrawn at most every min_interval_s
    p.on_finish({})  # the last state is always drawn
    text = out.getvalue()
    assert "2/4" in text and "eps 0.70" in text and "ETA 0:00:20" in text
    p.close()  # idempotent


def test_quiet_when_not_a_terminal():
    out = io.StringIO()
    p = ProgressObserver(4, file=out)
    p.on_round({"round": 1, "seconds": 1.0})
    p.on_finish({})
    assert not p.enabled and out.getvalue() == ""


def _cfg(**observe):
    return OmegaConf.create({"federation": {"rounds": 3},
                             "privacy": {"mode": "dpsgd", "epsilon": 2.0},
                             "secagg": {"enabled": False}, "strategy": {"name": "fedavg"},
                             "observe": observe})


def test_observe_config_problems_are_named_all_at_once():
    bad = _cfg(metrics_port=70000, tensorboard="maybe", colour=True, metrics_addr="")
    problems = check_observe_config(bad)
    assert len(problems) == 4
    assert any("observe.metrics_port=70000" in p for p in problems)
    assert any("observe.tensorboard='maybe'" in p for p in problems)
    assert any("observe.colour: unknown key" in p for p in problems)
    with pytest.raises(ConfigError, match="metrics_port"):
        observers_for(bad, "unused")
    assert check_observe_config(OmegaConf.create({"federation": {"rounds": 1}})) == []


def test_observers_for_builds_what_is_asked(tmp_path):
    pytest.importorskip("tensorboard")
    pytest.importorskip("prometheus_client")
    from lepton_fed.observe.prometheus import CoordinatorMetrics
    from lepton_fed.observe.tensorboard import TensorBoardObserver

    obs = observers_for(_cfg(metrics_port=0, progress=False), tmp_path)
    kinds = {type(o) for o in obs}
    assert kinds == {TensorBoardObserver, CoordinatorMetrics}
    prom = next(o for o in obs if isinstance(o, CoordinatorMetrics))
    try:
        assert prom.port and prom.port > 0
    finally:
        prom.endpoint.shutdown()
    tb = next(o for o in obs if isinstance(o, TensorBoardObserver))
    tb.on_round({"round": 1, "accuracy": 0.5})
    close_observers(obs)  # a run that raised: the event file is flushed and closed
    assert tb._closed and next(tmp_path.glob("events.out.tfevents.*")).stat().st_size > 100
    none = observers_for(_cfg(tensorboard=False, progress="true"), tmp_path, quiet=True)
    assert none == []  # quiet wins over progress=true
