"""The typed schema of a run config: one dataclass per config group, in Hydra's ConfigStore.

``conf/config.yaml`` names :class:`Config` (stored as ``base_config``) first in its
defaults list, so every group option, preset and override is merged INTO these typed
nodes. Composition therefore refuses, naming the key, a key the schema does not have
(``+privacy.epsilonn=3``, a typo in a YAML file) and a value of the wrong type
(``federation.rounds=abc``, ``client.lr=fast``); ints are accepted where a float is
expected (and become floats). Option files state only what differs from these defaults
(``conf/secagg/on.yaml`` is ``enabled: true``).

Rules that involve values (ranges, choices, cross-group rules) stay in
:mod:`lepton_fed.config.validate`, which reports them all at once.
``strategy`` is the one open group: its keys are the keyword arguments of its
``_target_`` class, which ``validate`` checks against the class itself.

Importing :mod:`lepton_fed.config` registers the schema (:func:`register`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omegaconf import MISSING

__all__ = [
    "SCHEMA_NAME",
    "AttackConfig",
    "ClientConfig",
    "CompressionConfig",
    "Config",
    "DataConfig",
    "EvaluationConfig",
    "FederationConfig",
    "ModelConfig",
    "NodePolicyConfig",
    "ObserveConfig",
    "PartitionConfig",
    "PrivacyConfig",
    "SecAggConfig",
    "register",
]

#: the ConfigStore name conf/config.yaml lists first in its defaults
SCHEMA_NAME = "base_config"


@dataclass
class DataConfig:
    """``data``: which dataset, and how a table is read (conf/data/)."""

    name: str = MISSING  # breast_cancer | digits | mnist | heart_disease | csv
    path: str | None = None  # a file (csv) or directory (mnist, heart_disease)
    label: str | None = None  # csv: the label column
    features: list[str] | None = None  # csv: feature columns (null: all others)
    categorical: list[str] | None = None  # csv: one-hot (null: every non-numeric)
    silo_column: str | None = None  # csv + partition=natural: one client per value
    test_fraction: float = 0.2  # held-out share of the rows
    # the federation's input contract: a YAML file (or mapping) with label, classes and
    # features; required when the coordinator holds no data (evaluation.server_data=false)
    schema: Any = None


@dataclass
class PartitionConfig:
    """``partition``: how a simulation splits the data over virtual clients."""

    name: str = MISSING  # iid | dirichlet | natural
    alpha: float = 0.5  # dirichlet: smaller = more label skew


@dataclass
class ModelConfig:
    """``model``: a registered model (lepton_fed.models.registry)."""

    name: str = MISSING  # mlp | logreg | cnn | a registered name
    hidden: list[int] | None = None  # mlp: hidden layer widths


@dataclass
class PrivacyConfig:
    """``privacy``: differential privacy (defaults: ``privacy=none``)."""

    mode: str = "none"  # none | dpsgd | central | distributed
    epsilon: float | None = None  # target over the whole run (null: noise_multiplier)
    delta: float | None = None
    max_grad_norm: float | None = None  # dpsgd: per-example clip (null: auto, 1.0)
    noise_multiplier: float | None = None  # null: calibrated from epsilon
    clip: float | None = None  # central/distributed: L2 bound of each update
    grad_sample_mode: str = "auto"  # auto | ew | hooks | functorch | ghost
    # pld (tighter, dp-accounting's privacy loss distributions) | rdp: governs
    # calibration, ledger budget checks and the reported epsilon
    accountant: str = "pld"
    secure_mode: bool = False  # noise hardened against floating-point attacks
    # seed DP noise from the run seed (research simulations only: anyone who knows the
    # config can remove the noise)
    reproducible: bool = False
    # distributed only: rounds with fewer masked inputs are abandoned before unmasking
    # (null: federation.clients_per_round)
    min_contributors: int | None = None
    # distributed only: a round's sum wraps in the 32-bit field with P <= 2^-wrap_bits
    # (null: 40)
    wrap_bits: float | None = None


@dataclass
class SecAggConfig:
    """``secagg``: secure aggregation, SecAgg+ (defaults: ``secagg=off``)."""

    enabled: bool = False
    security_bits: float = 40.0  # P[some honest input exposed in a round] <= 2^-40
    colluding_fraction: float = 0.05  # share of a cohort colluding with the server
    dropout_rate: float = 0.05  # per-node dropout probability the graph tolerates
    correctness_bits: float = 20.0  # P[round aborts, too few live neighbours] <= 2^-20
    neighbours: int | None = None  # k; null = derived per round from the level above
    threshold: int | None = None  # t > k/2; null = derived (nodes refuse weaker)
    clip: float | None = None  # L2 bound on each update; null = privacy.clip or 10
    timeout: float = 120.0  # seconds per stage
    max_weight: float = 10000.0  # example counts / max_weight = weights in [0, 1]
    min_cohort: int = 3  # a round never runs with fewer nodes


@dataclass
class CompressionConfig:
    """``compression``: how client updates travel (defaults: ``compression=none``)."""

    update: str = "none"  # none | int8 | topk
    topk_fraction: float = 0.05  # topk: share of coordinates sent
    block_size: int = 256  # int8: values per scale


@dataclass
class FederationConfig:
    """``federation``: clients, rounds, waits and simulation resources."""

    num_clients: int = 5
    clients_per_round: int = 5
    rounds: int = 10
    num_cpus_per_client: float = 1.0  # Ray resources per virtual client
    num_gpus_per_client: float = 0.0  # > 0 needs CUDA (0.25: 4 clients share a GPU)
    round_timeout: float = 600.0
    # seconds a round's training waits for replies; later replies are discarded and
    # counted as `late` (secagg: a masked input after it is a dropout); null =
    # round_timeout (secagg: secagg.timeout)
    round_deadline: float | None = None
    evaluate_every: int | None = 1
    # seconds to wait for nodes to connect (setup) or for enough eligible nodes (each
    # round); null = round_timeout
    node_wait: float | None = None
    min_clients: int | None = 1  # a round runs with at least this many nodes
    ray_address: str | None = None  # HOST:PORT of a running Ray head (docs/scale.md)
    sim_bundle_dir: str | None = None  # Ray cluster: a directory every machine shares


@dataclass
class ClientConfig:
    """``client``: local training (null: chosen by the node; see lepton_fed/privacy/auto.py)."""

    epochs: int | None = None  # null: 1 without DP; DP: the node's rule
    batch_size: int | None = None  # null: 16 without DP; DP: the rule's
    lr: float | None = None  # null: 0.05 without DP; DP: the rule's
    momentum: float | None = 0.9
    optimizer: str = "sgd"  # sgd | adam


@dataclass
class NodePolicyConfig:
    """``node_policy``: what every virtual node accepts (defaults: ``node_policy=open``).

    A node policy can only be tightened by the server's config, never loosened; real
    nodes never read this group (lepton_fed/policy).
    """

    privacy_modes: list[str] = field(
        default_factory=lambda: ["central", "distributed", "dpsgd", "none"]
    )
    max_epsilon: float | None = None  # cap on privacy.epsilon
    max_delta: float | None = None  # largest privacy.delta
    require_secagg: bool = False  # every train message must be masked
    min_clients_per_round: int = 1  # smallest federation.clients_per_round
    min_security_bits: float | None = None  # smallest secure-aggregation level (bits)
    colluding_fraction: float = 0.05  # share of the cohort assumed to collude
    models: list[str] | None = None  # accepted model.name values; null = any
    max_rounds: int | None = None  # largest federation.rounds; null = any
    clear_metrics: list[str] = field(default_factory=lambda: ["*"])  # "*" = any
    allow_tofu_keys: bool = True  # trust secure-aggregation keys on first use
    allow_reproducible_noise: bool = True  # privacy.reproducible (seeded DP noise)


@dataclass
class AttackConfig:
    """``attack``: malicious virtual clients, simulation only (defaults: ``attack=none``).

    Each attack reads one parameter (sign_flip: ``scale``, scaling: ``factor``,
    gaussian: ``std``); the others stay null.
    """

    name: str = "none"  # none | sign_flip | scaling | label_flip | gaussian
    fraction: float = 0.0  # share of the virtual clients that attack
    scale: float | None = None
    factor: float | None = None
    std: float | None = None


@dataclass
class ObserveConfig:
    """``observe``: TensorBoard, Prometheus and the progress bar."""

    tensorboard: Any = "auto"  # auto (when installed) | true | false
    metrics_port: int | None = None  # Prometheus /metrics port on the coordinator
    metrics_addr: str = "127.0.0.1"
    progress: Any = "auto"  # auto (stdout is a terminal) | true | false


@dataclass
class EvaluationConfig:
    """``evaluation``: where the global model is evaluated."""

    # evaluate on the simulation's held-out split (the server loads the data); false =
    # the coordinator holds no data (a real federation): data.schema declares the input
    # contract and evaluation is federated
    server_data: bool = True
    # nodes evaluate the global model on their own held-out rows and send sums:
    # auto = when the server has no data | true | false
    federated: Any = "auto"


@dataclass
class Config:
    """The whole run config; ``strategy`` holds its class's keyword arguments."""

    data: DataConfig = field(default_factory=DataConfig)
    partition: PartitionConfig = field(default_factory=PartitionConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    strategy: dict[str, Any] = field(default_factory=dict)  # name, _target_, its kwargs
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)
    secagg: SecAggConfig = field(default_factory=SecAggConfig)
    compression: CompressionConfig = field(default_factory=CompressionConfig)
    federation: FederationConfig = field(default_factory=FederationConfig)
    client: ClientConfig = field(default_factory=ClientConfig)
    node_policy: NodePolicyConfig = field(default_factory=NodePolicyConfig)
    attack: AttackConfig = field(default_factory=AttackConfig)
    observe: ObserveConfig = field(default_factory=ObserveConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda (auto = CUDA when present)
    log_level: str = "INFO"
    # RUN_DIR: continue that run after its last checkpointed round (its own config;
    # only federation.rounds, timeouts, device may change)
    resume: str | None = None


def register() -> None:
    """Store :class:`Config` in Hydra's ConfigStore as ``base_config`` (idempotent)."""
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name=SCHEMA_NAME, node=Config, provider="lepton_fed")
