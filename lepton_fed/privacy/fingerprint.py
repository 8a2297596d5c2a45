"""A dataset's fingerprint: the key of its privacy ledger, stable under shuffling."""

from __future__ import annotations

import hashlib

import numpy as np

from lepton_fed.privacy._canonical import canonical_json

__all__ = ["dataset_fingerprint"]


def _canonical_array(name: str, a: np.ndarray) -> np.ndarray:
    if a.dtype.hasobject or a.dtype.fields is not None:
        raise ValueError(
            f"{name} has dtype {a.dtype}; only plain numeric/bool/str arrays"
        )
    return np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("<"))


def dataset_fingerprint(X: np.ndarray, y: np.ndarray) -> str:
    """SHA-256 of a canonical, row-order-independent encoding of ``(X, y)``.

    The encoding covers dtypes, shapes and the little-endian bytes of every row of
    ``X`` together with its label; row digests are sorted before hashing, so a
    shuffled copy of the same records has the same fingerprint (shuffling cannot
    reset a budget) while any changed, added or removed record gives a new one.
    Consequence: a dataset that grows gets a fresh ledger; operators who append
    records should key the :class:`~lepton_fed.privacy.file_ledger.FileLedger` by a
    stable dataset name instead.

    Returns:
        64 lowercase hex characters.

    Raises:
        ValueError: object/structured dtypes, or ``len(X) != len(y)``.

    Example:
        >>> import numpy as np
        >>> X, y = np.arange(6.0).reshape(3, 2), np.array([0, 1, 0])
        >>> dataset_fingerprint(X, y) == dataset_fingerprint(X[::-1], y[::-1])
        True
        >>> dataset_fingerprint(X, y) == dataset_fingerprint(X.astype("f4"), y)
        False
    """
    xa, ya = np.asarray(X), np.asarray(y)
    if xa.ndim < 1 or ya.ndim < 1 or xa.shape[0] != ya.shape[0]:
        raise ValueError(
            f"X and y must have the same number of rows; got shapes {xa.shape} and {ya.shape}"
        )
    xa, ya = _canonical_array("X", xa), _canonical_array("y", ya)
    xr = xa.reshape(xa.shape[0], -1).view(np.uint8).reshape(xa.shape[0], -1)
    yr = ya.reshape(ya.shape[0], -1).view(np.uint8).reshape(ya.shape[0], -1)
    rows = np.concatenate([xr, yr], axis=1)
    row_digests = sorted(hashlib.sha256(r.tobytes()).digest() for r in rows)
    header = canonical_json(
        {
            "scheme": "lepton-fed/dataset-fingerprint/v1",
            "X": {"dtype": xa.dtype.str, "shape": list(xa.shape)},
            "y": {"dtype": ya.dtype.str, "shape": list(ya.shape)},
        }
    )
    h = hashlib.sha256()
    h.update(len(header).to_bytes(8, "little") + header)
    for d in row_digests:
        h.update(d)
    return h.hexdigest()
