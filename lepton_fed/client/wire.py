"""Update compression on the wire (``compression.update=int8|topk``): the Flower glue.

The client encodes its update ``delta = w_local - w_global`` (after any clipping); the
server decodes it back to a dense update before aggregation
(:func:`lepton_fed.compression.wire.decode_payload`). Top-k keeps its error
feedback residual on the client (node state), so what is not sent this round is added
to the next round's update instead of being lost. Secure aggregation does its own field
encoding (<= 4 bytes/parameter) and is not combined with these codecs (config error).
"""

from __future__ import annotations

import numpy as np
from flwr.app import ArrayRecord
from omegaconf import DictConfig

from lepton_fed.client.node import NodeState
from lepton_fed.compression.update import Int8Codec
from lepton_fed.compression.wire import make_codec
from lepton_fed.utils.records import to_array_record

__all__ = ["encode_update"]


def encode_update(node: NodeState, name: str, delta: np.ndarray, cfg: DictConfig,
                  seed: int) -> ArrayRecord:
    """Encode ``delta`` for the wire; top-k updates the node's error-feedback residual."""
    codec = make_codec(name, fraction=float(cfg.compression.topk_fraction),
                       block=int(cfg.compression.block_size))
    if isinstance(codec, Int8Codec):
        payload = codec.encode(delta.astype(np.float32), np.random.default_rng(seed))
        meta = {"block": np.array([codec.block_size], np.int64)}
    else:
        raw = node.get("topk-residual")
        residual = (np.frombuffer(raw, dtype=np.float32).copy() if raw
                    else np.zeros(delta.size, np.float32))
        payload, residual = codec.encode(delta.astype(np.float32), residual)
        node.set("topk-residual", np.asarray(residual, np.float32).tobytes())
        meta = {"fraction": np.array([codec.fraction], np.float64)}
    return to_array_record({**payload, **{f"meta.{k}": v for k, v in meta.items()}})
