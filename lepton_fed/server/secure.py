"""Secure aggregation on the Message API: the server side of the Flower adapter.

Round keys travel in the setup exchange (:func:`lepton_fed.server.setup.setup_nodes`):
the ``query.setup`` message to a node carries an advertisement request for the run's
rounds from the next round on (:meth:`SecureAggregator.setup_requests`; at most
``MAX_ROUNDS_PER_ADVERT`` rounds), and a node that accepts the run replies with its
signed round keys (:meth:`SecureAggregator.collect_setup`), checked exactly as an
in-round advertisement. Nodes set up late (joined or restarted) get the same.

Exchanges per round (the protocol itself is pure code in :mod:`lepton_fed.secagg`):

0. ``query.secagg_advertise`` -- only for cohort nodes without signed round keys for
   this round: a node whose setup reply carried none (its advertisement failed or was
   refused), a run longer than one advertisement covers, a resumed run (new protocol
   run id): each node returns signed keys for the next ``rounds`` rounds. With every
   node advertised at setup a round is the two exchanges below.
1. ``train`` -- the normal train message plus the masked-input request; the client
   trains, clips its update, and returns ONLY the masked, field-encoded vector
   ``[w * delta, w]`` (weights travel inside the mask) and encrypted shares.
2. ``query.secagg_unmask`` -- survivors return the shares that remove the masks.

The graph degree k and threshold t are derived per round from ``secagg.security_bits``,
``secagg.colluding_fraction`` and ``secagg.dropout_rate`` for the round's cohort size
(explicit ``secagg.neighbours``/``threshold`` override them; every node refuses a
(k, t) weaker than its own minimum). The round info records k, t and the bounds.

Federated evaluation under secure aggregation (:meth:`SecureAggregator.secure_evaluate`)
is a SEPARATE protocol run (its own :class:`SecAggServer`, run id
:func:`~lepton_fed.secagg.evaluation.eval_run_id`, ``federation.rounds + 1`` advertised
rounds, clip ``EVAL_CLIP``; nodes keep a separate ``eval`` slot), so training round
numbers and keys are untouched: ``query.secagg_advertise`` (slot ``eval``), then
``query.secagg_evaluate`` (the global model; the node replies with its masked evaluation
vector only), then ``query.secagg_unmask`` (slot ``eval``). The server learns the
federation's example-weighted accuracy, loss and binned AUC, never a node's.

Distributed DP (``privacy=distributed``, :mod:`lepton_fed.privacy.distributed`): every
train config carries a fresh public ``ddp-rotation-seed``; nodes mask integer vectors
that already hold their noise shares; a round with fewer masked inputs than the plan's
``min_contributors`` is abandoned BEFORE any unmask request (the server never learns a
sum with less noise); the unmasked field sum is decoded and divided by the planned
cohort size, with nothing added. ``ddp_releases`` counts the sums unmasked and
:meth:`SecureAggregator.ddp_epsilon` is their epsilon.

The server learns the sum of ``w_i * delta_i`` and of ``w_i`` and nothing else about an
individual update (see ``lepton_fed/secagg/README.md`` for the threat model). A
:class:`~lepton_fed.errors.ProtocolAbort` abandons the round: the global model stays as
it was and the round is recorded as abandoned.
"""

from __future__ import annotations

import logging
import math
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, RecordDict
from flwr.serverapp import Grid
from omegaconf import DictConfig

from lepton_fed.config.derived import update_clip
from lepton_fed.errors import ProtocolAbort
from lepton_fed.models import flatten_state
from lepton_fed.models.predict import eval_from_mean
from lepton_fed.privacy.distributed import DistributedPlan
from lepton_fed.secagg import SecAggResult, SecAggServer, ServerPhase
from lepton_fed.secagg.evaluation import EVAL_CLIP, eval_dim, eval_run_id
from lepton_fed.secagg.settings import params_from_config
from lepton_fed.secagg.wire import MAX_ROUNDS_PER_ADVERT
from lepton_fed.server.aggregate import mean_update_reply
from lepton_fed.server.exchange import (
    decline_code,
    error_code,
    exchange_record,
    remember_overdue,
    take_late,
)
from lepton_fed.server.registry import NodeRegistry
from lepton_fed.utils.records import content_bytes
from lepton_fed.utils.seed import derive_seed

