"""Per-node, per-dataset privacy ledger for DP-SGD, across all rounds and runs.

A node owns one :class:`PrivacyLedger` per dataset. Every local DP-SGD round appends
one :class:`PrivacyEvent` ``(noise_multiplier, sample_rate, steps)`` with its run id
and round number; epsilon is always computed over the *whole* history with RDP
(:func:`lepton_fed.privacy.analysis.epsilon_for_history`), so the node can state one
(ε, δ) for everything it ever released from that data. Before a round, the node asks
:meth:`PrivacyLedger.can_afford`; a round that would exceed the budget is declined.

Storage: in simulation the ledger lives in the Flower node ``Context.state`` as
:meth:`PrivacyLedger.to_bytes` inside a ConfigRecord; on a real node it lives in a
:class:`FileLedger` directory keyed by :func:`dataset_fingerprint`, so restarting the
node or starting a new run cannot reset what the data has already spent.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from lepton_fed.errors import LeptonError, PrivacyBudgetExhausted
from lepton_fed.privacy.analysis import (
    _check_delta,
    _check_epsilon,
    _check_int,
    _check_noise_multiplier,
    _check_sample_rate,
    epsilon_for_history,
)

__all__ = [
    "FileLedger",
    "LedgerError",
    "PrivacyEvent",
    "PrivacyLedger",
    "dataset_fingerprint",
]

LEDGER_FORMAT = "lepton-fed/privacy-ledger"
LEDGER_VERSION = 1
#: The only mechanism a ledger accounts: Poisson-subsampled Gaussian steps (DP-SGD),
#: composed with RDP. A ledger claiming anything else is refused on load.
MECHANISM = "dpsgd/poisson-subsampled-gaussian/rdp"
_TOP_KEYS = frozenset(
    {"format", "version", "mechanism", "dataset", "node_id", "events", "digest"}
)
_EVENT_KEYS = frozenset(
    {"noise_multiplier", "sample_rate", "steps", "round", "run_id", "recorded_at"}
)
_KEY_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_REL_TOL = 1e-9  # can_afford tolerance, relative to the target


class LedgerError(LeptonError, ValueError):
    """A stored ledger is malformed, altered, for another dataset, or would lose spend.

    Fail closed: a node that cannot read its ledger must not train on that data.
    """

    exit_code = 3


@dataclass(frozen=True)
class PrivacyEvent:
    """One local DP-SGD round: ``steps`` Poisson-subsampled Gaussian steps.

    Attributes:
        noise_multiplier: σ, noise std / per-example clipping norm (> 0).
        sample_rate: Poisson inclusion probability q in (0, 1]; use
            :func:`~lepton_fed.privacy.analysis.local_schedule`, not ``batch/n``.
        steps: optimizer steps in the round (>= 1).
        round: server round number, for the audit trail (>= 0, optional).
        run_id: the run that spent it, for the audit trail (optional).
        recorded_at: UTC ISO-8601 time stamped by :meth:`PrivacyLedger.record`.
    """

    noise_multiplier: float
    sample_rate: float
    steps: int
    round: int | None = None
    run_id: str | None = None
    recorded_at: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "noise_multiplier", _check_noise_multiplier(self.noise_multiplier)
        )
        object.__setattr__(self, "sample_rate", _check_sample_rate(self.sample_rate))
        object.__setattr__(self, "steps", _check_int("steps", self.steps, minimum=1))
        if self.round is not None:
            object.__setattr__(
                self, "round", _check_int("round", self.round, minimum=0)
            )
        for name in ("run_id", "recorded_at"):
            v = getattr(self, name)
            if v is not None and not isinstance(v, str):
                raise ValueError(f"{name} must be a string or None; got {v!r}")

    def as_tuple(self) -> tuple[float, float, int]:
        """``(noise_multiplier, sample_rate, steps)``, the accounting-relevant part."""
        return (self.noise_multiplier, self.sample_rate, self.steps)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict with every field."""
        return {
            "noise_multiplier": self.noise_multiplier,
            "sample_rate": self.sample_rate,
            "steps": self.steps,
            "round": self.round,
            "run_id": self.run_id,
            "recorded_at": self.recorded_at,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> PrivacyEvent:
        """Strict inverse of :meth:`to_dict` (exact keys, checked types and ranges).

        Raises:
            LedgerError: unknown/missing keys or invalid values.
        """
        if not isinstance(d, Mapping) or set(d) != _EVENT_KEYS:
            got = sorted(d) if isinstance(d, Mapping) else type(d).__name__
            raise LedgerError(
                f"ledger event must have keys {sorted(_EVENT_KEYS)}; got {got}"
            )
        try:
            return cls(**dict(d))
        except (TypeError, ValueError) as e:
            raise LedgerError(f"invalid ledger event {dict(d)!r}: {e}") from e


class PrivacyLedger:
    """Everything one node has spent on one dataset, and the budget check.

    Guarantee: if every model update derived from the dataset was produced by DP-SGD
    steps recorded here (and nothing else derived from the data left the node,
    see the README for what leaks), the node's releases are sample-level
    (:meth:`epsilon`, δ)-DP for that dataset, against the server and every other
    party, across all rounds and runs recorded. Recording is the node's duty:
    a round trained but not recorded voids the statement.

    Args:
        dataset: the dataset key, normally :func:`dataset_fingerprint` of the data.
        node_id: free-form label of the node (informational; the dataset is the key,
            so a node that comes back under a new Flower node id keeps its spend).
        events: history to start from.
    """

    def __init__(
        self,
        *,
        dataset: str,
        node_id: str | None = None,
        events: Iterable[PrivacyEvent] = (),
    ) -> None:
        if not isinstance(dataset, str) or not dataset:
            raise ValueError(f"dataset must be a non-empty string; got {dataset!r}")
        if node_id is not None and not isinstance(node_id, str):
            raise ValueError(f"node_id must be a string or None; got {node_id!r}")
        self._dataset = dataset
        self._node_id = node_id
        self._events: list[PrivacyEvent] = []
        for e in events:
            if not isinstance(e, PrivacyEvent):
                raise ValueError(f"events must be PrivacyEvent objects; got {e!r}")
            self._events.append(e)

    # ---------------------------------------------------------------- views

    @property
    def dataset(self) -> str:
        """The dataset key this ledger accounts for."""
        return self._dataset

    @property
    def node_id(self) -> str | None:
        """Informational node label."""
        return self._node_id

    @property
    def events(self) -> tuple[PrivacyEvent, ...]:
        """Every recorded event, oldest first."""
        return tuple(self._events)

    @property
    def history(self) -> list[tuple[float, float, int]]:
        """``[(noise_multiplier, sample_rate, steps), ...]`` for the accountant."""
        return [e.as_tuple() for e in self._events]

    def __len__(self) -> int:
        return len(self._events)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PrivacyLedger):
            return NotImplemented
        return (self._dataset, self._node_id, self._events) == (
            other._dataset,
            other._node_id,
            other._events,
        )

    def __repr__(self) -> str:
        return (
            f"PrivacyLedger(dataset={self._dataset[:16]!r}, node_id={self._node_id!r}, "
            f"events={len(self._events)})"
        )

    # ------------------------------------------------------------- accounting

    def epsilon(self, *, delta: float) -> float:
        """Epsilon spent so far at ``delta``, over the whole history (0.0 if empty)."""
        return epsilon_for_history(self.history, delta=delta)

    def projected_epsilon(self, event: PrivacyEvent, *, delta: float) -> float:
        """Epsilon the history would reach if ``event`` were recorded."""
        return epsilon_for_history([*self.history, event.as_tuple()], delta=delta)

    def can_afford(
        self, event: PrivacyEvent, *, target_epsilon: float, delta: float
    ) -> bool:
        """Whether recording ``event`` keeps epsilon within ``target_epsilon``.

        A relative tolerance of 1e-9 absorbs floating-point noise of the accountant,
        so a σ from :func:`~lepton_fed.privacy.analysis.noise_multiplier_for` for the
        whole run affords exactly the planned rounds.
        """
        t = _check_epsilon("target_epsilon", target_epsilon)
        _check_delta(delta)
        return self.projected_epsilon(event, delta=delta) <= t * (1.0 + _REL_TOL)

    def require(
        self, event: PrivacyEvent, *, target_epsilon: float, delta: float
    ) -> None:
        """Like :meth:`can_afford`, but raise instead of returning False.

        Raises:
            PrivacyBudgetExhausted: the round would exceed the budget; the message
                says what was spent and what the round would bring it to.
        """
        if not self.can_afford(event, target_epsilon=target_epsilon, delta=delta):
            raise PrivacyBudgetExhausted(
                f"dataset {self._dataset[:16]}: spent epsilon={self.epsilon(delta=delta):.4f}; "
                f"this round ({event.steps} steps, sigma={event.noise_multiplier:.4g}, "
                f"q={event.sample_rate:.4g}) would reach "
                f"{self.projected_epsilon(event, delta=delta):.4f} > target "
                f"{target_epsilon} at delta={delta}"
            )

    def record(self, event: PrivacyEvent) -> PrivacyEvent:
        """Append ``event`` (stamped with the current UTC time if unstamped).

        Record before the update leaves the node: the release is what spends.

        Returns:
            The event as stored.
        """
        if not isinstance(event, PrivacyEvent):
            raise ValueError(f"event must be a PrivacyEvent; got {event!r}")
        if event.recorded_at is None:
            event = replace(event, recorded_at=datetime.now(UTC).isoformat())
        self._events.append(event)
        return event

    # ---------------------------------------------------------- serialisation

    def state_dict(self) -> dict[str, Any]:
        """JSON-ready state, including an integrity digest over the content."""
        body: dict[str, Any] = {
            "format": LEDGER_FORMAT,
            "version": LEDGER_VERSION,
            "mechanism": MECHANISM,
            "dataset": self._dataset,
            "node_id": self._node_id,
            "events": [e.to_dict() for e in self._events],
        }
        body["digest"] = _digest(body)
        return body

    def to_bytes(self) -> bytes:
        """Canonical UTF-8 JSON of :meth:`state_dict` (sorted keys, no spaces)."""
        return _canonical(self.state_dict())

    @classmethod
    def from_state_dict(
        cls, state: Mapping[str, Any], *, dataset: str | None = None
    ) -> PrivacyLedger:
        """Strictly rebuild a ledger; refuse anything unexpected.

        Args:
            state: output of :meth:`state_dict`.
            dataset: if given, the dataset key the ledger must belong to.

        Raises:
            LedgerError: wrong format/version/mechanism, unknown or missing keys,
                invalid events, digest mismatch (the content was altered), or a
                ledger for another dataset.
        """
        if not isinstance(state, Mapping):
            raise LedgerError(
                f"ledger state must be a JSON object; got {type(state).__name__}"
            )
        if set(state) != _TOP_KEYS:
            raise LedgerError(
                f"ledger must have keys {sorted(_TOP_KEYS)}; got {sorted(state)}"
            )
        if state["format"] != LEDGER_FORMAT:
            raise LedgerError(
                f"not a lepton-fed privacy ledger (format={state['format']!r})"
            )
        if state["version"] != LEDGER_VERSION or isinstance(state["version"], bool):
            raise LedgerError(
                f"unsupported ledger version {state['version']!r} (this code reads "
                f"{LEDGER_VERSION})"
            )
        if state["mechanism"] != MECHANISM:
            raise LedgerError(
                f"ledger accounts mechanism {state['mechanism']!r}, expected {MECHANISM!r}"
            )
        body = {k: v for k, v in state.items() if k != "digest"}
        if state["digest"] != _digest(body):
            raise LedgerError(
                "ledger digest mismatch: the stored ledger was altered or corrupted"
            )
        if dataset is not None and state["dataset"] != dataset:
            raise LedgerError(
                f"ledger is for dataset {str(state['dataset'])[:16]!r}, expected {dataset[:16]!r}"
            )
        events = state["events"]
        if not isinstance(events, list):
            raise LedgerError("ledger events must be a list")
        try:
            return cls(
                dataset=state["dataset"],
                node_id=state["node_id"],
                events=[PrivacyEvent.from_dict(e) for e in events],
            )
        except LedgerError:
            raise
        except ValueError as e:
            raise LedgerError(f"invalid ledger: {e}") from e

    @classmethod
    def from_bytes(cls, data: bytes, *, dataset: str | None = None) -> PrivacyLedger:
        """Inverse of :meth:`to_bytes`; see :meth:`from_state_dict` for the checks.

        Raises:
            LedgerError: not UTF-8 JSON, or any check of :meth:`from_state_dict`.
        """
        if not isinstance(data, bytes | bytearray | memoryview):
            raise LedgerError(f"ledger bytes expected; got {type(data).__name__}")
        try:
            state = json.loads(
                bytes(data).decode("utf-8"), parse_constant=_reject_constant
            )
        except (UnicodeDecodeError, json.JSONDecodeError, ValueError) as e:
            raise LedgerError(f"ledger is not valid UTF-8 JSON: {e}") from e
        return cls.from_state_dict(state, dataset=dataset)


