"""TensorBoard events written by the observer, read back with tensorboard's own reader."""

import pytest

pytest.importorskip("tensorboard")

from tensorboard.backend.event_processing.event_accumulator import (  # noqa: E402
    EventAccumulator,
)

from lepton_fed.observe.scalars import round_scalars  # noqa: E402
from lepton_fed.observe.tensorboard import TensorBoardObserver  # noqa: E402


def _rows():
    return [
        {"round": 1, "loss": 0.6, "accuracy": 0.7, "auc": 0.8, "clients": 3, "failed": 1,
         "declined": 1, "sampled": 5, "connected": 5, "epsilon": 0.5,
         "epsilon_per_node": {"hospital a": 0.5, "bank-b": 0.25},
         "declines": {"BUDGET_EXHAUSTED": 1}, "failures": {"NO_REPLY": 1},
         "federated": {"accuracy": 0.69, "loss": 0.61, "nodes": 3, "per_node": {"x": 1}},
         "bytes_up": 1000, "bytes_down": 2000, "seconds": 0.5},
        {"round": 2, "loss": None, "accuracy": None, "clients": 4, "failed": 0,
         "declined": 0, "epsilon": 0.75, "epsilon_per_node": {"hospital a": 0.75},
         "bytes_up": 1100, "bytes_down": 2100, "seconds": 0.25},
    ]


def _read(d):
    acc = EventAccumulator(str(d), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    return acc


def test_round_scalars_names_every_figure_and_skips_missing():
    s = round_scalars(_rows()[0])
    assert s["eval/accuracy"] == 0.7 and s["federated/accuracy"] == 0.69
    assert s["privacy/epsilon/hospital_a"] == 0.5 and s["privacy/epsilon/bank-b"] == 0.25
    assert s["declines/BUDGET_EXHAUSTED"] == 1 and s["failures/NO_REPLY"] == 1
    assert s["participation/sampled"] == 5 and s["time/round_seconds"] == 0.5
    assert not any(k.startswith("federated/per_node") for k in s)
    s2 = round_scalars(_rows()[1])
    assert "eval/accuracy" not in s2 and "eval/loss" not in s2
    assert round_scalars({"round": 1, "accuracy": float("nan"), "clients": True}) == {}


def test_events_read_back_with_tensorboard(tmp_path):
    obs = TensorBoardObserver(tmp_path)
    for r in _rows():
        obs.on_round(r)
    obs.on_finish({"rounds_completed": 2, "final": {"accuracy": 0.8, "loss": 0.4},
                   "privacy": {"mode": "dpsgd", "epsilon": 0.75,
                               "per_client": {"hospital a": 0.75}}, "nodes": {}})
    assert list(tmp_path.glob("events.out.tfevents.*"))
    acc = _read(tmp_path)
    tags = set(acc.Tags()["scalars"])
    assert {"eval/accuracy", "eval/loss", "eval/auc", "federated/accuracy",
            "privacy/epsilon_max", "privacy/epsilon/hospital_a", "participation/clients",
            "participation/failed", "participation/declined", "declines/BUDGET_EXHAUSTED",
            "bytes/up", "bytes/down", "time/round_seconds", "final/accuracy",
            "final/epsilon/hospital_a"} <= tags
    eps = [(e.step, round(e.value, 6)) for e in acc.Scalars("privacy/epsilon/hospital_a")]
    assert eps == [(1, 0.5), (2, 0.75)]
    assert [e.step for e in acc.Scalars("eval/accuracy")] == [1]  # round 2 not evaluated
    assert [e.value for e in acc.Scalars("participation/clients")] == [3, 4]
    text = acc.Tensors("privacy")[0].tensor_proto.string_val[0].decode()
    assert '"mode": "dpsgd"' in text  # the privacy summary as text


def test_scalars_reach_disk_while_the_run_goes(tmp_path):
    """Before on_finish: the writer's flush thread puts each round on disk."""
    import time

    obs = TensorBoardObserver(tmp_path, flush_secs=0.2)
    obs.on_round(_rows()[0])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        tags = _read(tmp_path).Tags()["scalars"]
        if "eval/accuracy" in tags:
            break
        time.sleep(0.1)
    assert "eval/accuracy" in tags
    obs.close()
    obs.on_round(_rows()[1])  # after close: ignored, no error
