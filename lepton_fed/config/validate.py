"""Config checks that span groups. Every problem is collected; nothing stops at the first.

:func:`check_overrides` looks at command-line overrides before Hydra composes them (so an
unknown group option is reported together with every other problem, with the valid
choices named); :func:`validate` checks a composed config's values and cross-group rules.
Both run before Ray or any training starts.
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf

from lepton_fed.config.paths import GROUPS, conf_dir, group_options
from lepton_fed.errors import ConfigError

__all__ = ["check_overrides", "raise_if", "validate"]

MODES = ("none", "dpsgd", "central", "distributed")
UPDATES = ("none", "int8", "topk")
GRAD_SAMPLE_MODES = ("auto", "ew", "hooks", "functorch", "ghost")
DEVICES = ("auto", "cpu", "cuda")


def check_overrides(overrides: list[str]) -> tuple[list[str], list[str]]:
    """Split overrides into (usable, problems): group choices that do not exist are problems.

    Sweep values (``model=mlp,cnn``) are checked one by one.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser

    usable: list[str] = []
    problems: list[str] = []
    parser = OverridesParser.create()
    for raw in overrides:
        try:
            ov = parser.parse_override(raw)
        except Exception as exc:  # noqa: BLE001 - the grammar error is the message
            problems.append(f"cannot parse override {raw!r}: {exc}")
            continue
        key = ov.key_or_group
        if key in GROUPS and ov.package is None and not ov.is_delete():
            valid = group_options(key)
            values = [str(v) for v in ov.sweep_iterator()] if ov.is_sweep_override() else [
                str(ov.value())
            ]
            bad = [v for v in values if v not in valid]
            if bad:
                problems.append(
                    f"{key}={','.join(bad)}: unknown option; choose one of {valid}"
                )
                continue
        usable.append(raw)
    return usable, problems


def _num(cfg: Any, key: str) -> Any:
    return OmegaConf.select(cfg, key, default=None)


#: groups whose numbers have checks of their own (attack_problems, the node policy's)
_OWN_CHECKS = ("attack", "node_policy")


def _typed() -> tuple[tuple[str, str, bool], ...]:
    """Every numeric setting of the schema, the type it must have before any check
    compares it: (key, "int": a whole number | "num": any real number, nullable);
    bools are neither."""
    from lepton_fed.config.schema_check import numeric_settings

    return numeric_settings(_OWN_CHECKS)


def _type_problems(cfg: DictConfig) -> list[str]:
    """Every numeric setting whose value is not a number (checked before any comparison,
    so ``client.lr=abc`` is named, not a TypeError)."""
    out = []
    for key, kind, nullable in _typed():
        v = OmegaConf.select(cfg, key, default=None)
        if v is None:
            if not nullable and OmegaConf.select(cfg, key, default="<absent>") is None:
                out.append(f"{key} must be a number, got null")
            continue
        ok = not isinstance(v, bool) and (isinstance(v, int) if kind == "int"
                                          else isinstance(v, int | float))
        if not ok:
            want = "a whole number" if kind == "int" else "a number"
            out.append(f"{key} must be {want}, got {v!r}")
    return out


#: whole-number settings whose impossible values are named even when another setting has
#: the wrong type (the checks that compare values are skipped then)
_COUNTS = (("federation.rounds", "a positive integer"),
           ("federation.num_clients", "a positive integer"),
           ("federation.clients_per_round", "a positive integer"),
           ("client.epochs", "an integer >= 1 or null (auto)"))


def _count_problems(cfg: DictConfig) -> list[str]:
    out = []
    for key, want in _COUNTS:
        v = _num(cfg, key)
        if isinstance(v, int) and not isinstance(v, bool) and v < 1:
            out.append(f"{key} must be {want}, got {v!r}")
    return out


