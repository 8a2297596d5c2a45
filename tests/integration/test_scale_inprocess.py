"""1,000 virtual clients in one process (no Ray): the scale preset
(conf/experiment/scale_10k.yaml) with DP-SGD in every client and secure aggregation at
the security-derived k, 100 clients per round, 3 rounds. Small enough for CI
(benchmarks/scale.py measures the same path at 10,000 clients / 1,000 per round)."""

from __future__ import annotations

import json
import pickle
import time

import numpy as np
import pandas as pd

from lepton_fed.client.app import app
from lepton_fed.inprocess import InProcessGrid
from lepton_fed.secagg.security import SecurityLevel, choose_graph
from lepton_fed.server.outputs import RunWriter
from lepton_fed.server.rounds import run_federation
from lepton_fed.sim_bundle import write_bundle

CLIENTS, PER_ROUND, ROUNDS = 1000, 100, 3


def _synthetic_csv(path, rows: int) -> None:
    """The preset's task: 20 numeric features, 4 classes (as benchmarks/scale.py makes)."""
    from sklearn.datasets import make_classification

    X, y = make_classification(n_samples=rows, n_features=20, n_informative=10,
                               n_redundant=4, n_classes=4, n_clusters_per_class=2,
                               random_state=0)
    df = pd.DataFrame(X.astype(np.float32), columns=[f"f{i}" for i in range(20)])
    df["y"] = y
    df.to_csv(path, index=False)


def test_thousand_clients_with_dp_and_secure_aggregation_in_process(compose_cfg, tmp_path):
    # Prepare: 25 rows per client (~20 for training), the preset at 1,000 clients
    _synthetic_csv(tmp_path / "data.csv", 25 * CLIENTS)
    cfg = compose_cfg("experiment=scale_10k", f"data.path={tmp_path / 'data.csv'}",
                      f"federation.num_clients={CLIENTS}",
                      f"federation.clients_per_round={PER_ROUND}",
                      f"federation.rounds={ROUNDS}", "privacy.epsilon=8.0",
                      "observe.tensorboard=false")
    assert (cfg.privacy.mode, cfg.secagg.enabled, cfg.model.name) == ("dpsgd", True, "mlp")
    grid = InProcessGrid(app, CLIENTS, bundle=write_bundle(tmp_path / "bundle", cfg))
    # Execute
    t0 = time.monotonic()
    summary = run_federation(grid, cfg, RunWriter(tmp_path / "run"))
    wall = time.monotonic() - t0
    # Assert: every round summed all 100 masked inputs at the (k, t) derived for a cohort of
    # 100 (2^-40 at 5 % colluders), every node within its budget (epsilon 8: DP noise at
    # epsilon 3 hides 3 rounds of learning on ~20 rows per client), the model learned
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert summary["rounds_completed"] == ROUNDS
    derived = choose_graph(PER_ROUND, SecurityLevel())
    for r in rows:
        assert r["clients"] == PER_ROUND and r["failed"] == 0 and r["declined"] == 0
        sa = r["secagg"]
        assert sa["contributors"] == PER_ROUND
        assert (sa["neighbours"], sa["threshold"]) == (derived.neighbours, derived.threshold)
    assert 0 < summary["privacy"]["epsilon"] <= cfg.privacy.epsilon + 1e-9
    # the sums are right: the model improves round after round (4 classes: chance 0.25)
    assert rows[-1]["loss"] < rows[0]["loss"] and rows[-1]["accuracy"] > 0.3, rows
    # node state stays small at any federation size (the roster is kept as its digest)
    sizes = [len(pickle.dumps(ctx.state)) for ctx in grid.contexts.values()]
    assert max(sizes) < 8 * 1024, max(sizes)
    print(f"1,000 clients, {ROUNDS} rounds of {PER_ROUND} with DP-SGD and secure aggregation: "
          f"{wall:.1f} s (rounds {[round(r['seconds'], 2) for r in rows]} s)")
