"""One node's privacy ledger for one dataset: :class:`PrivacyEvent` (one local DP-SGD
round) and :class:`PrivacyLedger` (the history, epsilon over all of it, the budget
check, reservations, and a strict, digest-protected serialisation).

A round is paid in two steps: :meth:`PrivacyLedger.reserve` checks the budget and
records the planned event as *pending* in one step (before any training);
:meth:`PrivacyLedger.settle` replaces it with what the round actually spent, which may
never exceed the reservation. A pending reservation counts in full, so a node that
crashes between the two has overcounted, never undercounted.

See :mod:`lepton_fed.privacy.accounting` for how the ledger is used and stored.
"""

from __future__ import annotations

import json
import uuid
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from lepton_fed.errors import LeptonError, PrivacyBudgetExhausted
from lepton_fed.privacy._canonical import canonical_json, digest
from lepton_fed.privacy.analysis import (
    _check_delta,
    _check_epsilon,
    _check_int,
    _check_noise_multiplier,
    _check_sample_rate,
    epsilon_for_history,
)

__all__ = [
    "LEDGER_FORMAT",
    "LEDGER_VERSION",
    "MECHANISM",
    "READABLE_VERSIONS",
    "LedgerError",
    "PrivacyEvent",
    "PrivacyLedger",
]