def validate(cfg: DictConfig, *, deployment: bool = False, engine: str = "ray") -> list[str]:
    """Every semantic problem with a composed config (empty list = valid).

    Settings of the wrong type are reported first, all at once, before anything compares
    them. ``deployment=True`` (a real federation's coordinator) also refuses what only a
    simulation may do (seeded DP noise, simulated attackers, a Ray cluster). ``engine``:
    what runs the simulation, ``"ray"`` (Flower's Ray engine, the command line's) or
    ``"in-process"`` (``lepton_fed.simulate(in_process=True)``); the Ray settings
    (``federation.ray_address``, GPUs per client) are checked against it.
    """
    typed = _type_problems(cfg)
    if typed:  # nothing else compares values; an impossible count is still named
        return typed + _count_problems(cfg)
    from lepton_fed.data.datasets import check_source

    p: list[str] = []
    fed = cfg.federation
    n, k, r = fed.num_clients, fed.clients_per_round, fed.rounds
    if not isinstance(r, int) or r < 1:
        p.append(f"federation.rounds must be a positive integer, got {r}")
    if not isinstance(n, int) or n < 1:
        p.append(f"federation.num_clients must be a positive integer, got {n}")
    if not isinstance(k, int) or k < 1:
        p.append(f"federation.clients_per_round must be a positive integer, got {k}")
    elif isinstance(n, int) and k > n:
        p.append(
            f"federation.clients_per_round ({k}) cannot exceed federation.num_clients ({n})"
        )
    ev = _num(cfg, "federation.evaluate_every")
    if ev is not None and (not isinstance(ev, int) or ev < 1):
        p.append(f"federation.evaluate_every must be a positive integer, got {ev}")
    if _num(cfg, "federation.num_cpus_per_client") is not None and fed.num_cpus_per_client <= 0:
        p.append("federation.num_cpus_per_client must be > 0")
    from lepton_fed.config.engine import engine_problems

    p += engine_problems(cfg, "deployment" if deployment else engine)
    c = cfg.client
    from lepton_fed.privacy.auto import check_auto_config
    from lepton_fed.privacy.pld import check_accountant_config

    p += check_auto_config(cfg)  # client.epochs/batch_size/lr, privacy.max_grad_norm: null = auto
    p += check_accountant_config(cfg)
    if c.optimizer not in ("sgd", "adam"):
        p.append(f"client.optimizer={c.optimizer!r}: choose one of ['adam', 'sgd']")
    if cfg.device not in DEVICES:
        p.append(f"device={cfg.device!r}: choose one of {list(DEVICES)}")
    elif cfg.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            p.append("device=cuda but CUDA is not available here; use device=auto or device=cpu")
    if not isinstance(cfg.seed, int):
        p.append(f"seed must be an integer, got {cfg.seed!r}")

    d = cfg.data
    server_data = _num(cfg, "evaluation.server_data")
    server_data = True if server_data is None else server_data
    if server_data:
        p += check_source(d.name, d.path, d.label)
    p += _contract_problems(cfg, bool(server_data))
    fe = _num(cfg, "evaluation.federated")
    if fe is not None and str(fe).lower() not in ("auto", "true", "false"):
        p.append(f"evaluation.federated={fe!r}: choose one of ['auto', 'false', 'true']")
    nw = _num(cfg, "federation.node_wait")
    if nw is not None and (isinstance(nw, bool) or not isinstance(nw, int | float) or nw <= 0):
        p.append(f"federation.node_wait must be a positive number of seconds or null, got {nw}")
    rd = _num(cfg, "federation.round_deadline")
    if rd is not None and not 0 < rd < float("inf"):
        p.append(f"federation.round_deadline must be a positive number of seconds or null, got {rd}")
    mc = _num(cfg, "federation.min_clients")
    if mc is not None and (not isinstance(mc, int) or mc < 1):
        p.append(f"federation.min_clients must be a positive integer, got {mc}")
    elif mc is not None and isinstance(k, int) and mc > k:
        p.append(f"federation.min_clients ({mc}) cannot exceed federation.clients_per_round ({k})")
    if not 0 < d.test_fraction < 1:
        p.append(f"data.test_fraction must be in (0, 1), got {d.test_fraction}")
    if cfg.partition.name == "dirichlet" and not cfg.partition.alpha > 0:
        p.append(f"partition.alpha must be > 0, got {cfg.partition.alpha}")
    if cfg.partition.name == "natural" and d.name not in ("heart_disease", "csv"):
        p.append(
            f"partition=natural needs data with natural silos (heart_disease, or csv with "
            f"data.silo_column); data={d.name} has none"
        )
    if cfg.partition.name == "natural" and d.name == "heart_disease" and n != 4:
        p.append(f"partition=natural on heart_disease has 4 hospitals: set federation.num_clients=4 (got {n})")
    if cfg.partition.name == "natural" and d.name == "csv" and not d.silo_column:
        p.append("partition=natural with data=csv needs data.silo_column")
    from lepton_fed.models.registry import available_models

    if cfg.model.name not in available_models():
        p.append(f"model.name={cfg.model.name}: unknown model; registered models are "
                 f"{available_models()}")
    if cfg.model.name == "cnn" and d.name in ("breast_cancer", "csv", "heart_disease"):
        p.append(f"model=cnn needs image data (digits, mnist); data={d.name} is tabular")

    p += _strategy_problems(cfg)
    pr = cfg.privacy
    if pr.mode not in MODES:
        p.append(f"privacy.mode={pr.mode!r}: choose one of {list(MODES)}")
    if pr.mode != "none":
        if pr.delta is None or not 0 < pr.delta < 1:
            p.append(f"privacy.delta must be in (0, 1), got {pr.delta}")
        if pr.epsilon is not None and not pr.epsilon > 0:
            p.append(f"privacy.epsilon must be > 0, got {pr.epsilon}")
    if pr.mode == "dpsgd":
        if pr.epsilon is None and pr.noise_multiplier is None:
            p.append("privacy=dpsgd needs privacy.epsilon (a target) or privacy.noise_multiplier")
        if pr.grad_sample_mode not in GRAD_SAMPLE_MODES:
            p.append(
                f"privacy.grad_sample_mode={pr.grad_sample_mode!r}: choose one of {list(GRAD_SAMPLE_MODES)}"
            )
    if pr.mode == "central":
        if pr.clip is None or not pr.clip > 0:
            p.append(f"privacy.clip must be > 0 for privacy=central, got {pr.clip}")
        if pr.epsilon is None and (pr.noise_multiplier is None or not pr.noise_multiplier > 0):
            p.append("privacy=central needs privacy.noise_multiplier > 0 or a target privacy.epsilon")
        if _sums_only(cfg) is False:
            p.append(
                f"privacy=central needs a mean-based strategy ({'/'.join(_sum_strategies())}); "
                f"strategy={cfg.strategy.name} ({cfg.strategy._target_}) does not declare that "
                "it aggregates from the mean of the updates alone (secagg_compatible = True), so "
                "the noise calibration would not hold"
            )
    if pr.mode == "distributed":
        from lepton_fed.privacy.distributed_config import check_distributed_config

        p += check_distributed_config(cfg)
    sa = cfg.secagg
    if sa.enabled:
        if _sums_only(cfg) is False:
            p.append(
                f"secagg=on cannot be combined with strategy={cfg.strategy.name} "
                f"({cfg.strategy._target_}): secure aggregation reveals only the sum of the "
                "updates, and this class does not declare that it aggregates from the sum alone "
                f"(secagg_compatible = True); use {', '.join(_sum_strategies())}"
            )
        mcoh = sa.get("min_cohort", 3)
        if not isinstance(mcoh, int) or mcoh < 3:
            p.append(f"secagg.min_cohort must be an integer >= 3, got {mcoh}")
        elif isinstance(k, int) and k < mcoh:
            p.append(f"secagg=on needs at least secagg.min_cohort={mcoh} clients per round, "
                     f"got {k}")
        from lepton_fed.secagg.settings import check_secagg_config

        p += check_secagg_config(cfg)
        if sa.clip is not None and not sa.clip > 0:
            p.append(f"secagg.clip must be > 0, got {sa.clip}")
        if cfg.compression["update"] != "none":
            p.append(
                f"compression.update={cfg.compression['update']} cannot be combined with secagg=on: "
                "the secure-aggregation field encoding (<= 4 bytes/parameter) is the compression; "
                "use compression=none"
            )
    from lepton_fed.policy import check_policy_config
    from lepton_fed.privacy.noise import check_noise_config

    p += check_policy_config(cfg)
    p += check_noise_config(cfg, deployment=deployment)
    from lepton_fed.observe.factory import check_observe_config

    p += check_observe_config(cfg)
    from lepton_fed.config.attack import attack_problems

    p += attack_problems(cfg)
    p += _unused_problems(cfg)
    if deployment and str(OmegaConf.select(cfg, "attack.name", default="none")) != "none":
        p.append("attack: simulated attackers are for simulations only; use attack=none")
    if cfg.compression["update"] not in UPDATES:
        p.append(f"compression.update={cfg.compression['update']!r}: choose one of {list(UPDATES)}")
    if not 0 < cfg.compression.topk_fraction <= 1:
        p.append(f"compression.topk_fraction must be in (0, 1], got {cfg.compression.topk_fraction}")
    return p


