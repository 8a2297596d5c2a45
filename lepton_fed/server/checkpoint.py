"""Checkpoint and resume of the server's round loop.

After every finished round the server writes ``RUN_DIR/checkpoint/checkpoint.safetensors``:
the arrays (the global model, the server optimizer's arrays, numpy's and torch's RNG
states) as tensors, and everything else as JSON in the file's header metadata
(``lepton_fed_state``; read it with ``safetensors.safe_open(path, "np").metadata()``).
A resumed run
(``resume=RUN_DIR``) restores it at the end of the setup and continues with the next
round, so a run killed at any point ends with the same final model as an uninterrupted
one whenever the run is reproducible (``privacy=none``, or ``privacy.reproducible``).

What is saved: the global model; FedAdam/FedYogi/FedAdagrad's ``m_t``, ``v_t`` and
``current_arrays`` (whatever flwr's strategy holds; None stays None); the round; Python
``random``, numpy's global and torch's global RNG states; the central-DP accountant
(its per-round history); the metrics rows, per-client epsilons and stopped clients; the
node registry's declines and failures by node NAME (node ids are per Flower run; the
nodes are set up again, in a real federation with the run's saved scaler); the
scaler; byte and failure counts; the secure-aggregation protocol run ids used and,
under ``privacy=distributed``, the number of sums the server has unmasked (its releases).

Atomicity: the one file is written under a temporary name, fsynced, renamed over the
previous checkpoint, then the directory is fsynced (one file: one fsync, about a third
of the cost of separate state and array files). A crash at any point leaves either the
previous checkpoint or the new one; the header carries the SHA-256 of the tensor bytes,
and a file that does not parse or match it is never used. The round loop writes the
checkpoint BEFORE it publishes the round (metrics.jsonl, observers), so a published
round is never run again (under central DP: never released twice).

What a resumed run re-sends: the setup (run config) to every node; the scaler with the
first train message of each node; with secure aggregation a NEW protocol run id drawn
from OS entropy, so nodes advertise fresh round keys and no (run id, round) pair, the
interrupted round's included, is ever used twice. The interrupted round is run again
from its start. Privacy: the server's central-DP accountant is restored (rounds are
counted once: a round counts when its aggregate was applied, and the checkpoint is
written after that); DP-SGD spend is kept by the NODES' ledgers, so a node that spent
a round whose reply the server never checkpointed keeps that spend (its epsilon after
the resume is then higher than in an uninterrupted run: never lower).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import secrets
import tempfile
import time
import weakref
from collections import Counter, OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from lepton_fed.errors import ConfigError

if TYPE_CHECKING:
    from lepton_fed.server.rounds import _Run

__all__ = ["CHECKPOINT_DIR", "RESUMABLE_CHANGES", "Checkpoint", "CheckpointError",
           "check_resume", "config_differences", "load", "restore", "resume_config", "save",
           "saved_scaler"]

CHECKPOINT_DIR = "checkpoint"
CHECKPOINT_FILE = "checkpoint.safetensors"
_META = "lepton_fed_state"
FORMAT = 1
#: settings a resumed run may change (the rest must equal the checkpointed run's)
RESUMABLE_CHANGES = frozenset({"resume", "federation.rounds", "federation.round_timeout",
                               "federation.round_deadline", "federation.node_wait",
                               "secagg.timeout", "log_level", "device"})
_STRATEGY_ATTRS = ("current_arrays", "m_t", "v_t")
#: RUN_DIR/<this>: a Ray simulation's virtual nodes' DP-SGD ledgers (lepton_fed.simulation)
NODE_LEDGERS_DIR = "node_ledgers"


class CheckpointError(ConfigError):
    """``resume=DIR`` names no usable checkpoint, or a config it cannot continue."""


@dataclass
class Checkpoint:
    """A loaded checkpoint: ``state`` (the JSON metadata) and its ``arrays``."""

    dir: Path
    state: dict[str, Any]
    arrays: dict[str, np.ndarray]

    @property
    def round(self) -> int:
        """The last round the checkpoint includes."""
        return int(self.state["round"])

    @property
    def config(self) -> DictConfig:
        """The checkpointed run's resolved config."""
        cfg = OmegaConf.create(self.state["config"])
        if not isinstance(cfg, DictConfig):
            raise CheckpointError(f"{self.dir}: the checkpoint's config is not a mapping")
        return cfg


