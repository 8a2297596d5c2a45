"""The server's round loop: sampling, exchanges, aggregation, evaluation, outputs.

It owns the loop instead of ``Strategy.start()`` because secure aggregation needs several
send/receive exchanges per round, privacy accounting needs the replies' metrics, and a
declined or failed client must be recorded rather than abort the run. Strategies supply
``configure_train`` (node sampling, round config) and ``aggregate_train``.
"""

from __future__ import annotations

import logging
import random
import time
from collections import OrderedDict
from typing import Any, cast

import numpy as np
from flwr.app import ConfigRecord, Message, RecordDict
from flwr.serverapp import Grid
from omegaconf import DictConfig, OmegaConf

from lepton_fed.config.derived import update_clip
from lepton_fed.data.federated import federated_split
from lepton_fed.data.preprocess import FeatureStats, Preprocessor, Scaler
from lepton_fed.errors import RunFailed
from lepton_fed.models import build_model, get_state, set_state
from lepton_fed.models.spec import model_spec
from lepton_fed.server.aggregate import decode_replies, mean_update_reply, sum_updates
from lepton_fed.server.evaluate import evaluate_model
from lepton_fed.server.outputs import RunWriter, plot_metrics
from lepton_fed.utils.device import resolve_device
from lepton_fed.utils.records import content_bytes, from_array_record, to_array_record
from lepton_fed.utils.seed import derive_seed, seed_everything

__all__ = ["run_federation"]

log = logging.getLogger("lepton_fed")


def _strategy(cfg: DictConfig) -> Any:
    from hydra.utils import instantiate

    k = cfg.federation.clients_per_round
    n = cfg.federation.num_clients
    kwargs = {k2: v for k2, v in OmegaConf.to_container(cfg.strategy, resolve=True).items()  # type: ignore[union-attr]
              if k2 != "name"}
    weight = "unit-weight" if cfg.privacy.mode == "central" else "num-examples"
    extra: dict[str, Any] = dict(fraction_train=k / n, min_train_nodes=k, min_available_nodes=k,
                                 fraction_evaluate=0.0, weighted_by_key=weight)
    return instantiate(kwargs | extra, _convert_="all")


def _wait_for_nodes(grid: Grid, n: int, timeout: float) -> list[int]:
    t0 = time.monotonic()
    while len(ids := sorted(grid.get_node_ids())) < n:
        if time.monotonic() - t0 > timeout:
            raise RunFailed(f"only {len(ids)} of {n} nodes connected within {timeout:.0f} s")
        time.sleep(0.2)
    return ids


def _exchange(grid: Grid, msgs: list[Message], timeout: float) -> tuple[list[Message], list[Message], int, int]:
    """Send and receive; returns (ok replies, error replies, bytes down, bytes up)."""
    down = sum(content_bytes(m.content) for m in msgs)
    replies = list(grid.send_and_receive(msgs, timeout=timeout))
    ok = [r for r in replies if not r.has_error()]
    err = [r for r in replies if r.has_error()]
    up = sum(content_bytes(r.content) for r in ok)
    return ok, err, down, up