def _unused_problems(cfg: DictConfig) -> list[str]:
    """Settings the chosen option never reads, set anyway (the schema holds every
    option's keys, so these compose): another attack's parameter, a
    ``privacy=distributed`` setting in another mode."""
    from lepton_fed.config.attack import ATTACKS

    p: list[str] = []
    name = _num(cfg, "attack.name")
    if name in ATTACKS:
        mine = ATTACKS[name]
        for param in sorted({a[0] for a in ATTACKS.values() if a is not None}):
            if _num(cfg, f"attack.{param}") is not None and (mine is None or mine[0] != param):
                uses = f"its setting is attack.{mine[0]}" if mine else "it has no parameter"
                p.append(f"attack.{param} is not a setting of attack={name} ({uses}); "
                         f"set attack.{param}=null or choose the attack that reads it")
    mode = _num(cfg, "privacy.mode")
    if mode in MODES and mode != "distributed":
        for key in ("min_contributors", "wrap_bits"):
            if _num(cfg, f"privacy.{key}") is not None:
                p.append(f"privacy.{key} is a setting of privacy=distributed only "
                         f"(privacy={mode} never reads it); set privacy.{key}=null")
    return p


def _contract_problems(cfg: DictConfig, server_data: bool) -> list[str]:
    """The federation's declared schema: valid when given, present when the server has no
    data (only the bundled datasets imply theirs)."""
    from lepton_fed.data.contract import load_schema

    src = OmegaConf.select(cfg, "data.schema", default=None)
    if src is None:
        if server_data or cfg.data.name in ("breast_cancer", "digits"):
            return []
        return ["data.schema: a federation whose coordinator holds no data "
                "(evaluation.server_data=false) needs a declared schema: a YAML file with "
                "label, classes and features (docs/deploy.md)"]
    try:
        load_schema(src if isinstance(src, str) else OmegaConf.to_container(src, resolve=True))  # type: ignore[arg-type]
    except ValueError as exc:
        return [f"data.schema: {exc}"]
    return []


