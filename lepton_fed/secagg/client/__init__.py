"""SecAgg+ client: :class:`SecAggClient`, the state machine a node runs (no I/O).

Modules: ``machine`` (the class: phases, dispatch, state save/restore), ``steps`` (the
three protocol steps: advertisement, masked input, unmask reply; and the share AEAD),
``checks`` (what a node verifies in a request before it computes or reveals anything)
and ``state`` (the serializable client state).
"""

from lepton_fed.secagg.client.machine import SecAggClient

__all__ = ["SecAggClient"]
