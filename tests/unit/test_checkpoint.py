"""Checkpoint files: atomic writes, hash-checked reads, RNG state, config checks on resume."""

import json
import os
import random

import numpy as np
import pytest
import torch

from lepton_fed.server import checkpoint as ck
from lepton_fed.server.checkpoint import CheckpointError


def _state(rnd, **extra):
    return {"format": ck.FORMAT, "round": rnd, **extra}


def test_write_then_load_round_trips_arrays_and_state(tmp_path):
    d = tmp_path / ck.CHECKPOINT_DIR
    arrays = {"model/w": np.arange(6, dtype=np.float32).reshape(2, 3),
              "strategy/m_t/w": np.full(3, 1e-30, np.float64)}
    ck._write(d, 4, _state(4, rows=[{"round": 4, "loss": float("nan")}]), arrays)
    got = ck.load(tmp_path)
    assert got.round == 4 and got.state["rows"] == [{"round": 4, "loss": None}]
    for k, v in arrays.items():
        assert got.arrays[k].dtype == v.dtype and np.array_equal(got.arrays[k], v)
    assert [p.name for p in d.iterdir()] == [ck.CHECKPOINT_FILE]
    from safetensors import safe_open

    with safe_open(str(d / ck.CHECKPOINT_FILE), "np") as f:  # the state is plain JSON
        assert json.loads(f.metadata()["lepton_fed_state"])["round"] == 4


def test_a_write_that_dies_before_the_rename_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    d = tmp_path / ck.CHECKPOINT_DIR
    ck._write(d, 1, _state(1), {"model/w": np.zeros(3, np.float32)})
    real_replace = os.replace

    def dying_replace(src, dst):  # the process dies right before the rename
        if str(dst).endswith(ck.CHECKPOINT_FILE):
            raise KeyboardInterrupt("killed")
        return real_replace(src, dst)

    monkeypatch.setattr(ck.os, "replace", dying_replace)
    with pytest.raises(KeyboardInterrupt):
        ck._write(d, 2, _state(2), {"model/w": np.ones(3, np.float32)})
    monkeypatch.undo()
    got = ck.load(tmp_path)
    assert got.round == 1 and np.array_equal(got.arrays["model/w"], np.zeros(3))
    assert not [p for p in d.iterdir() if p.name.endswith(".tmp")]  # no stray temp file


def test_a_torn_or_altered_file_is_never_read(tmp_path):
    d = tmp_path / ck.CHECKPOINT_DIR
    ck._write(d, 3, _state(3), {"model/w": np.ones(1000, np.float32)})
    f = d / ck.CHECKPOINT_FILE
    whole = f.read_bytes()
    f.write_bytes(whole[:-100])  # torn
    with pytest.raises(CheckpointError, match="unreadable"):
        ck.load(tmp_path)
    f.write_bytes(whole[:-4] + b"\x00\x00\x80\x7f")  # same size, one value changed
    with pytest.raises(CheckpointError, match="do not match the SHA-256"):
        ck.load(tmp_path)


