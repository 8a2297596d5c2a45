"""File storage of privacy ledgers: one JSON file per dataset key, written atomically
under an exclusive lock, never losing an event already stored.

Every read-check-write (:meth:`FileLedger.reserve`, :meth:`FileLedger.settle`,
:meth:`FileLedger.save`) holds an exclusive ``fcntl.flock``
on ``<directory>/.<key>.lock`` for its whole duration, so processes sharing a ledger
directory (two runs, two node processes) can never spend more than the budget together.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path

from lepton_fed.privacy.ledger import LedgerError, PrivacyEvent, PrivacyLedger

__all__ = ["FileLedger"]

_KEY_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class FileLedger:
    """A directory of JSON ledgers, one per dataset key, written atomically.

    ``load(key)`` returns the stored ledger (or a new empty one); ``save(ledger)``
    writes a temp file, fsyncs it and ``os.replace``-s it over the old one, under an
    exclusive lock, and refuses to drop any event already on disk (so two processes
    on the same data cannot lose each other's spend).

    A training round uses :meth:`reserve` (load -> budget check -> record the planned
    event as pending -> save, in one locked step) before it touches the data, and
    :meth:`settle` (replace the reservation by what was spent, never more) before its
    update leaves the node. A crash in between leaves the reservation counted.
    :meth:`charge` is the one-step form for work already done.

    Guarantee: with every writer going through these methods, the stored epsilon of a
    key never exceeds the ``target_epsilon`` of the reservations and charges that
    wrote it (each checked against everything stored, pending included, at the time),
    under the accountant each check was given (both accountants are upper bounds on the
    true epsilon, so a target kept under either is kept).
    Needs POSIX ``fcntl`` and a file system whose ``flock`` is honoured by every
    process that shares the directory (a local disk; not every network file system).

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

    @staticmethod
    def check_key(key: str) -> str:
        """``key`` if it is a valid ledger key (a fingerprint or a safe name).

        Raises:
            ValueError: ``key`` is not ``[A-Za-z0-9][A-Za-z0-9._-]{0,127}``.
        """
        if not isinstance(key, str) or not _KEY_RE.match(key):
            raise ValueError(
                f"ledger key must match {_KEY_RE.pattern} (e.g. a dataset fingerprint); got {key!r}"
            )
        return key

    def path_for(self, key: str) -> Path:
        """``<directory>/<key>.json``; ``key`` is a fingerprint or a safe name.

        Raises:
            ValueError: ``key`` is not ``[A-Za-z0-9][A-Za-z0-9._-]{0,127}``.
        """
        return self.directory / f"{self.check_key(key)}.json"

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

    def reserve(
        self,
        key: str,
        event: PrivacyEvent,
        *,
        target_epsilon: float,
        delta: float,
        accountant: str = "rdp",
    ) -> tuple[PrivacyLedger, PrivacyEvent]:
        """Check the budget (with ``accountant``: ``"rdp"`` or ``"pld"``) and record
        ``event`` as a pending reservation, locked.

        Returns:
            ``(ledger, reserved)``: the stored ledger after the reservation and the
            pending event (``reserved.reservation`` is the id for :meth:`settle`).

        Raises:
            PrivacyBudgetExhausted: the event does not fit; nothing is written.
            LedgerError: the stored ledger fails a check.
        """
        with self._locked(key):
            ledger = self._read(key) or PrivacyLedger(dataset=key, node_id=self.node_id)
            reserved = ledger.reserve(event, target_epsilon=target_epsilon, delta=delta,
                                      accountant=accountant)
            self._write(ledger)
            return ledger, reserved

    def settle(
        self, key: str, reservation: str, actual: PrivacyEvent | None
    ) -> PrivacyLedger:
        """Replace reservation ``reservation`` by ``actual`` (None: nothing spent), locked.

        Returns:
            The stored ledger after settling.

        Raises:
            LedgerError: no such pending reservation on disk, ``actual`` spends more
                than was reserved (nothing is written; the reservation stays
                counted), or the stored ledger fails a check.
        """
        with self._locked(key):
            ledger = self._read(key)
            if ledger is None:
                raise LedgerError(
                    f"no stored ledger {key[:16]} to settle reservation {reservation!r} in"
                )
            ledger.settle(reservation, actual)
            self._write(ledger)
            return ledger

    def _save_unlocked(self, ledger: PrivacyLedger) -> None:
        stored = self._read(ledger.dataset)
        if stored is not None and not ledger.keeps_spend_of(stored):
            raise LedgerError(
                f"refusing to save ledger {ledger.dataset[:16]}: the stored copy has "
                f"events or reservations that this one drops or alters (would lose "
                "spend); load it again and record the new round on top"
            )
        self._write(ledger)

    def _write(self, ledger: PrivacyLedger) -> None:
        path = self.path_for(ledger.dataset)
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
        except ImportError as e:  # not POSIX: fail closed rather than race
            raise LedgerError(
                "FileLedger needs POSIX fcntl file locks to keep concurrent processes "
                "within the budget; this platform has none"
            ) from e
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
