"""The server's round loop: setup, rounds, finish.

It owns the loop instead of ``Strategy.start()`` because secure aggregation needs several
send/receive exchanges per round, privacy accounting needs the replies' metrics, a
declined or failed node must be recorded rather than abort the run, nodes may join or
restart mid-run, and waiting for nodes must be bounded. Strategies supply
``configure_train`` (the round config for the nodes THIS loop sampled) and
``aggregate_train``. Observers (:class:`RoundObserver`) see every round's row and the
final summary (the run directory writer is one; dashboards and benchmarks add theirs).
"""

from __future__ import annotations

import logging
import time
from collections import Counter, OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

import numpy as np
from flwr.app import ConfigRecord, Message, RecordDict
from flwr.serverapp import Grid
from omegaconf import DictConfig, OmegaConf

from lepton_fed.config.derived import update_clip
from lepton_fed.data.preprocess import Preprocessor, Scaler
from lepton_fed.errors import RunFailed
from lepton_fed.models import build_model, get_state, set_state
from lepton_fed.server import checkpoint  # H5: checkpoint/resume
from lepton_fed.server.aggregate import decode_replies, mean_update_reply, sum_updates
from lepton_fed.server.bootstrap import Bootstrap, bootstrap
from lepton_fed.server.evaluate import evaluate_model
from lepton_fed.server.exchange import (
    decline_code,
    error_code,
    exchange,
    exchange_record,
)
from lepton_fed.server.fedeval import federated_evaluate
from lepton_fed.server.outputs import RunWriter, plot_metrics
from lepton_fed.server.registry import NodeRegistry
from lepton_fed.server.setup import no_node_accepted, setup_nodes, wait_for_nodes
from lepton_fed.server.validate_updates import (  # H5: update validation
    Rejection,
    check_aggregate,
    rejected_epsilons,
    validate_replies,
)
from lepton_fed.utils.device import resolve_device
from lepton_fed.utils.records import from_array_record, to_array_record
from lepton_fed.utils.seed import derive_seed, seed_everything

__all__ = ["RoundObserver", "RoundOutcome", "run_federation"]

log = logging.getLogger("lepton_fed")

#: decline code of a node whose privacy budget cannot pay for a round
BUDGET_EXHAUSTED = "BUDGET_EXHAUSTED"


class RoundObserver(Protocol):
    """Sees each finished round's metrics row and the run's summary."""

    def on_round(self, row: dict[str, Any]) -> None:
        """Called with each finished round's metrics row."""
        ...

    def on_finish(self, summary: dict[str, Any]) -> None:
        """Called once with the run's summary when the run ends."""
        ...


@dataclass
class RoundOutcome:
    """What one round's exchanges produced, whichever path (plain, central DP, secagg)."""

    ok: list[Message] = field(default_factory=list)
    declined: list[Message] = field(default_factory=list)
    errors: list[tuple[int, str]] = field(default_factory=list)  # (node, code)
    aggregate: Message | None = None
    bytes_up: int = 0
    bytes_down: int = 0
    secagg: dict[str, Any] | None = None
    node_of: dict[str, int] = field(default_factory=dict)
    late: list[tuple[int, Message]] = field(default_factory=list)  # H5: discarded, past
    # an earlier round's deadline: (node, reply)
    exchanges: list[dict[str, Any]] = field(default_factory=list)  # exchange_record()s

    def node(self, reply: Message) -> int:
        """The node a reply came from: the node its request was sent to, else its source node."""
        return self.node_of.get(reply.metadata.reply_to_message_id, reply.metadata.src_node_id)


class _Sampled:
    """A view of the grid whose node list is the nodes this loop sampled (the strategy
    then only builds their messages: its own sampling would wait for nodes forever and
    follow Flower's random node ids)."""

    def __init__(self, nodes: list[int]) -> None:
        self.nodes = nodes

    def get_node_ids(self) -> Iterable[int]:
        """The node ids this loop sampled."""
        return list(self.nodes)


def _strategy(cfg: DictConfig) -> Any:
    from hydra.utils import instantiate

    kwargs = {k2: v for k2, v in OmegaConf.to_container(cfg.strategy, resolve=True).items()  # type: ignore[union-attr]
              if k2 != "name"}
    weight = "unit-weight" if cfg.privacy.mode == "central" else "num-examples"
    extra: dict[str, Any] = dict(fraction_train=1.0, min_train_nodes=1, min_available_nodes=1,
                                 fraction_evaluate=0.0, weighted_by_key=weight)
    return instantiate(kwargs | extra, _convert_="all")


