"""DP-SGD bookkeeping for one node: sigma calibrated once per run, a ledger across rounds.

In simulation the ledger lives in the node's Context state; on a real node
(``node_config["ledger-dir"]``) it is a :class:`~lepton_fed.privacy.FileLedger` keyed by
the dataset's fingerprint, so restarting the node or starting a new run cannot reset
what that data has already spent.
"""

from __future__ import annotations

import math

from omegaconf import DictConfig

from lepton_fed.client.node import NodeState
from lepton_fed.client.train import DPSettings, LocalResult
from lepton_fed.privacy.accounting import FileLedger, PrivacyEvent, PrivacyLedger
from lepton_fed.privacy.analysis import local_schedule, noise_multiplier_for
from lepton_fed.privacy.dpsgd import choose_grad_sample_mode

__all__ = ["dp_settings_or_decline", "record_round"]


def _target(cfg: DictConfig) -> float:
    return float(cfg.privacy.epsilon) if cfg.privacy.epsilon is not None else math.inf


def _ledger(node: NodeState, fingerprint: str) -> PrivacyLedger:
    ledger_dir = node.context.node_config.get("ledger-dir")
    if ledger_dir:
        return FileLedger(str(ledger_dir), node_id=str(node.context.node_id)).load(fingerprint)
    raw = node.get("dp-ledger")
    if raw:
        return PrivacyLedger.from_bytes(raw, dataset=fingerprint)
    return PrivacyLedger(dataset=fingerprint, node_id=str(node.context.node_id))


def _save(node: NodeState, ledger: PrivacyLedger) -> None:
    ledger_dir = node.context.node_config.get("ledger-dir")
    if ledger_dir:
        FileLedger(str(ledger_dir), node_id=str(node.context.node_id)).save(ledger)
    else:
        node.set("dp-ledger", ledger.to_bytes())


def dp_settings_or_decline(
    node: NodeState, cfg: DictConfig, *, n: int, fingerprint: str, round_: int,
    num_features: int = 0,
) -> tuple[DPSettings | None, float]:
    """DP settings for this round, or ``(None, epsilon_so_far)`` if it cannot be paid.

    Sigma is calibrated ONCE per run for the worst case (this client sampled in every
    round: ``rounds x local steps``) and cached in the node state; the budget check uses
    the ledger (every event already spent on this dataset) plus this round's planned
    event, so a node never exceeds its target even across runs.
    """
    pr = cfg.privacy
    sch = local_schedule(num_examples=n, batch_size=int(cfg.client.batch_size),
                         epochs=int(cfg.client.epochs))
    sigma = node.get("dp-sigma")
    if sigma is None:
        if pr.noise_multiplier is not None:
            sigma = float(pr.noise_multiplier)
        else:
            sigma = noise_multiplier_for(
                target_epsilon=float(pr.epsilon), delta=float(pr.delta),
                sample_rate=sch.sample_rate, steps=int(cfg.federation.rounds) * sch.steps)
        node.set("dp-sigma", float(sigma))
    ledger = _ledger(node, fingerprint)
    planned = PrivacyEvent(noise_multiplier=float(sigma), sample_rate=sch.sample_rate,
                           steps=sch.steps, round=round_)
    if not ledger.can_afford(planned, target_epsilon=_target(cfg), delta=float(pr.delta)):
        return None, ledger.epsilon(delta=float(pr.delta)) if len(ledger) else 0.0
    settings = DPSettings(noise_multiplier=float(sigma), max_grad_norm=float(pr.max_grad_norm),
                          grad_sample_mode=choose_grad_sample_mode(
                              str(pr.grad_sample_mode), model=str(cfg.model.name),
                              num_features=num_features),
                          secure_mode=bool(pr.secure_mode))
    return settings, ledger.epsilon(delta=float(pr.delta)) if len(ledger) else 0.0


def record_round(
    node: NodeState, cfg: DictConfig, dp: DPSettings, res: LocalResult, *,
    fingerprint: str, round_: int
) -> float:
    """Record what the round actually spent (before the reply leaves); return epsilon."""
    ledger = _ledger(node, fingerprint)
    if res.steps > 0:
        ledger.record(PrivacyEvent(noise_multiplier=dp.noise_multiplier,
                                   sample_rate=res.sample_rate, steps=res.steps, round=round_))
    _save(node, ledger)
    return ledger.epsilon(delta=float(cfg.privacy.delta)) if len(ledger) else 0.0
