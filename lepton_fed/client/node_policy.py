"""Where a node's policy comes from -- never from the server.

- A real node (``node_config["data-path"]``): the YAML file ``node_config["policy"]``, or
  the strict default when there is none (DP-SGD required, epsilon <= 8, secure
  aggregation required).
- A simulated node (``node_config["partition-id"]``): ``node_config["policy"]`` when the
  launcher set one, else ``node_policy.yaml`` in the simulation bundle
  (``node_config["sim-bundle"]`` or ``$LEPTON_FED_SIM_BUNDLE``: the simulation launcher
  writes the ``node_policy`` config group there before any node starts), else the open
  policy (a researcher's own simulation).

The run config the server sends can only be checked against this policy; nothing in it
can loosen the policy.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

from flwr.app import Context

from lepton_fed.policy import NodePolicy, load_policy, open_policy, strict_default

__all__ = ["SIM_BUNDLE_ENV", "node_policy", "sim_bundle"]

#: environment variable naming the simulation launcher's bundle directory
SIM_BUNDLE_ENV = "LEPTON_FED_SIM_BUNDLE"  # = lepton_fed.secagg.provisioning.BUNDLE_ENV


def node_policy(context: Context) -> NodePolicy:
    """This node's policy (cached per file)."""
    nc = context.node_config
    path = str(nc.get("policy", "") or "")
    if path:
        return _load(path)
    if "partition-id" in nc:
        bundle = sim_bundle(context)
        if bundle is not None and (bundle / "node_policy.yaml").is_file():
            return _load(str(bundle / "node_policy.yaml"))
        return open_policy()
    return strict_default()


def sim_bundle(context: Context) -> Path | None:
    """The simulation launcher's bundle directory for a simulated node, if any.

    Raises:
        FileNotFoundError: a bundle is named but is not a directory on this machine (a
            Ray cluster whose ``federation.sim_bundle_dir`` is not shared): the node
            refuses rather than fall back to the open policy or unprovisioned keys.
    """
    if "partition-id" not in context.node_config:
        return None
    d = str(context.node_config.get("sim-bundle", "") or os.environ.get(SIM_BUNDLE_ENV, ""))
    if not d:
        return None
    return _existing(d)


@lru_cache(maxsize=8)
def _existing(d: str) -> Path:
    p = Path(d)
    if not p.is_dir():
        raise FileNotFoundError(
            f"the simulation bundle {d} is not on this machine (on a Ray cluster set "
            "federation.sim_bundle_dir to a directory every machine shares)")
    return p


@lru_cache(maxsize=8)
def _load(path: str) -> NodePolicy:
    return load_policy(path)
