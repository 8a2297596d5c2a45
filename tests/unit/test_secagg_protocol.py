"""End-to-end SecAgg+ rounds with real cryptography: sums, dropouts, refusals."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from scipy import stats

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
from lepton_fed.secagg.inprocess import DeterministicRng
from lepton_fed.secagg.params import SecAggParams
from lepton_fed.secagg.shamir import FIELD_PRIME, decode_share_value, encode_share_value
from lepton_fed.secagg.wire import (
    AdvertiseReply,
    MaskedInputReply,
    MaskedInputRequest,
    UnmaskReply,
    UnmaskRequest,
)


def _federation(
    n: int,
    *,
    rounds: int = 3,
    provisioned: bool = True,
    params=None,
    first_id=100,
    **policy,
):
    ids = list(range(first_id, first_id + n))
    params = params or default_params(num_clients=n, rounds=rounds)
    clients, roster = make_clients(ids, provisioned=provisioned, **policy)
    server = SecAggServer(
        params=params, run_id=42, roster=roster if provisioned else None
    )
    assert advertise_all(server, clients) == tuple(ids)
    return server, clients


def _complete(n: int, t: int, rounds: int = 3) -> SecAggParams:
    """Explicit complete-graph parameters (k = n - 1); secure at the default level
    whenever 2t - k exceeds the one colluder assumed in small cohorts."""
    return SecAggParams(neighbours=n - 1, threshold=t, rounds=rounds)


def _inputs(ids, d=64, seed=0, clip=1.0):
    rng = np.random.default_rng(seed)
    return {
        n: (rng.uniform(-clip, clip, d).astype(np.float32), float(rng.uniform(0.05, 1)))
        for n in ids
    }


def _masked_round(server, clients, inputs, *, round=1, dim=64):
    """Starts a round on the whole federation, sends every node's masked input, and
    returns the server's unmask requests."""
    reqs = server.start_round(round=round, cohort=list(clients), dim=dim)
    replies = {
        n: clients[n].masked_input(reqs[n], delta=inputs[n][0], weight=inputs[n][1])
        for n in reqs
    }
    return server.collect_masked_inputs(replies)


def _check_sum(result, inputs, excluded=()):
    kept = {n: v for n, v in inputs.items() if n not in excluded}
    exact = sum(w * d.astype(np.float64) for d, w in kept.values())
    exact_w = sum(w for _, w in kept.values())
    value_bound, weight_bound = result.error_bound
    assert np.max(np.abs(result.sum - exact)) < value_bound
    assert abs(result.total_weight - exact_w) < weight_bound
    assert result.contributors == tuple(sorted(kept))
    # the weighted mean is what FedAvg would compute
    np.testing.assert_allclose(result.weighted_mean(), exact / exact_w, atol=1e-5)


# ------------------------------------------------------------------- correctness
@pytest.mark.parametrize("n", [3, 8, 20, 40])
def test_sum_matches_plain_weighted_aggregation(n: int) -> None:
    # Prepare
    server, clients = _federation(n)
    inputs = _inputs(clients, seed=n)
    # Execute
    result = simulate_round(server, clients, inputs, round=1)
    # Assert
    _check_sum(result, inputs)
    assert result.dropped == {
        Stage.ADVERTISE: (),
        Stage.MASKED_INPUT: (),
        Stage.UNMASK: (),
    }
    assert server.phase == ServerPhase.READY


def test_two_nodes_need_a_no_collusion_assumption_on_both_sides() -> None:
    # With a colluder assumed, 2 nodes cannot be private (the sum is the other input):
    # the server refuses to derive parameters and a node refuses explicit ones.
    with pytest.raises(ValueError, match="no graph reaches"):
        default_params(num_clients=2, rounds=1)
    server, clients = _federation(
        2, params=default_params(num_clients=2, rounds=1, colluding_fraction=0),
        colluding_fraction=0,
    )
    inputs = _inputs(clients)
    _check_sum(simulate_round(server, clients, inputs, round=1), inputs)
    strict, roster = make_clients([1, 2])
    server = SecAggServer(params=_complete(2, 1, rounds=1), run_id=3, roster=roster)
    advertise_all(server, strict)
    reqs = server.start_round(round=1, cohort=[1, 2], dim=4)
    with pytest.raises(ProtocolAbort, match="^weak_parameters: "):
        strict[1].masked_input(reqs[1], delta=np.zeros(4), weight=0.5)