def _federated_eval_on(cfg: DictConfig) -> bool:
    ev = cfg.get("evaluation")
    if ev is None:
        return False
    mode = str(ev.federated).lower()
    return mode == "true" or (mode == "auto" and not bool(ev.server_data))


class _Run:
    """State of one run shared by the setup, round and finish steps."""

    def __init__(self, grid: Grid, cfg: DictConfig, writer: RunWriter,
                 observers: Sequence[RoundObserver], resume: str | None = None) -> None:
        self.grid, self.cfg, self.writer, self.observers = grid, cfg, writer, list(observers)
        self.fed = cfg.federation
        self.t_start = time.monotonic()
        self.device = resolve_device(cfg.device)
        self.boot: Bootstrap = bootstrap(cfg)
        model = build_model(self.boot.spec)
        if cfg.privacy.mode == "dpsgd":  # refuse an unusable model before any node is contacted
            from lepton_fed.privacy.dpsgd import dp_ready

            model = dp_ready(model, grad_sample_mode=str(cfg.privacy.grad_sample_mode),
                             model_name=str(cfg.model.name),
                             num_features=int(self.boot.spec["num_features"]))
        self.model = model
        self.gstate: OrderedDict[str, np.ndarray] = get_state(model)
        self.strategy = _strategy(cfg)
        self.reg = NodeRegistry()
        wait = self.fed.get("node_wait", None)  # 0: sample whoever is there, no wait
        self.wait_s = float(self.fed.round_timeout if wait is None else wait)
        # H5: stragglers: training replies after the deadline are discarded (counted late)
        self.deadline = float(self.fed.get("round_deadline", None) or self.fed.round_timeout)
        self.overdue: dict[str, int] = {}  # unanswered train requests -> node
        self.min_cohort = int(self.fed.get("min_clients", None) or 1)
        if cfg.secagg.enabled:
            self.min_cohort = max(self.min_cohort, int(cfg.secagg.get("min_cohort", 3) or 3))
        self.rows: list[dict[str, Any]] = []
        self.per_client_eps: dict[str, float] = {}
        self.stopped: dict[str, int] = {}
        self.completed = 0
        self.failures = 0
        self.bytes_up = self.bytes_down = 0
        self.every = max(1, int(self.fed.get("evaluate_every", 1) or 1))
        self.fed_eval = _federated_eval_on(cfg)
        self.last_eval: tuple[int, dict[str, Any]] = (0, {})
        self.stop_reason: str | None = None
        # H5: resume=RUN_DIR restores this checkpoint at the end of setup()
        self.ckpt = checkpoint.load(resume) if resume else None
        self.first_round = 1

    # ------------------------------------------------------------------ setup
    def setup(self) -> None:
        cfg, fed = self.cfg, self.fed
        from lepton_fed.server.privacy import ServerPrivacy

        self.writer.config(OmegaConf.to_yaml(cfg, resolve=True))
        wait_for_nodes(self.grid, int(fed.num_clients), self.wait_s,
                       minimum=max(self.min_cohort, 1))
        self.secure = None
        if cfg.secagg.enabled:  # before the setup: it carries the round-key advertisement
            from lepton_fed.server.secure import SecureAggregator, run_id_for

            self.secure = SecureAggregator(cfg, run_id_for(cfg, self.grid))
        # a resumed run draws a new protocol run id in restore(): its nodes advertise then
        res = setup_nodes(self.grid, self.reg, self.reg.to_set_up(self.grid), self.boot.node_yaml,
                          float(fed.round_timeout), int(self.boot.spec["num_features"]),
                          secure=self.secure if self.ckpt is None else None)
        self.bytes_up, self.bytes_down = res.bytes_up, res.bytes_down
        self.setup_exchange = res.exchange
        if not res.accepted:
            raise no_node_accepted(self.reg)
        self.scaler, self.scaler_source = self._scaler(res.stats)
        if self.ckpt is not None:  # H5: a resumed run keeps its scaler
            self.scaler, self.scaler_source = checkpoint.saved_scaler(self.ckpt)
        self.scaler_rec = ConfigRecord({"scaler-mean": self.scaler.mean.tolist(),
                                        "scaler-scale": self.scaler.scale.tolist()})
        test = self.boot.test
        self.Xte = None
        if test is not None:
            self.Xte = self.scaler.transform(test.X)
            self.writer.heldout(self.Xte, test.y)
        prep = Preprocessor(self.boot.features, self.scaler, self.boot.class_names,
                            self.boot.spec,
                            "binary" if len(self.boot.class_names) == 2 else "multiclass")
        self.writer.json("preprocess.json", prep.to_dict())
        self.privacy = ServerPrivacy(cfg)
        if self.secure is not None and cfg.privacy.mode == "distributed":
            self.privacy.distributed = self.secure
        # a resumed run restores its last evaluation below (and its secure-aggregation run
        # ids first: a round-0 secure evaluation would reuse the old evaluation run id)
        ev0 = self.evaluate(0) if self.ckpt is None else {"loss": None, "accuracy": None}
        self.last_eval = (0, ev0)
        acc = ev0.get("accuracy")
        print(f"[lepton-fed] setup done ({res.accepted} nodes, scaler: {self.scaler_source})"
              + (f"; round 0: acc {acc:.4f} loss {ev0['loss']:.4f}" if acc is not None else ""),
              flush=True)
        if self.ckpt is not None:  # H5: continue after the checkpointed round
            self.first_round = checkpoint.restore(self, self.ckpt)

    def _scaler(self, stats: list[Any]) -> tuple[Scaler, str]:
        """The federation's declared normalization, else the nodes' summed statistics,
        else none (identity, with a warning)."""
        declared = self.boot.declared_scaler
        if declared is not None:
            return Scaler(*declared), "declared in the schema"
        if stats:
            return (Scaler.from_stats(stats, per_feature=self.boot.input_shape is None),
                    f"from {len(stats)} nodes' feature sums")
        log.warning("no node sent feature statistics (their policies keep them) and the "
                    "schema declares no normalization: inputs are not scaled")
        return Scaler.identity(int(self.boot.spec["num_features"])), "none (identity)"

    def evaluate(self, rnd: int) -> dict[str, Any]:
        """Server-side figures (when the server holds test rows) and federated ones."""
        ev: dict[str, Any] = {"loss": None, "accuracy": None}
        if self.Xte is not None and self.boot.test is not None:
            set_state(self.model, self.gstate)
            ev = dict(evaluate_model(self.model, self.Xte, self.boot.test.y, self.device))
        if self.fed_eval:
            connected = set(self.grid.get_node_ids())
            nodes = sorted(self.reg.ready & connected)
            ex: Any
            if self.secure is not None:  # H3: secure evaluation: only federation totals
                fed, ex = self.secure.secure_evaluate(
                    self.grid, self.reg, to_array_record(self.gstate), nodes, self.scaler_rec,
                    binary=len(self.boot.class_names) == 2, min_cohort=self.min_cohort)
            else:
                fed, ex = federated_evaluate(self.grid, self.reg, to_array_record(self.gstate),
                                             nodes, self.scaler_rec, float(self.fed.round_timeout))
            self.bytes_up += ex.bytes_up
            self.bytes_down += ex.bytes_down
            ev["federated"] = fed
            if self.Xte is None and fed is not None:
                ev |= {k: fed[k] for k in ("loss", "accuracy", "auc") if k in fed}
        return ev

    # ------------------------------------------------------------------ one round
    def join_late_nodes(self) -> None:
        """Setup for nodes that connected (or restarted) since; their stats are unused."""
        late = self.reg.to_set_up(self.grid)
        if late and self.secure is not None:
            self.secure.forget(late)  # a restarted node advertises fresh round keys
        if late:
            res = setup_nodes(self.grid, self.reg, late, self.boot.node_yaml,
                              float(self.fed.round_timeout), len(self.scaler.mean),
                              secure=self.secure)
            self.bytes_up += res.bytes_up
            self.bytes_down += res.bytes_down
            if res.stats:
                log.info("%d node(s) joined", len(res.stats))

    def train_messages(self, rnd: int, nodes: list[int]) -> list[Message]:
        arrays = to_array_record(self.gstate)
        planned = list(self.strategy.configure_train(rnd, arrays, ConfigRecord({}),
                                                     cast(Grid, _Sampled(nodes))))
        msgs = []
        for m in planned:
            nid = m.metadata.dst_node_id
            content = RecordDict({"arrays": m.content["arrays"], "config": m.content["config"]})
            if nid not in self.reg.scaler_sent:
                content["lepton"] = self.scaler_rec
            msgs.append(Message(content, dst_node_id=nid, message_type="train"))
        return msgs

    def exchange_round(self, rnd: int, msgs: list[Message]) -> RoundOutcome:
        """The round's exchanges on the plain, central-DP or secure path."""
        cfg = self.cfg
        if self.secure is not None:
            r = self.secure.round(self.grid, rnd, msgs, self.gstate, self.privacy)
            # H5: the unmasked sum is checked too; a bad one abandons the round
            bad = check_aggregate(r.aggregate, self.gstate) if r.aggregate is not None else None
            if bad is not None:
                log.warning("round %d: secure aggregate rejected: %s", rnd, bad)
                r.aggregate, r.info = None, {"round": rnd, "abandoned": bad}
            return RoundOutcome(
                ok=r.ok if r.aggregate is not None else [], declined=r.declined,
                errors=[(r.node_of.get(e.metadata.reply_to_message_id, e.metadata.src_node_id),
                         error_code(e)) for e in r.errors],
                aggregate=r.aggregate, bytes_up=r.bytes_up, bytes_down=r.bytes_down,
                secagg=r.info, late=r.late, node_of=r.node_of, exchanges=r.exchanges)
        ex = exchange(self.grid, msgs, self.deadline, self.reg.learn_name,
                      overdue=self.overdue)  # H5: late replies are pulled and set apart
        # ---- H5: every reply is checked before use (validate_updates); usable ones
        # ---- are ordered by node name so the sums do not depend on arrival order
        ex.ok, rejected = validate_replies(
            ex.ok, self.gstate, rnd=rnd, sent=ex.node_of, codec=cfg.compression["update"],
            clip=update_clip(cfg), name=lambda m: self.reg.name(ex.node(m)),
            weight_key=str(getattr(self.strategy, "weighted_by_key", "num-examples")))
        for j in rejected:
            log.warning("round %d: update of %s rejected (%s): %s", rnd,
                        self.reg.name(ex.node(j.reply)), j.code, j.detail)
        for name, eps in rejected_epsilons(rejected, lambda m: self.reg.name(ex.node(m))).items():
            self.per_client_eps[name] = max(self.per_client_eps.get(name, 0.0), eps)
        # ---- end H5
        out = RoundOutcome(ok=ex.ok, declined=ex.declined, late=ex.late,
                           errors=[(ex.node(e), error_code(e)) for e in ex.errors]
                           + [(n, "NO_REPLY") for n in ex.missing]
                           + [(ex.node(j.reply), j.code) for j in rejected],  # H5
                           bytes_up=ex.bytes_up, bytes_down=ex.bytes_down, node_of=ex.node_of,
                           exchanges=[exchange_record(
                               "train", len(msgs), len(ex.ok) + len(ex.declined), ex.seconds,
                               ex.bytes_up, ex.bytes_down)])
        if ex.ok and cfg.privacy.mode == "central":
            total = sum_updates(ex.ok, self.gstate, cfg.compression["update"],
                                clip=update_clip(cfg))
            out.aggregate = mean_update_reply(self.gstate, self.privacy.noisy_mean(total, rnd))
        return out

    def record(self, rnd: int, out: RoundOutcome) -> dict[str, Any]:
        """Book-keeping of declines, failures, budgets and names. Returns the round's
        detail for its metrics row: ``declines`` and ``failures`` by code, and
        ``epsilon_per_node`` for the nodes that reported an epsilon this round."""
        reg = self.reg
        declines: Counter[str] = Counter()
        reported: dict[str, float] = {}
        for r in out.ok:
            reg.scaler_sent.add(out.node(r))
        for r in out.declined:
            nid = out.node(r)
            code = decline_code(r) if "decline" in r.content else BUDGET_EXHAUSTED
            reg.record_decline(nid, code)
            declines[code] += 1
            if code == BUDGET_EXHAUSTED:
                self.stopped.setdefault(reg.name(nid), rnd)
        for r in out.ok + out.declined:
            self.privacy.observe(reg.name(out.node(r)), r.content["metrics"])
            eps = r.content["metrics"].get("epsilon")
            if eps is not None:
                name = reg.name(out.node(r))
                self.per_client_eps[name] = max(self.per_client_eps.get(name, 0.0),
                                                float(cast(float, eps)))
                reported[name] = self.per_client_eps[name]
        for nid, code in out.errors:
            reg.record_failure(nid, code)
            log.warning("round %d: node %s failed: %s", rnd, reg.name(nid), code)
        late_names = {id(r): reg.name(nid) for nid, r in out.late}  # H5: stragglers
        for nid, _ in out.late:
            reg.record_late(nid)
            log.warning("round %d: a late reply of node %s (past an earlier round's "
                        "deadline) was discarded", rnd, reg.name(nid))
        for name, eps in rejected_epsilons(  # a discarded late reply still cost privacy
                [Rejection(r, "LATE", "") for _, r in out.late], lambda m: late_names[id(m)],
        ).items():
            self.per_client_eps[name] = max(self.per_client_eps.get(name, 0.0), eps)
        self.failures += len(out.errors)
        detail: dict[str, Any] = {"declines": dict(declines),
                                  "failures": dict(Counter(c for _, c in out.errors))}
        if reported:
            detail["epsilon_per_node"] = dict(sorted(reported.items()))
        return detail

    def aggregate(self, rnd: int, out: RoundOutcome) -> bool:
        """Apply the round to the global model; False when nothing could be aggregated."""
        codec = self.cfg.compression["update"]
        if out.aggregate is not None:
            new_arrays, _ = self.strategy.aggregate_train(rnd, [out.aggregate])
        elif out.ok:
            new_arrays, _ = self.strategy.aggregate_train(
                rnd, decode_replies(out.ok, self.gstate, codec))
        else:
            return False
        if new_arrays is None:
            return False
        self.gstate = OrderedDict((k, v.astype(self.gstate[k].dtype))
                                  for k, v in from_array_record(new_arrays).items())
        self.completed = rnd
        if self.cfg.privacy.mode == "central":
            self.privacy.account_release(len(out.ok))
        return True

    def round(self, rnd: int) -> bool:
        """One round; False when the run must stop."""
        fed = self.fed
        t0 = time.monotonic()
        self.join_late_nodes()
        nodes = self.reg.sample(self.grid, int(fed.clients_per_round),
                                derive_seed(self.cfg.seed, "sampling", rnd),
                                minimum=self.min_cohort, wait_s=self.wait_s)
        if not nodes:
            self.stop_reason = (f"round {rnd}: fewer than {self.min_cohort} eligible nodes "
                                f"within {self.wait_s:.0f} s")
            log.warning("%s; ending the run", self.stop_reason)
            return False
        connected = len(list(self.grid.get_node_ids()))
        out = self.exchange_round(rnd, self.train_messages(rnd, nodes))
        self.bytes_up += out.bytes_up
        self.bytes_down += out.bytes_down
        detail = self.record(rnd, out)
        changed = self.aggregate(rnd, out)
        if rnd % self.every == 0 or rnd == fed.rounds or not changed:
            ev = self.evaluate(rnd)
            self.last_eval = (rnd, ev)
        else:
            ev = {k: None for k in self.last_eval[1]}
        eps_now = self.privacy.epsilon(self.per_client_eps)
        row: dict[str, Any] = {
            "round": rnd, **ev, "clients": len(out.ok), "failed": len(out.errors),
            "declined": len(out.declined), "late": len(out.late), "epsilon": eps_now,
            "bytes_up": out.bytes_up, "bytes_down": out.bytes_down, "seconds": time.monotonic() - t0,
            "sampled": len(nodes), "connected": connected, **detail,
            "exchanges": out.exchanges}
        if out.secagg is not None:
            row["secagg"] = out.secagg
        self.rows.append(row)
        # H5: the round's state is on disk before anything about it is published
        checkpoint.save(self, rnd)
        self.writer.round(row)
        for o in self.observers:
            o.on_round(row)
        _print_row(row, int(fed.rounds))
        if out.secagg is not None and "abandoned" in out.secagg:
            return True
        if not out.ok and out.aggregate is None:
            budget = [r for r in out.declined
                      if "decline" not in r.content or decline_code(r) == BUDGET_EXHAUSTED]
            if out.declined and not out.errors:
                if budget:
                    log.warning("round %d: every sampled client declined (privacy budget)", rnd)
                if len(self.stopped) >= fed.num_clients or fed.clients_per_round == fed.num_clients:
                    self.stop_reason = "every node declined"
                    return False
                return True
            if out.errors:
                codes = sorted({c for _, c in out.errors})
                self.writer.model(self.gstate)
                raise RunFailed(f"round {rnd}: no client succeeded ({len(out.errors)} failed): "
                                + ", ".join(codes))
        return True

    # ------------------------------------------------------------------ finish
    def finish(self) -> dict[str, Any]:
        self.writer.model(self.gstate)
        plots = plot_metrics(self.rows, self.writer.dir / "plots")
        fed = self.fed
        privacy = self.privacy.summary(self.per_client_eps, self.stopped)
        if self.cfg.privacy.mode == "central":  # who enforces the sensitivity bound
            privacy["server_reclips_decoded_updates"] = not bool(self.cfg.secagg.enabled)
        summary = {
            "rounds_completed": self.completed,
            "rounds_planned": int(fed.rounds),
            "num_clients": int(fed.num_clients),
            "clients_per_round": int(fed.clients_per_round),
            "final": self.last_eval[1],  # the model has not changed since its last evaluation
            "privacy": privacy,
            "secagg": _secagg_summary(self.cfg, self.rows),
            "nodes": self.reg.summary(),
            "evaluation": {"server_data": self.Xte is not None, "federated": self.fed_eval},
            "scaler": self.scaler_source,
            "bytes": {"up": self.bytes_up, "down": self.bytes_down},
            "setup_exchange": self.setup_exchange,
            "failures": self.failures,
            "stopped": self.stop_reason,
            "wall_seconds": time.monotonic() - self.t_start,
            "model": "model.safetensors",
            "plots": [f"plots/{p}" for p in plots],
            "device": self.device,
        }
        self.writer.json("summary.json", summary)
        for o in self.observers:
            o.on_finish(summary)
        return summary


