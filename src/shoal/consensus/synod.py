"""Single-decree Paxos — the Synod protocol of "Paxos Made Simple" — pure and sans-I/O.

Every role is an immutable value with a `step(msg)` that returns the role's next value and
the messages to send. Immutability is what lets a model checker hash, compare and revisit
whole global states cheaply (tests/test_synod.py explores all interleavings of a small
configuration). Nothing here reads a clock, a socket, a disk or global randomness.

Ballots are ordered by (round, node id), so two proposers never share one. An acceptor's
`durable()` state is what the driver must persist before any of its replies leave. (Roles
are rebuilt with their constructors rather than `dataclasses.replace`, which is several
times slower and dominates a model checker's profile.)

`bug=` switches on a deliberately broken variant, used only to prove the checker has teeth:
  acceptor "forget-promise"   persists accepted values but not the promise
  proposer "skip-phase1"      sends Accept for its own value without a Prepare round
  proposer "ignore-accepted"  runs phase 1 but proposes its own value regardless
  learner  "mix-ballots"      counts Accepted for the same value across different ballots
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

NodeId = int
Value = bytes

BUGS = frozenset({"forget-promise", "skip-phase1", "ignore-accepted", "mix-ballots"})


class Ballot(NamedTuple):
    round: int
    node: NodeId


ZERO = Ballot(0, 0)  # below every real ballot: "nothing promised / accepted"


@dataclass(frozen=True, slots=True)
class Prepare:  # phase 1a
    src: NodeId
    dst: NodeId
    ballot: Ballot


@dataclass(frozen=True, slots=True)
class Promise:  # phase 1b: the acceptor's highest-ballot accepted (ballot, value), if any
    src: NodeId
    dst: NodeId
    ballot: Ballot
    accepted: tuple[Ballot, Value] | None


@dataclass(frozen=True, slots=True)
class Nack:  # refusal: `promised` tells the proposer which round to beat
    src: NodeId
    dst: NodeId
    ballot: Ballot
    promised: Ballot


@dataclass(frozen=True, slots=True)
class Accept:  # phase 2a
    src: NodeId
    dst: NodeId
    ballot: Ballot
    value: Value


@dataclass(frozen=True, slots=True)
class Accepted:  # phase 2b, sent to every learner
    src: NodeId
    dst: NodeId
    ballot: Ballot
    value: Value


Message = Prepare | Promise | Nack | Accept | Accepted
Report = tuple[NodeId, tuple[Ballot, Value] | None]  # a promise as its proposer keeps it


def quorum(n: int) -> int:
    assert n > 0
    return n // 2 + 1


def _check_bug(bug: str | None, allowed: set[str]) -> None:
    if bug is not None and bug not in allowed:
        raise ValueError(f"unknown bug {bug!r} for this role; known: {sorted(allowed)}")


@dataclass(frozen=True, slots=True)
class AcceptorState:
    promised: Ballot = ZERO
    accepted: Ballot = ZERO
    value: Value | None = None

    def __post_init__(self) -> None:
        assert self.accepted <= self.promised, "accepted above the promise"
        assert (self.value is None) == (self.accepted == ZERO)


@dataclass(frozen=True, slots=True)
class Acceptor:
    id: NodeId
    learners: tuple[NodeId, ...]
    state: AcceptorState = AcceptorState()
    bug: str | None = None

    def __post_init__(self) -> None:
        _check_bug(self.bug, {"forget-promise"})

    def durable(self) -> AcceptorState:
        """The state to persist before this acceptor's replies are sent."""
        s = self.state
        if self.bug == "forget-promise":
            return AcceptorState(s.accepted, s.accepted, s.value)
        return s

    def restart(self) -> Acceptor:
        """Crash and come back with only what `durable()` returned."""
        return Acceptor(self.id, self.learners, self.durable(), self.bug)

    def step(self, msg: Message) -> tuple[Acceptor, tuple[Message, ...]]:
        assert msg.dst == self.id
        s = self.state
        if isinstance(msg, Prepare | Accept) and msg.ballot < s.promised:
            return self, (Nack(self.id, msg.src, msg.ballot, s.promised),)
        if isinstance(msg, Prepare):
            accepted = None if s.value is None else (s.accepted, s.value)
            nxt = AcceptorState(msg.ballot, s.accepted, s.value)
            return self._with(nxt), (Promise(self.id, msg.src, msg.ballot, accepted),)
        if isinstance(msg, Accept):
            nxt = AcceptorState(msg.ballot, msg.ballot, msg.value)
            votes = tuple(Accepted(self.id, n, msg.ballot, msg.value) for n in self.learners)
            return self._with(nxt), votes
        raise TypeError(f"acceptor {self.id} cannot handle {msg!r}")

    def _with(self, state: AcceptorState) -> Acceptor:
        assert state.promised >= self.state.promised, "a promise went backwards"
        return Acceptor(self.id, self.learners, state, self.bug)


