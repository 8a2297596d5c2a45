"""Robust mode (``share_keys_first``): 3 exchanges, recovery from any dropout pattern
that keeps every neighbourhood's threshold, and the never-both rule for key shares."""

from __future__ import annotations

from dataclasses import fields, replace

import numpy as np
import pytest

from lepton_fed.errors import ProtocolAbort
from lepton_fed.secagg import (
    ClientPhase,
    SecAggClient,
    SecAggServer,
    ServerPhase,
    Stage,
    advertise_all,
    default_params,
    make_clients,
    simulate_round,
)
from lepton_fed.secagg import keys as K
from lepton_fed.secagg._client_state import decode_state, encode_state
from lepton_fed.secagg.messages import (
    MaskedInputRequest,
    RobustMaskedInputReply,
    RobustMaskedInputRequest,
    RobustUnmaskReply,
    RobustUnmaskRequest,
    ShareKeysReply,
    ShareKeysRequest,
    UnmaskRequest,
)
from lepton_fed.secagg.shamir import FIELD_PRIME, combine_shares, decode_share_value


def _federation(n: int, *, robust: bool = True, rounds: int = 3, first_id: int = 100):
    ids = list(range(first_id, first_id + n))
    params = default_params(num_clients=n, rounds=rounds, share_keys_first=robust)
    clients, roster = make_clients(ids)
    server = SecAggServer(params=params, run_id=42, roster=roster)
    assert advertise_all(server, clients) == tuple(ids)
    return server, clients


def _inputs(ids, d=64, seed=0):
    rng = np.random.default_rng(seed)
    return {
        n: (rng.uniform(-1, 1, d).astype(np.float32), float(rng.uniform(0.05, 1)))
        for n in ids
    }


def _check_sum(result, inputs, excluded=()):
    kept = {n: v for n, v in inputs.items() if n not in excluded}
    exact = sum(w * d.astype(np.float64) for d, w in kept.values())
    value_bound, weight_bound = result.error_bound
    assert np.max(np.abs(result.sum - exact)) < value_bound
    assert abs(result.total_weight - sum(w for _, w in kept.values())) < weight_bound
    assert result.contributors == tuple(sorted(kept))


def _to_masked_input(server, clients, *, round=1, d=64, inputs=None, skip=()):
    """Runs share keys; returns (inputs, masked-input requests)."""
    inputs = inputs or _inputs(clients, d=d)
    reqs = server.start_round(round=round, cohort=list(clients), dim=d)
    shares = {n: clients[n].share_keys(reqs[n]) for n in reqs if n not in skip}
    return inputs, server.collect_shares(shares)


def _to_unmask(server, clients, *, skip_input=(), d=64):
    inputs, reqs = _to_masked_input(server, clients, d=d)
    masked = {
        n: clients[n].masked_input(reqs[n], delta=inputs[n][0], weight=inputs[n][1])
        for n in reqs
        if n not in skip_input
    }
    return inputs, server.collect_masked_inputs(masked)


# ------------------------------------------------------------------ correctness
@pytest.mark.parametrize("n", [2, 3, 8, 30])
def test_robust_sum_matches_plain_weighted_aggregation(n: int) -> None:
    server, clients = _federation(n)
    inputs = _inputs(clients, seed=n)
    result = simulate_round(server, clients, inputs, round=1)
    _check_sum(result, inputs)
    assert result.dropped == {
        Stage.ADVERTISE: (),
        Stage.SHARE_KEYS: (),
        Stage.MASKED_INPUT: (),
        Stage.UNMASK: (),
    }
    assert server.phase == ServerPhase.READY
    assert server.params.exchanges_per_round == 3


@pytest.mark.parametrize("n", [8, 30])
def test_double_dropout_recovered_in_robust_mode(n: int) -> None:
    # 100 drops before its masked input and its neighbour 101 vanishes before unmask:
    # the fast mode aborts (nobody alive knows s_{100,101}); robust mode rebuilds 100's
    # mask key from its other neighbours' key shares.
    server, clients = _federation(n)
    reqs = server.start_round(round=1, cohort=list(clients), dim=8)
    nbr = ShareKeysRequest.from_bytes(reqs[100]).neighbour_keys[0].node_id
    with pytest.raises(ProtocolAbort, match="shared keys"):
        server.collect_shares({})  # nobody answered: round 1 abandoned cleanly
    inputs = _inputs(clients)
    result = simulate_round(
        server,
        clients,
        inputs,
        round=2,
        drop_before_input=[100],
        drop_before_unmask=[nbr],
        reload_state=True,
    )
    _check_sum(result, inputs, excluded=[100])  # nbr's input stays in the sum
    assert result.dropped[Stage.MASKED_INPUT] == (100,)
    assert result.dropped[Stage.UNMASK] == (nbr,)


