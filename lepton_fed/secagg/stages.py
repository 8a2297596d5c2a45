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
    each round r (2 exchanges):
      MASKED_INPUT  server.start_round()          -> client.masked_input(delta, weight)
      UNMASK        server.collect_masked_inputs() -> client.unmask()
                    server.collect_unmask()       -> SecAggResult

Stage bytes 4-6 belonged to a removed 3-exchange mode and are refused as unknown.
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


class ClientPhase(IntEnum):
    """Where a :class:`~lepton_fed.secagg.client.SecAggClient` stands."""

    NEW = 0
    """No keys for the current run."""
    READY = 1
    """Round keys advertised; waiting for a masked-input request."""
    MASKED = 2
    """Masked input sent for round r; waiting for the unmask request of round r."""


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


#: (client phase, incoming request stage) -> phase after the reply is produced.
#: A masked-input request while MASKED means the previous round was abandoned by the server (it never sent the next request); the client moves on to
#: the new round, which must have a higher round number.
CLIENT_TRANSITIONS: dict[tuple[ClientPhase, Stage], ClientPhase] = {
    (ClientPhase.NEW, Stage.ADVERTISE): ClientPhase.READY,
    (ClientPhase.READY, Stage.ADVERTISE): ClientPhase.READY,
    (ClientPhase.MASKED, Stage.ADVERTISE): ClientPhase.READY,
    (ClientPhase.READY, Stage.MASKED_INPUT): ClientPhase.MASKED,
    (ClientPhase.MASKED, Stage.MASKED_INPUT): ClientPhase.MASKED,
    (ClientPhase.MASKED, Stage.UNMASK): ClientPhase.READY,
}

#: (server phase, server step) -> phase after the step. The step is named by the
#: stage of the requests it emits (ADVERTISE, MASKED_INPUT, UNMASK) or, for the last
#: step of a round, by ``None`` (collect unmask replies and finish).
SERVER_TRANSITIONS: dict[tuple[ServerPhase, Stage | None], ServerPhase] = {
    (ServerPhase.IDLE, Stage.ADVERTISE): ServerPhase.ADVERTISING,
    (ServerPhase.READY, Stage.ADVERTISE): ServerPhase.ADVERTISING,
    (ServerPhase.ADVERTISING, None): ServerPhase.READY,
    (ServerPhase.READY, Stage.MASKED_INPUT): ServerPhase.COLLECTING_MASKED,
    (ServerPhase.COLLECTING_MASKED, Stage.UNMASK): ServerPhase.COLLECTING_UNMASK,
    (ServerPhase.COLLECTING_UNMASK, None): ServerPhase.READY,
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
