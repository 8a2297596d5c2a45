"""The server's steps of a round, as pure functions: requests, collection, unmasking.

:class:`~lepton_fed.secagg.server.SecAggServer` owns the phases; these functions do
the work of one step on a :class:`RoundState` and raise
:class:`~lepton_fed.errors.ProtocolAbort` when the round cannot complete.

:func:`masked_input_requests` (start of a round), :func:`collect_masked`, then
:func:`finish_round`.

Performance (the server's own cost per contributor should be close to one vector
addition and one mask expansion):

* replies are read with the message's ``records_from_bytes`` (the decoder of
  ``from_bytes``, minus the Python objects: one ``struct`` call for the header, the
  vector and the record blocks as zero-copy numpy arrays; the vector is 4-byte
  aligned on the wire, so it is summed in place without numpy's unaligned copy);
* ciphertexts are routed to their receivers with one concatenation and one stable
  sort per round, and each request is written from the sorted records;
* secrets are rebuilt from the raw share blocks with Lagrange coefficients computed
  once per set of share holders (:mod:`~lepton_fed.secagg.server.shares`); salts and label prefixes of the
  per-contributor derivations are built once per round (``RoundDerivations``);
* masks are expanded into one reused buffer (``MaskBuffer``).

Modules: :mod:`~lepton_fed.secagg.server.state` (``RoundState`` and the helpers the
steps share), :mod:`~lepton_fed.secagg.server.shares` (secret reconstruction) and
this one (the steps), which re-exports the names ``machine.py`` uses.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from lepton_fed.errors import ProtocolAbort
from lepton_fed.secagg import keys as K
from lepton_fed.secagg.keys import KEY_BYTES
from lepton_fed.secagg.masking import apply_masks, pairwise_sign
from lepton_fed.secagg.result import SecAggResult
from lepton_fed.secagg.server.shares import (
    RawShares,
    ids_struct,
    read_share_block,
    reconstruct,
)
from lepton_fed.secagg.server.state import (
    Advert,
    RoundState,
    accepted,
    check_one_per_neighbour,
    check_vector,
    route,
    slices,
    split_neighbourhoods,
)
from lepton_fed.secagg.stages import Stage
from lepton_fed.secagg.wire import (
    CT_DTYPE,
    SHARE_DTYPE,
    SIGNATURE_DTYPE,
    MaskedInputReply,
    MaskedInputRequest,
    UnmaskReply,
    UnmaskRequest,
)
from lepton_fed.secagg.wire.codec import ids_bytes

__all__ = [
    "Advert",
    "RoundState",
    "collect_masked",
    "finish_round",
    "masked_input_requests",
]

_SEED_RECORD = 8 + KEY_BYTES  # a (dropped peer u64, pairwise seed) record


def masked_input_requests(
    rs: RoundState,
    members: Sequence[tuple[bytes, bytes]],
    signatures: Sequence[bytes],
    seed: bytes,
) -> dict[int, bytes]:
    """The masked-input request of every cohort member, from pre-encoded parts.

    ``members[i]`` (identity key, round key) and ``signatures[i]`` (of the round key)
    belong to ``rs.cohort[i]``. Every request carries the whole member list (nodes
    recompute the graph seed from it) and the signatures of the recipient's graph
    neighbours; the part common to all requests is encoded once per round.
    """
    cohort = rs.cohort
    shared = b"".join(
        (
            ids_bytes(cohort),
            len(members).to_bytes(4, "little"),
            b"".join(a + b for a, b in members),
            seed,
            MaskedInputRequest.parameter_bytes(
                neighbours=rs.k,
                threshold=rs.t,
                clip=rs.encoding.clip,
                bits=rs.encoding.bits,
                dim=rs.dim,
            ),
        )
    )
    sig_records = np.frombuffer(
        b"".join(
            n.to_bytes(8, "little") + sig
            for n, sig in zip(cohort, signatures, strict=True)
        ),
        dtype=SIGNATURE_DTYPE,
    )
    position = {n: i for i, n in enumerate(cohort)}
    return {
        n: MaskedInputRequest.encode_parts(
            run_id=rs.run_id,
            round=rs.round,
            recipient=n,
            shared=shared,
            signatures=sig_records[[position[j] for j in rs.graph[n]]].tobytes(),
            count=len(rs.graph[n]),
        )
        for n in cohort
    }


def _parse_masked(
    rs: RoundState, n: int, data: bytes
) -> tuple[bytes, np.ndarray, np.ndarray]:
    commitment, vec, cts = MaskedInputReply.records_from_bytes(
        data, run_id=rs.run_id, round=rs.round, sender=n
    )
    check_vector(rs, vec)
    check_one_per_neighbour(rs, n, cts)
    return commitment, vec, cts


def collect_masked(rs: RoundState, replies: Mapping[int, bytes]) -> dict[int, bytes]:
    """Adds up the valid masked inputs (mod 2^32) and builds the unmask requests.

    Invalid replies are recorded in ``rs.rejected`` and count as dropped.

    Raises:
        ProtocolAbort: no valid masked input, or a contributor with fewer than t
            neighbours among the contributors (its self mask would be unrecoverable,
            and every such neighbour refuses to unmask anyway).
    """
    total = np.zeros(rs.dim + 1, dtype=np.uint32)
    senders: list[int] = []
    blocks: list[np.ndarray] = []
    commitments: dict[int, bytes] = {}
    for n, (commitment, vec, cts) in accepted(rs, replies, rs.cohort, _parse_masked):
        np.add(total, vec, out=total)
        senders.append(n)
        blocks.append(cts)
        commitments[n] = commitment
    survivors = tuple(senders)  # cohort order = sorted
    if not survivors:
        raise ProtocolAbort(f"round {rs.round}: no masked input received")
    split_neighbourhoods(rs, survivors, rs.graph)
    records, receivers = route(senders, blocks, CT_DTYPE)
    lo, hi = slices(receivers, survivors)
    rs.total = total
    rs.survivors = survivors
    rs.dropped_input = tuple(n for n in rs.cohort if n not in commitments)
    rs.commitments = commitments
    return {
        u: UnmaskRequest.encode_records(
            run_id=rs.run_id,
            round=rs.round,
            recipient=u,
            survivors=rs.alive_nbrs[u],
            dropped=rs.dead_nbrs[u],
            records=records[a:b],
        )
        for u, a, b in zip(survivors, lo, hi, strict=True)
    }


def _parse_unmask(rs: RoundState, u: int, data: bytes) -> tuple[bytes, bytes]:
    """Both blocks of a valid unmask reply, as bytes: b-shares and (peer, seed)
    records. Owners must be exactly the expected neighbours, in order.
    """
    a, b = UnmaskReply.records_from_bytes(
        data, run_id=rs.run_id, round=rs.round, sender=u
    )
    nb = len(b) // _SEED_RECORD
    read_share_block(
        a, len(a) // SHARE_DTYPE.itemsize, rs.alive_nbrs[u],
        "self-mask shares do not match the survivors",
    )
    dead = rs.dead_nbrs[u]
    if nb != len(dead) or (nb and list(ids_struct(nb, KEY_BYTES).unpack(b)) != dead):
        raise ProtocolAbort("pairwise seeds do not match the dropped nodes")
    return a, b


def finish_round(
    rs: RoundState, replies: Mapping[int, bytes], *, workers: int = 1
) -> SecAggResult:
    """Removes every self mask and every orphaned pairwise mask, then decodes.

    ``workers`` > 1 expands the masks on that many threads (OpenSSL and numpy release
    the GIL); the result is identical since addition mod 2^32 commutes.

    Raises:
        ProtocolAbort: a contributor's self mask has fewer than t shares, or its
            reconstruction fails the commitment; or a pairwise seed between an early
            dropout and a contributor is missing because the contributor did not
            answer the unmask request (README "Dropouts").
    """
    total = rs.total
    if total is None:
        raise ProtocolAbort("no masked inputs collected")
    b_blocks: dict[int, bytes] = {}
    other_blocks: dict[int, bytes] = {}
    for u, (a, b) in accepted(rs, replies, rs.survivors, _parse_unmask):
        b_blocks[u] = a
        other_blocks[u] = b
    derive = K.RoundDerivations(run_id=rs.run_id, round=rs.round)
    commitments = rs.commitments

    def commitment_ok(u: int, b: bytes) -> bool:
        return derive.commitment(b, u) == commitments[u]

    b_shares = RawShares(b_blocks, rs.alive_nbrs)
    secrets = reconstruct(
        b_shares,
        rs.survivors,
        rs.alive_nbrs,
        rs.t,
        rs.ring,
        commitment_ok,
        "self-mask",
        rs.round,
    )
    jobs: list[tuple[bytes, int]] = [
        (derive.self_mask_seed(secrets[u], u), -1) for u in rs.survivors
    ]
    jobs += _pairwise_jobs(rs, other_blocks)
    apply_masks(total, jobs, bits=rs.encoding.bits, workers=workers)
    rs.encoding.reduce(total)
    field_sum = total.copy()
    summed, weight = rs.encoding.decode(total)
    dropped = {Stage.ADVERTISE: rs.dropped_advertise}
    dropped[Stage.MASKED_INPUT] = rs.dropped_input
    dropped[Stage.UNMASK] = tuple(u for u in rs.survivors if u not in b_blocks)
    return SecAggResult(
        run_id=rs.run_id,
        round=rs.round,
        sum=summed,
        total_weight=weight,
        contributors=rs.survivors,
        dropped=dropped,
        rejected=dict(rs.rejected),
        neighbours=rs.k,
        threshold=rs.t,
        privacy_log2=rs.privacy_log2,
        correctness_log2=rs.correctness_log2,
        error_bound=rs.encoding.error_bound(len(rs.survivors)),
        field_sum=field_sum,
    )


def _pairwise_jobs(
    rs: RoundState, seed_blocks: Mapping[int, bytes]
) -> list[tuple[bytes, int]]:
    """Masks between early dropouts and contributors, from revealed seeds."""
    if not rs.dropped_input:
        return []
    seeds: dict[tuple[int, int], bytes] = {}  # (dropped i, contributor u) -> s_iu
    record = _SEED_RECORD
    for u, block in seed_blocks.items():
        for idx, peer in enumerate(rs.dead_nbrs[u]):
            off = idx * record + 8
            seeds[(peer, u)] = block[off : off + KEY_BYTES]
    alive = set(rs.survivors)
    jobs = []
    for i in rs.dropped_input:
        for u in rs.graph[i]:
            if u not in alive:
                continue
            pair_seed = seeds.get((i, u))
            if pair_seed is None:
                raise ProtocolAbort(
                    f"round {rs.round}: node {u} dropped before revealing its pairwise "
                    f"seed with node {i}, which dropped before its masked input"
                )
            jobs.append((pair_seed, -pairwise_sign(owner=u, peer=i)))
    return jobs
