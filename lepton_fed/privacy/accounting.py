"""Per-node, per-dataset privacy ledger for DP-SGD, across all rounds and runs.

A node owns one :class:`PrivacyLedger` per dataset. Every local DP-SGD round appends
one :class:`PrivacyEvent` ``(noise_multiplier, sample_rate, steps)`` with its run id
and round number; epsilon is always computed over the *whole* history with RDP
(:func:`lepton_fed.privacy.analysis.epsilon_for_history`), so the node can state one
(ε, δ) for everything it ever released from that data. Before a round, the node
reserves the planned event (:meth:`PrivacyLedger.reserve`: budget check and record in
one step; a round that would exceed the budget is declined and records nothing); after
it, the reservation is settled to what was actually spent, never more
(:meth:`PrivacyLedger.settle`). A reservation that is never settled stays counted.

Storage: in simulation the ledger lives in the Flower node ``Context.state`` as
:meth:`PrivacyLedger.to_bytes` inside a ConfigRecord; on a real node it lives in a
:class:`FileLedger` directory, where reserve and settle each run under an exclusive
file lock, keyed by :func:`source_fingerprint` of the node's own data source, so
neither restarting the node, nor a new run, nor anything in the server's config
(column order, features, label) can reset what the data has already spent.

Modules: :mod:`~lepton_fed.privacy.ledger` (events, the ledger, its serialisation),
:mod:`~lepton_fed.privacy.file_ledger` (file storage and locking) and
:mod:`~lepton_fed.privacy.fingerprint`; this module re-exports their public names.
"""

from lepton_fed.privacy.file_ledger import FileLedger
from lepton_fed.privacy.fingerprint import dataset_fingerprint, source_fingerprint
from lepton_fed.privacy.ledger import LEDGER_FORMAT as LEDGER_FORMAT
from lepton_fed.privacy.ledger import LEDGER_VERSION as LEDGER_VERSION
from lepton_fed.privacy.ledger import MECHANISM as MECHANISM
from lepton_fed.privacy.ledger import READABLE_VERSIONS as READABLE_VERSIONS
from lepton_fed.privacy.ledger import LedgerError, PrivacyEvent, PrivacyLedger

__all__ = [
    "FileLedger",
    "LedgerError",
    "PrivacyEvent",
    "PrivacyLedger",
    "dataset_fingerprint",
    "source_fingerprint",
]