def test_missing_or_foreign_checkpoints_are_clear_errors(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint there"):
        ck.load(tmp_path)
    d = tmp_path / ck.CHECKPOINT_DIR
    d.mkdir()
    (d / ck.CHECKPOINT_FILE).write_text("{not safetensors")
    with pytest.raises(CheckpointError, match="unreadable"):
        ck.load(tmp_path)
    ck._write(d, 1, {"format": 99}, {})
    with pytest.raises(CheckpointError, match="format 99 is not 1"):
        ck.load(tmp_path)


def test_rng_states_are_restored_exactly(tmp_path):
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    np.random.normal()  # leaves a cached Gaussian in numpy's legacy state
    state, arrays = ck._rng_state()
    ck._write(tmp_path / ck.CHECKPOINT_DIR, 1, _state(1, rng=state), arrays)
    expected = (random.random(), np.random.normal(size=3).tolist(), torch.rand(3).tolist())
    random.seed(9)
    np.random.seed(9)
    torch.manual_seed(9)
    ck._restore_rng(ck.load(tmp_path))
    assert (random.random(), np.random.normal(size=3).tolist(), torch.rand(3).tolist()) == expected


def _saved(tmp_path, cfg):
    from omegaconf import OmegaConf

    ck._write(tmp_path / ck.CHECKPOINT_DIR, 2,
              _state(2, config=OmegaConf.to_container(cfg, resolve=True)), {})


def test_resume_refuses_another_config_naming_every_difference(tmp_path, compose_cfg):
    _saved(tmp_path, compose_cfg("federation.rounds=4", "client.lr=0.05"))
    cfg = compose_cfg("federation.rounds=4", "client.lr=0.5", "model=logreg", f"resume={tmp_path}")
    with pytest.raises(CheckpointError) as ei:
        ck.check_resume(cfg)
    text = "\n".join(ei.value.problems)
    assert "client.lr: the run has 0.05, now 0.5" in text
    assert "model.name: the run has 'mlp', now 'logreg'" in text


def test_resume_with_only_resumable_overrides_takes_the_runs_own_config(tmp_path, compose_cfg):
    _saved(tmp_path, compose_cfg("federation.rounds=4", "data=digits", "client.lr=0.2"))
    cli = compose_cfg("federation.rounds=6", f"resume={tmp_path}")  # defaults otherwise
    cfg = ck.resume_config(cli, [f"resume={tmp_path}", "federation.rounds=6",
                                 "hydra.run.dir=/elsewhere"])
    assert cfg.data.name == "digits" and cfg.client.lr == 0.2
    assert cfg.federation.rounds == 6 and cfg.resume == str(tmp_path)
    with pytest.raises(CheckpointError, match="already completed 2 rounds"):
        ck.resume_config(compose_cfg("federation.rounds=1", f"resume={tmp_path}"),
                         [f"resume={tmp_path}", "federation.rounds=1"])


def test_rounds_cannot_change_when_the_noise_was_calibrated_for_them(tmp_path, compose_cfg):
    base = ("privacy=central", "privacy.epsilon=5.0")
    _saved(tmp_path, compose_cfg(*base, "federation.rounds=4"))
    with pytest.raises(CheckpointError, match="calibrated for privacy.epsilon=5.0 over 4 rounds"):
        ck.check_resume(compose_cfg(*base, "federation.rounds=8", f"resume={tmp_path}"))


def test_dpsgd_is_not_resumed_where_node_ledgers_do_not_survive(tmp_path, compose_cfg):
    cfg = compose_cfg("privacy=dpsgd", f"resume={tmp_path}")
    _saved(tmp_path, compose_cfg("privacy=dpsgd"))
    ck.check_resume(cfg)  # nodes with a ledger-dir: fine
    with pytest.raises(CheckpointError, match="privacy spent twice"):
        ck.check_resume(cfg, node_ledgers_persist=False)


def test_a_dpsgd_simulation_keeps_its_nodes_ledgers_in_the_run_directory(tmp_path, compose_cfg):
    """simulate() exports RUN_DIR/node_ledgers to the virtual nodes for a DP-SGD run (and
    nothing otherwise); its existence is what lets check_resume continue the run."""
    import os

    from lepton_fed.client.dp import SIM_LEDGERS_ENV
    from lepton_fed.simulation import _node_ledgers

    before = os.environ.get(SIM_LEDGERS_ENV)
    with _node_ledgers(compose_cfg("privacy=dpsgd"), tmp_path):
        assert os.environ[SIM_LEDGERS_ENV] == str((tmp_path / ck.NODE_LEDGERS_DIR).resolve())
    assert os.environ.get(SIM_LEDGERS_ENV) == before
    assert (tmp_path / ck.NODE_LEDGERS_DIR).is_dir()
    with _node_ledgers(compose_cfg(), tmp_path / "plain"):
        assert SIM_LEDGERS_ENV not in os.environ
    assert not (tmp_path / "plain").exists()
    cfg = compose_cfg("privacy=dpsgd", f"resume={tmp_path}")
    _saved(tmp_path, compose_cfg("privacy=dpsgd"))
    ck.check_resume(cfg, node_ledgers_persist=(tmp_path / ck.NODE_LEDGERS_DIR).is_dir())