@dataclass(frozen=True, slots=True)
class Proposer:
    id: NodeId
    acceptors: tuple[NodeId, ...]
    value: Value  # what this proposer wants chosen if phase 1 leaves it free
    ballot: Ballot = ZERO
    phase: int = 0  # 0 idle, 1 collecting promises, 2 accepts sent
    promises: frozenset[Report] = frozenset()
    seen_round: int = 0  # highest round learnt from Nacks
    bug: str | None = None

    def __post_init__(self) -> None:
        _check_bug(self.bug, {"skip-phase1", "ignore-accepted"})

    def start(self) -> tuple[Proposer, tuple[Message, ...]]:
        """Begin a new ballot above every one this proposer has used or seen."""
        ballot = Ballot(max(self.ballot.round, self.seen_round) + 1, self.id)
        assert ballot > self.ballot
        if self.bug == "skip-phase1":
            return self._accept(ballot, self.value)
        prepares = tuple(Prepare(self.id, a, ballot) for a in self.acceptors)
        return self._with(ballot, 1, frozenset()), prepares

    def step(self, msg: Message) -> tuple[Proposer, tuple[Message, ...]]:
        assert msg.dst == self.id
        if isinstance(msg, Nack):
            phase = 0 if msg.ballot == self.ballot else self.phase  # beaten: wait for start()
            seen = max(self.seen_round, msg.promised.round)
            return self._with(self.ballot, phase, self.promises, seen), ()
        if isinstance(msg, Promise):
            if msg.ballot != self.ballot or self.phase != 1:
                return self, ()  # stale or duplicate
            promises = self.promises | {(msg.src, msg.accepted)}
            if len({a for a, _ in promises}) < quorum(len(self.acceptors)):
                return self._with(self.ballot, 1, promises), ()
            return self._accept(self.ballot, self._pick(promises))
        raise TypeError(f"proposer {self.id} cannot handle {msg!r}")

    def _pick(self, promises: frozenset[Report]) -> Value:
        """P2c: the value of the highest-ballot acceptance reported, else our own."""
        reported = [acc for _, acc in promises if acc is not None]
        if not reported or self.bug == "ignore-accepted":
            return self.value
        return max(reported)[1]

    def _accept(self, ballot: Ballot, value: Value) -> tuple[Proposer, tuple[Message, ...]]:
        nxt = self._with(ballot, 2, frozenset())
        return nxt, tuple(Accept(self.id, a, ballot, value) for a in self.acceptors)

    def _with(
        self, ballot: Ballot, phase: int, promises: frozenset[Report], seen: int | None = None
    ) -> Proposer:
        assert ballot >= self.ballot, "a proposer never reuses a lower ballot"
        seen = self.seen_round if seen is None else seen
        return Proposer(
            self.id, self.acceptors, self.value, ballot, phase, promises, seen, self.bug
        )


@dataclass(frozen=True, slots=True)
class Learner:
    id: NodeId
    n_acceptors: int
    votes: frozenset[tuple[NodeId, Ballot, Value]] = frozenset()
    value: Value | None = None  # learnt once, never changes
    bug: str | None = None

    def __post_init__(self) -> None:
        _check_bug(self.bug, {"mix-ballots"})

    def step(self, msg: Message) -> tuple[Learner, tuple[Message, ...]]:
        assert msg.dst == self.id
        if not isinstance(msg, Accepted):
            raise TypeError(f"learner {self.id} cannot handle {msg!r}")
        if self.value is not None:
            return self, ()  # votes no longer matter; dropping them keeps the state small
        votes = self.votes | {(msg.src, msg.ballot, msg.value)}
        if self.bug == "mix-ballots":
            voters = {a for a, _, v in votes if v == msg.value}
        else:
            voters = {a for a, b, _ in votes if b == msg.ballot}
        if len(voters) >= quorum(self.n_acceptors):
            return Learner(self.id, self.n_acceptors, frozenset(), msg.value, self.bug), ()
        return Learner(self.id, self.n_acceptors, votes, None, self.bug), ()
