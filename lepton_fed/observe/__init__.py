"""Watching a federation: TensorBoard events, Prometheus metrics, a progress bar, a live
dashboard and a per-member privacy statement.

The observers here implement :class:`lepton_fed.server.rounds.RoundObserver`
(``on_round(row)`` / ``on_finish(summary)``); :func:`observers_for` builds the ones a
config asks for. Optional dependencies (``tensorboard``, ``prometheus-client``) are
imported only when an observer that needs them is built, so importing this package needs
none of them. Nothing here changes a run: an observer only reads the rows it is given.
"""

from lepton_fed.observe.factory import close_observers, observers_for
from lepton_fed.observe.scalars import round_scalars

__all__ = ["close_observers", "observers_for", "round_scalars"]
