"""``lepton-fed audit [overrides]``: check the DP machinery empirically, in one training run.

Examples::

    lepton-fed audit privacy=dpsgd privacy.epsilon=3 data=digits federation.num_clients=20
    lepton-fed audit privacy=none data=digits --canaries 200 --json

What it does (an in-process simulation: the real ServerApp round loop and ClientApp
handlers, no Ray):

1. draws ``--canaries`` m canaries (:func:`lepton_fed.privacy.audit.make_canaries`:
   large inputs along low-variance directions of the data, random labels), gives them
   to the clients round-robin and includes each in its client's training rows with
   probability 1/2 (OS entropy: the auditor's secret);
2. trains once with the given config;
3. scores every canary from what the SERVER sees (the strongest party DP-SGD's
   epsilon is claimed against): the sum, over the rounds its client trained, of that
   client's released update projected on the canary's negative unit loss gradient at
   the round's global model (the white-box score of Steinke, Nasr & Jagielski 2023,
   for input canaries), and computes their one-run lower bound on epsilon at
   ``--confidence``; the same bound from the final model alone (loss drop from the
   initial model) is reported as ``canary_auc_final_model``;
4. runs a loss-threshold membership-inference attack (Yeom et al. 2018) on the final
   model: the clients' real training rows against the held-out rows, AUC;
5. prints the bound beside the accounted epsilon and **exits 1 if the bound exceeds
   it** (the clipping, the noise or the accountant is broken), 0 otherwise.

The canaries enter training only (DP-SGD); they are kept out of the setup's feature
statistics, which are not covered by the accounted epsilon anyway. Exit codes: 0 pass,
1 bound above the accounted epsilon, 2 bad input.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import json
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from lepton_fed.errors import ConfigError

__all__ = ["register", "run", "run_audit"]


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add the ``audit`` subcommand to the ``lepton-fed`` parser."""
    p = subparsers.add_parser(
        "audit", help="empirical privacy audit: canaries, one training run, a lower "
        "bound on epsilon and a membership-inference AUC",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("overrides", nargs="*", help="config overrides, as for simulate")
    p.add_argument("--canaries", type=int, default=200, help="number of canaries m")
    p.add_argument("--confidence", type=float, default=0.95,
                   help="confidence of the lower bound (default 0.95)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


@dataclasses.dataclass
class _Canaries:
    X: np.ndarray  # raw (unscaled) inputs
    y: np.ndarray
    client: np.ndarray  # partition each canary belongs to
    included: np.ndarray


@contextlib.contextmanager
def _with_canaries(can: _Canaries) -> Iterator[None]:
    """Append each client's included canaries to its TRAINING rows (in-process only)."""
    import lepton_fed.client.round as rnd
    from lepton_fed.client.local_data import NodeData

    original: Callable[[Any, Any], NodeData] = getattr(rnd, "node_data")  # noqa: B009

    def patched(cfg: Any, context: Any) -> NodeData:
        nd = original(cfg, context)
        pid = context.node_config.get("partition-id")
        if pid is None:
            return nd
        sel = (can.client == int(pid)) & can.included
        if not sel.any():
            return nd
        tr, k = nd.train, int(sel.sum())
        extra: dict[str, Any] = {}
        if tr.silo is not None:
            extra["silo"] = np.concatenate([tr.silo, np.repeat(tr.silo[:1], k)])
        if tr.split is not None:
            extra["split"] = np.concatenate([tr.split, np.repeat(tr.split[:1], k)])
        train = dataclasses.replace(
            tr, X=np.concatenate([tr.X, can.X[sel].astype(tr.X.dtype)]),
            y=np.concatenate([tr.y, can.y[sel].astype(tr.y.dtype)]), **extra)
        return NodeData(train, nd.test)

    setattr(rnd, "node_data", patched)  # noqa: B010
    try:
        yield
    finally:
        setattr(rnd, "node_data", original)  # noqa: B010


@contextlib.contextmanager
def _quiet_flwr() -> Iterator[None]:
    """Flower logs every exchange at INFO; the audit's report is what matters."""
    import logging

    log = logging.getLogger("flwr")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)


def _losses(model: Any, X: np.ndarray, y: np.ndarray) -> np.ndarray:
    from lepton_fed.models.predict import predict_proba

    p = predict_proba(model, X, "cpu")
    return np.asarray(-np.log(p[np.arange(len(y)), y] + 1e-12), dtype=float)


def _grad_dirs(model: Any, X: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Unit per-example loss gradients, one row per example, flattened in the state
    dict's key order (:func:`lepton_fed.models.flatten_state`; buffers get 0)."""
    import torch

    named = dict(model.named_parameters())
    keys = list(model.state_dict())
    params = [named[k] for k in keys if k in named]
    sizes = {k: int(v.numel()) for k, v in model.state_dict().items()}
    out = []
    for i in range(len(y)):
        logits = model(torch.as_tensor(X[i:i + 1], dtype=torch.float32))
        loss = torch.nn.functional.cross_entropy(logits, torch.as_tensor(y[i:i + 1]))
        grads = dict(zip([k for k in keys if k in named],
                         torch.autograd.grad(loss, params), strict=True))
        v = np.concatenate([grads[k].reshape(-1).numpy().astype(np.float64) if k in grads
                            else np.zeros(sizes[k]) for k in keys])
        out.append(v / max(float(np.linalg.norm(v)), 1e-12))
    return np.stack(out)


def _recording_grid(app: Any, n: int) -> Any:
    """An in-process grid that also keeps (node, global model sent, reply) of every
    train exchange: exactly what the server sees."""
    from lepton_fed.inprocess import InProcessGrid

    class RecordingGrid(InProcessGrid):
        exchanges: list[tuple[int, Any, Any]]

        def _deliver(self, msg: Any) -> Any:
            reply = super()._deliver(msg)
            if (msg.metadata.message_type == "train" and reply is not None
                    and not reply.has_error() and "arrays" in reply.content):
                self.exchanges.append((msg.metadata.dst_node_id, msg.content["arrays"],
                                       reply))
            return reply

    grid = RecordingGrid(app, n)
    grid.exchanges = []
    return grid


def _server_view_scores(cfg: Any, spec: dict[str, Any], grid: Any, can: _Canaries,
                        Xc: np.ndarray) -> np.ndarray:
    """Each canary's score: the sum over the rounds its client trained of the client's
    released update projected on the canary's negative unit gradient at that round's
    global model (Steinke et al.'s white-box score, for input canaries, from what the
    server sees). Post-processing of released values only."""
    from lepton_fed.server.aggregate import reply_update
    from lepton_fed.utils.records import from_array_record

    codec = str(cfg.compression["update"])
    scores = np.zeros(len(can.y))
    for nid, sent, reply in grid.exchanges:
        pid = int(grid.contexts[nid].node_config["partition-id"])
        mine = np.flatnonzero(can.client == pid)
        if mine.size == 0:
            continue
        state = from_array_record(sent)
        update = reply_update(reply.content, state, codec)
        g = _grad_dirs(_model(cfg, spec, state), Xc[mine], can.y[mine])
        scores[mine] += -(g @ update)
    return scores


def _model(cfg: Any, spec: dict[str, Any], state: dict[str, np.ndarray] | None) -> Any:
    from lepton_fed.models import build_model, set_state

    model = build_model(spec)
    if cfg.privacy.mode == "dpsgd":
        import warnings

        from lepton_fed.privacy.dpsgd import dp_ready

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = dp_ready(model, grad_sample_mode=str(cfg.privacy.grad_sample_mode),
                             model_name=str(cfg.model.name),
                             num_features=int(spec["num_features"]))
    if state is not None:
        set_state(model, state)
    model.eval()
    return model


def run_audit(cfg: Any, *, canaries: int = 200, confidence: float = 0.95,
              rng: np.random.Generator | None = None) -> dict[str, Any]:
    """Insert canaries, train once in-process, bound epsilon, attack membership.

    Not thread-safe: while it runs, the in-process client's data loader is wrapped to
    append the canaries (:func:`_with_canaries`).

    Args:
        cfg: a composed simulation config (``privacy=dpsgd`` to audit DP-SGD;
            ``privacy=none`` gives the non-DP reference).
        canaries: m, the number of canaries.
        confidence: confidence of the lower bound.
        rng: the auditor's randomness (default: OS entropy).

    Returns:
        A JSON-ready report: ``epsilon_lower_bound``, ``epsilon_accounted``,
        ``passed``, the guesses behind the bound, ``mia_auc`` (training rows vs
        held-out rows) and ``canary_auc``, accuracy, wall time.

    Raises:
        ConfigError: a config the audit cannot run (central DP, a real federation).
    """
    from safetensors.numpy import load_file

    from lepton_fed.client.app import app
    from lepton_fed.data.federated import federated_split
    from lepton_fed.data.preprocess import FeatureStats, Scaler
    from lepton_fed.privacy.audit import audit_bound, make_canaries, mia_auc
    from lepton_fed.server.bootstrap import bootstrap
    from lepton_fed.server.outputs import RunWriter
    from lepton_fed.server.rounds import run_federation
    from lepton_fed.utils.seed import seed_everything

    problems = []
    if cfg.privacy.mode not in ("dpsgd", "none"):
        problems.append(f"privacy.mode={cfg.privacy.mode}: the audit covers privacy=dpsgd "
                        "(and privacy=none as the reference)")
    if canaries < 2:
        problems.append(f"--canaries must be >= 2, got {canaries}")
    if not 0.5 <= confidence < 1:
        problems.append(f"--confidence must be in [0.5, 1), got {confidence}")
    if cfg.secagg.enabled:
        problems.append("secagg=on: the audit scores each client's update as the server "
                        "sees it; run it with secagg=off (secure aggregation hides updates "
                        "from the server, it does not change what DP-SGD releases)")
    if cfg.get("evaluation") is not None and not cfg.evaluation.server_data:
        problems.append("the audit simulates the federation from data it holds: "
                        "evaluation.server_data must be true")
    if problems:
        raise ConfigError(problems)
    t0 = time.monotonic()
    rng = rng if rng is not None else np.random.default_rng()
    n_clients = int(cfg.federation.num_clients)
    split = federated_split(cfg)
    parts = [split.client(i) for i in range(n_clients)]
    data = split.data
    scaler = Scaler.from_stats([FeatureStats.of(p.X) for p in parts],
                               per_feature=data.input_shape is None)
    Xtr = np.concatenate([p.X for p in parts])
    ytr = np.concatenate([p.y for p in parts])
    xs, ys = make_canaries(scaler.transform(Xtr), data.num_classes, canaries, rng=rng)
    raw = xs * scaler.scale + scaler.mean
    can = _Canaries(X=raw.astype(np.float32), y=ys, client=np.arange(canaries) % n_clients,
                    included=rng.random(canaries) < 0.5)

    seed_everything(cfg.seed)  # the initial global model, as the round loop builds it
    spec = dict(bootstrap(cfg).spec)
    initial = _model(cfg, spec, None)
    with tempfile.TemporaryDirectory() as d, _with_canaries(can), _quiet_flwr():
        with contextlib.redirect_stdout(io.StringIO()):
            grid = _recording_grid(app, n_clients)
            summary = run_federation(grid, cfg, RunWriter(d))
        state = load_file(str(Path(d) / "model.safetensors"))
        prep = json.loads((Path(d) / "preprocess.json").read_text())
    run_scaler = Scaler.from_dict(prep["scaler"])
    final = _model(cfg, spec, state)
    Xc = run_scaler.transform(can.X)
    scores = _server_view_scores(cfg, spec, grid, can, Xc)
    blackbox = _losses(initial, Xc, can.y) - _losses(final, Xc, can.y)
    delta = float(cfg.privacy.delta) if cfg.privacy.mode == "dpsgd" else 1e-5
    bound = audit_bound(scores, can.included, delta=delta, confidence=confidence)
    bound_final = audit_bound(blackbox, can.included, delta=delta, confidence=confidence)
    test = split.test()
    k = min(len(ytr), len(test.y))
    pick = rng.choice(len(ytr), size=k, replace=False)
    members = -_losses(final, run_scaler.transform(Xtr[pick]), ytr[pick])
    nonmembers = -_losses(final, run_scaler.transform(test.X[:k]), test.y[:k])
    pr = summary["privacy"]
    accounted = pr.get("epsilon") if cfg.privacy.mode == "dpsgd" else None
    passed = accounted is None or bound.epsilon <= float(accounted)
    return {
        "privacy": cfg.privacy.mode, "accountant": pr.get("accountant"),
        "epsilon_accounted": accounted, "delta": delta,
        "epsilon_lower_bound": bound.epsilon, "confidence": confidence,
        "passed": passed, "canaries": bound.canaries,
        "canaries_included": int(can.included.sum()), "guesses": bound.guesses,
        "correct": bound.correct,
        "canary_auc": mia_auc(scores[can.included], scores[~can.included]),
        "canary_auc_final_model": mia_auc(blackbox[can.included], blackbox[~can.included]),
        "epsilon_lower_bound_final_model": bound_final.epsilon,
        "mia_auc": mia_auc(members, nonmembers), "mia_examples_each": int(k),
        "accuracy": summary["final"].get("accuracy"),
        "rounds_completed": summary["rounds_completed"],
        "wall_seconds": time.monotonic() - t0,
    }


def _text(r: dict[str, Any]) -> str:
    acc = r["epsilon_accounted"]
    lines = [
        f"privacy: {r['privacy']}"
        + (f" (accounted epsilon {acc:.4f} at delta {r['delta']:g}, {r['accountant']})"
           if acc is not None else " (no DP: nothing is claimed)"),
        f"audit: {r['canaries']} canaries ({r['canaries_included']} included), "
        f"{r['correct']}/{r['guesses']} membership guesses correct -> epsilon >= "
        f"{r['epsilon_lower_bound']:.4f} at {100 * r['confidence']:g}% confidence "
        "(Steinke, Nasr & Jagielski 2023, one run)",
        f"  from the final model alone: epsilon >= "
        f"{r['epsilon_lower_bound_final_model']:.4f} (canary AUC "
        f"{r['canary_auc_final_model']:.4f}; server view: {r['canary_auc']:.4f})",
        f"membership inference (loss threshold, final model): AUC {r['mia_auc']:.4f} on "
        f"{r['mia_examples_each']} training vs {r['mia_examples_each']} held-out rows",
        f"model accuracy {r['accuracy']:.4f}; audit took {r['wall_seconds']:.1f} s",
    ]
    if acc is not None:
        lines.append("PASS: the empirical lower bound is below the accounted epsilon"
                     if r["passed"] else
                     "FAIL: the empirical lower bound EXCEEDS the accounted epsilon: the "
                     "clipping, the noise or the accounting is broken")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Compose, audit, print; 0 pass, 1 bound above the accounted epsilon; bad input raises
    ConfigError (the CLI guard prints it, exit 2)."""
    from lepton_fed.config.compose import precheck

    cfg = precheck(list(args.overrides))[0]  # every config problem, before training
    report = run_audit(cfg, canaries=args.canaries, confidence=args.confidence)
    print(json.dumps(report, sort_keys=True) if args.json else _text(report))
    return 0 if report["passed"] else 1