LEDGER_FORMAT = "lepton-fed/privacy-ledger"
LEDGER_VERSION = 2
#: Versions this code reads (version 1 had no reservations; it is upgraded on save).
READABLE_VERSIONS = (1, 2)
#: The only mechanism a ledger holds: Poisson-subsampled Gaussian steps (DP-SGD). A
#: ledger claiming anything else is refused on load. (The stored events are
#: accountant-neutral ``(σ, q, steps)``; the "/rdp" suffix dates from when RDP was the
#: only accountant and stays so that every stored ledger keeps its digest. Each budget
#: check composes them with the accountant it is given.)
MECHANISM = "dpsgd/poisson-subsampled-gaussian/rdp"
_TOP_KEYS = frozenset(
    {"format", "version", "mechanism", "dataset", "node_id", "events", "digest"}
)
_EVENT_KEYS_V1 = frozenset(
    {"noise_multiplier", "sample_rate", "steps", "round", "run_id", "recorded_at"}
)
_EVENT_KEYS = _EVENT_KEYS_V1 | {"reservation", "pending"}
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
        reservation: id of the reservation the event came from
            (:meth:`PrivacyLedger.reserve`), None for events recorded directly.
        pending: True while the reservation is not settled; a pending event counts
            in full.
    """

    noise_multiplier: float
    sample_rate: float
    steps: int
    round: int | None = None
    run_id: str | None = None
    recorded_at: str | None = None
    reservation: str | None = None
    pending: bool = False

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
        for name in ("run_id", "recorded_at", "reservation"):
            v = getattr(self, name)
            if v is not None and not isinstance(v, str):
                raise ValueError(f"{name} must be a string or None; got {v!r}")
        if not isinstance(self.pending, bool):
            raise ValueError(f"pending must be true or false; got {self.pending!r}")
        if self.pending and not self.reservation:
            raise ValueError("a pending event needs a reservation id")

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
            "reservation": self.reservation,
            "pending": self.pending,
        }

    def within(self, reserved: PrivacyEvent) -> bool:
        """Whether this event spends no more than ``reserved``: sigma at least, q and
        steps at most (the subsampled Gaussian's RDP is monotone in each)."""
        return (
            self.noise_multiplier >= reserved.noise_multiplier
            and self.sample_rate <= reserved.sample_rate
            and self.steps <= reserved.steps
        )

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], *, version: int = LEDGER_VERSION) -> PrivacyEvent:
        """Strict inverse of :meth:`to_dict` (exact keys, checked types and ranges).

        Args:
            d: the stored event.
            version: the ledger version it was stored under (1: no reservations).

        Raises:
            LedgerError: unknown/missing keys or invalid values.
        """
        keys = _EVENT_KEYS_V1 if version == 1 else _EVENT_KEYS
        if not isinstance(d, Mapping) or set(d) != keys:
            got = sorted(d) if isinstance(d, Mapping) else type(d).__name__
            raise LedgerError(
                f"ledger event must have keys {sorted(keys)}; got {got}"
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
        dataset: the dataset key, normally :func:`~lepton_fed.privacy.fingerprint.dataset_fingerprint`
            of the data.
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
        ids = [e.reservation for e in self._events if e.reservation is not None]
        if len(ids) != len(set(ids)):
            raise ValueError("reservation ids must be unique within a ledger")

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
    def pending(self) -> tuple[PrivacyEvent, ...]:
        """Reservations not settled yet (each counts in full)."""
        return tuple(e for e in self._events if e.pending)

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
    # Every check takes the run's accountant ("rdp" or "pld", privacy.accountant); the
    # default "rdp" is the more conservative one. Both give valid upper bounds on the
    # true epsilon, so a budget kept under either one is kept.

    def epsilon(self, *, delta: float, accountant: str = "rdp") -> float:
        """Epsilon spent so far at ``delta``, over the whole history (0.0 if empty)."""
        return epsilon_for_history(self.history, delta=delta, accountant=accountant)

    def projected_epsilon(
        self, event: PrivacyEvent, *, delta: float, accountant: str = "rdp"
    ) -> float:
        """Epsilon the history would reach if ``event`` were recorded."""
        return epsilon_for_history([*self.history, event.as_tuple()], delta=delta,
                                   accountant=accountant)

    def can_afford(
        self, event: PrivacyEvent, *, target_epsilon: float, delta: float,
        accountant: str = "rdp",
    ) -> bool:
        """Whether recording ``event`` keeps epsilon within ``target_epsilon``.

        A relative tolerance of 1e-9 absorbs floating-point noise of the accountant,
        so a σ from :func:`~lepton_fed.privacy.analysis.noise_multiplier_for` (with the
        same accountant) for the whole run affords exactly the planned rounds.
        """
        t = _check_epsilon("target_epsilon", target_epsilon)
        _check_delta(delta)
        eps = self.projected_epsilon(event, delta=delta, accountant=accountant)
        return eps <= t * (1.0 + _REL_TOL)

    def require(
        self, event: PrivacyEvent, *, target_epsilon: float, delta: float,
        accountant: str = "rdp",
    ) -> None:
        """Like :meth:`can_afford`, but raise instead of returning False.

        Raises:
            PrivacyBudgetExhausted: the round would exceed the budget; the message
                says what was spent and what the round would bring it to.
        """
        if not self.can_afford(event, target_epsilon=target_epsilon, delta=delta,
                               accountant=accountant):
            spent = self.epsilon(delta=delta, accountant=accountant)
            after = self.projected_epsilon(event, delta=delta, accountant=accountant)
            raise PrivacyBudgetExhausted(
                f"dataset {self._dataset[:16]}: spent epsilon={spent:.4f} ({accountant}); "
                f"this round ({event.steps} steps, sigma={event.noise_multiplier:.4g}, "
                f"q={event.sample_rate:.4g}) would reach {after:.4f} > target "
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
        if event.pending or event.reservation is not None:
            raise ValueError("record() takes a plain event; use reserve() and settle()")
        if event.recorded_at is None:
            event = replace(event, recorded_at=_now())
        self._events.append(event)
        return event

    def reserve(
        self, event: PrivacyEvent, *, target_epsilon: float, delta: float,
        accountant: str = "rdp",
    ) -> PrivacyEvent:
        """Check the budget for ``event`` and record it as a pending reservation.

        The reservation counts in full until :meth:`settle` replaces it. Reserve before
        training; on a shared ledger do it under the store's lock
        (:meth:`~lepton_fed.privacy.file_ledger.FileLedger.reserve`).

        Returns:
            The stored pending event; its ``reservation`` is the id to settle.

        Raises:
            PrivacyBudgetExhausted: the event does not fit; nothing is recorded.
        """
        if not isinstance(event, PrivacyEvent):
            raise ValueError(f"event must be a PrivacyEvent; got {event!r}")
        self.require(event, target_epsilon=target_epsilon, delta=delta,
                     accountant=accountant)
        stored = replace(event, reservation=uuid.uuid4().hex, pending=True,
                         recorded_at=_now())
        self._events.append(stored)
        return stored

    def settle(self, reservation: str, actual: PrivacyEvent | None) -> PrivacyEvent | None:
        """Replace the pending reservation ``reservation`` by what was actually spent.

        Args:
            reservation: the id :meth:`reserve` returned.
            actual: the event that really ran (its round/run id default to the
                reservation's), or None if nothing was spent (the reservation is
                dropped).

        Returns:
            The settled event, or None when dropped.

        Raises:
            LedgerError: no pending reservation with that id, or ``actual`` spends more
                than was reserved (the reservation then stays counted in full).
        """
        idx = next((i for i, e in enumerate(self._events)
                    if e.pending and e.reservation == reservation), None)
        if idx is None:
            raise LedgerError(
                f"ledger {self._dataset[:16]} has no pending reservation {reservation!r}"
            )
        held = self._events[idx]
        if actual is None:
            del self._events[idx]
            return None
        if not actual.within(held):
            raise LedgerError(
                f"round spent more than its reservation (sigma {actual.noise_multiplier:.4g}"
                f" vs {held.noise_multiplier:.4g}, q {actual.sample_rate:.4g} vs "
                f"{held.sample_rate:.4g}, steps {actual.steps} vs {held.steps}); the "
                "reservation stays counted and the update must not be released"
            )
        settled = replace(
            actual,
            round=actual.round if actual.round is not None else held.round,
            run_id=actual.run_id if actual.run_id is not None else held.run_id,
            recorded_at=_now(), reservation=reservation, pending=False,
        )
        self._events[idx] = settled
        return settled

    def keeps_spend_of(self, stored: PrivacyLedger) -> bool:
        """Whether this ledger keeps everything ``stored`` counts: each settled event
        (exactly) and each pending reservation (unchanged, or settled within it)."""
        mine = Counter(self._events)
        by_id: dict[str | None, PrivacyEvent] = {
            e.reservation: e for e in self._events if e.reservation is not None
        }
        for e, n in Counter(stored.events).items():
            if not e.pending:
                if mine[e] < n:
                    return False
                continue
            now = by_id.get(e.reservation)
            if now is None or not (now == e or (not now.pending and now.within(e))):
                return False
        return True

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
        body["digest"] = digest(body)
        return body

    def to_bytes(self) -> bytes:
        """Canonical UTF-8 JSON of :meth:`state_dict` (sorted keys, no spaces)."""
        return canonical_json(self.state_dict())

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
        version = state["version"]
        if type(version) is not int or version not in READABLE_VERSIONS:
            raise LedgerError(
                f"unsupported ledger version {version!r} (this code reads "
                f"{list(READABLE_VERSIONS)})"
            )
        if state["mechanism"] != MECHANISM:
            raise LedgerError(
                f"ledger accounts mechanism {state['mechanism']!r}, expected {MECHANISM!r}"
            )
        body = {k: v for k, v in state.items() if k != "digest"}
        if state["digest"] != digest(body):
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
                events=[PrivacyEvent.from_dict(e, version=version) for e in events],
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


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _reject_constant(name: str) -> float:
    raise ValueError(f"non-finite number {name} in ledger")
