"""numpy <-> Flower record conversions (key order preserved)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping

import numpy as np
from flwr.app import Array, ArrayRecord, RecordDict

__all__ = ["content_bytes", "from_array_record", "to_array_record"]


def to_array_record(state: Mapping[str, np.ndarray]) -> ArrayRecord:
    """An ArrayRecord holding ``state``'s arrays under the same keys, in order."""
    return ArrayRecord(
        array_dict=OrderedDict((k, Array(np.ascontiguousarray(v))) for k, v in state.items())
    )


def from_array_record(rec: ArrayRecord) -> OrderedDict[str, np.ndarray]:
    """Inverse of :func:`to_array_record`."""
    return OrderedDict((k, rec[k].numpy()) for k in rec.keys())


def content_bytes(content: RecordDict) -> int:
    """Payload bytes of a message: array bytes plus config/metric values (approximate
    for scalars: 8 bytes each). Used for the ``bytes_up``/``bytes_down`` metrics."""
    total = 0
    for rec in content.values():
        if isinstance(rec, ArrayRecord):
            total += sum(len(rec[k].data) for k in rec.keys())
        else:
            for v in rec.values():
                if isinstance(v, bytes | str):
                    total += len(v)
                elif isinstance(v, list):
                    total += sum(len(x) if isinstance(x, bytes | str) else 8 for x in v)
                else:
                    total += 8
    return total
