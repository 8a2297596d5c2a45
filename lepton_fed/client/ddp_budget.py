"""Distributed DP (``privacy=distributed``) on the node's own privacy ledger.

A node pays for each release of its masked, noisy contribution in two steps, as DP-SGD
rounds are paid (:mod:`lepton_fed.client.dp`), on the same ledger (same key, same store,
same lock): :func:`reserve_release` checks the budget and records the round as a pending
reservation BEFORE the node trains or draws its noise share; :func:`settle_release`
settles it once the masked vector exists, before the reply leaves the node (or drops it
when nothing was released). A node that cannot pay declines with ``BUDGET_EXHAUSTED``
(a real node without ``ledger-dir``: ``LEDGER_REQUIRED``), so its budget holds across
runs and across privacy modes.

What one release costs (:func:`release_event`): the run's plan
(:class:`~lepton_fed.privacy.distributed.DistributedPlan`, computed by the node itself)
gives the per-round Renyi bound of Kairouz, Liu & Steinke 2021, Proposition 14, third
term: ``eps(a) = a/2 (l2 + sqrt(d) tau)^2`` with ``l2 = c_hat / (sqrt(h) s)``. That is
exactly the Renyi curve of a Gaussian mechanism with noise multiplier
``1 / (l2 + sqrt(d) tau)``, so the ledger stores the round as its usual event
``(noise_multiplier, sample_rate=1, steps=1)`` (no amplification by sampling is
claimed) and composes it with everything else the ledger holds. Node-level DP for a
release implies record-level DP for every record of the node's data, so composing it
with DP-SGD's record-level events on the same data is sound. Over the rounds a node
contributed to, its ledger's epsilon (RDP accountant) equals
:meth:`DistributedPlan.epsilon_after` when tau = 0 (always, at 32 bits and practical
noise) and is larger, never smaller, otherwise (the plan also uses the first term).

Limits: the budget check of a distributed release always uses the RDP accountant (the
stored event is an RDP bound). A later DP-SGD run with ``privacy.accountant=pld``
composes the whole history, these events included, with PLD, i.e. as continuous Gaussian
releases of that noise multiplier -- not proven for sums of discrete Gaussians; the
ledger does not mark which events were distributed (that needs a format change), so keep
nodes that mix modes on ``accountant=rdp``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from omegaconf import DictConfig

from lepton_fed.client.dp import (
    ledger_key,
    ledger_missing,
    ledger_of,
    reserve_on_ledger,
    settle_on_ledger,
    target_epsilon,
)
from lepton_fed.client.node import NodeState
from lepton_fed.client.node_policy import node_policy
from lepton_fed.data.schema import TabularData
from lepton_fed.errors import PrivacyBudgetExhausted
from lepton_fed.policy.codes import BUDGET_EXHAUSTED, LEDGER_REQUIRED
from lepton_fed.privacy.accounting import LedgerError, PrivacyEvent, PrivacyLedger
from lepton_fed.privacy.distributed import DistributedPlan, tau_of

__all__ = ["ACCOUNTANT", "ReleaseCharge", "release_event", "reserve_release",
           "settle_release"]

#: the accountant a distributed release is checked and reported with
ACCOUNTANT = "rdp"


@dataclass(frozen=True)
class ReleaseCharge:
    """What :func:`reserve_release` decided for one round.

    Attributes:
        decline: None (reserved), ``BUDGET_EXHAUSTED`` or ``LEDGER_REQUIRED``.
        detail: why, naming settings and limits, never data.
        epsilon: the ledger's epsilon before this round (declined) or with this round's
            reservation counted (reserved), at ``privacy.delta``.
        key: the ledger's key (None when declined before one was derived).
        reservation: this round's pending reservation id (None when declined).
        event: the event reserved (None when declined).
    """

    decline: str | None
    detail: str
    epsilon: float
    key: str | None = None
    reservation: str | None = None
    event: PrivacyEvent | None = None


def release_event(plan: DistributedPlan, *, round_: int | None = None) -> PrivacyEvent:
    """One release under ``plan`` as a ledger event (module docstring: why this is exact
    for the paper's Proposition 14, third term)."""
    tau = tau_of(plan.local_sigma, max(plan.honest, plan.max_contributors))
    l2 = plan.rounded_norm / (math.sqrt(plan.honest) * plan.local_sigma)
    return PrivacyEvent(noise_multiplier=1.0 / (l2 + math.sqrt(plan.dim) * tau),
                        sample_rate=1.0, steps=1, round=round_)


def _cap(node: NodeState, cfg: DictConfig) -> float:
    """The tighter of the run's ``privacy.epsilon`` and the node policy's cap."""
    cap = node_policy(node.context).max_epsilon
    return min(target_epsilon(cfg), math.inf if cap is None else float(cap))


def _eps(ledger: PrivacyLedger, delta: float) -> float:
    return ledger.epsilon(delta=delta, accountant=ACCOUNTANT) if ledger.events else 0.0


def reserve_release(node: NodeState, cfg: DictConfig, data: TabularData,
                    plan: DistributedPlan, *, round_: int) -> ReleaseCharge:
    """Check the budget for one release under ``plan`` and record it as pending, or
    decline (nothing recorded). Call before training."""
    delta = float(cfg.privacy.delta)
    if (missing := ledger_missing(node)) is not None:
        return ReleaseCharge(LEDGER_REQUIRED, missing, 0.0)
    key = ledger_key(node, data)
    event, target = release_event(plan, round_=round_), _cap(node, cfg)
    try:
        ledger, held = reserve_on_ledger(node, key, event, target=target, delta=delta,
                                         accountant=ACCOUNTANT)
    except PrivacyBudgetExhausted:
        return ReleaseCharge(BUDGET_EXHAUSTED,
                             f"this release would take the node's ledger above epsilon "
                             f"{target:g} at delta {delta:g} (privacy.epsilon and the "
                             f"node policy's max_epsilon)", _eps(ledger_of(node, key), delta),
                             key)
    return ReleaseCharge(None, "", _eps(ledger, delta), key, held.reservation, event)


def settle_release(node: NodeState, cfg: DictConfig, charge: ReleaseCharge, *,
                   released: bool) -> float:
    """Settle ``charge``'s reservation: as spent when the masked vector was produced
    (call before it leaves the node), dropped when nothing was released. Returns the
    ledger's epsilon afterwards.

    Raises:
        LedgerError: ``charge`` holds no reservation, or the ledger lost it.
    """
    if charge.key is None or charge.reservation is None or charge.event is None:
        raise LedgerError("settle_release without a reservation")
    ledger = settle_on_ledger(node, charge.key, charge.reservation,
                              charge.event if released else None)
    return _eps(ledger, float(cfg.privacy.delta))
