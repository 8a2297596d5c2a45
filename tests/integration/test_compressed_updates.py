"""Update compression on the wire through the real loop: fewer bytes, still converges."""

import pytest

from lepton_fed.client.app import app
from lepton_fed.inprocess import InProcessGrid
from lepton_fed.server.outputs import RunWriter
from lepton_fed.server.rounds import run_federation


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    from lepton_fed.config import compose

    out = {}
    for codec in ("none", "int8", "topk"):
        cfg = compose([f"compression={codec}", "data=digits", "federation.num_clients=4",
                       "federation.clients_per_round=4", "federation.rounds=6",
                       "client.lr=0.1"])
        d = tmp_path_factory.mktemp(codec)
        out[codec] = run_federation(InProcessGrid(app, 4), cfg, RunWriter(d))
    return out


def test_int8_quarter_bytes_same_accuracy(runs):
    ratio = runs["int8"]["bytes"]["up"] / runs["none"]["bytes"]["up"]
    assert ratio < 0.3, ratio
    assert runs["int8"]["final"]["accuracy"] >= runs["none"]["final"]["accuracy"] - 0.03


def test_topk_with_error_feedback_converges(runs):
    ratio = runs["topk"]["bytes"]["up"] / runs["none"]["bytes"]["up"]
    assert ratio < 0.25, ratio
    assert runs["topk"]["final"]["accuracy"] > 0.6
