"""SecAgg+ server: a pure state machine, one per run, no I/O.

Call order (each step returns ``{node_id: request bytes}`` or the round's result;
replies are ``{node_id: reply bytes}`` for the nodes that answered in time, missing
nodes count as dropped):

1. ``advertise(node_ids)`` -> requests; ``collect_advertisements(replies)``. Once per
   run (again for nodes that join later or whose advertised rounds run out).
2. per round r, fast mode (default, 2 exchanges):
   ``start_round(round=r, cohort=..., dim=d)`` -> masked-input requests;
   ``collect_masked_inputs(replies)`` -> unmask requests;
   ``collect_unmask(replies)`` -> :class:`SecAggResult`.
3. per round r, robust mode (``params.share_keys_first``, 3 exchanges):
   ``start_round(round=r, cohort=..., dim=d)`` -> share-keys requests;
   ``collect_shares(replies)`` -> masked-input requests;
   ``collect_masked_inputs(replies)`` -> unmask requests;
   ``collect_unmask(replies)`` -> :class:`SecAggResult`.

Any step may raise :class:`~lepton_fed.errors.ProtocolAbort`: the round is then
abandoned (the caller keeps the global model unchanged) and the server is ready for
the next round, with a higher round number. A malformed or inconsistent reply from one
node never aborts the round by itself: that node is treated as dropped and listed in
``SecAggResult.rejected``.

What the server learns: the sum of ``[weight * delta, weight]`` over the nodes that
sent a masked input (``SecAggResult.contributors``) and who took part at each stage,
nothing about an individual input (README "Threat model").
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import TypeVar

from lepton_fed.errors import ProtocolAbort
from lepton_fed.secagg import keys as K
from lepton_fed.secagg._server_round import (
    Advert,
    RoundState,
    collect_masked,
    collect_masked_robust,
    collect_shares,
    finish_round,
)
from lepton_fed.secagg.encoding import FieldEncoding
from lepton_fed.secagg.graph import neighbour_graph, ring_graph, shuffled_cohort
from lepton_fed.secagg.messages import (
    SERVER_ID,
    AdvertiseReply,
    AdvertiseRequest,
    MaskedInputRequest,
    NeighbourKey,
    ShareKeysRequest,
)
from lepton_fed.secagg.params import SecAggParams
from lepton_fed.secagg.prg import SEED_BYTES
from lepton_fed.secagg.result import SecAggResult
from lepton_fed.secagg.stages import (
    SERVER_TRANSITIONS,
    ServerPhase,
    Stage,
    check_transition,
)

__all__ = ["SecAggServer"]

_R = TypeVar("_R")


class SecAggServer:
    """Server side of lepton-fed SecAgg+ for one run.

    Args:
        params: protocol parameters (see :func:`~lepton_fed.secagg.default_params`).
        run_id: identifier of the run, bound into every key and message.
        roster: ``{node_id: raw Ed25519 public key}`` from provisioning. When given,
            advertisements whose identity key differs are rejected. When ``None``, the
            identity key a node sends first is pinned for the run (trust on first use).
        rng_bytes: CSPRNG for graph seeds; injectable only for known-answer tests.
        workers: threads used to expand and remove masks at unmask time (the result
            does not depend on it). 1 (default) stays single-threaded.

    Raises:
        ValueError: ``run_id`` out of the u64 range or a malformed roster.
    """

    def __init__(
        self,
        *,
        params: SecAggParams,
        run_id: int,
        roster: Mapping[int, bytes] | None = None,
        rng_bytes: Callable[[int], bytes] = os.urandom,
        workers: int = 1,
    ) -> None:
        if not 0 <= run_id <= 2**64 - 1:
            raise ValueError(f"run_id must fit in 64 bits, got {run_id}")
        self.params = params
        self.run_id = run_id
        self._roster = (
            None if roster is None else {int(k): bytes(v) for k, v in roster.items()}
        )
        if self._roster is not None and any(
            len(v) != K.KEY_BYTES or not 0 <= k < SERVER_ID
            for k, v in self._roster.items()
        ):
            raise ValueError("malformed roster")
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self.workers = workers
        self._rng = rng_bytes
        self._phase = ServerPhase.IDLE
        self._adverts: dict[int, Advert] = {}
        self._identities: dict[int, bytes] = dict(self._roster or {})
        self._pending_advert: tuple[int, int, tuple[int, ...]] | None = None
        self._last_round = 0
        self._round: RoundState | None = None
        self.advert_rejected: dict[int, str] = {}

    @property
    def phase(self) -> ServerPhase:
        """Current phase of the state machine."""
        return self._phase

    @property
    def roster(self) -> dict[int, bytes]:
        """Identity keys known to the server (provisioned or pinned on first use)."""
        return dict(self._identities)

    def advertised_until(self, node_id: int) -> int:
        """Last round for which ``node_id`` has advertised a key (0 if none)."""
        adv = self._adverts.get(node_id)
        return 0 if adv is None else adv.first_round + len(adv.round_keys) - 1

    # ------------------------------------------------------------------- advertise
    def advertise(
        self, node_ids: Sequence[int], *, first_round: int | None = None
    ) -> dict[int, bytes]:
        """Advertisement requests for ``params.rounds`` rounds from ``first_round``.

        Args:
            node_ids: nodes that should advertise.
            first_round: first round covered; default: the round after the last one
                started.

        Raises:
            ProtocolAbort: called in the middle of a round, or ``first_round`` not after
                the last round started.
            ValueError: bad node ids.
        """
        next_phase = check_transition(SERVER_TRANSITIONS, self._phase, Stage.ADVERTISE)
        first = self._last_round + 1 if first_round is None else first_round
        if first <= self._last_round:
            raise ProtocolAbort(
                f"first_round {first} is not after round {self._last_round}"
            )
        ids = tuple(sorted(set(int(n) for n in node_ids)))
        if any(not 0 <= n < SERVER_ID for n in ids):
            raise ValueError("node ids must be in [0, 2^64 - 2]")
        self._pending_advert = (first, self.params.rounds, ids)
        self._phase = next_phase
        return {
            n: AdvertiseRequest(
                run_id=self.run_id,
                round=first,
                sender=SERVER_ID,
                recipient=n,
                num_rounds=self.params.rounds,
            ).to_bytes()
            for n in ids
        }

    def collect_advertisements(self, replies: Mapping[int, bytes]) -> tuple[int, ...]:
        """Caches the round keys of the nodes that answered.

        Signatures on round keys are checked when a round uses them (in
        :meth:`start_round`, and by every neighbour), so a run of R rounds costs the
        server n signature checks per round instead of n*R up front.

        Returns:
            The nodes whose advertisement was accepted. Refused ones are listed in
            ``advert_rejected``.

        Raises:
            ProtocolAbort: no advertisement is pending.
        """
        next_phase = check_transition(SERVER_TRANSITIONS, self._phase, None)
        if self._pending_advert is None:
            raise ProtocolAbort("no advertisement pending")
        first, count, ids = self._pending_advert
        accepted = []
        for n in ids:
            if n not in replies:
                continue
            try:
                rep = AdvertiseReply.from_bytes(
                    replies[n], run_id=self.run_id, round=first, sender=n
                )
                if len(rep.round_keys) != count:
                    raise ProtocolAbort(
                        f"{len(rep.round_keys)} round keys, expected {count}"
                    )
                known = self._identities.get(n)
                if self._roster is not None and known is None:
                    raise ProtocolAbort("node is not in the provisioned roster")
                if known is not None and known != rep.identity_key:
                    raise ProtocolAbort("identity key differs from the roster")
            except ProtocolAbort as exc:
                self.advert_rejected[n] = str(exc)
                continue
            self._identities[n] = rep.identity_key
            self._adverts[n] = Advert(
                identity_key=rep.identity_key,
                first_round=first,
                round_keys=rep.round_keys,
            )
            self.advert_rejected.pop(n, None)
            accepted.append(n)
        self._pending_advert = None
        self._phase = next_phase
        return tuple(accepted)

    # --------------------------------------------------------------- masked input
    def start_round(
        self, *, round: int, cohort: Sequence[int], dim: int
    ) -> dict[int, bytes]:
        """Masked-input requests for round ``round`` (share-keys requests in robust mode).

        Nodes of ``cohort`` without a valid signed key for the round are left out
        (``dropped[ADVERTISE]``). The graph seed is fresh randomness. In robust mode
        (``params.share_keys_first``) the requests are ``ShareKeysRequest`` (same
        content); answer them with :meth:`collect_shares`.

        Args:
            round: round number, greater than every round started before.
            cohort: nodes sampled for the round.
            dim: number of parameters of the update (the vector has dim + 1 entries).

        Raises:
            ProtocolAbort: wrong phase, a round number not increasing, or fewer than 2
                nodes with valid keys.
            ValueError: ``dim < 1``.
        """
        robust = self.params.share_keys_first
        next_phase = check_transition(
            SERVER_TRANSITIONS,
            self._phase,
            Stage.SHARE_KEYS if robust else Stage.MASKED_INPUT,
        )
        if round <= self._last_round:
            raise ProtocolAbort(f"round {round} is not after round {self._last_round}")
        if dim < 1:
            raise ValueError(f"dim must be >= 1, got {dim}")
        self._last_round = round
        eligible, missing, rejected = [], [], {}
        keys: dict[int, NeighbourKey] = {}
        for n in sorted(set(int(c) for c in cohort)):
            adv = self._adverts.get(n)
            rk = None if adv is None else adv.key_for(round)
            if adv is None or rk is None:
                missing.append(n)
                continue
            try:
                K.verify_round_key(
                    adv.identity_key,
                    rk.signature,
                    run_id=self.run_id,
                    node_id=n,
                    round=round,
                    public_key=rk.public_key,
                )
            except ProtocolAbort as exc:
                missing.append(n)
                rejected[n] = str(exc)
                continue
            eligible.append(n)
            keys[n] = NeighbourKey(
                node_id=n,
                identity_key=adv.identity_key,
                public_key=rk.public_key,
                signature=rk.signature,
            )
        if len(eligible) < 2:
            raise ProtocolAbort(
                f"round {round}: {len(eligible)} node(s) with valid keys"
            )
        k, t = self.params.for_cohort(len(eligible))
        seed = self._rng(SEED_BYTES)
        if k >= len(eligible) - 1:  # complete graph
            ring = tuple(eligible)
            graph = neighbour_graph(eligible, seed, run_id=self.run_id, round=round, k=k)
        else:  # the ring order steers which share holders are interpolated together
            ring = tuple(shuffled_cohort(eligible, seed, run_id=self.run_id, round=round))
            graph = ring_graph(ring, k)
        encoding = FieldEncoding(
            clip=self.params.clip, max_contributors=len(eligible), bits=self.params.bits
        )
        self._round = RoundState(
            run_id=self.run_id,
            round=round,
            cohort=tuple(eligible),
            graph=graph,
            k=k,
            t=t,
            dim=dim,
            encoding=encoding,
            dropped_advertise=tuple(missing),
            ring=ring,
            robust=robust,
            rejected=rejected,
        )
        self._phase = next_phase
        cls = ShareKeysRequest if robust else MaskedInputRequest
        return {
            n: cls(
                run_id=self.run_id,
                round=round,
                sender=SERVER_ID,
                recipient=n,
                cohort=tuple(eligible),
                graph_seed=seed,
                neighbours=k,
                threshold=t,
                clip=self.params.clip,
                bits=self.params.bits,
                dim=dim,
                neighbour_keys=tuple(keys[j] for j in graph[n]),
            ).to_bytes()
            for n in eligible
        }

    def collect_shares(self, replies: Mapping[int, bytes]) -> dict[int, bytes]:
        """Robust mode: relays the shares and returns the masked-input requests.

        Each node that shared keys, and has at least t neighbours that did, gets the
        ciphertexts its neighbours addressed to it; it will mask with exactly those
        neighbours. Nodes with fewer are left out (``dropped[SHARE_KEYS]`` and
        ``rejected``). The server keeps the mask public keys and the commitments to
        b, not the ciphertexts.

        Raises:
            ProtocolAbort: wrong phase (e.g. a fast-mode round), or no node left; the
                round is abandoned in the latter case.
        """
        return self._step(Stage.ROBUST_MASKED_INPUT, collect_shares, replies)

    def collect_masked_inputs(self, replies: Mapping[int, bytes]) -> dict[int, bytes]:
        """Sums the masked inputs and returns the unmask requests.

        Only the running sum is kept, never the individual masked vectors.

        Raises:
            ProtocolAbort: wrong phase, no valid masked input, or some node that sent
                a masked input has fewer than t neighbours that did (its self mask
                could not be removed); in robust mode also a node that dropped before
                its masked input whose contributing neighbours are fewer than t (its
                mask key could not be rebuilt). The round is abandoned.
        """
        if self._round is not None and self._round.robust:
            return self._step(Stage.ROBUST_UNMASK, collect_masked_robust, replies)
        return self._step(Stage.UNMASK, collect_masked, replies)

    # ---------------------------------------------------------------------- unmask
    def collect_unmask(self, replies: Mapping[int, bytes]) -> SecAggResult:
        """Removes every mask from the sum and decodes it.

        Raises:
            ProtocolAbort: wrong phase; a contributor's self mask has fewer than t
                shares or its reconstruction does not match its commitment; fast
                mode: a node that dropped before its masked input has a neighbour
                that sent a masked input but no unmask reply (their pairwise mask
                cannot be removed); robust mode: a dropped node's mask key has fewer
                than t shares or does not match its public key. The round is
                abandoned.
        """
        result = self._step(None, partial(finish_round, workers=self.workers), replies)
        self._round = None
        return result

    # --------------------------------------------------------------------- helpers
    def _step(
        self,
        stage: Stage | None,
        step: Callable[[RoundState, Mapping[int, bytes]], _R],
        replies: Mapping[int, bytes],
    ) -> _R:
        """Runs one collection step of the round in progress; on ``ProtocolAbort``
        the round is abandoned (and the error raised again)."""
        next_phase = check_transition(SERVER_TRANSITIONS, self._phase, stage)
        if self._round is None:
            raise ProtocolAbort("no round in progress")
        try:
            out = step(self._round, replies)
        except ProtocolAbort:
            self._abandon()
            raise
        self._phase = next_phase
        return out

    def _abandon(self) -> None:
        self._round = None
        self._phase = ServerPhase.READY