# ---------------------------------------------------------------------- files
def _fsync_dir(d: Path) -> None:
    fd = os.open(d, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _json(obj: Any) -> Any:
    """JSON-ready copy (non-finite floats become None, as in metrics.jsonl)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {str(k): _json(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_json(v) for v in obj]
    if isinstance(obj, np.generic):
        return _json(obj.item())
    return obj


def _tensor_bytes(blob: bytes) -> tuple[dict[str, Any], bytes]:
    """(header, tensor data) of a safetensors file."""
    n = int.from_bytes(blob[:8], "little")
    header = json.loads(blob[8:8 + n])
    if not isinstance(header, dict):
        raise ValueError("the header is not a mapping")
    return header, blob[8 + n:]


def _write(d: Path, rnd: int, state: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
    from safetensors.numpy import save

    d.mkdir(parents=True, exist_ok=True)
    tensors = {k: np.ascontiguousarray(v) for k, v in arrays.items()}
    digest = hashlib.sha256(_tensor_bytes(save(tensors))[1]).hexdigest()
    meta = json.dumps(_json(state | {"round": rnd, "tensors_sha256": digest}), allow_nan=False)
    _write_atomic(d / CHECKPOINT_FILE, save(tensors, metadata={_META: meta}))
    _fsync_dir(d)


def load(run_dir: str | Path) -> Checkpoint:
    """The checkpoint of ``run_dir``.

    Raises:
        CheckpointError: no checkpoint, or one that does not parse or whose tensor
            bytes do not match the SHA-256 its header records.
    """
    from safetensors.numpy import load as load_arrays

    d = Path(run_dir) / CHECKPOINT_DIR
    path = d / CHECKPOINT_FILE
    try:
        blob = path.read_bytes()
    except FileNotFoundError:
        raise CheckpointError(f"resume={run_dir}: no checkpoint there ({path} does not "
                              "exist); a run writes one after each round") from None
    except OSError as exc:
        raise CheckpointError(f"resume={run_dir}: {path} cannot be read: {exc}") from None
    try:
        header, data = _tensor_bytes(blob)
        state = json.loads(header.get("__metadata__", {})[_META])
        arrays = dict(load_arrays(blob))
    except Exception as exc:  # noqa: BLE001 - whatever a damaged file raises
        raise CheckpointError(f"resume={run_dir}: {path} is unreadable "
                              f"({type(exc).__name__}: {str(exc)[:120]})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"resume={run_dir}: checkpoint format "
                              f"{state.get('format') if isinstance(state, dict) else '?'} "
                              f"is not {FORMAT}")
    if hashlib.sha256(data).hexdigest() != state.get("tensors_sha256"):
        raise CheckpointError(f"resume={run_dir}: {path.name}'s tensors do not match the "
                              "SHA-256 its header records")
    return Checkpoint(d, state, arrays)


# ---------------------------------------------------------------------- save
def _rng_state() -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    import torch

    version, keys, gauss = random.getstate()
    kind, np_keys, pos, has_gauss, cached = np.random.get_state()
    return ({"python": [version, gauss],
             "numpy": {"kind": kind, "pos": int(pos), "has_gauss": int(has_gauss),
                       "cached_gaussian": float(cached)}},
            {"rng/python": np.asarray(keys, np.uint32), "rng/numpy": np.asarray(np_keys, np.uint32),
             "rng/torch": torch.get_rng_state().numpy().copy()})


def save(run: _Run, rnd: int) -> Path | None:
    """Checkpoint ``run`` after round ``rnd`` (nothing when the round wrote no row:
    a round that sampled no node is run again on resume)."""
    if not run.rows or run.rows[-1].get("round") != rnd:
        return None
    arrays: dict[str, np.ndarray] = {f"model/{k}": v for k, v in run.gstate.items()}
    strat: dict[str, Any] = {}
    for attr in _STRATEGY_ATTRS:
        val = getattr(run.strategy, attr, None)
        strat[attr] = list(val) if isinstance(val, dict) else None
        for k, v in (val or {}).items():
            arrays[f"strategy/{attr}/{k}"] = np.asarray(v)
    rng, rng_arrays = _rng_state()
    arrays |= rng_arrays
    reg = run.reg
    acc = getattr(run.privacy, "accountant", None)
    prev = run.ckpt.state if run.ckpt is not None else {}
    state = {
        "format": FORMAT, "round": rnd, "completed": run.completed,
        "config": _config_of(run),
        "model_keys": list(run.gstate), "strategy": {"class": type(run.strategy).__name__,
                                                     "arrays": strat},
        "rows": run.rows, "per_client_eps": run.per_client_eps, "stopped": run.stopped,
        "registry": {"names": reg.names, "ready": sorted(reg.ready), "refused": reg.refused,
                     "declines": {k: dict(v) for k, v in reg.declines.items()},
                     "failures": {k: dict(v) for k, v in reg.failures.items()},
                     "late": dict(reg.late)},
        "privacy": {"mode": run.privacy.mode, "noise_multiplier": run.privacy.noise_multiplier,
                    "accountant": acc.state_dict() if acc is not None else None},
        "secagg": {"run_ids": _secagg_run_ids(run, prev),
                   # privacy=distributed: sums the server unmasked (each one a release)
                   "ddp_releases": getattr(run.secure, "ddp_releases", None)},
        "scaler": {"mean": run.scaler.mean.tolist(), "scale": run.scaler.scale.tolist(),
                   "source": run.scaler_source},
        "failures": run.failures, "bytes": [run.bytes_up, run.bytes_down],
        "last_eval": [run.last_eval[0], run.last_eval[1]],
        "wall_seconds": time.monotonic() - run.t_start,
        "resumes": int(prev.get("resumes", 0)), "rng": rng,
    }
    d = run.writer.dir / CHECKPOINT_DIR
    _write(d, rnd, state, arrays)
    return d


def _secagg_run_ids(run: _Run, prev: dict[str, Any]) -> list[int]:
    ids = [int(x) for x in prev.get("secagg", {}).get("run_ids", [])]
    rid = getattr(getattr(run.secure, "server", None), "run_id", None)
    return ids + ([int(rid)] if rid is not None and int(rid) not in ids else [])


#: the run's resolved config as a plain dict, converted once per run (it is constant)
_CONFIGS: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()


def _config_of(run: _Run) -> Any:
    if run not in _CONFIGS:
        _CONFIGS[run] = OmegaConf.to_container(_without_resume(run.cfg), resolve=True)
    return _CONFIGS[run]


# ---------------------------------------------------------------------- restore
def _without_resume(cfg: DictConfig) -> DictConfig:
    c = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(c, dict)
    c.pop("resume", None)
    out = OmegaConf.create(c)
    assert isinstance(out, DictConfig)
    return out


def _flat(d: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(d, dict):
        out: dict[str, Any] = {}
        for k, v in d.items():
            out |= _flat(v, f"{prefix}{k}.")
        return out
    return {prefix[:-1]: d}


def config_differences(saved: DictConfig, cfg: DictConfig) -> list[str]:
    """Settings of ``cfg`` that differ from the checkpointed run's ``saved`` config,
    apart from :data:`RESUMABLE_CHANGES`, as ``key: run X, now Y``."""
    a = _flat(OmegaConf.to_container(saved, resolve=True))
    b = _flat(OmegaConf.to_container(cfg, resolve=True))
    return [f"{k}: the run has {a.get(k)!r}, now {b.get(k)!r}" for k in sorted(set(a) | set(b))
            if k not in RESUMABLE_CHANGES and not k.startswith("hydra.") and a.get(k) != b.get(k)]


def _check_continuable(ckpt: Checkpoint, cfg: DictConfig, where: str) -> None:
    diff = config_differences(ckpt.config, cfg)
    saved_rounds = int(ckpt.config.federation.rounds)
    if int(cfg.federation.rounds) != saved_rounds and cfg.privacy.mode != "none" \
            and cfg.privacy.epsilon is not None:
        diff.append(f"federation.rounds: the noise was calibrated for privacy.epsilon="
                    f"{cfg.privacy.epsilon} over {saved_rounds} rounds; it cannot change")
    if int(cfg.federation.rounds) < ckpt.round:
        diff.append(f"federation.rounds={cfg.federation.rounds}: the run already "
                    f"completed {ckpt.round} rounds")
    if diff:
        raise CheckpointError([f"resume={where}: cannot continue with a different config: {d}"
                               for d in diff])


def check_resume(cfg: DictConfig, *, node_ledgers_persist: bool = True) -> Checkpoint:
    """The checkpoint ``cfg.resume`` names, checked against ``cfg`` (before any work).

    Args:
        node_ledgers_persist: whether the nodes' DP-SGD ledgers outlive a run (real
            nodes: ``ledger-dir``; a Ray simulation's virtual nodes: the run's
            :data:`NODE_LEDGERS_DIR`). False refuses a DP-SGD resume: every node's spend
            would restart from zero.

    Raises:
        CheckpointError: no usable checkpoint, a config that differs, or a DP-SGD run
            whose nodes' ledgers did not survive.
    """
    ckpt = load(str(cfg.resume))
    _check_continuable(ckpt, cfg, str(cfg.resume))
    if cfg.privacy.mode == "dpsgd" and not node_ledgers_persist:
        raise CheckpointError(
            f"resume={cfg.resume}: privacy=dpsgd cannot be resumed here: this run's virtual "
            f"nodes kept their privacy ledgers in memory (no {NODE_LEDGERS_DIR}/ in the run "
            "directory), so every node's spend would restart from zero (privacy spent "
            "twice); nodes with a ledger-dir can")
    return ckpt


def resume_config(cfg: DictConfig, overrides: Sequence[str]) -> DictConfig:
    """The config to resume ``cfg.resume`` with.

    With no command-line ``overrides`` other than :data:`RESUMABLE_CHANGES` keys, the
    checkpointed run's own config (plus those changes); otherwise ``cfg``, which must
    then equal the checkpointed config apart from those keys.

    Raises:
        CheckpointError: no usable checkpoint, or a config that differs.
    """
    where = str(cfg.resume)
    ckpt = load(where)
    keys = {o.split("=", 1)[0].lstrip("+~") for o in overrides} - {
        k for o in overrides if (k := o.split("=", 1)[0].lstrip("+~")).startswith("hydra.")}
    if keys <= RESUMABLE_CHANGES:
        out = ckpt.config
        for k in keys:
            OmegaConf.update(out, k, OmegaConf.select(cfg, k), force_add=True)
        cfg = out
    _check_continuable(ckpt, cfg, where)
    OmegaConf.update(cfg, "resume", where, force_add=True)
    return cfg


def saved_scaler(ckpt: Checkpoint) -> tuple[Any, str]:
    """The run's scaler (so nodes that join a resumed run get the same inputs)."""
    from lepton_fed.data.preprocess import Scaler

    s = ckpt.state["scaler"]
    return (Scaler(np.asarray(s["mean"], np.float64), np.asarray(s["scale"], np.float64)),
            f"{s['source']} (restored from the checkpoint)")


