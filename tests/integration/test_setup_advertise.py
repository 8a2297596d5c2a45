"""Round keys travel in the setup exchange (issue 12): with secure aggregation on, the
``query.setup`` message carries the round-key advertisement request and a node that
accepts the run answers it in its setup reply, so rounds need no
``query.secagg_advertise`` exchange. Driven through the real ServerApp round loop and
the real ClientApp handlers (in-process grid), with a signed roster from a simulation
bundle.

What must hold: no advertisement exchange in rounds that one advertisement covers; the
secure sum still matches the plain run within its stated error bound; a node that
declines the run signs nothing; a node whose setup reply carried no keys is still
advertised in-round (the fallback); a restarted node gets fresh keys in its second
setup; and round keys in a setup reply that the node's identity key did not sign never
enter a round (the forging attack fails).
"""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from flwr.app import ConfigRecord, Message, RecordDict
from flwr.proto.node_pb2 import NodeInfo
from omegaconf import OmegaConf
from safetensors.numpy import load_file

from lepton_fed.client.app import app
from lepton_fed.client.node import NodeState
from lepton_fed.inprocess import InProcessGrid
from lepton_fed.secagg import SecAggClient, SecAggServer
from lepton_fed.secagg.provisioning import (
    load_identity_key,
    make_sim_bundle,
    sim_bundle_paths,
)
from lepton_fed.secagg.settings import params_from_config
from lepton_fed.server.outputs import RunWriter
from lepton_fed.server.rounds import run_federation
from lepton_fed.sim_bundle import write_bundle

N = 5
BASE = (f"federation.num_clients={N}", f"federation.clients_per_round={N}", "model=logreg")
ROUND_KEY_BYTES = 32 + 64  # X25519 public key + Ed25519 signature, one per round


def _grid(tmp_path, client_app=app, n=N, cls=InProcessGrid):
    if not (tmp_path / "bundle").is_dir():
        make_sim_bundle(tmp_path / "bundle", n)
    configs = [{"partition-id": i, "num-partitions": n, "sim-bundle": str(tmp_path / "bundle")}
               for i in range(n)]
    return cls(client_app, n, node_configs=configs)


def _rows(d):
    return [json.loads(x) for x in (d / "metrics.jsonl").read_text().splitlines()]


def _sent(grid) -> Counter[str]:
    """Messages the server sent, by type (every delivered message got a reply)."""
    return Counter(m.metadata.message_type for m in grid.seen)


