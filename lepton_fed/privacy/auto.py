"""DP-SGD defaults that work: the training hyperparameters a node picks for itself when
``privacy=dpsgd`` and the user left them unset (``null`` in the config).

The rule (:func:`choose`) uses only what the node knows before training and what the
run config says (its number of training rows n, ``federation.rounds`` R, the model
family and the optimizer's momentum); the target epsilon enters through sigma, which
is calibrated for the chosen schedule afterwards as always. Any value the user sets
wins, key by key. Keys (``null`` = auto): ``client.batch_size``, ``client.epochs``,
``client.lr``, ``privacy.max_grad_norm``.

1. **Full batch** (Poisson rate q = 1) up to :data:`MAX_BATCH` rows, else batches of
   :data:`MAX_BATCH`. For a fixed number of steps, the noise on the mean gradient,
   sigma / (q n), is smallest at q = 1 and grows as q shrinks (PLD, epsilon 3, 64
   steps, n = 72: 0.155 at q = 1, 0.167 at q = 1/4, 0.27 at q = 1/20): subsampling buys
   compute, not accuracy (De et al. 2022; Sander et al. 2023 "TAN without a burn";
   Ponomareva et al. 2023 "How to DP-fy ML", section 5).
2. **Local steps**: about :data:`TOTAL_STEPS` steps over the run,
   ``K = clamp(round(64 / R), 1, 16)`` per round (whole epochs). With full batches the
   noise-to-signal ratio of a run does not depend on K (sigma grows as sqrt(R K), the
   K steps' signal adds up linearly and their noise as sqrt(K)), so a few larger-batch
   steps per round trade nothing for a smoother path.
3. **Clip** C = :data:`CLIP` = 1: below the per-example gradient norms of standardized
   inputs at the start of training, so nearly every gradient is clipped and the step is
   a normalized gradient (Li et al. 2022; De et al. 2022); only lr x C then matters.
   A data-dependent clip (a quantile of the node's gradient norms, Andrew et al. 2021)
   would need its own privatized estimate and is not used.
4. **Learning rate** from a path length: the run moves each parameter vector by at most
   ``L = lr x C x D(K, m) x R`` (D: the momentum-weighted number of steps in a round,
   :func:`momentum_gain`); once near the optimum, further path only adds noise, so L is
   fixed per model family (:data:`PATH`: 40 for logistic regression, 16 for the
   MLP/CNN) and ``lr = L / (C x D(K, m) x R)``.

Measured here (in-process federations, ``benchmarks/privacy_utility.py``): the targets
and the grid this rule was fitted on are in the closing notes of issue 13 and in
``benchmarks/results/privacy_utility.json``. The rule is tuned for SGD; with
``client.optimizer=adam`` an unset lr takes :data:`ADAM_LR` (not tuned).

Leaks: the choice depends on n (batch size, steps per epoch), so the chosen values are
sent only as the node's policy allows (``dp-*`` metrics), like every metric.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "AUTO_KEYS",
    "CLIP",
    "MAX_BATCH",
    "PATH",
    "PLAIN",
    "TOTAL_STEPS",
    "DPChoice",
    "auto_summary",
    "check_auto_config",
    "choice_for",
    "choose",
    "momentum_gain",
]

#: Config keys the rule fills when they are null.
AUTO_KEYS = ("client.batch_size", "client.epochs", "client.lr", "privacy.max_grad_norm")
#: Largest Poisson batch the rule picks (compute bound; above it q = 1/ceil(n/1024)).
MAX_BATCH = 1024
#: Steps over the whole run the rule aims at, and the most per round.
TOTAL_STEPS = 64
MAX_LOCAL_STEPS = 16
#: Per-example clipping norm.
CLIP = 1.0
#: Path length L (in units of the clip) a run may move the weights, per model family.
PATH: dict[str, float] = {"logreg": 40.0, "mlp": 16.0, "cnn": 16.0}
_PATH_OTHER = 16.0
#: Whether an auto lr decays linearly over the rounds (:meth:`DPChoice.lr_at`).
DECAY = True
#: lr for an unset ``client.lr`` with ``client.optimizer=adam`` (not tuned).
ADAM_LR = 0.01
#: Values a null key takes WITHOUT DP (the pre-rule defaults).
PLAIN: dict[str, Any] = {"batch_size": 16, "epochs": 1, "lr": 0.05}


@dataclass(frozen=True)
class DPChoice:
    """The DP-SGD hyperparameters of one node for one run.

    Attributes:
        batch_size: expected Poisson batch (q = 1/ceil(n / batch_size)).
        epochs: local passes per round.
        lr: learning rate.
        max_grad_norm: per-example clipping norm C.
        local_steps: optimizer steps per round the schedule gives.
        auto: the config keys the rule filled (the others were set by the user).
    """

    batch_size: int
    epochs: int
    lr: float
    max_grad_norm: float
    local_steps: int
    auto: tuple[str, ...]

    def as_metrics(self) -> dict[str, float]:
        """``dp-*`` reply metrics (sent only as the node's policy allows)."""
        return {"dp-batch-size": float(self.batch_size), "dp-epochs": float(self.epochs),
                "dp-lr": self.lr, "dp-clip": self.max_grad_norm,
                "dp-local-steps": float(self.local_steps)}

    def lr_at(self, rnd: int, rounds: int) -> float:
        """The learning rate of round ``rnd`` (1-based) of ``rounds``: an lr the rule
        chose decays linearly, ``lr x 2 (R - r + 1) / (R + 1)`` (mean ``lr`` over the
        run, so the path length is kept); a user-set lr is constant. The last rounds'
        noise moves the released model least (:data:`DECAY`)."""
        if "client.lr" not in self.auto or not DECAY:
            return self.lr
        r = min(max(int(rnd), 1), int(rounds))
        return self.lr * 2.0 * (rounds - r + 1) / (rounds + 1)

    def describe(self) -> str:
        """One log line."""
        chosen = ", ".join(self.auto) or "none (all set by the user)"
        return (f"DP-SGD settings: batch {self.batch_size}, {self.epochs} epoch(s) = "
                f"{self.local_steps} step(s)/round, lr {self.lr:.4g}, clip "
                f"{self.max_grad_norm:g}; chosen by lepton_fed.privacy.auto: {chosen}")


def momentum_gain(steps: int, momentum: float) -> float:
    """D(K, m) = sum_{k=1..K} (1 - m^k) / (1 - m): how far K heavy-ball steps of unit
    gradient move (K when m = 0)."""
    if momentum <= 0.0:
        return float(steps)
    m = float(momentum)
    return (steps - m * (1.0 - m**steps) / (1.0 - m)) / (1.0 - m)


def _steps_per_epoch(n: int, batch: int) -> int:
    from lepton_fed.privacy.analysis import local_schedule

    return local_schedule(num_examples=n, batch_size=batch, epochs=1).steps_per_epoch


def choose(
    *, n: int, rounds: int, model: str, momentum: float = 0.0, optimizer: str = "sgd",
    batch_size: int | None = None, epochs: int | None = None, lr: float | None = None,
    max_grad_norm: float | None = None,
) -> DPChoice:
    """The rule of the module docstring; every argument that is not None wins.

    Deterministic: the same inputs give the same choice on every node and run.

    Raises:
        ValueError: ``n`` or ``rounds`` below 1.
    """
    if n < 1 or rounds < 1:
        raise ValueError(f"n and rounds must be >= 1; got n={n}, rounds={rounds}")
    auto: list[str] = []
    if batch_size is None:
        batch_size = min(n, MAX_BATCH)
        auto.append("client.batch_size")
    per_epoch = _steps_per_epoch(n, int(batch_size))
    if epochs is None:
        k = min(max(round(TOTAL_STEPS / rounds), 1), MAX_LOCAL_STEPS)
        epochs = max(1, round(k / per_epoch))
        auto.append("client.epochs")
    steps = int(epochs) * per_epoch
    if max_grad_norm is None:
        max_grad_norm = CLIP
        auto.append("privacy.max_grad_norm")
    if lr is None:
        if optimizer == "adam":
            lr = ADAM_LR
        else:
            path = PATH.get(model, _PATH_OTHER)
            lr = path / (float(max_grad_norm) * momentum_gain(steps, momentum) * rounds)
        auto.append("client.lr")
    return DPChoice(batch_size=int(batch_size), epochs=int(epochs), lr=float(lr),
                    max_grad_norm=float(max_grad_norm), local_steps=steps,
                    auto=tuple(sorted(auto)))


def choice_for(cfg: Any, n: int) -> DPChoice:
    """:func:`choose` for a composed run config and a node with ``n`` training rows."""
    c, pr = cfg.client, cfg.privacy
    return choose(
        n=n, rounds=int(cfg.federation.rounds), model=str(cfg.model.name),
        momentum=float(c.momentum or 0.0), optimizer=str(c.optimizer),
        batch_size=c.batch_size, epochs=c.epochs, lr=c.lr, max_grad_norm=pr.max_grad_norm)


def _key(cfg: Any, dotted: str) -> Any:
    group, key = dotted.split(".")
    return cfg[group].get(key, None)


def auto_summary(cfg: Any, per_node: Mapping[str, Mapping[str, float]]) -> dict[str, Any]:
    """The ``privacy.auto`` block of summary.json: which keys the rule filled (null in
    the config), which the user set, the model, and what each node reported it chose
    (only nodes whose policy let them send their ``dp-*`` metrics)."""
    auto = [k for k in AUTO_KEYS if _key(cfg, k) is None]
    return {
        "rule": "lepton_fed.privacy.auto: full batch up to 1024 rows, ~64 steps over "
                "the run, clip 1, lr = path / (clip x momentum-weighted steps x rounds)",
        "auto_keys": auto,
        "user_set": {k: _key(cfg, k) for k in AUTO_KEYS if k not in auto},
        "model": str(cfg.model.name),
        "per_client": {n: dict(v) for n, v in sorted(per_node.items())},
    }


def check_auto_config(cfg: Any) -> list[str]:
    """Problems with the nullable training keys (for config validation): each must be
    null (auto) or in range; null ones need a target epsilon under DP-SGD."""
    out: list[str] = []
    for dotted, is_int, minimum in (("client.batch_size", True, 1), ("client.epochs", True, 1),
                                    ("client.lr", False, 0.0),
                                    ("privacy.max_grad_norm", False, 0.0)):
        v = _key(cfg, dotted)
        if v is None:
            continue
        bad = isinstance(v, bool) or not isinstance(v, int | float) or (
            is_int and not isinstance(v, int)) or not math.isfinite(float(v))
        if bad or (v < minimum if is_int else v <= minimum):
            want = f"an integer >= {minimum}" if is_int else "a number > 0"
            out.append(f"{dotted} must be {want} or null (auto), got {v!r}")
    return out
