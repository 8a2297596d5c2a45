"""DP-SGD bookkeeping for one node: sigma calibrated once per run, a ledger across rounds.

Each round is paid in two steps on the node's ledger: :func:`reserve_dp_round` checks
the budget and records the planned event as a pending reservation in one step (under
an exclusive file lock on a real node) before any training; :func:`record_round`
settles it to what the round actually spent (never more) before the update leaves.

Where the ledger lives and what keys it (:func:`ledger_key`):

* a real node (``node_config["data-path"]``) must have ``node_config["ledger-dir"]``
  (else the round is declined with ``LEDGER_REQUIRED``); its
  :class:`~lepton_fed.privacy.FileLedger` is keyed by the raw bytes of the data source
  (:func:`~lepton_fed.privacy.fingerprint.source_fingerprint`), or by the operator's
  ``node_config["ledger-key"]``, never by anything the server's config chooses;
* a simulated node keys by its partition's rows, in any row and column order
  (:func:`~lepton_fed.privacy.fingerprint.dataset_fingerprint` with column names), and
  keeps its ledger in the Context state unless ``ledger-dir`` is set, or (H5) the
  simulation exports ``$LEPTON_FED_SIM_LEDGERS`` (:data:`SIM_LEDGERS_ENV`, set by
  :func:`lepton_fed.simulation.simulate` to ``RUN_DIR/node_ledgers``): then in its
  subdirectory ``partition-<id>``, so a resumed Ray run continues every node's spend.
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from omegaconf import DictConfig

from lepton_fed.client.node import NodeState
from lepton_fed.client.train import DPSettings, LocalResult
from lepton_fed.data.schema import TabularData
from lepton_fed.errors import PrivacyBudgetExhausted
from lepton_fed.policy.codes import BUDGET_EXHAUSTED, LEDGER_REQUIRED
from lepton_fed.privacy.accounting import (
    FileLedger,
    LedgerError,
    PrivacyEvent,
    PrivacyLedger,
    dataset_fingerprint,
    source_fingerprint,
)
from lepton_fed.privacy.analysis import (
    epsilon_for_history,
    local_schedule,
    noise_multiplier_for,
)
from lepton_fed.privacy.auto import DPChoice, choice_for
from lepton_fed.privacy.dpsgd import choose_grad_sample_mode
from lepton_fed.privacy.pld import ACCOUNTANTS, run_accountant

__all__ = [
    "SIM_LEDGERS_ENV",
    "DPDecision",
    "dp_choice",
    "dp_report",
    "is_real_node",
    "ledger_key",
    "ledger_missing",
    "ledger_of",
    "record_round",
    "reserve_dp_round",
    "reserve_on_ledger",
    "settle_on_ledger",
    "target_epsilon",
]

_RESERVATION = "dp-reservation"  # node state: "<ledger key> <reservation id>"
_REPORT = "dp-report"  # node state: JSON of the last settled round's figures
_CHOICE = "dp-choice"  # node state: JSON of this run's DPChoice

log = logging.getLogger("lepton_fed.node")

#: simulation: directory under which each virtual node keeps its ledger on disk
SIM_LEDGERS_ENV = "LEPTON_FED_SIM_LEDGERS"


@dataclass(frozen=True)
class DPDecision:
    """What :func:`reserve_dp_round` decided for one round.

    Attributes:
        settings: DP-SGD settings to train with; None when the round is declined.
        epsilon: epsilon already counted on this data (settled rounds and other
            pending reservations, not this round's) at ``privacy.delta``.
        decline: None, or ``BUDGET_EXHAUSTED`` / ``LEDGER_REQUIRED``
            (:data:`lepton_fed.policy.codes.DECLINE_CODES`).
        detail: why, in one sentence naming settings and limits, never data.
        ledger_key: the key of the ledger charged (None when declined before one).
        reservation: id of this round's pending reservation (None when declined).
    """

    settings: DPSettings | None
    epsilon: float
    decline: str | None = None
    detail: str = ""
    ledger_key: str | None = None
    reservation: str | None = None


def is_real_node(node: NodeState) -> bool:
    """A node that reads its own data (``node_config["data-path"]``), not a partition."""
    return "data-path" in node.context.node_config


def _ledger_dir(node: NodeState) -> str | None:
    d = node.context.node_config.get("ledger-dir")
    if d:
        return str(d)
    base, pid = os.environ.get(SIM_LEDGERS_ENV), node.context.node_config.get("partition-id")
    if base and pid is not None and not is_real_node(node):  # H5: a simulated node
        return str(Path(base) / f"partition-{int(pid)}")
    return None


def ledger_key(node: NodeState, data: TabularData | None) -> str:
    """The key of this node's ledger (cached in the node state for the run).

    Real node: ``node_config["ledger-key"]`` if the operator set one, else the
    :func:`~lepton_fed.privacy.fingerprint.source_fingerprint` of ``data-path``
    (skipping ``ledger-dir`` if it lies inside). Simulation: the partition rows
    ``data`` (required then), independent of row and column order.

    Raises:
        ValueError: ``ledger-key`` is not a safe name, or a simulated node without
            ``data``.
    """
    cached = node.get("ledger-key")
    if cached is not None:
        return str(cached)
    nc = node.context.node_config
    if is_real_node(node):
        if nc.get("ledger-key"):
            key = str(nc["ledger-key"])
            FileLedger.check_key(key)
        else:
            ld = _ledger_dir(node)
            key = source_fingerprint(str(nc["data-path"]), exclude=[ld] if ld else [])
    else:
        if data is None:
            raise ValueError("a simulated node's ledger key needs its partition's data")
        key = _rows_key(data)
    node.set("ledger-key", key)
    return key


def _rows_key(data: TabularData) -> str:
    names: list[str] = []
    for f in data.features:
        names += [f"{f.name}={lv}" for lv in f.levels] if f.kind == "categorical" else [f.name]
    if data.X.ndim == 2 and len(names) == data.X.shape[1] and len(set(names)) == len(names):
        return dataset_fingerprint(data.X, data.y, columns=names)
    return dataset_fingerprint(data.X, data.y)


def _state_ledger(node: NodeState, key: str) -> PrivacyLedger:
    raw = node.get("dp-ledger")
    if raw:
        return PrivacyLedger.from_bytes(raw, dataset=key)
    return PrivacyLedger(dataset=key, node_id=str(node.context.node_id))


def _store(node: NodeState) -> FileLedger | None:
    d = _ledger_dir(node)
    return FileLedger(d, node_id=str(node.context.node_id)) if d else None


def ledger_missing(node: NodeState) -> str | None:
    """Why a real node cannot pay for a release (no ``ledger-dir``: its spend would not
    survive a restart), or None."""
    if is_real_node(node) and _store(node) is None:
        return ("node_config has data-path but no ledger-dir: this node's privacy spend "
                "would not survive a restart")
    return None


def target_epsilon(cfg: DictConfig) -> float:
    """The run's ``privacy.epsilon`` (no target: infinity)."""
    return float(cfg.privacy.epsilon) if cfg.privacy.epsilon is not None else math.inf


def reserve_on_ledger(node: NodeState, key: str, event: PrivacyEvent, *, target: float,
                      delta: float, accountant: str) -> tuple[PrivacyLedger, PrivacyEvent]:
    """Check the budget and record ``event`` as pending on the node's ledger for
    ``key``: its file store (``ledger-dir``, locked) or, without one (simulation), the
    node state. Returns the ledger after the reservation and the pending event.

    Raises:
        PrivacyBudgetExhausted: it does not fit; nothing recorded.
    """
    store = _store(node)
    if store is not None:
        return store.reserve(key, event, target_epsilon=target, delta=delta,
                             accountant=accountant)
    ledger = _state_ledger(node, key)
    held = ledger.reserve(event, target_epsilon=target, delta=delta, accountant=accountant)
    node.set("dp-ledger", ledger.to_bytes())
    return ledger, held


def settle_on_ledger(node: NodeState, key: str, reservation: str,
                     actual: PrivacyEvent | None) -> PrivacyLedger:
    """Replace reservation ``reservation`` by ``actual`` (None: nothing was spent) on
    the node's ledger for ``key``; returns the ledger afterwards."""
    store = _store(node)
    if store is not None:
        return store.settle(key, reservation, actual)
    ledger = _state_ledger(node, key)
    ledger.settle(reservation, actual)
    node.set("dp-ledger", ledger.to_bytes())
    return ledger


def ledger_of(node: NodeState, key: str) -> PrivacyLedger:
    """The node's ledger for ``key`` as stored now (file store or node state)."""
    store = _store(node)
    return store.load(key) if store is not None else _state_ledger(node, key)


def _eps(ledger: PrivacyLedger, delta: float, accountant: str, *,
         without: str | None = None) -> float:
    h = [e.as_tuple() for e in ledger.events if without is None or e.reservation != without]
    return epsilon_for_history(h, delta=delta, accountant=accountant) if h else 0.0


def dp_choice(node: NodeState, cfg: DictConfig, n: int) -> DPChoice:
    """This run's DP-SGD hyperparameters for a node with ``n`` training rows: the
    user's values, the DP rule's (:mod:`lepton_fed.privacy.auto`) for keys left null.
    Chosen once per run (cached in the node state) and logged on the node."""
    raw = node.get(_CHOICE)
    if raw:
        d = json.loads(str(raw))
        return DPChoice(**{**d, "auto": tuple(d["auto"])})
    choice = choice_for(cfg, n)
    node.set(_CHOICE, json.dumps(asdict(choice)))
    log.info(choice.describe())
    return choice


def _sigma(node: NodeState, cfg: DictConfig, sample_rate: float, steps: int) -> float:
    sigma = node.get("dp-sigma")
    if sigma is None:
        pr = cfg.privacy
        if pr.noise_multiplier is not None:
            sigma = float(pr.noise_multiplier)
        else:
            sigma = noise_multiplier_for(
                target_epsilon=float(pr.epsilon), delta=float(pr.delta),
                sample_rate=sample_rate, steps=int(cfg.federation.rounds) * steps,
                accountant=run_accountant(cfg))
        node.set("dp-sigma", float(sigma))
    return float(sigma)


def reserve_dp_round(
    node: NodeState, cfg: DictConfig, data: TabularData, *, round_: int
) -> DPDecision:
    """DP settings for this round with the budget reserved, or a decline with its code.

    Order: a real node without ``ledger-dir`` is declined (``LEDGER_REQUIRED``) before
    anything else; sigma is calibrated ONCE per run for the worst case (this client
    sampled in every round: ``rounds x local steps``) and cached in the node state;
    then the planned event is reserved (budget check and record in one locked step
    against everything the ledger holds, pending reservations of other processes
    included) or the round is declined (``BUDGET_EXHAUSTED``; nothing recorded).
    The reservation is remembered in the node state for :func:`record_round`.
    """
    n, num_features = len(data.y), data.num_features
    pr = cfg.privacy
    delta = float(pr.delta)
    acc = run_accountant(cfg)
    if (missing := ledger_missing(node)) is not None:
        return DPDecision(None, 0.0, LEDGER_REQUIRED, missing)
    key = ledger_key(node, data)
    choice = dp_choice(node, cfg, n)
    sch = local_schedule(num_examples=n, batch_size=choice.batch_size, epochs=choice.epochs)
    sigma = _sigma(node, cfg, sch.sample_rate, sch.steps)
    planned = PrivacyEvent(noise_multiplier=sigma, sample_rate=sch.sample_rate,
                           steps=sch.steps, round=round_)
    try:
        ledger, held = reserve_on_ledger(node, key, planned, target=target_epsilon(cfg),
                                         delta=delta, accountant=acc)
    except PrivacyBudgetExhausted:
        return DPDecision(None, _eps(ledger_of(node, key), delta, acc), BUDGET_EXHAUSTED,
                          f"this round would take the ledger above privacy.epsilon="
                          f"{pr.epsilon} at privacy.delta={pr.delta}", key)
    assert held.reservation is not None
    node.set(_RESERVATION, f"{key} {held.reservation}")
    settings = DPSettings(
        noise_multiplier=sigma, max_grad_norm=choice.max_grad_norm,
        grad_sample_mode=choose_grad_sample_mode(
            str(pr.grad_sample_mode), model=str(cfg.model.name), num_features=num_features),
        secure_mode=bool(pr.secure_mode),
        reproducible=bool(pr.get("reproducible", False)),
        batch_size=choice.batch_size, epochs=choice.epochs,
        lr=choice.lr_at(round_, int(cfg.federation.rounds)),
    )
    return DPDecision(settings, _eps(ledger, delta, acc, without=held.reservation), None, "",
                      key, held.reservation)


def record_round(
    node: NodeState, cfg: DictConfig, dp: DPSettings | DPDecision, res: LocalResult, *,
    round_: int,
) -> float:
    """Settle this round's reservation to what it actually spent; return epsilon.

    Call after training and before the update leaves the node. ``res.steps == 0``
    drops the reservation (nothing was spent). Returns the epsilon now counted on
    the data (pending reservations of other processes included).

    Raises:
        LedgerError: no reservation (reserve first), or a round that spent more than
            it reserved; the update must not be released then (the reservation stays
            counted).
    """
    held = node.get(_RESERVATION)
    if not held:
        raise LedgerError("record_round without a reservation: call reserve_dp_round first")
    key, reservation = str(held).split(" ", 1)
    settings = dp.settings if isinstance(dp, DPDecision) else dp
    if settings is None:
        raise LedgerError("record_round: the round was declined; nothing to record")
    actual = (PrivacyEvent(noise_multiplier=settings.noise_multiplier,
                           sample_rate=res.sample_rate, steps=res.steps, round=round_)
              if res.steps > 0 else None)
    ledger = settle_on_ledger(node, key, reservation, actual)
    node.set(_RESERVATION, "")
    delta, acc = float(cfg.privacy.delta), run_accountant(cfg)
    report = {f"epsilon-{a}": _eps(ledger, delta, a) for a in ACCOUNTANTS}
    raw = node.get(_CHOICE)
    if raw:
        d = json.loads(str(raw))
        report |= DPChoice(**{**d, "auto": tuple(d["auto"])}).as_metrics()
        report["dp-noise-multiplier"] = settings.noise_multiplier
    node.set(_REPORT, json.dumps(report))
    return report[f"epsilon-{acc}"]


def dp_report(node: NodeState) -> dict[str, float]:
    """Figures of the last settled round, for the train reply's metrics (the node's
    policy filters them like every metric): ``epsilon-rdp`` and ``epsilon-pld``, the
    node's whole spend under each accountant, and this run's DP-SGD settings
    (``dp-batch-size``, ``dp-epochs``, ``dp-lr``, ``dp-clip``, ``dp-local-steps``,
    ``dp-noise-multiplier``). Empty before the first settled round."""
    raw = node.get(_REPORT)
    return {str(k): float(v) for k, v in json.loads(str(raw)).items()} if raw else {}

