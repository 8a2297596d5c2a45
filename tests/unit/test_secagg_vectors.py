"""Known-answer vectors (tests/vectors/secagg_*.json), cross-checked with naive code.

The naive implementations below share nothing with lepton_fed.secagg: HKDF from the
stdlib ``hmac``, ChaCha20 from the RFC 8439 pseudo-code, Lagrange interpolation with
one Fermat inversion per term.
"""

from __future__ import annotations

import hashlib
import hmac
import importlib.util
import json
import struct
from pathlib import Path

import numpy as np
import pytest

from lepton_fed.secagg import SecAggServer, keys, shamir
from lepton_fed.secagg.inprocess import (
    DeterministicRng,
    advertise_all,
    make_clients,
    simulate_round,
)
from lepton_fed.secagg.params import SecAggParams
from lepton_fed.secagg.prg import chacha20_keystream, expand_mask

VECTORS = Path(__file__).resolve().parents[1] / "vectors"


def _load(name: str) -> dict:
    return json.loads((VECTORS / name).read_text())


# ----------------------------------------------------------------- naive references
def naive_hkdf(ikm: bytes, salt: bytes, info: bytes, length: int) -> bytes:
    prk = hmac.new(salt or bytes(32), ikm, hashlib.sha256).digest()
    out, block, i = b"", b"", 1
    while len(out) < length:
        block = hmac.new(prk, block + info + bytes([i]), hashlib.sha256).digest()
        out += block
        i += 1
    return out[:length]


def _rotl(v: int, c: int) -> int:
    return ((v << c) & 0xFFFFFFFF) | (v >> (32 - c))


def _quarter(s: list[int], a: int, b: int, c: int, d: int) -> None:
    s[a] = (s[a] + s[b]) & 0xFFFFFFFF
    s[d] = _rotl(s[d] ^ s[a], 16)
    s[c] = (s[c] + s[d]) & 0xFFFFFFFF
    s[b] = _rotl(s[b] ^ s[c], 12)
    s[a] = (s[a] + s[b]) & 0xFFFFFFFF
    s[d] = _rotl(s[d] ^ s[a], 8)
    s[c] = (s[c] + s[d]) & 0xFFFFFFFF
    s[b] = _rotl(s[b] ^ s[c], 7)


def naive_chacha20(key: bytes, counter: int, nonce: bytes, num_bytes: int) -> bytes:
    const = [0x61707865, 0x3320646E, 0x79622D32, 0x6B206574]
    k = list(struct.unpack("<8I", key))
    n = list(struct.unpack("<3I", nonce))
    out = b""
    while len(out) < num_bytes:
        init = const + k + [counter & 0xFFFFFFFF] + n
        s = list(init)
        for _ in range(10):
            _quarter(s, 0, 4, 8, 12)
            _quarter(s, 1, 5, 9, 13)
            _quarter(s, 2, 6, 10, 14)
            _quarter(s, 3, 7, 11, 15)
            _quarter(s, 0, 5, 10, 15)
            _quarter(s, 1, 6, 11, 12)
            _quarter(s, 2, 7, 8, 13)
            _quarter(s, 3, 4, 9, 14)
        out += struct.pack(
            "<16I", *[(a + b) & 0xFFFFFFFF for a, b in zip(s, init, strict=True)]
        )
        counter += 1
    return out[:num_bytes]


def naive_lagrange(points: list[tuple[int, int]], at: int, p: int) -> int:
    total = 0
    for j, (xj, yj) in enumerate(points):
        num, den = 1, 1
        for m, (xm, _) in enumerate(points):
            if m != j:
                num = num * (at - xm) % p
                den = den * (xj - xm) % p
        total = (total + yj * num * pow(den, p - 2, p)) % p
    return total


# ------------------------------------------------------------------------ HKDF
def test_hkdf_rfc5869_vectors() -> None:
    for v in _load("secagg_hkdf.json")["rfc5869"]:
        ikm, salt, info = (bytes.fromhex(v[k]) for k in ("ikm", "salt", "info"))
        assert naive_hkdf(ikm, salt, info, v["length"]).hex() == v["okm"]
        got = keys.derive_key(ikm, salt=salt or None, info=info, length=v["length"])  # type: ignore[arg-type]
        assert got.hex() == v["okm"]


