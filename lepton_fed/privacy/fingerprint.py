"""A dataset's fingerprint: the key of its privacy ledger.

Two keys, neither of which anything the server chooses can move:

* :func:`source_fingerprint` (real nodes): the bytes of the node's own data source,
  the file or directory at ``node_config["data-path"]``, before any parsing. Column
  order, feature selection, label choice and preprocessing come from the run config
  and never enter it.
* :func:`dataset_fingerprint` (simulation): the rows of a partition, independent of
  row order, and with ``columns`` given, of column order too.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from lepton_fed.privacy._canonical import canonical_json

__all__ = ["dataset_fingerprint", "source_fingerprint"]

_CHUNK = 1 << 20


def _canonical_array(name: str, a: np.ndarray) -> np.ndarray:
    if a.dtype.hasobject or a.dtype.fields is not None:
        raise ValueError(
            f"{name} has dtype {a.dtype}; only plain numeric/bool/str arrays"
        )
    return np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("<"))


def dataset_fingerprint(
    X: np.ndarray, y: np.ndarray, *, columns: Sequence[str] | None = None
) -> str:
    """SHA-256 of a canonical, row-order-independent encoding of ``(X, y)``.

    The encoding covers dtypes, shapes and the little-endian bytes of every row of
    ``X`` together with its label; row digests are sorted before hashing, so a
    shuffled copy of the same records has the same fingerprint (shuffling cannot
    reset a budget) while any changed, added or removed record gives a new one.
    With ``columns`` (one unique name per column of a 2-D ``X``), the columns are put
    in sorted-name order first and the names are hashed too, so the same table with
    its columns in another order has the same fingerprint.
    Consequence: a dataset that grows gets a fresh ledger; operators who append
    records should key the :class:`~lepton_fed.privacy.file_ledger.FileLedger` by a
    stable dataset name instead.

    Returns:
        64 lowercase hex characters.

    Raises:
        ValueError: object/structured dtypes, ``len(X) != len(y)``, or ``columns``
            that do not name each column of a 2-D ``X`` exactly once.

    Example:
        >>> import numpy as np
        >>> X, y = np.arange(6.0).reshape(3, 2), np.array([0, 1, 0])
        >>> dataset_fingerprint(X, y) == dataset_fingerprint(X[::-1], y[::-1])
        True
        >>> dataset_fingerprint(X, y) == dataset_fingerprint(X.astype("f4"), y)
        False
        >>> dataset_fingerprint(X, y, columns=["a", "b"]) == dataset_fingerprint(
        ...     X[:, ::-1], y, columns=["b", "a"])
        True
    """
    xa, ya = np.asarray(X), np.asarray(y)
    if xa.ndim < 1 or ya.ndim < 1 or xa.shape[0] != ya.shape[0]:
        raise ValueError(
            f"X and y must have the same number of rows; got shapes {xa.shape} and {ya.shape}"
        )
    header: dict[str, object] = {"scheme": "lepton-fed/dataset-fingerprint/v1"}
    if columns is not None:
        names = [str(c) for c in columns]
        if xa.ndim != 2 or len(names) != xa.shape[1] or len(set(names)) != len(names):
            raise ValueError(
                f"columns must name each of the {xa.shape[1:]} columns of a 2-D X once; "
                f"got {len(names)} names ({len(set(names))} unique)"
            )
        order = sorted(range(len(names)), key=names.__getitem__)
        xa = xa[:, order]
        header = {"scheme": "lepton-fed/dataset-fingerprint/v2-named",
                  "columns": sorted(names)}
    xa, ya = _canonical_array("X", xa), _canonical_array("y", ya)
    xr = xa.reshape(xa.shape[0], -1).view(np.uint8).reshape(xa.shape[0], -1)
    yr = ya.reshape(ya.shape[0], -1).view(np.uint8).reshape(ya.shape[0], -1)
    rows = np.concatenate([xr, yr], axis=1)
    row_digests = sorted(hashlib.sha256(r.tobytes()).digest() for r in rows)
    head = canonical_json(
        header | {
            "X": {"dtype": xa.dtype.str, "shape": list(xa.shape)},
            "y": {"dtype": ya.dtype.str, "shape": list(ya.shape)},
        }
    )
    h = hashlib.sha256()
    h.update(len(head).to_bytes(8, "little") + head)
    for d in row_digests:
        h.update(d)
    return h.hexdigest()


def _file_digest(p: Path) -> bytes:
    h = hashlib.sha256()
    with open(p, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.digest()


def source_fingerprint(
    path: str | os.PathLike[str], *, exclude: Sequence[str | os.PathLike[str]] = ()
) -> str:
    """SHA-256 of the raw bytes of a node's data source (a file, or a directory).

    A file: its content (its name does not count). A directory: every regular file
    below it (symlinked directories are not followed; names starting with ``.`` and
    the ``exclude`` paths are skipped, so a ledger directory kept inside the data
    directory does not change the key it stores), each as its relative POSIX path
    and the SHA-256 of its content, in sorted path order.

    Nothing a run config chooses (columns, features, label, preprocessing, dataset
    name) enters the result, so the server cannot move a node to a fresh ledger. Any
    edit of the source, a re-export in another format or order included, gives a
    new fingerprint, and so a fresh ledger; operators who edit or append data should
    key the ledger by a stable name instead (``node_config["ledger-key"]``).

    Returns:
        64 lowercase hex characters.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: a directory without any file to fingerprint.
    """
    p = Path(path)
    if p.is_file():
        head = canonical_json({"scheme": "lepton-fed/source-fingerprint/v1", "kind": "file"})
        return hashlib.sha256(head + _file_digest(p)).hexdigest()
    if not p.is_dir():
        raise FileNotFoundError(f"data source {str(p)!r} does not exist")
    skip = {Path(e).resolve() for e in exclude}
    files: list[tuple[str, Path]] = []
    for root, dirs, names in os.walk(p):
        r = Path(root)
        dirs[:] = sorted(d for d in dirs
                         if not d.startswith(".") and (r / d).resolve() not in skip)
        for n in names:
            f = r / n
            if not n.startswith(".") and f.resolve() not in skip and f.is_file():
                files.append((f.relative_to(p).as_posix(), f))
    if not files:
        raise ValueError(f"data source directory {str(p)!r} holds no file to fingerprint")
    h = hashlib.sha256(
        canonical_json({"scheme": "lepton-fed/source-fingerprint/v1", "kind": "directory"})
    )
    for rel, f in sorted(files):
        name = rel.encode("utf-8")
        h.update(len(name).to_bytes(8, "little") + name + _file_digest(f))
    return h.hexdigest()
