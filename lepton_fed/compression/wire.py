"""The update codecs as both sides use them: build a codec from its name, decode a payload.

Shared by the node (which encodes) and the server (which decodes), so neither imports
the other; no Flower types here (records are converted by the callers).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from lepton_fed.compression.update import Int8Codec, TopKCodec

__all__ = ["decode_payload", "make_codec"]


def make_codec(name: str, *, fraction: float = 0.1, block: int = 256) -> Int8Codec | TopKCodec:
    """``int8`` (block size ``block``) or ``topk`` (keep ``fraction``).

    Raises:
        ValueError: an unknown codec name.
    """
    if name == "int8":
        return Int8Codec(block_size=int(block))
    if name == "topk":
        return TopKCodec(float(fraction))
    raise ValueError(f"unknown update codec {name!r}; choose int8 or topk")


def decode_payload(arrays: Mapping[str, np.ndarray], name: str, size: int) -> np.ndarray:
    """Dense float64 update from an encoded payload (``meta.*`` entries carry settings).

    Raises:
        ValueError: missing settings, or the payload does not decode to ``size`` finite
            values.
    """
    payload = {k: v for k, v in arrays.items() if not k.startswith("meta.")}
    try:
        if name == "int8":
            codec = make_codec("int8", block=int(arrays["meta.block"][0]))
        else:
            codec = make_codec("topk", fraction=float(arrays["meta.fraction"][0]))
    except (KeyError, IndexError) as exc:
        raise ValueError("encoded update lacks its codec settings") from exc
    vec = np.asarray(codec.decode(payload), dtype=np.float64)
    if vec.size != size:
        raise ValueError(f"decoded update has {vec.size} values, the model has {size}")
    if not np.all(np.isfinite(vec)):
        raise ValueError("decoded update has non-finite values")
    return vec
