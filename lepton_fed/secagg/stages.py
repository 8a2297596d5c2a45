"""Protocol stages, client/server phases and the allowed transitions.

Message stages (``Stage``) are what travels in the header of every message. Phases
(``ClientPhase``, ``ServerPhase``) are where each state machine stands between
messages. Every handler calls :func:`check_transition` before doing anything, so a
message for the wrong stage is refused with :class:`~lepton_fed.errors.ProtocolAbort`
(fail closed) rather than half-processed.

Sequence (see ``README.md``)::

    once per run (or when a node's advertised rounds run out):
      ADVERTISE     server.advertise()            -> client.advertise()
                    server.collect_advertisements()
    each round r, fast mode (default, 2 exchanges):
      MASKED_INPUT  server.start_round()          -> client.masked_input(delta, weight)
      UNMASK        server.collect_masked_inputs() -> client.unmask()
                    server.collect_unmask()       -> SecAggResult
    each round r, robust mode (``SecAggParams.share_keys_first``, 3 exchanges):
      SHARE_KEYS           server.start_round()           -> client.share_keys()
      ROBUST_MASKED_INPUT  server.collect_shares()        -> client.masked_input(delta, weight)
      ROBUST_UNMASK        server.collect_masked_inputs() -> client.unmask()
                           server.collect_unmask()        -> SecAggResult

The robust-mode messages have their own stage bytes, so a message of one mode can never
be parsed as a message of the other (and share ciphertexts of the two modes carry
different associated data).
"""

from __future__ import annotations

from enum import IntEnum
from typing import TypeVar

from lepton_fed.errors import ProtocolAbort

__all__ = [
    "CLIENT_TRANSITIONS",
    "SERVER_TRANSITIONS",
    "ClientPhase",
    "ServerPhase",
    "Stage",
    "check_transition",
]


class Stage(IntEnum):
    """The stage a message belongs to; encoded as one byte after the version byte."""

    ADVERTISE = 1
    MASKED_INPUT = 2
    UNMASK = 3
    SHARE_KEYS = 4
    """Robust mode only: shares of the self-mask seed and of the round's mask key."""
    ROBUST_MASKED_INPUT = 5
    """Robust mode: the masked input (after SHARE_KEYS)."""
    ROBUST_UNMASK = 6
    """Robust mode: b-shares of survivors, mask-key shares of dropped neighbours."""

    @property
    def canonical(self) -> Stage:
        """The mode-independent stage: ROBUST_MASKED_INPUT -> MASKED_INPUT, etc."""
        return _CANONICAL.get(self, self)


_CANONICAL = {
    Stage.ROBUST_MASKED_INPUT: Stage.MASKED_INPUT,
    Stage.ROBUST_UNMASK: Stage.UNMASK,
}


class ClientPhase(IntEnum):
    """Where a :class:`~lepton_fed.secagg.client.SecAggClient` stands."""

    NEW = 0
    """No keys for the current run."""
    READY = 1
    """Round keys advertised; waiting for a masked-input request."""
    MASKED = 2
    """Masked input sent for round r; waiting for the unmask request of round r."""
    SHARED = 3
    """Robust mode: shares sent for round r; waiting for its masked-input request."""


class ServerPhase(IntEnum):
    """Where a :class:`~lepton_fed.secagg.server.SecAggServer` stands."""

    IDLE = 0
    """No advertisement collected yet."""
    ADVERTISING = 1
    """Advertisement requests sent; waiting for replies."""
    READY = 2
    """Between rounds."""
    COLLECTING_MASKED = 3
    """Masked-input requests sent for round r."""
    COLLECTING_UNMASK = 4
    """Unmask requests sent for round r."""
    COLLECTING_SHARES = 5
    """Robust mode: share-keys requests sent for round r."""


#: (client phase, incoming request stage) -> phase after the reply is produced.
#: A masked-input (or share-keys) request while MASKED or SHARED means the previous round
#: was abandoned by the server (it never sent the next request); the client moves on to
#: the new round, which must have a higher round number.
CLIENT_TRANSITIONS: dict[tuple[ClientPhase, Stage], ClientPhase] = {
    (ClientPhase.NEW, Stage.ADVERTISE): ClientPhase.READY,
    (ClientPhase.READY, Stage.ADVERTISE): ClientPhase.READY,
    (ClientPhase.MASKED, Stage.ADVERTISE): ClientPhase.READY,
    (ClientPhase.SHARED, Stage.ADVERTISE): ClientPhase.READY,
    # fast mode
    (ClientPhase.READY, Stage.MASKED_INPUT): ClientPhase.MASKED,
    (ClientPhase.MASKED, Stage.MASKED_INPUT): ClientPhase.MASKED,
    (ClientPhase.SHARED, Stage.MASKED_INPUT): ClientPhase.MASKED,
    (ClientPhase.MASKED, Stage.UNMASK): ClientPhase.READY,
    # robust mode
    (ClientPhase.READY, Stage.SHARE_KEYS): ClientPhase.SHARED,
    (ClientPhase.MASKED, Stage.SHARE_KEYS): ClientPhase.SHARED,
    (ClientPhase.SHARED, Stage.SHARE_KEYS): ClientPhase.SHARED,
    (ClientPhase.SHARED, Stage.ROBUST_MASKED_INPUT): ClientPhase.MASKED,
    (ClientPhase.MASKED, Stage.ROBUST_UNMASK): ClientPhase.READY,
}

#: (server phase, server step) -> phase after the step. The step is named by the
#: stage of the requests it emits (ADVERTISE, MASKED_INPUT, UNMASK) or, for the last
#: step of a round, by ``None`` (collect unmask replies and finish).
SERVER_TRANSITIONS: dict[tuple[ServerPhase, Stage | None], ServerPhase] = {
    (ServerPhase.IDLE, Stage.ADVERTISE): ServerPhase.ADVERTISING,
    (ServerPhase.READY, Stage.ADVERTISE): ServerPhase.ADVERTISING,
    (ServerPhase.ADVERTISING, None): ServerPhase.READY,
    # fast mode
    (ServerPhase.READY, Stage.MASKED_INPUT): ServerPhase.COLLECTING_MASKED,
    (ServerPhase.COLLECTING_MASKED, Stage.UNMASK): ServerPhase.COLLECTING_UNMASK,
    (ServerPhase.COLLECTING_UNMASK, None): ServerPhase.READY,
    # robust mode
    (ServerPhase.READY, Stage.SHARE_KEYS): ServerPhase.COLLECTING_SHARES,
    (
        ServerPhase.COLLECTING_SHARES,
        Stage.ROBUST_MASKED_INPUT,
    ): ServerPhase.COLLECTING_MASKED,
    (ServerPhase.COLLECTING_MASKED, Stage.ROBUST_UNMASK): ServerPhase.COLLECTING_UNMASK,
}


_P = TypeVar("_P", ClientPhase, ServerPhase)


def check_transition(
    table: dict[tuple[_P, Stage | None], _P] | dict[tuple[_P, Stage], _P],
    phase: _P,
    stage: Stage | None,
) -> _P:
    """Returns the next phase, or raises if ``stage`` is not allowed in ``phase``.

    Raises:
        ProtocolAbort: the transition is not in ``table``.
    """
    try:
        return table[(phase, stage)]  # type: ignore[index]
    except KeyError:
        name = stage.name if stage is not None else "finish"
        raise ProtocolAbort(
            f"stage {name} is not allowed in phase {phase.name}"
        ) from None