def _reject_constant(name: str) -> float:
    raise ValueError(f"non-finite number {name} in ledger")


def _canonical(obj: Any) -> bytes:
    return json.dumps(
        obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    ).encode("utf-8")


def _digest(body: Mapping[str, Any]) -> str:
    return "sha256:" + hashlib.sha256(_canonical(dict(body))).hexdigest()


# ------------------------------------------------------------------ fingerprints


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
    records should key the :class:`FileLedger` by a stable dataset name instead.

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
    header = _canonical(
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


# ------------------------------------------------------------------ file storage


class FileLedger:
    """A directory of JSON ledgers, one per dataset key, written atomically.

    ``load(key)`` returns the stored ledger (or a new empty one); ``save(ledger)``
    writes a temp file, fsyncs it and ``os.replace``-s it over the old one, under an
    exclusive lock, and refuses to drop any event already on disk (so two processes
    on the same data cannot lose each other's spend). :meth:`charge` does
    load -> budget check -> record -> save in one locked step; use it on real nodes.

    The digest detects corruption and hand edits, not a determined local attacker:
    the directory must be writable only by the node's operator, who is the data
    owner the budget protects.

    Args:
        directory: where the ``<key>.json`` files live (created if missing).
        node_id: label written into new ledgers.
    """

    def __init__(
        self, directory: str | os.PathLike[str], *, node_id: str | None = None
    ) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.node_id = node_id

    def path_for(self, key: str) -> Path:
        """``<directory>/<key>.json``; ``key`` is a fingerprint or a safe name.

        Raises:
            ValueError: ``key`` is not ``[A-Za-z0-9][A-Za-z0-9._-]{0,127}``.
        """
        if not isinstance(key, str) or not _KEY_RE.match(key):
            raise ValueError(
                f"ledger key must match {_KEY_RE.pattern} (e.g. a dataset fingerprint); got {key!r}"
            )
        return self.directory / f"{key}.json"

    def keys(self) -> list[str]:
        """Sorted keys of every stored ledger."""
        return sorted(p.stem for p in self.directory.glob("*.json"))

    def _read(self, key: str) -> PrivacyLedger | None:
        path = self.path_for(key)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        return PrivacyLedger.from_bytes(data, dataset=key)

    def load(self, key: str) -> PrivacyLedger:
        """The stored ledger for ``key``, or an empty one if there is none.

        Raises:
            LedgerError: the stored file fails any check (never silently reset).
        """
        found = self._read(key)
        return (
            found
            if found is not None
            else PrivacyLedger(dataset=key, node_id=self.node_id)
        )

    def save(self, ledger: PrivacyLedger) -> None:
        """Atomically write ``ledger``; never lose events already stored.

        Raises:
            LedgerError: the stored ledger has events this one lacks (reload and
                record again).
        """
        with self._locked(ledger.dataset):
            self._save_unlocked(ledger)

    def charge(
        self,
        key: str,
        event: PrivacyEvent,
        *,
        target_epsilon: float,
        delta: float,
    ) -> PrivacyLedger:
        """Check the budget and record ``event`` for ``key`` in one locked step.

        Returns:
            The updated ledger.

        Raises:
            PrivacyBudgetExhausted: the event does not fit; nothing is written.
            LedgerError: the stored ledger fails a check.
        """
        with self._locked(key):
            ledger = self._read(key) or PrivacyLedger(dataset=key, node_id=self.node_id)
            ledger.require(event, target_epsilon=target_epsilon, delta=delta)
            ledger.record(event)
            self._save_unlocked(ledger)
            return ledger

    def _save_unlocked(self, ledger: PrivacyLedger) -> None:
        path = self.path_for(ledger.dataset)
        stored = self._read(ledger.dataset)
        if stored is not None:
            n = len(stored)
            if ledger.events[:n] != stored.events:
                raise LedgerError(
                    f"refusing to save ledger {ledger.dataset[:16]}: the stored copy has "
                    f"{n} events that this one does not start with (would lose spend); "
                    "load it again and record the new round on top"
                )
        fd, tmp = tempfile.mkstemp(
            dir=self.directory, prefix=f".{path.stem}.", suffix=".tmp"
        )
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(ledger.to_bytes())
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        _fsync_dir(self.directory)

    @contextlib.contextmanager
    def _locked(self, key: str) -> Iterator[None]:
        lock_path = self.directory / f".{self.path_for(key).stem}.lock"
        try:
            import fcntl
        except ImportError:
            # Not POSIX: the atomic replace still holds, but there is no
            # cross-process lock around the read-check-write.
            yield
            return
        with open(lock_path, "a+b") as lf:
            fcntl.flock(lf.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lf.fileno(), fcntl.LOCK_UN)


def _fsync_dir(directory: Path) -> None:
    if not hasattr(os, "O_DIRECTORY"):
        return
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
