#!/usr/bin/env python
"""Regenerates tests/vectors/secagg_*.json from lepton_fed.secagg (see README.md here).

Run from the repository root::

    python tests/vectors/generate_secagg_vectors.py            # rewrite the files
    python tests/vectors/generate_secagg_vectors.py --check    # fail if they differ

The published RFC vectors embedded below are checked against our code before anything
is written, so a regression in a primitive cannot be frozen into new vectors. The
derived values are checked in tests/unit/test_secagg_vectors.py against independent,
naive implementations (stdlib hmac HKDF, pure-Python ChaCha20, per-term Lagrange).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import numpy as np

from lepton_fed.secagg import SecAggServer, keys, shamir
from lepton_fed.secagg.inprocess import (
    DeterministicRng,
    advertise_all,
    make_clients,
    simulate_round,
)
from lepton_fed.secagg.params import SecAggParams
from lepton_fed.secagg.prg import chacha20_keystream, expand_mask

HERE = Path(__file__).resolve().parent

# RFC 5869, Appendix A, test cases 1 and 3 (SHA-256).
RFC5869 = [
    {
        "case": "RFC 5869 A.1",
        "ikm": "0b" * 22,
        "salt": "000102030405060708090a0b0c",
        "info": "f0f1f2f3f4f5f6f7f8f9",
        "length": 42,
        "okm": "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf"
        "34007208d5b887185865",
    },
    {
        "case": "RFC 5869 A.3",
        "ikm": "0b" * 22,
        "salt": "",
        "info": "",
        "length": 42,
        "okm": "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d"
        "9d201395faa4b61a96c8",
    },
]

# RFC 8439 §2.3.2: ChaCha20 block, key 00..1f, nonce 000000090000004a00000000, counter 1.
RFC8439_BLOCK = {
    "case": "RFC 8439 2.3.2",
    "key": bytes(range(32)).hex(),
    "counter": 1,
    "nonce": "000000090000004a00000000",
    "keystream": "10f1e7e4d13b5915500fdd1fa32071c4c7d1f4c733c068030422aa9ac3d46c4e"
    "d2826446079faa0914c2d705d98b02a2b5129cd1de164eb9cbd083e8a2503c4e",
}


def _h(data: bytes) -> str:
    return data.hex()


def hkdf_vectors() -> dict:
    for v in RFC5869:
        got = keys.derive_key(
            bytes.fromhex(v["ikm"]),
            salt=bytes.fromhex(v["salt"]) or None,  # type: ignore[arg-type]
            info=bytes.fromhex(v["info"]),
            length=v["length"],
        )
        if got.hex() != v["okm"]:
            raise SystemExit(f"{v['case']} mismatch: our HKDF is broken")
    shared = bytes(range(100, 132))
    b = bytes(range(200, 232))
    run, rnd = 0x0123456789ABCDEF, 7
    derived = [
        {
            "function": "pairwise_seed",
            "ikm": _h(shared),
            "run_id": run,
            "round": rnd,
            "a": 11,
            "b": 5,
            "salt": _h(keys.round_salt(run_id=run, round=rnd)),
            "info": _h(
                keys.LABEL_PAIRWISE_MASK
                + (5).to_bytes(8, "little")
                + (11).to_bytes(8, "little")
            ),
            "output": _h(keys.pairwise_seed(shared, run_id=run, round=rnd, a=11, b=5)),
        },
        {
            "function": "share_key",
            "ikm": _h(shared),
            "run_id": run,
            "round": rnd,
            "sender": 5,
            "receiver": 11,
            "salt": _h(keys.round_salt(run_id=run, round=rnd)),
            "info": _h(
                keys.LABEL_SHARE_ENCRYPTION
                + (5).to_bytes(8, "little")
                + (11).to_bytes(8, "little")
            ),
            "output": _h(
                keys.share_key(shared, run_id=run, round=rnd, sender=5, receiver=11)
            ),
        },
        {
            "function": "self_mask_seed",
            "ikm": _h(b),
            "run_id": run,
            "round": rnd,
            "node_id": 5,
            "salt": _h(keys.round_salt(run_id=run, round=rnd)),
            "info": _h(keys.LABEL_SELF_MASK + (5).to_bytes(8, "little")),
            "output": _h(keys.self_mask_seed(b, run_id=run, round=rnd, node_id=5)),
        },
        {
            "function": "graph_key",
            "ikm": _h(b),
            "run_id": run,
            "round": rnd,
            "salt": _h(keys.round_salt(run_id=run, round=rnd)),
            "info": _h(keys.LABEL_GRAPH),
            "output": _h(keys.graph_key(b, run_id=run, round=rnd)),
        },
    ]
    cohort = [3, 10, 17]
    members = [(bytes([i]) * 32, bytes([i + 100]) * 32) for i in cohort]
    graph_seed = {
        "run_id": run,
        "round": rnd,
        "cohort": cohort,
        "members": [{"identity": _h(i), "round_key": _h(r)} for i, r in members],
        "output": _h(
            keys.graph_seed(run_id=run, round=rnd, cohort=cohort, members=members)
        ),
    }
    commitment = {
        "b": _h(b),
        "run_id": run,
        "round": rnd,
        "node_id": 5,
        "output": _h(keys.self_mask_commitment(b, run_id=run, round=rnd, node_id=5)),
    }
    return {
        "description": "HKDF-SHA256 (RFC 5869) and lepton-fed secagg v1 key derivations",
        "rfc5869": RFC5869,
        "derivations": derived,
        "commitment_sha256": commitment,
        "graph_seed_sha256": graph_seed,
    }


def prg_vectors() -> dict:
    v = RFC8439_BLOCK
    nonce16 = v["counter"].to_bytes(4, "little") + bytes.fromhex(v["nonce"])
    if (
        chacha20_keystream(bytes.fromhex(v["key"]), 64, nonce16=nonce16).hex()
        != v["keystream"]
    ):
        raise SystemExit("RFC 8439 block mismatch: our ChaCha20 use is broken")
    cases = []
    for seed_byte, length, bits in ((0, 16, 32), (7, 1000, 32), (42, 33, 20)):
        seed = bytes([seed_byte]) * 32
        words = expand_mask(seed, length, bits=bits)
        cases.append(
            {
                "seed": _h(seed),
                "length": length,
                "bits": bits,
                "first_words": [int(x) for x in words[:8]],
                "sha256_le": hashlib.sha256(words.astype("<u4").tobytes()).hexdigest(),
            }
        )
    return {
        "description": "ChaCha20 keystream (RFC 8439) and expand_mask (key=seed, counter 0, "
        "nonce 0, little-endian uint32 words masked to bits)",
        "rfc8439_block": v,
        "expand_mask": cases,
    }


def shamir_vectors() -> dict:
    cases = []
    for label, secret, xs, t in (
        (b"shamir-1", bytes(32), [1, 2, 3], 2),
        (b"shamir-2", bytes(range(32)), [3, 8, 13, 21, 34], 3),
        (b"shamir-3", b"\xff" * 32, [2**64 - 1, 6, 1000, 77, 5, 12, 9], 5),
    ):
        values = shamir.split_secret(
            secret, xs=xs, threshold=t, rng_bytes=DeterministicRng(label)
        )
        cases.append(
            {
                "rng": f"DeterministicRng({label.decode()!r})",
                "secret": _h(secret),
                "threshold": t,
                "shares": [
                    [x, _h(shamir.encode_share_value(y))]
                    for x, y in zip(xs, values, strict=True)
                ],
            }
        )
    return {
        "description": "Shamir t-of-n over GF(2^256 + 297); share value = 33-byte big-endian",
        "prime": str(shamir.FIELD_PRIME),
        "cases": cases,
    }


def _federation(ids: list[int], params: SecAggParams, label: str) -> tuple:
    """An advertised federation (run 99) whose secrets all come from the DeterministicRng
    stream ``<label>-clients`` (the server draws no randomness), and its inputs."""
    clients, roster = make_clients(
        ids, rng_bytes=DeterministicRng(f"{label}-clients".encode())
    )
    server = SecAggServer(params=params, run_id=99, roster=roster)
    advertise_all(server, clients)
    n = len(ids)
    inputs = {
        v: (np.linspace(-1, 1, 6) * (i + 1) / n, (i + 1) / n) for i, v in enumerate(ids)
    }
    return clients, server, inputs


def round_vector() -> dict:
    ids = [3, 10, 17, 40, 52]
    params = SecAggParams(neighbours=4, threshold=3, rounds=2, clip=1.0)
    clients, server, inputs = _federation(ids, params, "round")
    # Capture the masked-input replies to pin their bytes.
    reqs = server.start_round(round=1, cohort=ids, dim=6)
    replies = {
        n: clients[n].masked_input(reqs[n], delta=inputs[n][0], weight=inputs[n][1])
        for n in ids
    }
    unmask_reqs = server.collect_masked_inputs(replies)
    result = server.collect_unmask(
        {n: clients[n].unmask(unmask_reqs[n]) for n in unmask_reqs}
    )
    # Round 2 with a node that drops before its masked input.
    result2 = simulate_round(server, clients, inputs, round=2, drop_before_input=[17])
    return {
        "description": "end-to-end round; every secret drawn from DeterministicRng; pins wire "
        "format v3 and every derivation. Changes only with a protocol/wire version bump.",
        "node_ids": ids,
        "run_id": 99,
        "params": {
            "neighbours": 4,
            "threshold": 3,
            "rounds": 2,
            "clip": 1.0,
            "bits": 32,
        },
        "rng": {"clients": "DeterministicRng('round-clients')"},
        "inputs": {
            str(n): {"delta": d.tolist(), "weight": w} for n, (d, w) in inputs.items()
        },
        "round1": {
            "masked_input_request_sha256": {
                str(n): hashlib.sha256(reqs[n]).hexdigest() for n in ids
            },
            "masked_input_reply_sha256": {
                str(n): hashlib.sha256(replies[n]).hexdigest() for n in ids
            },
            "sum": result.sum.tolist(),
            "total_weight": result.total_weight,
        },
        "round2_drop_17": {
            "sum": result2.sum.tolist(),
            "total_weight": result2.total_weight,
        },
    }


def build() -> dict[str, dict]:
    return {
        "secagg_hkdf.json": hkdf_vectors(),
        "secagg_prg.json": prg_vectors(),
        "secagg_shamir.json": shamir_vectors(),
        "secagg_round.json": round_vector(),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="compare instead of writing")
    args = ap.parse_args()
    status = 0
    for name, content in build().items():
        text = json.dumps(content, indent=2) + "\n"
        path = HERE / name
        if args.check:
            if not path.exists() or path.read_text() != text:
                print(f"{name}: differs from the generator output")
                status = 1
        else:
            path.write_text(text)
            print(f"wrote {path}")
    return status


if __name__ == "__main__":
    sys.exit(main())