def _strategy_problems(cfg: DictConfig) -> list[str]:
    """Every ``strategy.*`` setting must be a keyword of the ``_target_`` class."""
    import importlib
    import inspect

    target = OmegaConf.select(cfg, "strategy._target_")
    if not target:
        return [f"strategy={cfg.strategy.get('name')}: the config has no _target_ class"]
    mod, _, name = str(target).rpartition(".")
    try:
        cls = getattr(importlib.import_module(mod), name)
    except (ImportError, AttributeError) as exc:
        return [f"strategy._target_={target}: cannot be imported ({exc})"]
    params = {
        n for c in cls.__mro__ if "__init__" in c.__dict__
        for n in inspect.signature(c.__init__).parameters if n not in ("self", "args", "kwargs")
    }
    return [
        f"strategy.{k}: not a setting of strategy={cfg.strategy.name} ({target}); its "
        f"settings are {sorted(params - _MANAGED)}"
        for k in cfg.strategy if k not in ("name", "_target_") and k not in params
    ]


def _strategy_class(target: object) -> type | None:
    """The class ``strategy._target_`` names, or None (reported by _strategy_problems)."""
    import importlib

    mod, _, name = str(target or "").rpartition(".")
    try:
        cls = getattr(importlib.import_module(mod), name)
    except (ImportError, AttributeError, ValueError):
        return None
    return cls if isinstance(cls, type) else None


def _sums_only(cfg: DictConfig) -> bool | None:
    """Whether the strategy aggregates from the sum of client updates alone (what secure
    aggregation reveals and central DP noises): its class attribute ``secagg_compatible``
    (strategies/); a class that does not set it is taken as False. None: no class."""
    cls = _strategy_class(OmegaConf.select(cfg, "strategy._target_"))
    return None if cls is None else getattr(cls, "secagg_compatible", None) is True


def _sum_strategies() -> list[str]:
    """The strategy options (conf/strategy/) whose class sets ``secagg_compatible = True``."""
    out = []
    for option in group_options("strategy"):
        node = OmegaConf.load(conf_dir() / "strategy" / f"{option}.yaml")
        cls = _strategy_class(OmegaConf.select(node, "_target_"))
        if cls is not None and getattr(cls, "secagg_compatible", None) is True:
            out.append(option)
    return out


# strategy arguments the round loop sets itself from federation.* and privacy.*
_MANAGED = {"fraction_train", "min_train_nodes", "min_available_nodes", "fraction_evaluate",
            "weighted_by_key", "min_evaluate_nodes", "arrayrecord_key", "configrecord_key",
            "train_metrics_aggr_fn", "evaluate_metrics_aggr_fn"}


def raise_if(problems: list[str]) -> None:
    """Raise one :class:`ConfigError` listing every problem, if there are any."""
    if problems:
        raise ConfigError(problems)