def test_same_double_dropout_aborts_cleanly_in_fast_mode() -> None:
    server, clients = _federation(8, robust=False)
    with pytest.raises(ProtocolAbort, match="pairwise seed"):
        simulate_round(
            server,
            clients,
            _inputs(clients),
            round=1,
            drop_before_input=[100],
            drop_before_unmask=[101],
        )
    assert server.phase == ServerPhase.READY
    inputs = _inputs(clients, seed=2)
    _check_sum(simulate_round(server, clients, inputs, round=2), inputs)


def test_dropouts_at_every_stage_in_a_sparse_graph() -> None:
    # k=16, t=11: five dropouts in all keep every neighbourhood's threshold, wherever
    # the (random) graph puts them.
    server, clients = _federation(40)
    inputs = _inputs(clients)
    result = simulate_round(
        server,
        clients,
        inputs,
        round=1,
        drop_before_share_keys=[103],
        drop_before_input=[100, 120],
        drop_before_unmask=[101, 121],
    )
    _check_sum(result, inputs, excluded=[103, 100, 120])
    assert result.dropped[Stage.SHARE_KEYS] == (103,)
    assert result.dropped[Stage.MASKED_INPUT] == (100, 120)
    assert result.dropped[Stage.UNMASK] == (101, 121)


def test_fast_simulation_refuses_share_keys_dropouts() -> None:
    server, clients = _federation(4, robust=False)
    with pytest.raises(ValueError, match="robust"):
        simulate_round(
            server, clients, _inputs(clients), round=1, drop_before_share_keys=[100]
        )


# -------------------------------------------------------------- threshold aborts
def test_below_threshold_at_share_keys_aborts() -> None:
    server, clients = _federation(6)  # k=5, t=4
    with pytest.raises(ProtocolAbort, match="shared keys"):
        simulate_round(
            server,
            clients,
            _inputs(clients),
            round=1,
            drop_before_share_keys=[100, 101],
        )
    assert server.phase == ServerPhase.READY
    inputs = _inputs(clients, seed=3)
    _check_sum(simulate_round(server, clients, inputs, round=2), inputs)


def test_nodes_without_t_sharing_neighbours_are_left_out_cascading() -> None:
    # Silence 6 of node 100's 16 neighbours (k=16, t=11 tolerates 5): 100 cannot take
    # part, nor can any node that then falls below t. The server's choice equals an
    # independent fixed-point computation; on the neighbour ring it cascades to the
    # whole cohort, so the round aborts before anything is masked.
    server, clients = _federation(40)
    reqs = server.start_round(round=1, cohort=list(clients), dim=8)
    graph = server._round.graph  # type: ignore[union-attr]
    t = server._round.t  # type: ignore[union-attr]
    silent = set(graph[100][:6])
    expected = set(clients) - silent
    while True:
        low = {u for u in expected if len(set(graph[u]) & expected) < t}
        if not low:
            break
        expected -= low
    shares = {n: clients[n].share_keys(reqs[n]) for n in reqs if n not in silent}
    if expected:  # pragma: no cover - not reached on a Harary ring
        assert set(server.collect_shares(shares)) == expected
        return
    with pytest.raises(ProtocolAbort, match="shared keys"):
        server.collect_shares(shares)
    assert server.phase == ServerPhase.READY
    # the nodes moved on: the next round (fresh keys) works
    inputs = _inputs(clients, d=8)
    _check_sum(simulate_round(server, clients, inputs, round=2), inputs)


def test_below_threshold_at_masked_input_aborts() -> None:
    server, clients = _federation(6)  # k=5, t=4
    with pytest.raises(ProtocolAbort, match="threshold"):
        simulate_round(
            server,
            clients,
            _inputs(clients),
            round=1,
            drop_before_input=[100, 101],
        )
    assert server.phase == ServerPhase.READY


def test_below_threshold_at_unmask_aborts() -> None:
    server, clients = _federation(6)  # k=5, t=4
    with pytest.raises(ProtocolAbort, match="shares of node"):
        simulate_round(
            server, clients, _inputs(clients), round=1, drop_before_unmask=[100, 101]
        )
    assert server.phase == ServerPhase.READY