def test_several_rounds_from_one_advertisement_with_sampled_cohorts() -> None:
    # Prepare
    server, clients = _federation(12, rounds=3)
    ids = list(clients)
    # Execute / Assert: three rounds, different cohorts, no new advertisement
    for r, cohort in enumerate([ids, ids[::2], ids[3:]], start=1):
        inputs = _inputs(cohort, seed=r)
        _check_sum(simulate_round(server, clients, inputs, round=r), inputs)
    # round 4 has no advertised keys: every node is dropped at ADVERTISE
    with pytest.raises(ProtocolAbort, match="0 node"):
        simulate_round(server, clients, _inputs(ids), round=4)
    assert advertise_all(server, clients) == tuple(ids)  # re-advertise from round 5
    inputs = _inputs(ids, seed=5)
    _check_sum(simulate_round(server, clients, inputs, round=5), inputs)


def test_state_survives_serialization_between_every_step() -> None:
    server, clients = _federation(10, provisioned=False)
    inputs = _inputs(clients)
    with pytest.warns(UserWarning, match="trust on first use"):
        result = simulate_round(
            server, clients, inputs, round=1, reload_state=True, drop_before_input=[101]
        )
    _check_sum(result, inputs, excluded=[101])
    with pytest.raises(ProtocolAbort, match="identity key"):
        SecAggClient.from_bytes(
            clients[100].to_bytes(), identity_key=Ed25519PrivateKey.generate()
        )


def test_threaded_unmask_gives_the_same_sum() -> None:
    # Prepare: identical federations, one server unmasking on 3 threads
    ids = list(range(100, 112))
    results = []
    for workers in (1, 3):
        clients, roster = make_clients(ids, rng_bytes=DeterministicRng(b"threads"))
        server = SecAggServer(
            params=default_params(num_clients=12, rounds=1),
            run_id=42,
            roster=roster,
            workers=workers,
        )
        advertise_all(server, clients)
        inputs = _inputs(ids)
        # Execute
        results.append(
            simulate_round(server, clients, inputs, round=1, drop_before_input=[103])
        )
    # Assert
    assert np.array_equal(results[0].sum, results[1].sum)
    _check_sum(results[1], inputs, excluded=[103])
    with pytest.raises(ValueError, match="workers"):
        SecAggServer(
            params=default_params(num_clients=3, rounds=1), run_id=1, workers=0
        )


def test_zero_weight_client_contributes_nothing() -> None:
    server, clients = _federation(5)
    inputs = _inputs(clients)
    inputs[102] = (inputs[102][0], 0.0)
    result = simulate_round(server, clients, inputs, round=1)
    _check_sum(result, inputs)


# ---------------------------------------------------------------------- dropouts
@pytest.mark.parametrize("n", [8, 30])
def test_drop_before_masked_input(n: int) -> None:
    server, clients = _federation(n)
    inputs = _inputs(clients)
    result = simulate_round(
        server, clients, inputs, round=1, drop_before_input=[101, 104]
    )
    _check_sum(result, inputs, excluded=[101, 104])
    assert result.dropped[Stage.MASKED_INPUT] == (101, 104)


@pytest.mark.parametrize("n", [8, 30])
def test_drop_after_masked_input_before_unmask(n: int) -> None:
    server, clients = _federation(n)
    inputs = _inputs(clients)
    result = simulate_round(
        server, clients, inputs, round=1, drop_before_unmask=[101, 104]
    )
    _check_sum(result, inputs)  # their inputs stay in the sum
    assert result.dropped[Stage.UNMASK] == (101, 104)


