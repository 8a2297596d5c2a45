"""What a node accepts: a policy the server's config can only tighten.

:class:`NodePolicy` holds the operator's limits (privacy modes, epsilon cap, largest
delta, secure aggregation and its security level, cohort size, model families,
rounds, metrics sent in the clear, trust-on-first-use keys, seeded noise);
:func:`check_request` lists every way a run config breaks them, each as a
:class:`Decline` with a code from :data:`DECLINE_CODES`. Pure: no Flower, no data.
"""

from lepton_fed.policy.check import (
    allowed_clear_metrics,
    check_policy_config,
    check_request,
    check_train_message,
    filter_metrics,
)
from lepton_fed.policy.codes import DECLINE_CODES, Decline
from lepton_fed.policy.model import (
    NodePolicy,
    load_policy,
    open_policy,
    strict_default,
)

__all__ = [
    "DECLINE_CODES",
    "Decline",
    "NodePolicy",
    "allowed_clear_metrics",
    "check_policy_config",
    "check_request",
    "check_train_message",
    "filter_metrics",
    "load_policy",
    "open_policy",
    "strict_default",
]
