"""The Ray settings of a run config checked against what runs it.

``federation.ray_address`` joins an existing Ray cluster and ``federation.num_gpus_per_client``
asks Ray for GPUs: both mean something only to Flower's Ray simulation engine. The
in-process engine (``lepton_fed.simulate(in_process=True)``) and a real federation (Flower's
SuperLink and SuperNodes) have no Ray, so a Ray address there is refused rather than ignored;
a malformed address, and GPUs that this machine's local Ray cannot have (no CUDA), are refused
before Ray starts.
"""

from __future__ import annotations

import re

from omegaconf import DictConfig, OmegaConf

__all__ = ["ENGINES", "engine_problems"]

ENGINES = ("ray", "in-process")

#: ``federation.ray_address``: ``auto`` (the cluster this machine belongs to), or the
#: ``HOST:PORT`` of ``ray start --head`` (optionally ``ray://HOST:PORT``, Ray Client);
#: HOST is a name, an IPv4 address or a bracketed IPv6 address
_RAY_ADDRESS = re.compile(
    r"(?:ray://)?(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?):(\d{1,5})"
)


def engine_problems(cfg: DictConfig, engine: str) -> list[str]:
    """``federation.ray_address`` and ``federation.num_gpus_per_client`` against what runs
    the simulation (``deployment``: a real federation, which has no Ray engine)."""
    if engine not in (*ENGINES, "deployment"):
        raise ValueError(f"engine={engine!r}: choose one of {list(ENGINES)}")
    p: list[str] = []
    address = OmegaConf.select(cfg, "federation.ray_address", default=None)
    if address is not None:
        text = str(address).strip()
        m = _RAY_ADDRESS.fullmatch(text)
        if not isinstance(address, str) or (
            text != "auto" and (m is None or not 1 <= int(m.group(1)) <= 65535)
        ):
            p.append(
                f"federation.ray_address={address!r}: expected HOST:PORT of a running "
                "Ray head (ray start --head prints it, e.g. 10.0.0.5:6379), 'auto' or "
                "ray://HOST:PORT; null = a local Ray"
            )
            address = None  # reported; the GPU check below is the local Ray's
        elif engine != "ray":
            runs = (
                "a real federation (Flower's SuperLink and SuperNodes, no Ray)"
                if engine == "deployment"
                else "the in-process engine (no Ray)"
            )
            p.append(
                f"federation.ray_address={address}: only the Ray simulation engine "
                f"joins a Ray cluster, and this run uses {runs}; set "
                "federation.ray_address=null"
            )
    gpus = OmegaConf.select(cfg, "federation.num_gpus_per_client", default=None)
    if gpus is not None and gpus < 0:
        p.append(f"federation.num_gpus_per_client must be >= 0, got {gpus}")
    elif gpus and engine == "ray" and address is None:
        import torch

        if not torch.cuda.is_available():
            p.append(
                f"federation.num_gpus_per_client={gpus} but CUDA is not available here "
                "(torch.cuda.is_available() is False), so Ray could never place a client; "
                "use federation.num_gpus_per_client=0, or federation.ray_address=HOST:PORT "
                "for a Ray cluster whose workers have GPUs"
            )
    return p