def test_drops_at_both_stages_in_separate_neighbourhoods() -> None:
    # Prepare: a sparse graph; pick an unmask-stage dropout that is not a neighbour of
    # the input-stage dropout (their shared pairwise mask would be unrecoverable)
    server, clients = _federation(30)
    inputs = _inputs(clients)
    reqs = server.start_round(round=1, cohort=list(clients), dim=64)
    req = MaskedInputRequest.from_bytes(reqs[100])
    nbrs_of_100 = {j for j, _ in req.signatures}
    far = next(n for n in clients if n != 100 and n not in nbrs_of_100)
    replies = {
        n: clients[n].masked_input(reqs[n], delta=inputs[n][0], weight=inputs[n][1])
        for n in reqs
        if n != 100
    }
    # Execute
    unmask = server.collect_masked_inputs(replies)
    result = server.collect_unmask(
        {n: clients[n].unmask(unmask[n]) for n in unmask if n != far}
    )
    # Assert
    _check_sum(result, inputs, excluded=[100])
    assert result.dropped[Stage.MASKED_INPUT] == (100,)
    assert result.dropped[Stage.UNMASK] == (far,)


def test_neighbour_of_early_dropout_vanishing_at_unmask_aborts() -> None:
    # The documented limit of the 2-exchange design (README "Dropouts").
    server, clients = _federation(8, params=_complete(8, 5))  # k=7, t=5
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
    inputs = _inputs(clients, seed=2)  # the next round works
    _check_sum(simulate_round(server, clients, inputs, round=2), inputs)


def test_below_threshold_at_masked_input_aborts() -> None:
    server, clients = _federation(6, params=_complete(6, 4))  # k=5, t=4
    with pytest.raises(ProtocolAbort, match="threshold"):
        simulate_round(
            server,
            clients,
            _inputs(clients),
            round=1,
            drop_before_input=[100, 101, 102],
        )
    assert server.phase == ServerPhase.READY


def test_below_threshold_at_unmask_aborts() -> None:
    server, clients = _federation(6, params=_complete(6, 4))  # k=5, t=4
    with pytest.raises(ProtocolAbort, match="shares of node"):
        simulate_round(
            server, clients, _inputs(clients), round=1, drop_before_unmask=[100, 101]
        )
    assert server.phase == ServerPhase.READY


# ---------------------------------------------------------------- confidentiality
def test_masked_vector_alone_is_uniform_over_the_field() -> None:
    # Prepare: a highly structured input (all zeros) that would be obvious unmasked
    server, clients = _federation(4)
    d = 60_000
    inputs = {n: (np.zeros(d), 1.0) for n in clients}
    reqs = server.start_round(round=1, cohort=list(clients), dim=d)
    # Execute
    reply = MaskedInputReply.from_bytes(
        clients[100].masked_input(reqs[100], delta=inputs[100][0], weight=1.0)
    )
    y = reply.vector()
    # Assert: bytes and top-8-bit buckets look uniform (chi-square, alpha=1e-6)
    assert stats.chisquare(np.bincount(y.view(np.uint8), minlength=256)).pvalue > 1e-6
    assert stats.chisquare(np.bincount(y >> 24, minlength=256)).pvalue > 1e-6
    # the plaintext encoding of 0 is 0 (+/- stochastic rounding): it does not show
    assert np.mean((y == 0) | (y == 2**32 - 1)) < 1e-3


def test_client_never_reveals_both_kinds_for_one_node() -> None:
    # Prepare: a server that claims node 101 dropped to node 100 although 101 sent its
    # masked input (the b-share of 101 is then withheld; only the seed is revealed)
    server, clients = _federation(5)
    inputs = _inputs(clients)
    unmask = _masked_round(server, clients, inputs)
    honest = UnmaskRequest.from_bytes(unmask[100])
    lying = replace(
        honest,
        survivors=tuple(v for v in honest.survivors if v != 101),
        dropped=(101,),
        ciphertexts=tuple(c for c in honest.ciphertexts if c.peer != 101),
    )
    # Execute
    reply = UnmaskReply.from_bytes(clients[100].unmask(lying.to_bytes()))
    # Assert
    assert 101 not in [owner for owner, _ in reply.self_mask_shares]
    assert [p for p, _ in reply.pairwise_seeds] == [101]
    # ...and the honest request for the same round is now refused
    with pytest.raises(ProtocolAbort):
        clients[100].unmask(unmask[100])