def _restore_rng(ckpt: Checkpoint) -> None:
    import torch

    py, npst = ckpt.state["rng"]["python"], ckpt.state["rng"]["numpy"]
    random.setstate((int(py[0]), tuple(int(x) for x in ckpt.arrays["rng/python"]), py[1]))
    np.random.set_state((npst["kind"], ckpt.arrays["rng/numpy"], npst["pos"],
                         npst["has_gauss"], npst["cached_gaussian"]))
    torch.set_rng_state(torch.from_numpy(ckpt.arrays["rng/torch"].copy()))


def restore(run: _Run, ckpt: Checkpoint) -> int:
    """Restore ``ckpt`` into ``run`` after its setup; returns the next round to run.

    Raises:
        CheckpointError: the run's config differs from the checkpointed one, or its
            strategy or model does not match the checkpoint's.
    """
    st = ckpt.state
    _check_continuable(ckpt, run.cfg, str(ckpt.dir.parent))
    if st["strategy"]["class"] != type(run.strategy).__name__ or \
            st["model_keys"] != list(run.gstate):
        raise CheckpointError(f"resume={ckpt.dir.parent}: the checkpoint's strategy/model "
                              "do not match this run's")
    run.gstate = OrderedDict((k, ckpt.arrays[f"model/{k}"]) for k in st["model_keys"])
    for attr, keys in st["strategy"]["arrays"].items():
        if hasattr(run.strategy, attr):
            setattr(run.strategy, attr, None if keys is None else
                    {k: ckpt.arrays[f"strategy/{attr}/{k}"] for k in keys})
    run.rows = list(st["rows"])
    run.per_client_eps = {str(k): float(v) for k, v in st["per_client_eps"].items()}
    run.stopped = {str(k): int(v) for k, v in st["stopped"].items()}
    reg = st["registry"]
    for name, counts in reg["declines"].items():
        run.reg.declines[name] += Counter(counts)
    for name, counts in reg["failures"].items():
        run.reg.failures[name] += Counter(counts)
    run.reg.late += Counter({str(k): int(v) for k, v in reg.get("late", {}).items()})
    acc = getattr(run.privacy, "accountant", None)
    if acc is not None and st["privacy"]["accountant"] is not None:
        acc.load_state_dict(st["privacy"]["accountant"])
    run.completed, run.failures = int(st["completed"]), int(st["failures"])
    run.bytes_up += int(st["bytes"][0])
    run.bytes_down += int(st["bytes"][1])
    run.last_eval = (int(st["last_eval"][0]), dict(st["last_eval"][1]))
    run.t_start -= float(st["wall_seconds"])
    if run.cfg.secagg.enabled:  # a fresh protocol run: no (run id, round) is used twice
        from lepton_fed.server.secure import SecureAggregator

        used = {int(x) for x in st["secagg"]["run_ids"]}
        rid = secrets.randbits(62)
        while rid in used:
            rid = secrets.randbits(62)
        run.secure = SecureAggregator(run.cfg, rid)
        released = st["secagg"].get("ddp_releases")
        if released is not None and hasattr(run.secure, "ddp_releases"):
            run.secure.ddp_releases = int(released)
    _restore_rng(ckpt)
    lines = "".join(json.dumps(_json(r), allow_nan=False) + "\n" for r in run.rows)
    _write_atomic(run.writer.metrics_path, lines.encode())  # rows of the interrupted round go
    ckpt.state["resumes"] = int(st.get("resumes", 0)) + 1
    run.ckpt = ckpt
    print(f"[lepton-fed] resumed {ckpt.dir.parent} after round {ckpt.round} of "
          f"{run.cfg.federation.rounds}", flush=True)
    return ckpt.round + 1
