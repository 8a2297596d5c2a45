"""What the simulation launcher gives its virtual nodes OUTSIDE the server's config.

A real node's keys, roster and policy are its own files; a simulated node gets the same
things from a bundle directory the launcher writes before any node starts (and deletes
afterwards): a fresh federation key, one secure-aggregation identity key per virtual
node, the roster of their public keys signed with the federation key
(:func:`lepton_fed.secagg.provisioning.make_sim_bundle`), and ``node_policy.yaml``, the
``node_policy`` config group every virtual node enforces. The server never sees the
bundle's path or content: nodes find it through ``$LEPTON_FED_SIM_BUNDLE`` (inherited by
Ray's worker processes) or ``node_config["sim-bundle"]`` (the in-process grid).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from lepton_fed.secagg.provisioning import BUNDLE_ENV as SIM_BUNDLE_ENV

__all__ = ["SIM_BUNDLE_ENV", "simulation_bundle", "write_bundle"]


def write_bundle(directory: str | Path, cfg: DictConfig) -> Path:
    """Write the bundle for ``cfg.federation.num_clients`` virtual nodes into ``directory``."""
    from lepton_fed.policy import NodePolicy
    from lepton_fed.secagg.provisioning import make_sim_bundle

    d = Path(directory)
    make_sim_bundle(d, int(cfg.federation.num_clients))
    raw = cfg.get("node_policy")
    if raw is not None:
        policy = NodePolicy.from_mapping(raw, source="node_policy")  # validated once, here
        OmegaConf.save(OmegaConf.create(policy.to_mapping()), d / "node_policy.yaml")
    return d


@contextmanager
def simulation_bundle(cfg: DictConfig, parent: str | Path | None = None) -> Iterator[Path]:
    """A temporary bundle exported as ``$LEPTON_FED_SIM_BUNDLE`` for the block's duration,
    under ``parent`` when given (a directory every machine of a Ray cluster sees)."""
    if parent:
        Path(str(parent)).mkdir(parents=True, exist_ok=True)
    d = Path(tempfile.mkdtemp(prefix="lepton-fed-sim-", dir=str(parent) if parent else None))
    old = os.environ.get(SIM_BUNDLE_ENV)
    try:
        write_bundle(d, cfg)
        os.environ[SIM_BUNDLE_ENV] = str(d)
        yield d
    finally:
        if old is None:
            os.environ.pop(SIM_BUNDLE_ENV, None)
        else:
            os.environ[SIM_BUNDLE_ENV] = old
        shutil.rmtree(d, ignore_errors=True)