def test_identical_unmask_retry_gets_the_same_reply_and_nothing_else() -> None:
    # Prepare
    server, clients = _federation(5)
    inputs = _inputs(clients)
    unmask = _masked_round(server, clients, inputs)
    first = clients[100].unmask(unmask[100])
    clients[100] = SecAggClient.from_bytes(
        clients[100].to_bytes(), identity_key=clients[100].identity_key
    )
    # Execute / Assert: the lost reply can be fetched again, byte for byte
    assert clients[100].unmask(unmask[100]) == first
    honest = UnmaskRequest.from_bytes(unmask[100])
    other = replace(
        honest, survivors=honest.survivors[1:], dropped=honest.survivors[:1]
    )
    with pytest.raises(ProtocolAbort, match="not allowed in phase READY"):
        clients[100].unmask(other.to_bytes())
    result = server.collect_unmask({n: clients[n].unmask(unmask[n]) for n in unmask})
    _check_sum(result, inputs)


def test_unmask_request_naming_a_node_in_both_lists_is_refused() -> None:
    server, clients = _federation(5)
    inputs = _inputs(clients)
    unmask = _masked_round(server, clients, inputs)
    honest = UnmaskRequest.from_bytes(unmask[100])
    both = replace(honest, dropped=(101,))
    with pytest.raises(ProtocolAbort, match="both survived and dropped"):
        clients[100].unmask(both.to_bytes())
    # the refusal wiped the round: even the honest request gets nothing now
    with pytest.raises(ProtocolAbort, match="not allowed in phase READY"):
        clients[100].unmask(unmask[100])
    assert clients[100].phase == ClientPhase.READY


def test_unmask_refuses_fewer_than_t_claimed_survivors_and_stray_ciphertexts() -> None:
    server, clients = _federation(6, params=_complete(6, 4))  # t = 4
    inputs = _inputs(clients)
    unmask = _masked_round(server, clients, inputs)
    honest = UnmaskRequest.from_bytes(unmask[100])
    few = replace(
        honest,
        survivors=honest.survivors[:3],
        dropped=honest.survivors[3:],
        ciphertexts=tuple(
            c for c in honest.ciphertexts if c.peer in honest.survivors[:3]
        ),
    )
    with pytest.raises(ProtocolAbort, match="threshold"):
        clients[100].unmask(few.to_bytes())
    h101 = UnmaskRequest.from_bytes(unmask[101])
    stray = replace(h101, ciphertexts=h101.ciphertexts[1:])
    with pytest.raises(ProtocolAbort, match="surviving neighbours"):
        clients[101].unmask(stray.to_bytes())


def test_one_wrong_self_mask_share_is_tolerated_when_spare_shares_exist() -> None:
    # Prepare: k=7, t=5; node 101 reveals a wrong b-share for its first neighbour
    server, clients = _federation(8, params=_complete(8, 5))
    inputs = _inputs(clients)
    unmask = _masked_round(server, clients, inputs)
    answers = {n: clients[n].unmask(unmask[n]) for n in unmask}
    rep = UnmaskReply.from_bytes(answers[101])
    owner, value = rep.self_mask_shares[0]
    bad = (owner, encode_share_value((decode_share_value(value) + 1) % FIELD_PRIME))
    answers[101] = replace(
        rep, self_mask_shares=(bad, *rep.self_mask_shares[1:])
    ).to_bytes()
    # Execute
    result = server.collect_unmask(answers)
    # Assert: the commitment exposes the bad share; another subset reconstructs b
    _check_sum(result, inputs)


def test_tampered_share_ciphertext_is_rejected() -> None:
    server, clients = _federation(5)
    inputs = _inputs(clients)
    unmask = _masked_round(server, clients, inputs)
    honest = UnmaskRequest.from_bytes(unmask[100])
    c0 = honest.ciphertexts[0]
    flipped = c0._replace(data=bytes([c0.data[0] ^ 0x80]) + c0.data[1:])
    tampered = replace(honest, ciphertexts=(flipped, *honest.ciphertexts[1:]))
    with pytest.raises(ProtocolAbort, match="authentication"):
        clients[100].unmask(tampered.to_bytes())
    # a ciphertext addressed to node 102, relayed to 101 as if from the same sender
    h101 = UnmaskRequest.from_bytes(unmask[101])
    h102 = UnmaskRequest.from_bytes(unmask[102])
    sender = h101.ciphertexts[-1].peer
    foreign = next(c for c in h102.ciphertexts if c.peer == sender)
    swapped = replace(h101, ciphertexts=(*h101.ciphertexts[:-1], foreign))
    with pytest.raises(ProtocolAbort, match="authentication"):
        clients[101].unmask(swapped.to_bytes())