__all__ = ["SecureAggregator", "SecureRoundResult", "run_id_for"]

log = logging.getLogger("lepton_fed")


@dataclass
class SecureRoundResult:
    """What one secure round produced (for the loop's metrics)."""

    ok: list[Message] = field(default_factory=list)
    errors: list[Message] = field(default_factory=list)
    declined: list[Message] = field(default_factory=list)
    aggregate: Message | None = None
    bytes_up: int = 0
    bytes_down: int = 0
    abandoned: str | None = None
    info: dict[str, Any] = field(default_factory=dict)
    late: list[tuple[int, Message]] = field(default_factory=list)  # (node, discarded reply)
    node_of: dict[str, int] = field(default_factory=dict)  # request message id -> node
    exchanges: list[dict[str, Any]] = field(default_factory=list)  # exchange_record()s


class SecureAggregator:
    """Owns one :class:`SecAggServer` for the whole run (keys advertised once)."""

    def __init__(self, cfg: DictConfig, run_id: int) -> None:
        self.cfg = cfg
        sa = cfg.secagg
        clip = update_clip(cfg)
        if cfg.privacy.mode == "distributed":  # integers are masked as they are
            clip = float(cfg.privacy.clip)
        if clip is None:  # update_clip gives the field bound whenever secagg is on
            raise ValueError("secure aggregation needs a clip bound")
        # one advertisement covers the run's rounds up to the wire format's limit; a
        # longer run re-advertises in-round when the keys run out
        self.params = params_from_config(
            sa, rounds=min(int(cfg.federation.rounds), MAX_ROUNDS_PER_ADVERT), clip=clip)
        self.server = SecAggServer(params=self.params, run_id=run_id)
        self.timeout = float(sa.timeout)
        # H5: stragglers: the masked-input (train) stage waits until the round deadline
        # when one is set; a node answering later is a dropout (its masks are recovered)
        deadline = cfg.federation.get("round_deadline", None)
        self.train_timeout = float(deadline) if deadline is not None else self.timeout
        self.overdue: dict[str, int] = {}  # unanswered masked-input requests -> node
        self.run_id = run_id
        self._eval: SecAggServer | None = None  # evaluation's own protocol run (lazy)
        self._eval_round = 0
        self.ddp: DistributedPlan | None = None  # privacy=distributed: the run's plan
        self.ddp_releases = 0  # sums the server unmasked under distributed DP

    def _exchange(self, grid: Grid, requests: dict[int, bytes], message_type: str,
                  res: SecureRoundResult, extra: dict[int, RecordDict] | None = None,
                  slot: str = "train", timeout: float | None = None,
                  overdue: dict[str, int] | None = None,
                  ) -> tuple[dict[int, bytes], list[Message]]:
        msgs = []
        for nid, req in requests.items():
            content = extra[nid] if extra is not None else RecordDict()
            rec = ConfigRecord({"request": req})
            if slot != "train":
                rec["slot"] = slot
            content["secagg"] = rec
            msgs.append(Message(content, dst_node_id=nid, message_type=message_type))
        down = sum(content_bytes(m.content) for m in msgs)
        res.bytes_down += down
        up0, t0 = res.bytes_up, time.monotonic()
        replies = list(grid.send_and_receive(
            msgs, timeout=self.timeout if timeout is None else timeout))
        sent = {m.metadata.message_id: m.metadata.dst_node_id for m in msgs}  # H5
        res.node_of.update(sent)  # replies are attributed to the node they were sent to
        if overdue is not None:  # late answers to earlier rounds are set apart
            replies, late = take_late(grid, replies, sent, overdue)
            res.late += late
            remember_overdue(sent, {sent[r.metadata.reply_to_message_id] for r in replies
                                    if r.metadata.reply_to_message_id in sent}, overdue)
        out: dict[int, bytes] = {}
        ok: list[Message] = []
        for r in replies:
            if r.metadata.reply_to_message_id not in sent:  # H5: not for this exchange
                log.warning("%s: a reply to another exchange's request was discarded",
                            message_type)
                continue
            if r.has_error():
                res.errors.append(r)
                continue
            res.bytes_up += content_bytes(r.content)
            ok.append(r)
            if "secagg" in r.content:
                out[sent[r.metadata.reply_to_message_id]] = bytes(
                    cast(bytes, r.content["secagg"]["reply"]))
        res.exchanges.append(exchange_record(
            message_type, len(msgs), len(out), time.monotonic() - t0,
            res.bytes_up - up0, down))
        return out, ok

    def setup_requests(self, nodes: list[int]) -> dict[int, bytes]:
        """Advertisement requests for the setup messages of ``nodes``: round keys for
        ``params.rounds`` rounds from the round after the last one started. Pair with
        :meth:`collect_setup` (also when the exchange fails: it ends the stage)."""
        return self.server.advertise(nodes) if nodes else {}

    def collect_setup(self, replies: dict[int, bytes]) -> tuple[int, ...]:
        """The advertisements carried by setup replies (``{node: AdvertiseReply bytes}``),
        checked as in-round ones (run, round, key count, roster pinning; the round-key
        signatures when a round uses them). A node missing here, or refused (listed in
        ``server.advert_rejected``), is asked again in-round. Returns the accepted nodes."""
        if self.server.phase != ServerPhase.ADVERTISING:  # nothing was requested
            return ()
        accepted = self.server.collect_advertisements(replies)
        for n, why in self.server.advert_rejected.items():
            if n in replies:
                log.warning("setup: round keys of node %s refused: %s", n, why)
        return accepted

    def forget(self, nodes: list[int]) -> None:
        """Nodes that restarted (set up again): their round keys are gone with their
        state; they advertise fresh ones before their next round."""
        for n in nodes:
            self.server.forget(n)
            if self._eval is not None:
                self._eval.forget(n)

    def round(self, grid: Grid, rnd: int, msgs: list[Message],
              gstate: OrderedDict[str, np.ndarray], privacy: Any) -> SecureRoundResult:
        """Run one secure round over the nodes ``msgs`` are addressed to."""
        res = SecureRoundResult()
        cohort = [m.metadata.dst_node_id for m in msgs]
        try:
            need = [n for n in cohort if self.server.advertised_until(n) < rnd]
            if need:
                reqs = self.server.advertise(need, first_round=rnd)
                replies, _ = self._exchange(grid, reqs, "query.secagg_advertise", res)
                self.server.collect_advertisements(replies)
            dim = int(flatten_state(gstate).size)
            reqs = self.server.start_round(round=rnd, cohort=cohort, dim=dim)
            train = {m.metadata.dst_node_id: m.content for m in msgs
                     if m.metadata.dst_node_id in reqs}
            seed = self._ddp_round(train, dim)
            masked, ok = self._exchange(grid, reqs, "train", res, extra=train,
                                        timeout=self.train_timeout, overdue=self.overdue)
            res.declined = [r for r in ok if int(cast(int, r.content["metrics"].get("declined", 0)))]
            res.ok = [r for r in ok if not int(cast(int, r.content["metrics"].get("declined", 0)))]
            reqs = self.server.collect_masked_inputs(masked)
            if self.ddp is not None:  # distributed DP: never unmask a sum with too few shares
                if len(reqs) < self.ddp.min_contributors:
                    self.server.abandon()
                    raise ProtocolAbort(
                        f"distributed_dp_too_few: {len(reqs)} masked input(s), fewer than "
                        f"the {self.ddp.min_contributors} the noise is sized for; not unmasked")
                self.ddp_releases += 1  # the server is about to learn this round's sum
            shares, _ = self._exchange(grid, reqs, "query.secagg_unmask", res)
            missing = {n: q for n, q in reqs.items() if n not in shares}
            if missing:  # one retry: a byte-identical request gets the same reply
                more, _ = self._exchange(grid, missing, "query.secagg_unmask", res)
                shares.update(more)
            result = self.server.collect_unmask(shares)
        except ProtocolAbort as exc:
            log.warning("round %d: secure aggregation abandoned: %s", rnd, exc)
            res.abandoned = str(exc)
            res.info = {"round": rnd, "abandoned": str(exc)}
            return res
        m = len(result.contributors)
        if self.ddp is not None and seed is not None and result.field_sum is not None:
            from lepton_fed.privacy.distributed import decode_sum

            # the noise is already in the sum; divide by the PLANNED cohort (public)
            mean = decode_sum(result.field_sum, self.ddp, seed) / int(
                self.cfg.federation.clients_per_round)
        elif self.cfg.privacy.mode == "central":
            mean = privacy.noisy_mean(result.sum, rnd)
        else:
            mean = result.sum / max(result.total_weight, 1e-12)
        res.aggregate = mean_update_reply(gstate, mean)
        res.info = {
            "round": rnd, "contributors": m, "neighbours": result.neighbours,
            "threshold": result.threshold,
            # bits of the bound on P[some honest input exposed]; None: impossible
            # under the assumed colluder count (secagg README, "Parameters")
            "security_bits": (None if math.isinf(result.security_bits)
                              else round(result.security_bits, 2)),
            "correctness_bits": round(-result.correctness_log2, 2),
            "dropped": {str(getattr(k, "name", k)).lower(): list(v)
                        for k, v in result.dropped.items() if v},
            "error_bound_sum": float(np.max(result.error_bound)),
            "error_bound_mean": float(np.max(result.error_bound)) / max(
                result.total_weight if self.cfg.privacy.mode != "central" else m, 1e-12),
        }
        if self.ddp is not None:
            res.info["distributed_dp"] = {
                "releases": self.ddp_releases, "epsilon": self.ddp_epsilon(),
                "wrap_log2": round(self.ddp.wrap_log2, 2),
                "noise_multiplier": self.ddp.noise_multiplier}
        return res

    def _ddp_round(self, train: dict[int, RecordDict], dim: int) -> int | None:
        """Distributed DP: the run's plan (first round) and this round's public rotation
        seed, put into every train config; None in other modes."""
        if self.cfg.privacy.mode != "distributed":
            return None
        self.ddp_plan(dim)
        seed = secrets.randbits(63)
        for content in train.values():
            cast(ConfigRecord, content["config"])["ddp-rotation-seed"] = seed
        return seed

    def ddp_plan(self, dim: int) -> DistributedPlan:
        """Distributed DP: the run's plan for a model of ``dim`` parameters (cached)."""
        if self.ddp is None:
            from lepton_fed.privacy.distributed_config import plan_for_config

            self.ddp = plan_for_config(self.cfg, dim)
        return self.ddp

    def ddp_epsilon(self, dim: int | None = None) -> float | None:
        """Distributed DP: epsilon of the sums unmasked so far (None in other modes, and
        after a resume before the plan is known: pass the model's ``dim`` to compute it)."""
        if self.cfg.privacy.mode != "distributed":
            return None
        if self.ddp is None and dim is not None:
            self.ddp_plan(dim)
        if self.ddp is None:
            return 0.0 if self.ddp_releases == 0 else None
        return self.ddp.epsilon_after(self.ddp_releases)


    def _eval_server(self) -> SecAggServer:
        if self._eval is None:
            params = params_from_config(self.cfg.secagg, rounds=int(self.cfg.federation.rounds) + 1,
                                        clip=EVAL_CLIP)
            self._eval = SecAggServer(params=params, run_id=eval_run_id(self.run_id))
        return self._eval

    def secure_evaluate(
        self, grid: Grid, reg: NodeRegistry, arrays: ArrayRecord, nodes: list[int],
        scaler: ConfigRecord, *, binary: bool, min_cohort: int,
    ) -> tuple[dict[str, Any] | None, SecureRoundResult]:
        """Federated evaluation of ``arrays`` by a secure sum over ``nodes``.

        Every node evaluates on its own held-out rows and sends only its masked
        evaluation vector; the server learns the weighted mean over the contributors:
        federation-wide ``accuracy``, ``loss`` (per-example loss capped at
        ``EVAL_LOSS_CAP``), ``auc`` (binary), ``n`` (``total weight * max_weight``: the
        number of held-out rows while no node holds more than ``secagg.max_weight``) and
        ``nodes`` (contributors). No ``per_node`` figures exist. Returns None (and the
        result's ``abandoned`` reason) with fewer than ``min_cohort`` nodes, when the
        protocol aborts, with fewer than ``min_cohort`` contributors (the sum is then not
        used), or when no contributor holds rows out.
        """
        res = SecureRoundResult()
        if len(nodes) < max(2, min_cohort):
            res.abandoned = (f"{len(nodes)} node(s) ready for evaluation, fewer than the "
                             f"minimum cohort {max(2, min_cohort)}")
            res.info = {"abandoned": res.abandoned}
            return None, res
        srv = self._eval_server()
        self._eval_round += 1
        rnd = self._eval_round
        try:
            need = [n for n in nodes if srv.advertised_until(n) < rnd]
            if need:
                reqs = srv.advertise(need, first_round=rnd)
                replies, _ = self._exchange(grid, reqs, "query.secagg_advertise", res, slot="eval")
                srv.collect_advertisements(replies)
            reqs = srv.start_round(round=rnd, cohort=nodes, dim=eval_dim(binary))
            extra = {}
            for nid in reqs:
                content = RecordDict({"arrays": arrays})
                if nid not in reg.scaler_sent:
                    content["lepton"] = scaler
                extra[nid] = content
            masked, ok = self._exchange(grid, reqs, "query.secagg_evaluate", res, extra=extra,
                                        slot="eval")
            for r in ok:
                if "decline" in r.content:
                    res.declined.append(r)
                    reg.record_decline(r.metadata.src_node_id, decline_code(r))
                else:
                    res.ok.append(r)
                    reg.scaler_sent.add(r.metadata.src_node_id)
            for r in res.errors:
                reg.record_failure(r.metadata.src_node_id, error_code(r))
            reqs = srv.collect_masked_inputs(masked)
            shares, _ = self._exchange(grid, reqs, "query.secagg_unmask", res, slot="eval")
            missing = {n: q for n, q in reqs.items() if n not in shares}
            if missing:  # one retry: a byte-identical request gets the same reply
                more, _ = self._exchange(grid, missing, "query.secagg_unmask", res, slot="eval")
                shares.update(more)
            result = srv.collect_unmask(shares)
        except ProtocolAbort as exc:
            log.warning("secure evaluation abandoned: %s", exc)
            res.abandoned = str(exc)
            res.info = {"abandoned": str(exc)}
            return None, res
        res.info = _eval_info(result)
        if len(result.contributors) < max(2, min_cohort):
            res.abandoned = (f"{len(result.contributors)} contributor(s), fewer than the "
                             f"minimum cohort {max(2, min_cohort)}: no figure released")
            res.info["abandoned"] = res.abandoned
            log.warning("secure evaluation abandoned: %s", res.abandoned)
            return None, res
        if not result.total_weight > 0:
            return None, res
        out = eval_from_mean(result.weighted_mean(), scale=EVAL_CLIP,
                             n=result.total_weight * float(self.cfg.secagg.max_weight))
        out["nodes"] = len(result.contributors)
        out["secure"] = True
        return out, res


def _eval_info(result: SecAggResult) -> dict[str, Any]:
    return {
        "contributors": len(result.contributors), "neighbours": result.neighbours,
        "threshold": result.threshold,
        "security_bits": (None if math.isinf(result.security_bits)
                          else round(result.security_bits, 2)),
        "dropped": {str(getattr(k, "name", k)).lower(): list(v)
                    for k, v in result.dropped.items() if v},
    }


def run_id_for(cfg: DictConfig, grid: Grid) -> int:
    """The protocol's run id: Flower's run id when there is one, else from the seed."""
    run = getattr(grid, "run", None)
    rid = getattr(run, "run_id", None)
    return int(rid) if rid is not None else derive_seed(cfg.seed, "secagg-run") % 2**62