def _print_row(row: dict[str, Any], rounds: int) -> None:
    acc = row.get("accuracy")
    evs = (f"acc {acc:.4f} loss {row['loss']:.4f}"
           + (f" auc {row['auc']:.4f}" if row.get("auc") is not None else "")
           if acc is not None else "(not evaluated)")
    eps = row.get("epsilon")
    eps_s = f" eps {eps:.3f}" if eps is not None else ""
    print(f"[lepton-fed] round {row['round']}/{rounds}: {evs}{eps_s} clients {row['clients']} "
          f"failed {row['failed']} declined {row['declined']} ({row['seconds']:.2f}s)", flush=True)


def run_federation(grid: Grid, cfg: DictConfig, writer: RunWriter,
                   observers: Sequence[RoundObserver] = (),
                   resume: str | None = None) -> dict[str, Any]:
    """Run ``cfg.federation.rounds`` rounds and write the run directory.

    Raises:
        RunFailed: no node accepted the setup, too few nodes connected in time, or no
            client succeeded in a round for a reason other than a decline.
    """
    seed_everything(cfg.seed)
    resume = resume or cfg.get("resume")  # H5: resume=RUN_DIR (server/checkpoint.py)
    run = _Run(grid, cfg, writer, observers, resume=str(resume) if resume else None)
    run.setup()
    for rnd in range(run.first_round, int(cfg.federation.rounds) + 1):
        if not run.round(rnd):  # checkpointed inside (H5)
            break
    return run.finish()


def _secagg_summary(cfg: DictConfig, rows: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {"enabled": bool(cfg.secagg.enabled)}
    if cfg.secagg.enabled:
        per_round = [r["secagg"] for r in rows if r.get("secagg")]
        first: dict[str, Any] = next((p for p in per_round if "neighbours" in p), {})
        out |= {
            "neighbours": first.get("neighbours"), "threshold": first.get("threshold"),
            "security_bits": first.get("security_bits"),
            "correctness_bits": first.get("correctness_bits"),
            "level": {k: cfg.secagg.get(k) for k in ("security_bits", "colluding_fraction",
                                                     "dropout_rate", "correctness_bits")},
            "clip": update_clip(cfg), "field_bits": 32, "max_weight": cfg.secagg.max_weight,
            "timeout_s": cfg.secagg.timeout,
            "abandoned_rounds": [p["round"] for p in per_round if "abandoned" in p],
            "rounds": per_round,
        }
    return out