def _raw(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def test_rounds_send_no_advertisement_exchange(compose_cfg, tmp_path):
    grid = _grid(tmp_path)
    s = run_federation(grid, compose_cfg(*BASE, "federation.rounds=3", "secagg=on"),
                       RunWriter(tmp_path / "run"))
    assert s["rounds_completed"] == 3
    assert [r["secagg"]["contributors"] for r in _rows(tmp_path / "run")] == [N, N, N]
    sent = _sent(grid)
    # setup (with the keys) once per node; per round: masked input + unmask, nothing else
    assert sent == {"query.setup": N, "train": 3 * N, "query.secagg_unmask": 3 * N}, sent
    for m in grid.seen:
        if m.metadata.message_type == "query.setup":  # 3 rounds' signed keys in each reply
            assert len(bytes(m.content["secagg"]["reply"])) > 3 * ROUND_KEY_BYTES


def test_the_secure_sum_still_matches_the_plain_one(compose_cfg, tmp_path):
    """One round: the model from the secure sum differs from the plain run's by more than
    nothing (it was masked and quantized) and by no more than the stated bound."""
    plain = InProcessGrid(app, N)
    run_federation(plain, compose_cfg(*BASE, "federation.rounds=1"), RunWriter(tmp_path / "p"))
    grid = _grid(tmp_path)
    run_federation(grid, compose_cfg(*BASE, "federation.rounds=1", "secagg=on"),
                   RunWriter(tmp_path / "s"))
    assert "query.secagg_advertise" not in _sent(grid)
    a, b = load_file(tmp_path / "p/model.safetensors"), load_file(tmp_path / "s/model.safetensors")
    bound = _rows(tmp_path / "s")[0]["secagg"]["error_bound_mean"]
    diff = max(float(np.abs(a[k] - b[k]).max()) for k in a)
    assert 0 < diff <= bound, (diff, bound)


def test_a_setup_reply_without_keys_is_advertised_in_round(compose_cfg, tmp_path):
    """The fallback: node 2's setup reply lost its keys; its first round asks it (and only
    it) in a ``query.secagg_advertise`` exchange, and it contributes to every round."""
    def stripping(msg, ctx):
        reply = app(msg, ctx)
        if msg.metadata.message_type == "query.setup" and ctx.node_id == 2:
            del reply.content["secagg"]
        return reply

    grid = _grid(tmp_path, stripping)
    s = run_federation(grid, compose_cfg(*BASE, "federation.rounds=2", "secagg=on"),
                       RunWriter(tmp_path / "run"))
    assert s["rounds_completed"] == 2
    assert [r["secagg"]["contributors"] for r in _rows(tmp_path / "run")] == [N, N]
    adverts = [m for m in grid.seen if m.metadata.message_type == "query.secagg_advertise"]
    assert [m.metadata.src_node_id for m in adverts] == [2]


class _Restarting(InProcessGrid):
    """Reports activation times; ``restart`` wipes a node's state as a process restart
    does (as in tests/unit/test_node_restart.py)."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.activations = dict.fromkeys(self.contexts, 1)

    def get_nodes(self):
        return [NodeInfo(node_id=n, last_activated_at=f"t{self.activations[n]}")
                for n in self.contexts]


class _RestartAfterRound1:
    def __init__(self, grid: _Restarting) -> None:
        self.grid = grid

    def on_round(self, row):
        if row["round"] == 1:
            self.grid.contexts[2].state = RecordDict()
            self.grid.activations[2] += 1

    def on_finish(self, summary):
        pass


def test_a_restarted_node_gets_fresh_keys_in_its_second_setup(compose_cfg, tmp_path):
    grid = _grid(tmp_path, cls=_Restarting)
    s = run_federation(grid, compose_cfg(*BASE, "federation.rounds=3", "secagg=on"),
                       RunWriter(tmp_path / "run"), observers=[_RestartAfterRound1(grid)])
    assert [r["secagg"]["contributors"] for r in _rows(tmp_path / "run")] == [N, N, N]
    assert s["nodes"]["declines"] == {}
    setups = [m for m in grid.seen if m.metadata.message_type == "query.setup"
              and m.metadata.src_node_id == 2]
    assert len(setups) == 2 and all("secagg" in m.content for m in setups)
    first, second = (bytes(m.content["secagg"]["reply"]) for m in setups)
    # the second setup advertises rounds 2..: other round keys, never the lost ones again
    assert first[-2 * ROUND_KEY_BYTES:] != second[-2 * ROUND_KEY_BYTES:]
    assert "query.secagg_advertise" not in _sent(grid)


@pytest.mark.parametrize("signer", ["attacker", "unsigned"])
def test_forged_round_keys_in_a_setup_reply_never_enter_a_round(compose_cfg, tmp_path, signer):
    """The attack: node 2's setup reply is replaced on its way to the server by one that
    claims node 2's identity key but carries round keys that key did not sign (signed by
    the attacker's key, or not signed at all). Goal: have the cohort agree masks with
    the attacker's keys in node 2's name. The server's check of the round-key signature
    leaves node 2 out of the round: none of the forged keys is sent to any node, and the
    round is the exact secure sum of the other four."""
    target = 2
    make_sim_bundle(tmp_path / "bundle", N)
    genuine = _raw(load_identity_key(sim_bundle_paths(tmp_path / "bundle").identity_key(
        target - 1)))
    forged_keys: list[bytes] = []

    def forging(msg, ctx):
        reply = app(msg, ctx)
        if msg.metadata.message_type == "query.setup" and ctx.node_id == target:
            key = Ed25519PrivateKey.generate()
            attacker = SecAggClient(node_id=target, identity_key=key, allow_tofu=True)
            fake = attacker.advertise(bytes(msg.content["secagg"]["request"]))
            assert fake.count(_raw(key)) == 1
            fake = fake.replace(_raw(key), genuine)  # claim the node's own identity
            tail = len(fake) - 3 * ROUND_KEY_BYTES
            for i in range(3):
                rec = fake[tail + i * ROUND_KEY_BYTES:tail + (i + 1) * ROUND_KEY_BYTES]
                forged_keys.append(rec[:32])
                if signer == "unsigned":
                    fake = fake.replace(rec, rec[:32] + bytes(64))
            reply.content["secagg"] = ConfigRecord({"reply": fake})
        return reply

    grid = _grid(tmp_path, forging)
    sent: list[bytes] = []
    deliver = grid._deliver

    def spy(msg):
        if "secagg" in msg.content:
            sent.append(bytes(msg.content["secagg"]["request"]))
        return deliver(msg)

    grid._deliver = spy
    s = run_federation(grid, compose_cfg(*BASE, "federation.rounds=3", "secagg=on"),
                       RunWriter(tmp_path / "run"))
    rows = _rows(tmp_path / "run")
    assert s["rounds_completed"] == 3 and len(forged_keys) == 3
    for r in rows:  # node 2 is left out at the advertisement stage, the others are summed
        assert r["secagg"]["contributors"] == N - 1, r["secagg"]
        assert r["secagg"]["dropped"] == {"advertise": [target]}, r["secagg"]
    masked_requests = [q for q in sent if q[1] == 2]  # stage byte: MASKED_INPUT
    assert len(masked_requests) == 3 * (N - 1)
    for q in sent:
        assert not any(k in q for k in forged_keys)


def test_a_node_that_declines_the_run_signs_no_round_keys(compose_cfg, tmp_path):
    """Strict nodes: a setup whose config the policy declines carries an advertisement
    request for a new protocol run; the node declines and its secure-aggregation state
    is byte-identical afterwards. The control (the honest config) does get keys."""
    cfg = compose_cfg("node_policy=strict", "privacy=dpsgd", "privacy.epsilon=3", "secagg=on",
                      "federation.num_clients=4", "federation.clients_per_round=4",
                      "federation.rounds=1", "model=logreg")
    write_bundle(tmp_path / "bundle", cfg)
    grid = InProcessGrid(app, 4, bundle=tmp_path / "bundle")
    assert run_federation(grid, cfg, RunWriter(tmp_path / "run"))["rounds_completed"] == 1
    server = SecAggServer(params=params_from_config(cfg.secagg, rounds=2, clip=1.0),
                          run_id=777)
    request = server.advertise([1])[1]

    def setup(**changes):
        conf = OmegaConf.to_container(cfg, resolve=True)
        for key, value in changes.items():
            sect, _, leaf = key.partition("__")
            conf[sect][leaf] = value
        conf.pop("node_policy", None)
        msg = Message(RecordDict({"config": ConfigRecord({"config-yaml": OmegaConf.to_yaml(conf)}),
                                  "secagg": ConfigRecord({"request": request})}),
                      dst_node_id=1, message_type="query.setup")
        (reply,) = grid.send_and_receive([msg])
        return reply

    def state():
        return bytes(NodeState(grid.contexts[1]).get("secagg-state"))

    before = state()
    declined = setup(privacy__epsilon=1e6)
    assert "decline" in declined.content and "secagg" not in declined.content
    assert state() == before
    accepted = setup()  # the control: the same request, a config the policy accepts
    assert "decline" not in accepted.content and "secagg" in accepted.content
    assert state() != before