def test_dropped_node_with_too_few_key_holders_aborts_before_unmask() -> None:
    # n=8 (k=7, t=5): 100 drops before its masked input and so do two others, so 100's
    # contributing neighbours (4) are fewer than t: abort before anyone reveals.
    server, clients = _federation(8)
    with pytest.raises(ProtocolAbort, match="threshold"):
        simulate_round(
            server,
            clients,
            _inputs(clients),
            round=1,
            drop_before_input=[100, 101, 102],
        )
    assert server.phase == ServerPhase.READY


# -------------------------------------------------------------- lying server
def test_unmask_request_naming_a_node_in_both_lists_is_refused() -> None:
    server, clients = _federation(5)
    _, unmask = _to_unmask(server, clients)
    honest = RobustUnmaskRequest.from_bytes(unmask[100])
    both = replace(honest, dropped=(honest.survivors[0],))
    with pytest.raises(ProtocolAbort, match="both survived and dropped"):
        clients[100].unmask(both.to_bytes())
    with pytest.raises(ProtocolAbort, match="not allowed in phase READY"):
        clients[100].unmask(unmask[100])  # the refusal wiped the round


def test_lying_server_gets_one_kind_of_share_per_client_and_never_both_kinds() -> None:
    # Complete graph n=8: k=7, t=5. Target 101 sent its masked input. The server tells
    # four neighbours "101 survived" (b-shares) and three "101 dropped" (key shares).
    server, clients = _federation(8)
    _, unmask = _to_unmask(server, clients)
    target = 101
    b_shares, key_shares = [], []
    for i, n in enumerate(sorted(set(clients) - {target})):
        honest = RobustUnmaskRequest.from_bytes(unmask[n])
        if i >= 4:  # lie: target dropped
            req = replace(
                honest,
                survivors=tuple(v for v in honest.survivors if v != target),
                dropped=tuple(sorted((*honest.dropped, target))),
            ).to_bytes()
        else:
            req = unmask[n]
        reply = RobustUnmaskReply.from_bytes(clients[n].unmask(req))
        got_b = [v for o, v in reply.self_mask_shares if o == target]
        got_k = [v for o, v in reply.key_shares if o == target]
        assert len(got_b) + len(got_k) == 1  # never both from one client
        b_shares += [(n + 1, decode_share_value(v)) for v in got_b]
        key_shares += [(n + 1, decode_share_value(v)) for v in got_k]
        # and the client will not answer a second, different story
        other = replace(honest, survivors=honest.survivors[1:], dropped=honest.survivors[:1])
        with pytest.raises(ProtocolAbort):
            clients[n].unmask(other.to_bytes())
    assert (len(b_shares), len(key_shares)) == (4, 3)  # both below t = 5
    # Interpolating what it has gives neither the mask key nor b.
    mask_public = server._round.mask_keys[target]  # type: ignore[union-attr]
    guess = combine_shares(key_shares)
    assert guess >= 1 << 256 or K.x25519_public(guess.to_bytes(32, "big")) != mask_public
    commitment = server._round.commitments[target]  # type: ignore[union-attr]
    guess_b = combine_shares(b_shares)
    assert guess_b >= 1 << 256 or (
        K.self_mask_commitment(
            guess_b.to_bytes(32, "big"), run_id=42, round=1, node_id=target
        )
        != commitment
    )


def test_client_refuses_fewer_than_t_claimed_survivors() -> None:
    server, clients = _federation(6)  # t = 4
    _, unmask = _to_unmask(server, clients)
    honest = RobustUnmaskRequest.from_bytes(unmask[100])
    few = replace(honest, survivors=honest.survivors[:3], dropped=honest.survivors[3:])
    with pytest.raises(ProtocolAbort, match="threshold"):
        clients[100].unmask(few.to_bytes())


def test_identical_robust_unmask_retry_gets_the_same_reply() -> None:
    server, clients = _federation(5)
    inputs, unmask = _to_unmask(server, clients)
    first = clients[100].unmask(unmask[100])
    clients[100] = SecAggClient.from_bytes(
        clients[100].to_bytes(), identity_key=clients[100].identity_key
    )
    assert clients[100].unmask(unmask[100]) == first
    result = server.collect_unmask({n: clients[n].unmask(unmask[n]) for n in unmask})
    _check_sum(result, inputs)


