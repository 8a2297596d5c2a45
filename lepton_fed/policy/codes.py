"""Why a node declines: a fixed set of short codes and the :class:`Decline` record.

A code names the rule that failed; :attr:`Decline.detail` says which config key broke
which policy limit. Neither ever carries anything derived from the node's data, so a
decline can be sent to the server as it is.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "BUDGET_EXHAUSTED",
    "COHORT_SIZE",
    "DECLINE_CODES",
    "DELTA",
    "EPSILON_CAP",
    "LEDGER_REQUIRED",
    "MALFORMED_REQUEST",
    "MODEL",
    "PRIVACY_MODE",
    "REPRODUCIBLE_NOISE",
    "ROUNDS",
    "SECAGG_REQUIRED",
    "SECURITY_LEVEL",
    "TOFU_KEYS",
    "Decline",
]

PRIVACY_MODE = "PRIVACY_MODE"
EPSILON_CAP = "EPSILON_CAP"
DELTA = "DELTA"
SECAGG_REQUIRED = "SECAGG_REQUIRED"
COHORT_SIZE = "COHORT_SIZE"
SECURITY_LEVEL = "SECURITY_LEVEL"
MODEL = "MODEL"
ROUNDS = "ROUNDS"
REPRODUCIBLE_NOISE = "REPRODUCIBLE_NOISE"
TOFU_KEYS = "TOFU_KEYS"
MALFORMED_REQUEST = "MALFORMED_REQUEST"
BUDGET_EXHAUSTED = "BUDGET_EXHAUSTED"
LEDGER_REQUIRED = "LEDGER_REQUIRED"

#: Every code a node may decline with, and what it means. The set is closed: code
#: that declines uses one of these constants.
DECLINE_CODES: dict[str, str] = {
    PRIVACY_MODE: "privacy.mode is not one of the modes the node's policy allows",
    EPSILON_CAP: "privacy.epsilon is missing (no budget) or above the policy's cap",
    DELTA: "privacy.delta is missing or above the policy's largest delta",
    SECAGG_REQUIRED: "the policy requires secure aggregation and the request "
    "(config or train message) does not use it",
    COHORT_SIZE: "federation.clients_per_round is below the policy's minimum cohort",
    SECURITY_LEVEL: "the secure-aggregation security level is unknown or below the "
    "policy's minimum (bits, for the policy's colluding fraction)",
    MODEL: "model.name is not a model family the policy accepts",
    ROUNDS: "federation.rounds is above the policy's largest number of rounds",
    REPRODUCIBLE_NOISE: "privacy.reproducible asks for seeded DP noise and the "
    "policy forbids it",
    TOFU_KEYS: "the request trusts secure-aggregation keys on first use and the "
    "policy forbids it",
    MALFORMED_REQUEST: "a config value the policy checks is missing or of the wrong type",
    BUDGET_EXHAUSTED: "the node's privacy ledger cannot pay for the round",
    LEDGER_REQUIRED: "a real node (node_config data-path) has no ledger-dir, so its "
    "spend would not survive a restart",
}


@dataclass(frozen=True)
class Decline:
    """One reason to refuse a request.

    Attributes:
        code: one of :data:`DECLINE_CODES`.
        detail: one sentence naming the config key and the policy limit; never data.
    """

    code: str
    detail: str

    def __post_init__(self) -> None:
        if self.code not in DECLINE_CODES:
            raise ValueError(
                f"unknown decline code {self.code!r}; choose one of {sorted(DECLINE_CODES)}"
            )