# ---------------------------------------------------------------- authentication
def _reseeded(req: MaskedInputRequest, **changes) -> MaskedInputRequest:
    """``req`` with ``changes`` and the graph seed recomputed, as a server that
    follows the seed rule but lies about keys would send it."""
    out = replace(req, **changes)
    seed = K.graph_seed(
        run_id=out.run_id, round=out.round, cohort=out.cohort, members=out.members
    )
    return replace(out, graph_seed=seed)


def test_neighbour_key_with_forged_signature_is_rejected() -> None:
    server, clients = _federation(5)  # complete graph: the seed does not move it
    reqs = server.start_round(round=1, cohort=list(clients), dim=8)
    req = MaskedInputRequest.from_bytes(reqs[100])
    j = req.signatures[0][0]
    pos = req.cohort.index(j)
    _, mitm_pk = K.x25519_keypair()
    # (a) a substituted round key (server-in-the-middle) under the old signature
    members = list(req.members)
    members[pos] = members[pos]._replace(round_key=mitm_pk)
    forged = _reseeded(req, members=tuple(members))
    with pytest.raises(ProtocolAbort, match="^bad_signature: "):
        clients[100].masked_input(forged.to_bytes(), delta=np.zeros(8), weight=0.5)
    # (b) a key signed by an identity that is not the roster's
    impostor = Ed25519PrivateKey.generate()
    sig = K.sign_round_key(impostor, run_id=42, node_id=j, round=1, public_key=mitm_pk)
    members[pos] = members[pos]._replace(
        identity_key=K.identity_public_bytes(impostor)
    )
    forged = _reseeded(
        req, members=tuple(members), signatures=((j, sig), *req.signatures[1:])
    )
    with pytest.raises(ProtocolAbort, match="^roster_mismatch: "):
        clients[100].masked_input(forged.to_bytes(), delta=np.zeros(8), weight=0.5)
    # (c) a signature from another neighbour's record
    swapped = replace(
        req, signatures=((j, req.signatures[1][1]), *req.signatures[1:])
    )
    with pytest.raises(ProtocolAbort, match="^bad_signature: "):
        clients[100].masked_input(swapped.to_bytes(), delta=np.zeros(8), weight=0.5)
    # (d) a round key listed for this node that is not its own
    me = req.cohort.index(100)
    members = list(req.members)
    members[me] = members[me]._replace(round_key=mitm_pk)
    with pytest.raises(ProtocolAbort, match="^roster_mismatch: "):
        clients[100].masked_input(
            _reseeded(req, members=tuple(members)).to_bytes(),
            delta=np.zeros(8),
            weight=0.5,
        )
    assert clients[100].phase == ClientPhase.READY  # refusals consumed nothing
    reply = clients[100].masked_input(reqs[100], delta=np.zeros(8), weight=0.5)
    assert MaskedInputReply.from_bytes(reply).sender == 100


def test_tofu_pins_survive_a_new_run_and_catch_a_changed_identity() -> None:
    with pytest.warns(UserWarning, match="trust on first use"):
        server, clients = _federation(4, provisioned=False, params=_complete(4, 3))
        simulate_round(server, clients, _inputs(clients, d=8), round=1)
    assert set(clients[100].pinned) == {101, 102, 103}
    # a new run: the server forgets everything, the node keeps its pins
    impostor = Ed25519PrivateKey.generate()
    sybil = SecAggClient(node_id=101, identity_key=impostor, allow_tofu=True)
    fleet = {**clients, 101: sybil}
    server = SecAggServer(params=default_params(num_clients=4, rounds=1), run_id=43)
    advertise_all(server, fleet)
    reqs = server.start_round(round=1, cohort=list(fleet), dim=8)
    with pytest.raises(ProtocolAbort, match="^identity_changed: "):
        clients[100].masked_input(reqs[100], delta=np.zeros(8), weight=0.5)
    assert set(clients[100].pinned) == {101, 102, 103}