def test_one_wrong_key_share_is_tolerated_when_spare_shares_exist() -> None:
    server, clients = _federation(8)  # k=7, t=5
    inputs, unmask = _to_unmask(server, clients, skip_input=[100])
    answers = {n: clients[n].unmask(unmask[n]) for n in unmask}
    rep = RobustUnmaskReply.from_bytes(answers[101])
    owner, value = rep.key_shares[0]
    assert owner == 100
    bad = (owner, ((decode_share_value(value) + 1) % FIELD_PRIME).to_bytes(33, "big"))
    answers[101] = replace(rep, key_shares=(bad, *rep.key_shares[1:])).to_bytes()
    result = server.collect_unmask(answers)
    _check_sum(result, inputs, excluded=[100])


def test_wrong_key_shares_without_spares_abort() -> None:
    server, clients = _federation(6)  # k=5, t=4: 100 drops, 4 holders left, no spare
    _, unmask = _to_unmask(server, clients, skip_input=[100])
    answers = {n: clients[n].unmask(unmask[n]) for n in unmask}
    for n in (101, 102):
        rep = RobustUnmaskReply.from_bytes(answers[n])
        (owner, value), *rest = rep.key_shares
        bad = (owner, ((decode_share_value(value) + 1) % FIELD_PRIME).to_bytes(33, "big"))
        answers[n] = replace(rep, key_shares=(bad, *rest)).to_bytes()
    with pytest.raises(ProtocolAbort, match="mask public key"):
        server.collect_unmask(answers)
    assert server.phase == ServerPhase.READY


# ------------------------------------------------------------------ tampering
def test_tampered_key_share_ciphertext_is_rejected() -> None:
    server, clients = _federation(5)
    inputs, reqs = _to_masked_input(server, clients)
    honest = RobustMaskedInputRequest.from_bytes(reqs[100])
    c0 = honest.ciphertexts[0]
    # flip a bit in the part of the plaintext that carries the mask-key share
    flipped = c0._replace(data=c0.data[:80] + bytes([c0.data[80] ^ 1]) + c0.data[81:])
    tampered = replace(honest, ciphertexts=(flipped, *honest.ciphertexts[1:]))
    with pytest.raises(ProtocolAbort, match="authentication"):
        clients[100].masked_input(tampered.to_bytes(), delta=inputs[100][0], weight=0.5)
    # the refusal wiped the round: the honest request gets nothing either
    assert clients[100].phase == ClientPhase.READY
    with pytest.raises(ProtocolAbort, match="not allowed in phase READY"):
        clients[100].masked_input(reqs[100], delta=inputs[100][0], weight=0.5)
    # a ciphertext addressed to node 102, relayed to 101 as if from the same sender
    h101 = RobustMaskedInputRequest.from_bytes(reqs[101])
    h102 = RobustMaskedInputRequest.from_bytes(reqs[102])
    sender = h101.ciphertexts[-1].peer
    foreign = next(c for c in h102.ciphertexts if c.peer == sender)
    swapped = replace(h101, ciphertexts=(*h101.ciphertexts[:-1], foreign))
    with pytest.raises(ProtocolAbort, match="authentication"):
        clients[101].masked_input(swapped.to_bytes(), delta=inputs[101][0], weight=0.5)


def test_masked_input_request_with_too_few_or_stray_ciphertexts_is_refused() -> None:
    server, clients = _federation(6)  # t = 4
    inputs, reqs = _to_masked_input(server, clients)
    honest = RobustMaskedInputRequest.from_bytes(reqs[100])
    few = replace(honest, ciphertexts=honest.ciphertexts[:3])
    with pytest.raises(ProtocolAbort, match="threshold"):
        clients[100].masked_input(few.to_bytes(), delta=inputs[100][0], weight=0.5)
    h101 = RobustMaskedInputRequest.from_bytes(reqs[101])
    stray = replace(
        h101,
        ciphertexts=(*h101.ciphertexts[:-1], h101.ciphertexts[-1]._replace(peer=999)),
    )
    with pytest.raises(ProtocolAbort, match="non-neighbours"):
        clients[101].masked_input(stray.to_bytes(), delta=inputs[101][0], weight=0.5)


