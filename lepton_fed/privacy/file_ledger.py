"""File storage of privacy ledgers: one JSON file per dataset key, written atomically
under an exclusive lock, never losing an event already stored."""

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