def run_federation(grid: Grid, cfg: DictConfig, writer: RunWriter) -> dict[str, Any]:
    """Run ``cfg.federation.rounds`` rounds and write the run directory.

    Raises:
        RunFailed: no node answered the setup, or no client succeeded in a round for a
            reason other than an exhausted privacy budget.
    """
    t_start = time.monotonic()
    fed = cfg.federation
    seed_everything(cfg.seed)
    random.seed(derive_seed(cfg.seed, "sampling"))
    device = resolve_device(cfg.device)
    split = federated_split(cfg)
    data = split.data
    spec = model_spec(cfg.model, num_features=data.num_features,
                      num_classes=data.num_classes, input_shape=data.input_shape)
    model = build_model(spec)
    if cfg.privacy.mode == "dpsgd":  # refuse an unusable model before any node is contacted
        from lepton_fed.privacy.dpsgd import dp_ready

        model = dp_ready(model, grad_sample_mode=str(cfg.privacy.grad_sample_mode),
                         model_name=str(cfg.model.name), num_features=data.num_features)
    gstate: OrderedDict[str, np.ndarray] = get_state(model)
    strategy = _strategy(cfg)
    yaml_text = OmegaConf.to_yaml(cfg, resolve=True)
    writer.config(yaml_text)

    # --- setup: every node gets the config and returns feature statistics --------
    node_ids = _wait_for_nodes(grid, fed.num_clients, fed.round_timeout)
    setup = [Message(RecordDict({"config": ConfigRecord({"config-yaml": yaml_text})}),
                     dst_node_id=nid, message_type="query.setup") for nid in node_ids]
    ok, err, down, up = _exchange(grid, setup, fed.round_timeout)
    if not ok:
        reasons = "; ".join(sorted({(e.error.reason or "?")[:300] for e in err}))
        raise RunFailed(f"no node answered the setup message: {reasons}")
    stats = [FeatureStats(int(cast(int, r.content["metrics"]["count"])),
                          np.asarray(r.content["metrics"]["sum"]),
                          np.asarray(r.content["metrics"]["sumsq"])) for r in ok]
    scaler = Scaler.from_stats(stats, per_feature=data.input_shape is None)
    bytes_up, bytes_down = up, down
    test = split.test()
    Xte = scaler.transform(test.X)
    writer.heldout(Xte, test.y)
    prep = Preprocessor(data.features, scaler, data.class_names, spec,
                        "binary" if data.num_classes == 2 else "multiclass")
    writer.json("preprocess.json", prep.to_dict())
    scaler_sent: set[int] = set()

    from lepton_fed.server.privacy import ServerPrivacy

    privacy = ServerPrivacy(cfg)
    secure = None
    if cfg.secagg.enabled:
        from lepton_fed.server.secure import SecureAggregator, run_id_for

        secure = SecureAggregator(cfg, run_id_for(cfg, grid))
    rows: list[dict[str, Any]] = []
    ev0 = evaluate_model(model, Xte, test.y, device)
    print(f"[lepton-fed] setup done ({len(ok)} nodes, scaler from their feature sums); "
          f"round 0: acc {ev0['accuracy']:.4f} loss {ev0['loss']:.4f}", flush=True)
    last_eval: tuple[int, dict[str, Any]] = (0, ev0)
    per_client_eps: dict[str, float] = {}
    stopped: dict[str, int] = {}
    failures_total = 0
    completed = 0
    codec = cfg.compression["update"]
    every = max(1, int(fed.get("evaluate_every", 1) or 1))
    for rnd in range(1, fed.rounds + 1):
        t0 = time.monotonic()
        arrays = to_array_record(gstate)
        planned = list(strategy.configure_train(rnd, arrays, ConfigRecord({}), grid))
        msgs = []
        for m in planned:
            nid = m.metadata.dst_node_id
            content = RecordDict({"arrays": m.content["arrays"], "config": m.content["config"]})
            if nid not in scaler_sent:
                content["lepton"] = ConfigRecord({"scaler-mean": scaler.mean.tolist(),
                                                  "scaler-scale": scaler.scale.tolist()})
                scaler_sent.add(nid)
            msgs.append(Message(content, dst_node_id=nid, message_type="train"))
        secure_info = None
        if secure is not None:
            result = secure.round(grid, rnd, msgs, gstate, privacy)
            ok, err, declined = result.ok, result.errors, result.declined
            down, up = result.bytes_down, result.bytes_up
            agg_reply, secure_info = result.aggregate, result.info
            if result.aggregate is None:
                ok = []
        else:
            ok_all, err, down, up = _exchange(grid, msgs, fed.round_timeout)
            declined = [r for r in ok_all if int(cast(int, r.content["metrics"].get("declined", 0)))]
            ok = [r for r in ok_all if not int(cast(int, r.content["metrics"].get("declined", 0)))]
            agg_reply = None
            if ok and cfg.privacy.mode == "central":
                total = sum_updates(ok, gstate, codec)
                agg_reply = mean_update_reply(gstate, privacy.noisy_mean(total, rnd))
        bytes_up += up
        bytes_down += down
        failures_total += len(err)
        for r in ok + declined:
            eps = r.content["metrics"].get("epsilon")
            if eps is not None:
                cid = str(r.metadata.src_node_id)
                per_client_eps[cid] = max(per_client_eps.get(cid, 0.0), float(cast(float, eps)))
        for r in declined:
            stopped.setdefault(str(r.metadata.src_node_id), rnd)
        for e in err:
            log.warning("round %d: node %d failed: %s", rnd, e.metadata.src_node_id,
                        e.error.reason.splitlines()[-1][:300] if e.error.reason else "?")
        if agg_reply is not None:
            new_arrays, _ = strategy.aggregate_train(rnd, [agg_reply])
        elif ok:
            new_arrays, _ = strategy.aggregate_train(rnd, decode_replies(ok, gstate, codec))
        else:
            new_arrays = None
        if new_arrays is not None:
            gstate = OrderedDict((k, v.astype(gstate[k].dtype)) for k, v in from_array_record(new_arrays).items())
            completed = rnd
            if cfg.privacy.mode == "central":
                privacy.account_release(len(ok))
        set_state(model, gstate)
        if rnd % every == 0 or rnd == fed.rounds or new_arrays is None:
            ev: dict[str, Any] = evaluate_model(model, Xte, test.y, device)
            last_eval = (rnd, ev)
        else:
            ev = {k: None for k in last_eval[1]}
        eps_now = privacy.epsilon(per_client_eps)
        row: dict[str, Any] = {"round": rnd, **ev, "clients": len(ok), "failed": len(err),
               "declined": len(declined), "epsilon": eps_now,
               "bytes_up": up, "bytes_down": down, "seconds": time.monotonic() - t0}
        if secure_info is not None:
            row["secagg"] = secure_info
        rows.append(row)
        writer.round(row)
        evs = (f"acc {ev['accuracy']:.4f} loss {ev['loss']:.4f}"
               + (f" auc {ev['auc']:.4f}" if ev.get("auc") is not None else "")
               if ev["accuracy"] is not None else "(not evaluated)")
        eps_s = f" eps {eps_now:.3f}" if eps_now is not None else ""
        print(f"[lepton-fed] round {rnd}/{fed.rounds}: {evs}{eps_s} clients {len(ok)} "
              f"failed {len(err)} declined {len(declined)} ({row['seconds']:.2f}s)", flush=True)
        if secure_info is not None and "abandoned" in secure_info:
            continue
        if not ok and agg_reply is None:
            if declined and not err:
                log.warning("round %d: every sampled client declined (privacy budget); stopping", rnd)
                if len(stopped) >= fed.num_clients or fed.clients_per_round == fed.num_clients:
                    break
                continue
            if err:
                reasons = "; ".join(sorted({(e.error.reason or "?").splitlines()[-1][:200] for e in err}))
                writer.model(gstate)
                raise RunFailed(f"round {rnd}: no client succeeded ({len(err)} failed): {reasons}")

    writer.model(gstate)
    plots = plot_metrics(rows, writer.dir / "plots")
    final = last_eval[1]  # the model has not changed since its last evaluation
    summary = {
        "rounds_completed": completed,
        "rounds_planned": int(fed.rounds),
        "num_clients": int(fed.num_clients),
        "clients_per_round": int(fed.clients_per_round),
        "final": final,
        "privacy": privacy.summary(per_client_eps, stopped),
        "secagg": _secagg_summary(cfg, rows),
        "bytes": {"up": bytes_up, "down": bytes_down},
        "failures": failures_total,
        "wall_seconds": time.monotonic() - t_start,
        "model": "model.safetensors",
        "plots": [f"plots/{p}" for p in plots],
        "device": device,
    }
    writer.json("summary.json", summary)
    return summary


def _secagg_summary(cfg: DictConfig, rows: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {"enabled": bool(cfg.secagg.enabled)}
    if cfg.secagg.enabled:
        per_round = [r["secagg"] for r in rows if r.get("secagg")]
        first: dict[str, Any] = next((p for p in per_round if "neighbours" in p), {})
        out |= {
            "neighbours": first.get("neighbours"), "threshold": first.get("threshold"),
            "clip": update_clip(cfg), "field_bits": 32, "max_weight": cfg.secagg.max_weight,
            "timeout_s": cfg.secagg.timeout,
            "abandoned_rounds": [p["round"] for p in per_round if "abandoned" in p],
            "rounds": per_round,
        }
    return out
