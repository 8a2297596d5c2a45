"""A client state saved without its roster (the roster's digest instead): small at any
federation size, restored only with the node's own roster, and still refusing keys
outside it."""

from __future__ import annotations

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from lepton_fed.errors import ProtocolAbort
from lepton_fed.secagg import SecAggClient, SecAggServer, advertise_all, make_clients
from lepton_fed.secagg.client.state import decode_state
from lepton_fed.secagg.keys import identity_public_bytes
from lepton_fed.secagg.params import SecAggParams
from lepton_fed.secagg.trust import trusted_roster


def _keys(n: int) -> list[bytes]:
    return [identity_public_bytes(Ed25519PrivateKey.generate()) for _ in range(n)]


def _client(roster_keys: list[bytes]) -> tuple[SecAggClient, Ed25519PrivateKey]:
    me = Ed25519PrivateKey.generate()
    keys = frozenset([*roster_keys, identity_public_bytes(me)])
    return SecAggClient(node_id=7, identity_key=me, roster=keys), me


def test_digest_state_does_not_grow_with_the_roster() -> None:
    small, _ = _client(_keys(10))
    large, _ = _client(_keys(2000))
    assert len(large.to_bytes()) > 2000 * 32  # inline: 32 bytes per key
    assert len(large.to_bytes(with_roster=False)) == len(small.to_bytes(with_roster=False))
    assert len(large.to_bytes(with_roster=False)) < 200


def test_digest_state_needs_exactly_its_own_roster() -> None:
    others = _keys(50)
    client, me = _client(others)
    saved = client.to_bytes(with_roster=False)
    roster = frozenset([*others, identity_public_bytes(me)])
    with pytest.raises(ProtocolAbort, match="^roster_required"):
        SecAggClient.from_bytes(saved, identity_key=me)
    with pytest.raises(ProtocolAbort, match="^roster_mismatch"):  # one key swapped
        SecAggClient.from_bytes(saved, identity_key=me,
                                roster=frozenset([*others[1:], *_keys(1), identity_public_bytes(me)]))
    with pytest.raises(ProtocolAbort, match="^roster_mismatch"):  # same keys, as a mapping
        SecAggClient.from_bytes(saved, identity_key=me,
                                roster={i: k for i, k in enumerate(sorted(roster))})
    back = SecAggClient.from_bytes(saved, identity_key=me, roster=roster)
    prepared = SecAggClient.from_bytes(saved, identity_key=me, roster=trusted_roster(roster))
    assert back.to_bytes() == prepared.to_bytes() == client.to_bytes()  # inline form equal


def test_inline_state_restores_without_a_roster_and_checks_a_given_one() -> None:
    client, me = _client(_keys(5))
    inline = client.to_bytes()
    assert SecAggClient.from_bytes(inline, identity_key=me).to_bytes() == inline
    with pytest.raises(ProtocolAbort, match="^roster_mismatch"):
        SecAggClient.from_bytes(inline, identity_key=me, roster=frozenset(_keys(3)))


def test_a_decoded_digest_state_without_its_roster_never_trusts_on_first_use() -> None:
    # Prepare: 5 provisioned nodes and one outsider the server (no roster) adds
    clients, roster = make_clients(range(1, 6), roster_as_keys=True)
    outsider, _ = make_clients([6], provisioned=False)
    clients |= outsider
    server = SecAggServer(params=SecAggParams(neighbours=5, threshold=4, rounds=2), run_id=9)
    advertise_all(server, clients)
    saved = {n: c.to_bytes(with_roster=False) for n, c in clients.items() if n != 6}
    reqs = server.start_round(round=1, cohort=list(clients), dim=3)
    # Execute / Assert: restored with its roster, node 1 refuses the outsider's key
    node1 = SecAggClient.from_bytes(saved[1], identity_key=clients[1].identity_key,
                                    roster=frozenset(roster.values()))
    with pytest.raises(ProtocolAbort, match="^not_in_roster"):
        node1.masked_input(reqs[1], delta=np.zeros(3), weight=0.5)
    # a state decoded without the roster refuses instead of pinning keys
    from lepton_fed.secagg.client import steps

    st = decode_state(saved[2])
    assert st.roster_kind == 2 and st.allowed is None and st.roster is None
    with pytest.raises(ProtocolAbort, match="^roster_required"):
        steps.masked_input(st, clients[2].rng_bytes, reqs[2], delta=np.zeros(3),
                           weight=0.5)
    assert not st.pinned


def test_trust_on_first_use_state_ignores_a_roster() -> None:
    clients, _ = make_clients([1, 2], provisioned=False)
    saved = clients[1].to_bytes(with_roster=False)
    assert saved == clients[1].to_bytes()  # nothing to leave out
    back = SecAggClient.from_bytes(saved, identity_key=clients[1].identity_key,
                                   roster=frozenset(_keys(2)))
    assert back.to_bytes() == saved


def test_a_clients_own_neighbours_are_its_row_of_the_whole_graph() -> None:
    from lepton_fed.secagg.graph import neighbour_graph, neighbours_of

    rng = np.random.default_rng(3)
    for m, k in ((7, 6), (50, 12), (300, 40)):
        cohort = sorted(rng.choice(10**6, size=m, replace=False).tolist())
        seed = rng.bytes(32)
        graph = neighbour_graph(cohort, seed, run_id=4, round=9, k=k)
        for node in cohort[:: max(1, m // 10)]:
            assert neighbours_of(cohort, seed, node, run_id=4, round=9, k=k) == graph[node]
    with pytest.raises(ValueError, match="not in the cohort"):
        neighbours_of([1, 2, 3], bytes(32), 4, run_id=1, round=1, k=2)


def test_agree_all_matches_pairwise_agreement() -> None:
    from lepton_fed.secagg import keys as K

    private, _ = K.x25519_keypair()
    peers = {j: K.x25519_keypair()[1] for j in range(5)}
    assert K.agree_all(private, peers) == {j: K.agree(private, p) for j, p in peers.items()}
    with pytest.raises(ProtocolAbort, match="X25519"):
        K.agree_all(private, {1: bytes(31)})
