"""Update compression on the wire (``compression.update=int8|topk``): the Flower glue.

The client encodes its update ``delta = w_local - w_global`` (after any clipping); the
server decodes it back to a dense update before aggregation. Top-k keeps its error
feedback residual on the client (node state), so what is not sent this round is added
to the next round's update instead of being lost. Secure aggregation does its own field
encoding (<= 4 bytes/parameter) and is not combined with these codecs (config error).
"""

from __future__ import annotations

import numpy as np
from flwr.app import ArrayRecord
from omegaconf import DictConfig

from lepton_fed.client.node import NodeState
from lepton_fed.compression.update import Int8Codec, TopKCodec
from lepton_fed.utils.records import from_array_record, to_array_record

__all__ = ["decode_update", "encode_update"]


def _codec(name: str, cfg: DictConfig | None = None, fraction: float | None = None,
           block: int | None = None) -> Int8Codec | TopKCodec:
    if name == "int8":
        return Int8Codec(block_size=int(block or (cfg.compression.block_size if cfg else 256)))
    if name == "topk":
        return TopKCodec(float(fraction or (cfg.compression.topk_fraction if cfg else 0.1)))
    raise ValueError(f"unknown update codec {name!r}; choose int8 or topk")


def encode_update(node: NodeState, name: str, delta: np.ndarray, cfg: DictConfig,
                  seed: int) -> ArrayRecord:
    """Encode ``delta`` for the wire; top-k updates the node's error-feedback residual."""
    codec = _codec(name, cfg)
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


def decode_update(rec: ArrayRecord, name: str, size: int) -> np.ndarray:
    """Dense float64 update from an encoded reply.

    Raises:
        ValueError: the payload does not decode to ``size`` values.
    """
    arrays = from_array_record(rec)
    payload = {k: v for k, v in arrays.items() if not k.startswith("meta.")}
    if name == "int8":
        codec: Int8Codec | TopKCodec = _codec("int8", block=int(arrays["meta.block"][0]))
    else:
        codec = _codec("topk", fraction=float(arrays["meta.fraction"][0]))
    vec = np.asarray(codec.decode(payload), dtype=np.float64)
    if vec.size != size:
        raise ValueError(f"decoded update has {vec.size} values, the model has {size}")
    return vec
