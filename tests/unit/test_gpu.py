"""GPU clients (skipped without CUDA): ``device=auto`` picks CUDA, DP-SGD runs on CUDA with
its clipping and noise intact, a federation with DP-SGD and secure aggregation trains
on the GPU, and virtual clients share a GPU by fraction on Ray."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
from torch import nn

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (no GPU here)"),
]


def test_auto_device_is_cuda():
    from lepton_fed.utils.device import resolve_device

    assert resolve_device("auto") == "cuda"


def _one_step(model: nn.Module, device: str, sigma: float, clip: float) -> np.ndarray:
    """The parameter change of one DP-SGD step (lr 1) on 64 rows of large inputs."""
    from lepton_fed.client.train import DPSettings, train_local
    from lepton_fed.models import flatten_state, get_state

    before = flatten_state(get_state(model))
    g = np.random.default_rng(0)
    X = (100 * g.standard_normal((64, 8))).astype(np.float32)  # per-example grads >> clip
    y = g.integers(0, 3, 64)
    dp = DPSettings(noise_multiplier=sigma, max_grad_norm=clip, grad_sample_mode="ew",
                    batch_size=64, epochs=1, lr=1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = train_local(model, X, y, epochs=1, batch_size=64, lr=1.0, momentum=0.0,
                          device=device, dp=dp)
    assert res.steps == 1
    assert next(model.parameters()).device.type == device
    return flatten_state(get_state(model)) - before


def test_dp_sgd_on_cuda_clips_and_adds_noise():
    def model() -> nn.Module:
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))

    clip = 0.01
    # sigma tiny: the step is the mean of clipped per-example gradients, norm <= clip
    tiny = _one_step(model(), "cuda", 1e-6, clip)
    assert 0 < np.linalg.norm(tiny) <= clip * 1.001
    # sigma 1: noise of std sigma*clip/batch per coordinate is added, and fresh each run
    a = _one_step(model(), "cuda", 1.0, clip)
    b = _one_step(model(), "cuda", 1.0, clip)
    assert not np.allclose(a, b)
    noise = (a - tiny) * 64 / clip  # in units of sigma * clip / batch
    assert 0.7 < float(np.std(noise)) < 1.3


def test_federation_with_dp_and_secure_aggregation_trains_on_cuda(compose_cfg, tmp_path):
    from lepton_fed.client.app import app
    from lepton_fed.inprocess import InProcessGrid
    from lepton_fed.server.outputs import RunWriter
    from lepton_fed.server.rounds import run_federation
    from lepton_fed.sim_bundle import write_bundle

    cfg = compose_cfg("data=digits", "device=auto", "privacy=dpsgd", "secagg=on",
                      "federation.num_clients=6", "federation.clients_per_round=6",
                      "federation.rounds=2", "observe.tensorboard=false")
    grid = InProcessGrid(app, 6, bundle=write_bundle(tmp_path / "bundle", cfg))
    torch.cuda.reset_peak_memory_stats()
    summary = run_federation(grid, cfg, RunWriter(tmp_path / "run"))
    assert summary["device"] == "cuda" and summary["rounds_completed"] == 2
    assert [r["contributors"] for r in summary["secagg"]["rounds"]] == [6, 6]
    assert torch.cuda.max_memory_allocated() > 0  # the clients' training used the GPU


@pytest.mark.integration
def test_virtual_clients_share_a_gpu_by_fraction_on_ray(compose_cfg, tmp_path):
    from lepton_fed.simulation import simulate

    cfg = compose_cfg("data=digits", "device=auto", "privacy=dpsgd",
                      "federation.num_clients=8", "federation.clients_per_round=8",
                      "federation.rounds=2", "federation.num_gpus_per_client=0.25",
                      "observe.tensorboard=false")
    summary = simulate(cfg, tmp_path)
    assert summary["device"] == "cuda" and summary["rounds_completed"] == 2
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["clients"] for r in rows] == [8, 8]