def test_share_keys_consumes_the_round_key_and_refuses_replays() -> None:
    server, clients = _federation(4)
    reqs = server.start_round(round=1, cohort=list(clients), dim=8)
    c = clients[100]
    reply = ShareKeysReply.from_bytes(c.share_keys(reqs[100]))
    assert len(reply.ciphertexts) == 3 and c.phase == ClientPhase.SHARED
    assert 1 not in c.advertised_rounds  # forward secrecy: round key deleted
    with pytest.raises(ProtocolAbort, match="already used"):
        c.share_keys(reqs[100])
    # a fast-mode masked-input request for the same round is refused as well
    sk = ShareKeysRequest.from_bytes(reqs[100])
    fast_req = MaskedInputRequest(**{f.name: getattr(sk, f.name) for f in fields(sk)})
    with pytest.raises(ProtocolAbort):
        c.masked_input(fast_req.to_bytes(), delta=np.zeros(8), weight=0.5)


def test_share_keys_request_with_forged_neighbour_key_is_refused() -> None:
    server, clients = _federation(5)
    reqs = server.start_round(round=1, cohort=list(clients), dim=8)
    req = ShareKeysRequest.from_bytes(reqs[100])
    nk = req.neighbour_keys[0]
    _, mitm = K.x25519_keypair()
    forged = replace(
        req, neighbour_keys=(replace(nk, public_key=mitm), *req.neighbour_keys[1:])
    )
    with pytest.raises(ProtocolAbort, match="invalid signature"):
        clients[100].share_keys(forged.to_bytes())
    assert clients[100].phase == ClientPhase.READY  # nothing consumed
    assert 1 in clients[100].advertised_rounds


def test_mode_mismatches_are_refused() -> None:
    server, clients = _federation(5)
    inputs, unmask = _to_unmask(server, clients)
    honest = RobustUnmaskRequest.from_bytes(unmask[100])
    fast = UnmaskRequest(
        run_id=42,
        round=1,
        sender=honest.sender,
        recipient=100,
        survivors=honest.survivors,
        dropped=honest.dropped,
        ciphertexts=(),
    )
    with pytest.raises(ProtocolAbort, match="no masked input pending"):
        clients[100].unmask(fast.to_bytes())
    assert clients[100].phase == ClientPhase.MASKED  # untouched
    with pytest.raises(ProtocolAbort, match="expected a RobustMaskedInputReply"):
        RobustMaskedInputReply.from_bytes(unmask[100])
    # server: robust steps in a fast round and vice versa
    fast_server, fast_clients = _federation(4, robust=False)
    fast_server.start_round(round=1, cohort=list(fast_clients), dim=4)
    with pytest.raises(ProtocolAbort, match="not allowed"):
        fast_server.collect_shares({})
    robust_server, robust_clients = _federation(4)
    robust_server.start_round(round=1, cohort=list(robust_clients), dim=4)
    with pytest.raises(ProtocolAbort, match="not allowed"):
        robust_server.collect_masked_inputs({})
    assert robust_server.phase == ServerPhase.COLLECTING_SHARES


def test_robust_client_state_round_trips_and_v1_states_still_load() -> None:
    server, clients = _federation(4)
    inputs, reqs = _to_masked_input(server, clients)
    c = clients[100]
    assert c.phase == ClientPhase.SHARED
    again = SecAggClient.from_bytes(c.to_bytes(), identity_key=c.identity_key)
    assert again.to_bytes() == c.to_bytes()
    # a version-1 state (fast mode only, no pending round) still decodes
    fresh, _ = make_clients([7])
    st = fresh[7]._st
    data = encode_state(st)
    v1 = data[:4] + b"\x01" + data[5:-1]  # no trailing robust section
    assert decode_state(v1).node_id == 7


def test_handle_routes_robust_requests() -> None:
    server, clients = _federation(4)
    inputs = _inputs(clients, d=8)
    reqs = server.start_round(round=1, cohort=list(clients), dim=8)
    reps = {n: clients[n].handle(reqs[n]) for n in reqs}
    reqs = server.collect_shares(reps)
    reps = {
        n: clients[n].handle(reqs[n], delta=inputs[n][0], weight=inputs[n][1])
        for n in reqs
    }
    reqs = server.collect_masked_inputs(reps)
    result = server.collect_unmask({n: clients[n].handle(reqs[n]) for n in reqs})
    _check_sum(result, inputs)