def test_hkdf_derivation_vectors_match_code_and_naive() -> None:
    data = _load("secagg_hkdf.json")
    fns = {
        "pairwise_seed": lambda v, ikm: keys.pairwise_seed(
            ikm, run_id=v["run_id"], round=v["round"], a=v["a"], b=v["b"]
        ),
        "share_key": lambda v, ikm: keys.share_key(
            ikm,
            run_id=v["run_id"],
            round=v["round"],
            sender=v["sender"],
            receiver=v["receiver"],
        ),
        "self_mask_seed": lambda v, ikm: keys.self_mask_seed(
            ikm, run_id=v["run_id"], round=v["round"], node_id=v["node_id"]
        ),
        "graph_key": lambda v, ikm: keys.graph_key(
            ikm, run_id=v["run_id"], round=v["round"]
        ),
    }
    # The labels and layouts, written out literally (not taken from the code).
    salt_of = {
        (v["run_id"], v["round"]): b"lepton-fed/secagg/v1"
        + struct.pack("<QI", v["run_id"], v["round"])
        for v in data["derivations"]
    }
    info_of = {
        "pairwise_seed": lambda v: (
            b"lepton-fed/secagg/v1/pairwise-mask"
            + struct.pack("<QQ", min(v["a"], v["b"]), max(v["a"], v["b"]))
        ),
        "share_key": lambda v: (
            b"lepton-fed/secagg/v1/share-encryption"
            + struct.pack("<QQ", v["sender"], v["receiver"])
        ),
        "self_mask_seed": lambda v: (
            b"lepton-fed/secagg/v1/self-mask" + struct.pack("<Q", v["node_id"])
        ),
        "graph_key": lambda v: b"lepton-fed/secagg/v1/neighbour-graph",
    }
    for v in data["derivations"]:
        assert bytes.fromhex(v["salt"]) == salt_of[(v["run_id"], v["round"])]
        assert bytes.fromhex(v["info"]) == info_of[v["function"]](v)
        ikm = bytes.fromhex(v["ikm"])
        naive = naive_hkdf(ikm, bytes.fromhex(v["salt"]), bytes.fromhex(v["info"]), 32)
        assert naive.hex() == v["output"], v["function"]
        assert fns[v["function"]](v, ikm).hex() == v["output"], v["function"]
    c = data["commitment_sha256"]
    b = bytes.fromhex(c["b"])
    naive = hashlib.sha256(
        b"lepton-fed/secagg/v1/self-mask-commitment"
        + b"lepton-fed/secagg/v1"
        + struct.pack("<QIQ", c["run_id"], c["round"], c["node_id"])
        + b
    ).hexdigest()
    assert naive == c["output"]
    got = keys.self_mask_commitment(
        b, run_id=c["run_id"], round=c["round"], node_id=c["node_id"]
    )
    assert got.hex() == c["output"]


def test_graph_seed_vector_matches_code_and_literal_layout() -> None:
    g = _load("secagg_hkdf.json")["graph_seed_sha256"]
    members = [
        (bytes.fromhex(m["identity"]), bytes.fromhex(m["round_key"]))
        for m in g["members"]
    ]
    naive = hashlib.sha256(
        b"lepton-fed/secagg/v1/graph-seed"
        + struct.pack("<QII", g["run_id"], g["round"], len(g["cohort"]))
        + b"".join(
            struct.pack("<Q", n) + i + r
            for n, (i, r) in zip(g["cohort"], members, strict=True)
        )
    ).hexdigest()
    assert naive == g["output"]
    got = keys.graph_seed(
        run_id=g["run_id"], round=g["round"], cohort=g["cohort"], members=members
    )
    assert got.hex() == g["output"]


# ------------------------------------------------------------------------- PRG
def test_chacha20_rfc8439_block() -> None:
    v = _load("secagg_prg.json")["rfc8439_block"]
    key, nonce = bytes.fromhex(v["key"]), bytes.fromhex(v["nonce"])
    assert naive_chacha20(key, v["counter"], nonce, 64).hex() == v["keystream"]
    nonce16 = struct.pack("<I", v["counter"]) + nonce
    assert chacha20_keystream(key, 64, nonce16=nonce16).hex() == v["keystream"]