def test_no_roster_needs_an_explicit_tofu_allowance() -> None:
    key = Ed25519PrivateKey.generate()
    with pytest.raises(ValueError, match="allow_tofu"):
        SecAggClient(node_id=1, identity_key=key)
    other = K.identity_public_bytes(Ed25519PrivateKey.generate())
    with pytest.raises(ValueError, match="not in the roster"):
        SecAggClient(node_id=1, identity_key=key, roster=frozenset({other}))
    with pytest.raises(ValueError, match="does not match"):
        SecAggClient(node_id=1, identity_key=key, roster={1: other})


def test_server_rejects_adverts_with_wrong_identity_or_bad_signatures() -> None:
    # Prepare
    ids = [1, 2, 3, 4, 5]
    clients, roster = make_clients(ids)
    server = SecAggServer(
        params=default_params(num_clients=5, rounds=2), run_id=42, roster=roster
    )
    reqs = server.advertise(ids)
    replies = {n: clients[n].advertise(reqs[n]) for n in ids}
    # node 2's reply carries another identity; node 3's round-1 signature is garbled
    rep2 = AdvertiseReply.from_bytes(replies[2])
    replies[2] = replace(
        rep2, identity_key=K.identity_public_bytes(Ed25519PrivateKey.generate())
    ).to_bytes()
    rep3 = AdvertiseReply.from_bytes(replies[3])
    bad = replace(rep3.round_keys[0], signature=bytes(64))
    replies[3] = replace(rep3, round_keys=(bad, *rep3.round_keys[1:])).to_bytes()
    # Execute
    accepted = server.collect_advertisements(replies)
    # Assert
    assert accepted == (1, 3, 4, 5)
    assert "roster" in server.advert_rejected[2]
    inputs = _inputs([1, 3, 4, 5])
    # round 1: 2 never advertised, 3's round-1 key is not validly signed
    result = simulate_round(server, clients, inputs, round=1, cohort=[1, 2, 3, 4, 5])
    assert result.dropped[Stage.ADVERTISE] == (2, 3)
    _check_sum(result, inputs, excluded=[3])
    result = simulate_round(server, clients, inputs, round=2, cohort=[1, 3, 4, 5])
    _check_sum(result, inputs)


def test_round_one_excludes_nodes_with_bad_signatures() -> None:
    ids = [1, 2, 3, 4, 5]
    clients, roster = make_clients(ids)
    server = SecAggServer(
        params=default_params(num_clients=5, rounds=2), run_id=42, roster=roster
    )
    reqs = server.advertise(ids)
    replies = {n: clients[n].advertise(reqs[n]) for n in ids}
    rep = AdvertiseReply.from_bytes(replies[5])
    replies[5] = replace(
        rep,
        round_keys=(
            replace(rep.round_keys[0], signature=bytes(64)),
            *rep.round_keys[1:],
        ),
    ).to_bytes()
    server.collect_advertisements(replies)
    inputs = _inputs(ids)
    result = simulate_round(server, clients, inputs, round=1)
    assert result.dropped[Stage.ADVERTISE] == (5,)
    assert "invalid signature" in result.rejected[5]
    _check_sum(result, inputs, excluded=[5])


