"""SecAgg+ server: :class:`SecAggServer`, the state machine of one run (no I/O).

Modules: ``machine`` (the class: advertisement, the round's requests, phases),
``steps`` (summing masked inputs, routing ciphertexts, unmasking), ``shares``
(rebuilding self-mask seeds from share blocks) and ``state`` (what the server holds
per node and per round).
"""

from lepton_fed.secagg.server.machine import SecAggServer

__all__ = ["SecAggServer"]
