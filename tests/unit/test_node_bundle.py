"""A simulated node whose bundle directory is not on its machine (a Ray cluster without a
shared ``federation.sim_bundle_dir``) refuses instead of running under the open policy."""

from __future__ import annotations

import pytest
from flwr.app import Context, RecordDict

from lepton_fed.client.node_policy import node_policy, sim_bundle
from lepton_fed.sim_bundle import SIM_BUNDLE_ENV


def _node(**nc: object) -> Context:
    return Context(run_id=1, node_id=1, node_config={"partition-id": 0, **nc},
                   state=RecordDict(), run_config={})


def test_a_missing_bundle_directory_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv(SIM_BUNDLE_ENV, str(tmp_path / "elsewhere"))
    with pytest.raises(FileNotFoundError, match="sim_bundle_dir"):
        node_policy(_node())
    with pytest.raises(FileNotFoundError, match="not on this machine"):
        sim_bundle(_node(**{"sim-bundle": str(tmp_path / "gone")}))


def test_an_existing_bundle_and_no_bundle_still_work(tmp_path, monkeypatch):
    monkeypatch.delenv(SIM_BUNDLE_ENV, raising=False)
    assert sim_bundle(_node()) is None
    assert node_policy(_node()).max_epsilon is None  # the open policy
    (tmp_path / "b").mkdir()
    assert sim_bundle(_node(**{"sim-bundle": str(tmp_path / "b")})) == tmp_path / "b"