# ------------------------------------------------------------ stage/round checks
def test_requests_for_another_round_stage_or_node_are_refused() -> None:
    server, clients = _federation(4)
    inputs = _inputs(clients, d=8)
    reqs = server.start_round(round=1, cohort=list(clients), dim=8)
    c = clients[100]
    with pytest.raises(ProtocolAbort, match="addressed to node 101"):
        c.masked_input(reqs[101], delta=inputs[100][0], weight=0.5)
    with pytest.raises(ProtocolAbort, match="UNMASK is not allowed"):
        c.unmask(
            UnmaskRequest(
                run_id=42,
                round=1,
                sender=2**64 - 1,
                recipient=100,
                survivors=(),
                dropped=(),
                ciphertexts=(),
            ).to_bytes()
        )
    with pytest.raises(ProtocolAbort, match="expected a UnmaskRequest"):
        c.unmask(reqs[100])
    with pytest.raises(ProtocolAbort, match="dim"):
        c.masked_input(reqs[100], delta=np.zeros(7), weight=0.5)
    c.masked_input(reqs[100], delta=inputs[100][0], weight=0.5)
    assert 1 not in c.advertised_rounds  # the round key is gone (forward secrecy)
    with pytest.raises(ProtocolAbort, match="already used"):
        c.masked_input(reqs[100], delta=inputs[100][0], weight=0.5)  # replay
    other_run = MaskedInputRequest.from_bytes(reqs[101])
    with pytest.raises(ProtocolAbort, match="run"):
        clients[101].masked_input(
            replace(other_run, run_id=43).to_bytes(), delta=np.zeros(8), weight=0.5
        )
    with pytest.raises(ProtocolAbort, match="wire version"):
        clients[101].masked_input(
            b"\x07" + reqs[101][1:], delta=np.zeros(8), weight=0.5
        )


def test_server_treats_malformed_or_misdirected_replies_as_dropped() -> None:
    server, clients = _federation(10, params=_complete(10, 6))  # k=9, t=6
    inputs = _inputs(clients)
    reqs = server.start_round(round=1, cohort=list(clients), dim=64)
    replies = {
        n: clients[n].masked_input(reqs[n], delta=inputs[n][0], weight=inputs[n][1])
        for n in reqs
    }
    replies[101] = replies[101][:-3]  # truncated
    rep = MaskedInputReply.from_bytes(replies[102])
    replies[102] = replace(rep, round=2).to_bytes()  # wrong round
    replies[103] = replies[104]  # somebody else's reply
    unmask = server.collect_masked_inputs(replies)
    assert set(unmask) == {100, 104, 105, 106, 107, 108, 109}
    result = server.collect_unmask({n: clients[n].unmask(unmask[n]) for n in unmask})
    _check_sum(result, inputs, excluded=[101, 102, 103])
    assert set(result.rejected) == {101, 102, 103}
    assert "round" in result.rejected[102] and "sender" in result.rejected[103]


def test_server_steps_out_of_order_are_refused() -> None:
    server, clients = _federation(4)
    with pytest.raises(ProtocolAbort):
        server.collect_masked_inputs({})
    with pytest.raises(ProtocolAbort):
        server.collect_unmask({})
    server.start_round(round=1, cohort=list(clients), dim=4)
    with pytest.raises(ProtocolAbort):
        server.start_round(round=2, cohort=list(clients), dim=4)
    with pytest.raises(ProtocolAbort, match="no masked input"):
        server.collect_masked_inputs({})  # nobody answered: abandoned
    with pytest.raises(ProtocolAbort, match="not after round 1"):
        server.start_round(round=1, cohort=list(clients), dim=4)


def test_client_refuses_weak_round_parameters() -> None:
    # 40 nodes, 2 colluders assumed: k=2, t=2 exposes an input with ~2^-4 (README)
    clients, roster = make_clients(range(1, 41))
    weak = SecAggParams(neighbours=2, threshold=2, rounds=1)
    server = SecAggServer(params=weak, run_id=1, roster=roster)
    advertise_all(server, clients)
    reqs = server.start_round(round=1, cohort=list(clients), dim=4)
    with pytest.raises(ProtocolAbort, match="^weak_parameters: k=2, t=2 "):
        clients[1].masked_input(reqs[1], delta=np.zeros(4), weight=0.5)
    assert clients[1].phase == ClientPhase.READY  # nothing consumed
    lax = SecAggClient.from_bytes(
        clients[2].to_bytes(), identity_key=clients[2].identity_key
    )
    assert lax.min_security_bits == 40
    req = MaskedInputRequest.from_bytes(reqs[2])
    with pytest.raises(ProtocolAbort, match="threshold"):
        clients[2].masked_input(
            replace(req, threshold=1).to_bytes(), delta=np.zeros(4), weight=0.5
        )
