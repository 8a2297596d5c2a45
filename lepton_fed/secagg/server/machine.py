"""SecAgg+ server: a pure state machine, one per run, no I/O.

Call order (each step returns ``{node_id: request bytes}`` or the round's result;
replies are ``{node_id: reply bytes}`` for the nodes that answered in time, missing
nodes count as dropped):

1. ``advertise(node_ids)`` -> requests; ``collect_advertisements(replies)``. Once per
   run (again for nodes that join later or whose advertised rounds run out).
2. per round r (2 exchanges):
   ``start_round(round=r, cohort=..., dim=d)`` -> masked-input requests;
   ``collect_masked_inputs(replies)`` -> unmask requests;
   ``collect_unmask(replies)`` -> :class:`SecAggResult`.

k and t come from ``params`` for the round's cohort size (by default derived from a
security level, :mod:`lepton_fed.secagg.security`); the graph seed is the hash of the
cohort's identity and round keys (:func:`~lepton_fed.secagg.keys.graph_seed`), which
every node recomputes.

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

from collections.abc import Callable, Collection, Mapping, Sequence
from functools import partial
from typing import TypeVar

from lepton_fed.errors import ProtocolAbort
from lepton_fed.secagg import keys as K
from lepton_fed.secagg.encoding import FieldEncoding
from lepton_fed.secagg.graph import neighbour_graph, ring_graph, shuffled_cohort
from lepton_fed.secagg.params import SecAggParams
from lepton_fed.secagg.result import SecAggResult
from lepton_fed.secagg.server.steps import (
    Advert,
    RoundState,
    collect_masked,
    finish_round,
    masked_input_requests,
)
from lepton_fed.secagg.stages import (
    SERVER_TRANSITIONS,
    ServerPhase,
    Stage,
    check_transition,
)
from lepton_fed.secagg.trust import check_roster
from lepton_fed.secagg.wire import (
    SERVER_ID,
    AdvertiseReply,
    AdvertiseRequest,
)

__all__ = ["SecAggServer"]

_R = TypeVar("_R")


class SecAggServer:
    """Server side of lepton-fed SecAgg+ for one run.

    Args:
        params: protocol parameters (see :func:`~lepton_fed.secagg.default_params`).
        run_id: identifier of the run, bound into every key and message.
        roster: identity keys from provisioning, ``{node_id: raw Ed25519 public key}``
            or a collection of raw keys (node ids assigned later). Advertisements
            whose identity key is not in it, or that reuse a key another node
            advertised, are rejected. When ``None``, the identity key a node sends
            first is pinned for the run (the nodes do their own checks either way).
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
        roster: Mapping[int, bytes] | Collection[bytes] | None = None,
        workers: int = 1,
    ) -> None:
        if not 0 <= run_id <= 2**64 - 1:
            raise ValueError(f"run_id must fit in 64 bits, got {run_id}")
        self.params = params
        self.run_id = run_id
        mapping, allowed = (None, None) if roster is None else check_roster(roster)
        self._roster = mapping
        self._allowed = allowed
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self.workers = workers
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

    def forget(self, node_id: int) -> None:
        """Drop ``node_id``'s advertised round keys: a node that restarted lost them, and
        will advertise fresh keys for later rounds (round keys are never reused; its
        identity key, from the roster, stays the same)."""
        self._adverts.pop(node_id, None)

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
                    raise ProtocolAbort("not_in_roster: node is not in the roster")
                if known is not None and known != rep.identity_key:
                    raise ProtocolAbort("roster_mismatch: identity key differs")
                if self._allowed is not None and rep.identity_key not in self._allowed:
                    raise ProtocolAbort("not_in_roster: identity key is not allowed")
                if any(
                    key == rep.identity_key and other != n
                    for other, key in self._identities.items()
                ):
                    raise ProtocolAbort(
                        "duplicate_identity: another node advertised this key"
                    )
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
        """Masked-input requests for round ``round``.

        Nodes of ``cohort`` without a valid signed key for the round are left out
        (``dropped[ADVERTISE]``). k and t come from ``params.for_cohort`` for the
        remaining nodes; the graph seed is the hash of their identity and round keys.

        Args:
            round: round number, greater than every round started before.
            cohort: nodes sampled for the round.
            dim: number of parameters of the update (the vector has dim + 1 entries).

        Raises:
            ProtocolAbort: wrong phase, a round number not increasing, fewer than 2
                nodes with valid keys, or no (k, t) reaching the security level for
                the cohort size (``weak_parameters``).
            ValueError: ``dim < 1``.
        """
        next_phase = check_transition(
            SERVER_TRANSITIONS, self._phase, Stage.MASKED_INPUT
        )
        if round <= self._last_round:
            raise ProtocolAbort(f"round {round} is not after round {self._last_round}")
        if dim < 1:
            raise ValueError(f"dim must be >= 1, got {dim}")
        self._last_round = round
        eligible, missing, rejected = [], [], {}
        members: list[tuple[bytes, bytes]] = []
        signatures: list[bytes] = []
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
            members.append((adv.identity_key, rk.public_key))
            signatures.append(rk.signature)
        m = len(eligible)
        if m < 2:
            raise ProtocolAbort(f"round {round}: {m} node(s) with valid keys")
        try:
            choice = self.params.graph_choice(m)
        except ValueError as exc:
            raise ProtocolAbort(f"weak_parameters: {exc}") from None
        k, t = choice.neighbours, choice.threshold
        seed = K.graph_seed(
            run_id=self.run_id, round=round, cohort=eligible, members=members
        )
        if k >= m - 1:  # complete graph
            ring = tuple(eligible)
            graph = neighbour_graph(eligible, seed, run_id=self.run_id, round=round, k=k)
        else:  # the ring order steers which share holders are interpolated together
            ring = tuple(shuffled_cohort(eligible, seed, run_id=self.run_id, round=round))
            graph = ring_graph(ring, k)
        encoding = FieldEncoding(
            clip=self.params.clip, max_contributors=m, bits=self.params.bits
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
            privacy_log2=choice.privacy_log2,
            correctness_log2=choice.correctness_log2,
            ring=ring,
            rejected=rejected,
        )
        self._phase = next_phase
        return masked_input_requests(self._round, members, signatures, seed)

    def collect_masked_inputs(self, replies: Mapping[int, bytes]) -> dict[int, bytes]:
        """Sums the masked inputs and returns the unmask requests.

        Only the running sum is kept, never the individual masked vectors.

        Raises:
            ProtocolAbort: wrong phase, no valid masked input, or some node that sent
                a masked input has fewer than t neighbours that did (its self mask
                could not be removed). The round is abandoned.
        """
        return self._step(Stage.UNMASK, collect_masked, replies)

    # ---------------------------------------------------------------------- unmask
    def collect_unmask(self, replies: Mapping[int, bytes]) -> SecAggResult:
        """Removes every mask from the sum and decodes it.

        Raises:
            ProtocolAbort: wrong phase; a contributor's self mask has fewer than t
                shares or its reconstruction does not match its commitment; or a node
                that dropped before its masked input has a neighbour that sent a
                masked input but no unmask reply (their pairwise mask cannot be
                removed). The round is abandoned.
        """
        result = self._step(None, partial(finish_round, workers=self.workers), replies)
        self._round = None
        return result

    def abandon(self) -> None:
        """Drops the round in progress without unmasking it (the caller decided the
        round must not be released, e.g. too few masked inputs arrived); the server is
        ready for a round with a higher number. No-op when no round is in progress."""
        if self._round is not None:
            self._abandon()

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
