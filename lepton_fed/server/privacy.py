"""Server-side privacy bookkeeping: central-DP noise and accounting, and the run's
privacy summary (per-client DP-SGD epsilons reported by the nodes' ledgers, under
both accountants when the nodes' policies let them send both, and the DP-SGD
hyperparameters the nodes chose themselves: ``privacy.auto``).

Central-DP noise comes from OS entropy (:class:`~lepton_fed.privacy.noise.OSNoise`;
``privacy.secure_mode``: :class:`~lepton_fed.privacy.noise.SecureNoise`), never from
``cfg.seed``, which every member receives with the config. ``privacy.reproducible``
(simulation only) seeds it per round from ``cfg.seed`` and warns.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import numpy as np
from omegaconf import DictConfig

from lepton_fed.errors import ConfigError
from lepton_fed.privacy.noise import REPRODUCIBLE_RISK, check_noise_config, noise_source
from lepton_fed.privacy.pld import ACCOUNTANTS, run_accountant
from lepton_fed.utils.seed import derive_seed

__all__ = ["ServerPrivacy"]

log = logging.getLogger(__name__)

_NOISE = {
    "os": "CSPRNG keyed from OS entropy (one Box-Muller Gaussian per value)",
    "secure": "CSPRNG keyed from OS entropy, floating-point-attack-hardened Gaussians "
              "(sum of 4 draws / 2)",
    "seeded": "SEEDED from the run seed (privacy.reproducible): predictable by anyone "
              "who knows the config; research simulation only",
}


class ServerPrivacy:
    """Central DP (``privacy=central``): noise std ``noise_multiplier * clip`` on the SUM
    of the m clipped updates, then divided by m -- valid whether the server sees the
    individual updates or only their sum (secure aggregation). Accounting: one Gaussian
    release per round with no sampling amplification (conservative), composed over
    rounds with an RDP accountant.
    """

    def __init__(self, cfg: DictConfig) -> None:
        self.cfg = cfg
        self.mode = str(cfg.privacy.mode)
        self.delta = cfg.privacy.delta
        self.noise_multiplier: float | None = None
        self.accountant: Any = None
        #: privacy=distributed: the run's SecureAggregator (it counts the sums it unmasked)
        self.distributed: Any = None
        self.accountant_name = run_accountant(cfg)
        # per accountant, per node: the largest epsilon its replies reported
        self.node_eps: dict[str, dict[str, float]] = {a: {} for a in ACCOUNTANTS}
        self.node_auto: dict[str, dict[str, float]] = {}  # node -> DP settings it chose
        problems = check_noise_config(cfg)
        if problems:
            raise ConfigError(problems)
        self.secure_mode = bool(cfg.privacy.get("secure_mode", False))
        self.reproducible = bool(cfg.privacy.get("reproducible", False))
        if self.reproducible and self.mode != "none":
            log.warning(REPRODUCIBLE_RISK)
        if self.mode == "central":
            from lepton_fed.privacy.analysis import central_noise_multiplier_for
            from lepton_fed.privacy.central import CentralAccountant

            z = cfg.privacy.noise_multiplier
            if cfg.privacy.epsilon is not None:
                z = central_noise_multiplier_for(
                    target_epsilon=float(cfg.privacy.epsilon), delta=float(self.delta),
                    rounds=int(cfg.federation.rounds), accountant=self.accountant_name)
            self.noise_multiplier = float(z)
            self.accountant = CentralAccountant(
                delta=float(self.delta), population_size=int(cfg.federation.num_clients),
                accountant=self.accountant_name)

    def noisy_mean(self, total: np.ndarray, rnd: int) -> np.ndarray:
        """Noised sum of clipped updates divided by the PLANNED cohort size.

        Dividing by the planned ``clients_per_round`` (not the number that replied) keeps
        the sensitivity at ``clip / clients_per_round`` whatever dropped out.
        """
        from lepton_fed.privacy.central import add_gaussian_noise

        source = noise_source(
            secure_mode=self.secure_mode, reproducible=self.reproducible,
            seed=derive_seed(self.cfg.seed, "central-noise", rnd) if self.reproducible else None)
        noisy = add_gaussian_noise(total, noise_multiplier=float(self.noise_multiplier or 0.0),
                                   clip=float(self.cfg.privacy.clip), rng=source)
        return noisy / int(self.cfg.federation.clients_per_round)

    def account_release(self, num_clients: int) -> None:
        """Record one released aggregate (central DP)."""
        if self.accountant is not None:
            self.accountant.step(noise_multiplier=float(self.noise_multiplier or 0.0),
                                 num_clients=num_clients)

    def observe(self, node: str, metrics: Mapping[str, Any]) -> None:
        """Take the DP figures of one train reply (whatever its node's policy let it
        send in the clear): ``epsilon-rdp`` / ``epsilon-pld`` and the ``dp-*`` settings
        the node chose (:func:`lepton_fed.client.dp.dp_report`)."""
        for a in ACCOUNTANTS:
            v = metrics.get(f"epsilon-{a}")
            if isinstance(v, int | float) and not isinstance(v, bool):
                self.node_eps[a][node] = max(self.node_eps[a].get(node, 0.0), float(v))
        chosen = {k[3:]: float(v) for k, v in metrics.items()
                  if k.startswith("dp-") and isinstance(v, int | float)
                  and not isinstance(v, bool)}
        if chosen:
            self.node_auto[node] = chosen

    def epsilon(self, per_client: dict[str, float]) -> float | None:
        """Epsilon spent so far: max over clients (dpsgd), the server's (central), or that
        of the distributed-noise sums unmasked so far (distributed)."""
        if self.mode == "dpsgd":
            return max(per_client.values()) if per_client else 0.0
        if self.mode == "central" and self.accountant is not None:
            return float(self.accountant.epsilon)
        if self.mode == "distributed" and self.distributed is not None:
            eps = self.distributed.ddp_epsilon()
            return None if eps is None else float(eps)
        return None

    def summary(self, per_client: dict[str, float], stopped: dict[str, int]) -> dict[str, Any]:
        """The ``privacy`` block of summary.json."""
        out: dict[str, Any] = {
            "mode": self.mode, "epsilon": self.epsilon(per_client),
            "delta": self.delta, "target_epsilon": self.cfg.privacy.epsilon,
            "reproducible": self.reproducible,
        }
        if self.mode in ("dpsgd", "central"):  # distributed DP accounts on its own (below)
            out |= {"accountant": self.accountant_name, "epsilons": self._epsilons(per_client)}
        if self.mode != "none":
            name = "seeded" if self.reproducible else "secure" if self.secure_mode else "os"
            out |= {"secure_mode": self.secure_mode, "noise": _NOISE[name]}
        if self.mode == "dpsgd":
            from lepton_fed.privacy.auto import auto_summary

            out |= {"per_client": dict(sorted(per_client.items())),
                    "stopped_clients": stopped, "max_grad_norm": self.cfg.privacy.max_grad_norm,
                    "grad_sample_mode": self.cfg.privacy.grad_sample_mode,
                    "auto": auto_summary(self.cfg, self.node_auto)}
        if self.mode == "distributed" and self.distributed is not None:
            plan = self.distributed.ddp
            out |= {"plan": plan.to_dict() if plan is not None else None,
                    "releases": self.distributed.ddp_releases, "clip": self.cfg.privacy.clip,
                    "noise": "each node's discrete Gaussian share from its own CSPRNG, inside "
                             "the secure sum; the server adds none and cannot remove any",
                    "accounting": "Kairouz-Liu-Steinke 2021 Prop. 14 zCDP per round, composed "
                                  "with dp-accounting's RDP accountant, no sampling "
                                  "amplification",
                    "trusted": "secure aggregation (the server must not fake dropouts after "
                               "the masked inputs to unmask a sum with fewer noise shares)"}
        if self.mode == "central":
            out |= {"noise_multiplier": self.noise_multiplier, "clip": self.cfg.privacy.clip,
                    "accounting": f"{self.accountant_name}, Gaussian mechanism per round, "
                                  "no sampling amplification"}
        return out

    def _epsilons(self, per_client: dict[str, float]) -> dict[str, float | None]:
        """Epsilon under each accountant: the server's own (central), or the largest a
        node reported (dpsgd; None when no node's policy let it send that one)."""
        if self.mode == "central" and self.accountant is not None:
            return {a: self.accountant.epsilon_with(a) for a in ACCOUNTANTS}
        out: dict[str, float | None] = {}
        for a in ACCOUNTANTS:
            seen = dict(self.node_eps[a])
            if a == self.accountant_name:
                seen |= {k: max(v, seen.get(k, 0.0)) for k, v in per_client.items()}
            out[a] = max(seen.values()) if seen else None
        return out
