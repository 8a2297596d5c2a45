"""Secure aggregation (SecAgg+, Bell et al. 2020, on SecAgg, Bonawitz et al. 2017).

Pure protocol code, no Flower: :class:`SecAggClient` and :class:`SecAggServer` are
state machines that exchange bytes; k and t come from a :class:`SecurityLevel`
(:func:`choose_graph`). :mod:`lepton_fed.secagg.roster` signs and verifies rosters and
:mod:`lepton_fed.secagg.provisioning` reads key files and builds simulation bundles
(the only modules that touch files). See ``README.md`` in this package for the
protocol, the threat model and what leaks, and :mod:`lepton_fed.secagg.inprocess` for
the reference call order.
"""

from lepton_fed.secagg.client import SecAggClient
from lepton_fed.secagg.encoding import FieldEncoding
from lepton_fed.secagg.inprocess import advertise_all, make_clients, simulate_round
from lepton_fed.secagg.params import SecAggParams, default_params
from lepton_fed.secagg.result import SecAggResult
from lepton_fed.secagg.security import GraphChoice, SecurityLevel, choose_graph
from lepton_fed.secagg.server import SecAggServer
from lepton_fed.secagg.stages import ClientPhase, ServerPhase, Stage
from lepton_fed.secagg.wire import SERVER_ID, WIRE_VERSION, peek_header

__all__ = [
    "SERVER_ID",
    "WIRE_VERSION",
    "ClientPhase",
    "FieldEncoding",
    "GraphChoice",
    "SecAggClient",
    "SecAggParams",
    "SecAggResult",
    "SecAggServer",
    "SecurityLevel",
    "ServerPhase",
    "Stage",
    "advertise_all",
    "choose_graph",
    "default_params",
    "make_clients",
    "peek_header",
    "simulate_round",
]
