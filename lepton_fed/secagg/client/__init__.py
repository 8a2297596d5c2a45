"""SecAgg+ client: :class:`SecAggClient`, the state machine a node runs (no I/O).

Modules: ``machine`` (the class: advertise, dispatch, state save/restore), ``steps``
(the masked input and the unmask reply of a round), ``checks`` (what a node verifies in
a request before it computes or reveals anything), ``shares`` (sealing and opening the
share ciphertexts) and ``state`` (the serializable client state).
"""

from lepton_fed.secagg.client.machine import SecAggClient

__all__ = ["SecAggClient"]