def test_expand_mask_vectors_match_code_and_naive() -> None:
    for v in _load("secagg_prg.json")["expand_mask"]:
        seed, n, bits = bytes.fromhex(v["seed"]), v["length"], v["bits"]
        naive = np.frombuffer(naive_chacha20(seed, 0, bytes(12), 4 * n), dtype="<u4")
        naive = naive & np.uint32((1 << bits) - 1) if bits < 32 else naive
        ours = expand_mask(seed, n, bits=bits)
        assert np.array_equal(ours, naive)
        assert [int(x) for x in ours[:8]] == v["first_words"]
        assert (
            hashlib.sha256(ours.astype("<u4").tobytes()).hexdigest() == v["sha256_le"]
        )


# ---------------------------------------------------------------------- Shamir
def test_shamir_vectors_replay_and_match_naive_lagrange() -> None:
    data = _load("secagg_shamir.json")
    p = int(data["prime"])
    assert p == shamir.FIELD_PRIME
    for case in data["cases"]:
        secret = bytes.fromhex(case["secret"])
        t = case["threshold"]
        pts = [(x, int(y, 16)) for x, y in case["shares"]]
        label = case["rng"].split("'")[1].encode()
        replay = shamir.split_secret(
            secret,
            xs=[x for x, _ in pts],
            threshold=t,
            rng_bytes=DeterministicRng(label),
        )
        assert replay == [y for _, y in pts]
        for start in range(len(pts) - t + 1):
            subset = pts[start : start + t]
            assert naive_lagrange(subset, 0, p) == int.from_bytes(secret, "big")
            assert shamir.recover_secret(subset, threshold=t) == secret
        # all shares lie on one polynomial of degree t-1
        for x, y in pts[t:]:
            assert naive_lagrange(pts[:t], x, p) == y


# ----------------------------------------------------------------- whole round
def _federation(v: dict, label: str):
    """The vector's advertised federation and its inputs; ``label`` names the
    clients' DeterministicRng stream (``<label>-clients``)."""
    ids = v["node_ids"]
    clients, roster = make_clients(
        ids, rng_bytes=DeterministicRng(f"{label}-clients".encode())
    )
    server = SecAggServer(
        params=SecAggParams(**v["params"]), run_id=v["run_id"], roster=roster
    )
    advertise_all(server, clients)
    inputs = {
        int(n): (np.array(x["delta"]), x["weight"]) for n, x in v["inputs"].items()
    }
    return ids, clients, server, inputs


def test_round_vector_replays_exactly() -> None:
    v = _load("secagg_round.json")
    ids, clients, server, inputs = _federation(v, "round")
    reqs = server.start_round(round=1, cohort=ids, dim=6)
    for n in ids:  # the requests are deterministic: the seed is a hash of the keys
        assert (
            hashlib.sha256(reqs[n]).hexdigest()
            == v["round1"]["masked_input_request_sha256"][str(n)]
        )
    replies = {
        n: clients[n].masked_input(reqs[n], delta=inputs[n][0], weight=inputs[n][1])
        for n in ids
    }
    for n in ids:
        assert (
            hashlib.sha256(replies[n]).hexdigest()
            == v["round1"]["masked_input_reply_sha256"][str(n)]
        )
    unmask = server.collect_masked_inputs(replies)
    result = server.collect_unmask({n: clients[n].unmask(unmask[n]) for n in unmask})
    assert result.sum.tolist() == v["round1"]["sum"]
    assert result.total_weight == v["round1"]["total_weight"]
    exact = sum(w * d for d, w in inputs.values())
    assert np.max(np.abs(result.sum - exact)) < result.error_bound[0]
    result2 = simulate_round(server, clients, inputs, round=2, drop_before_input=[17])
    assert result2.sum.tolist() == v["round2_drop_17"]["sum"]


def test_generator_reproduces_the_committed_files() -> None:
    spec = importlib.util.spec_from_file_location(
        "generate_secagg_vectors", VECTORS / "generate_secagg_vectors.py"
    )
    if spec is None or spec.loader is None:
        pytest.fail("generator script missing")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    for name, content in mod.build().items():
        assert json.loads((VECTORS / name).read_text()) == json.loads(
            json.dumps(content)
        ), name