def test_known_limitation_lying_server_can_unmask_one_input_in_robust_mode() -> None:
    # Documents README "Threat model", robust mode: without a consistency check, a
    # server that lies about who dropped can (1) let the target u mask with only t
    # partners, (2) rebuild those partners' mask keys from honest third parties told
    # "partner dropped" (each told at most k - t such stories, so every check passes),
    # and (3) rebuild b_u from neighbours told "u survived". The per-node never-both
    # rule holds throughout; the leak combines shares about *different* nodes.
    # Ring of 12, k=6, t=4 (the default t for k=6).
    ids = list(range(100, 112))
    params = default_params(num_clients=12, rounds=1, neighbours=6, share_keys_first=True)
    assert (params.neighbours, params.threshold) == (6, 4)
    clients, roster = make_clients(ids)
    server = SecAggServer(params=params, run_id=42, roster=roster)
    advertise_all(server, clients)
    d = 32
    inputs = _inputs(ids, d=d)
    reqs = server.start_round(round=1, cohort=ids, dim=d)
    ring = server._round.ring  # type: ignore[union-attr]
    at = {i: ring[i % 12] for i in range(-12, 12)}  # ring position -> node id
    u = at[0]
    partners = [at[1], at[2], at[-1], at[-2]]
    shares = {n: clients[n].share_keys(reqs[n]) for n in ids}
    masked_reqs = server.collect_shares(shares)
    honest_u = RobustMaskedInputRequest.from_bytes(masked_reqs[u])
    masked_reqs[u] = replace(
        honest_u, ciphertexts=tuple(c for c in honest_u.ciphertexts if c.peer in partners)
    ).to_bytes()
    y_u = RobustMaskedInputReply.from_bytes(
        clients[u].masked_input(masked_reqs[u], delta=inputs[u][0], weight=inputs[u][1])
    ).vector()
    for n in ids:
        if n != u:
            clients[n].masked_input(
                masked_reqs[n], delta=inputs[n][0], weight=inputs[n][1]
            )
    # Who is told which partner dropped (each holder at most k - t = 2 stories).
    told = {
        at[1]: [at[2], at[3], at[4], at[-2]],
        at[2]: [at[3], at[4], at[5], at[-1]],
        at[-1]: [at[-4], at[-3], at[2], at[-2]],
        at[-2]: [at[-5], at[-4], at[-3], at[-1]],
    }
    b_u, keys = [], {v: [] for v in partners}
    for w in ids:
        if w == u:
            continue
        claimed = sorted(v for v, holders in told.items() if w in holders)
        assert len(claimed) <= 2
        nbrs = sorted(nk.node_id for nk in ShareKeysRequest.from_bytes(reqs[w]).neighbour_keys)
        req = RobustUnmaskRequest(
            run_id=42,
            round=1,
            sender=2**64 - 1,
            recipient=w,
            survivors=tuple(v for v in nbrs if v not in claimed),
            dropped=tuple(claimed),
        )
        reply = RobustUnmaskReply.from_bytes(clients[w].unmask(req.to_bytes()))
        b_u += [(w + 1, decode_share_value(s)) for o, s in reply.self_mask_shares if o == u]
        for o, s in reply.key_shares:
            keys[o].append((w + 1, decode_share_value(s)))
    assert len(b_u) >= 4 and all(len(keys[v]) >= 4 for v in partners)
    # The server now holds b_u and every partner's mask key: x_u is exposed.
    b = combine_shares(b_u[:4]).to_bytes(32, "big")
    assert K.self_mask_commitment(b, run_id=42, round=1, node_id=u) == (
        server._round.commitments[u]  # type: ignore[union-attr]
    )
    x = y_u.copy()
    from lepton_fed.secagg.prg import expand_mask

    x -= expand_mask(K.self_mask_seed(b, run_id=42, round=1, node_id=u), d + 1)
    for v in partners:
        mask_key = combine_shares(keys[v][:4]).to_bytes(32, "big")
        assert K.x25519_public(mask_key) == server._round.mask_keys[v]  # type: ignore[union-attr]
        seed = K.pairwise_seed(
            K.agree(mask_key, server._round.mask_keys[u]),  # type: ignore[union-attr]
            run_id=42,
            round=1,
            a=v,
            b=u,
        )
        mask = expand_mask(seed, d + 1)
        x = x - mask if u < v else x + mask
    values, weight = server._round.encoding.decode(x)  # type: ignore[union-attr]
    delta, w_u = inputs[u]
    assert abs(weight - w_u) < 1e-6
    np.testing.assert_allclose(values, w_u * delta, atol=1e-6)
