"""Exhaustive safety check of the Synod protocol: a bounded model checker explores every
interleaving of 3 acceptors, 2 proposers (up to 2 ballots each) and 2 learners, with
messages delivered in any order, lost (a run may stop delivering at any point), optionally
duplicated, and acceptors crashing back to their persisted state. Visited global states are
memoised, so each distinct state is expanded once. Broken variants must be caught."""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass
from typing import NamedTuple

import pytest

from shoal.consensus.synod import (
    ZERO,
    Accept,
    Accepted,
    Acceptor,
    AcceptorState,
    Ballot,
    Learner,
    Message,
    Nack,
    Prepare,
    Promise,
    Proposer,
)

ACCEPTORS = (1, 2, 3)
PROPOSERS = (11, 12)
LEARNERS = (21, 22)
MAX_BALLOTS = 2  # per proposer
MAX_CRASHES = 2  # restarts that change an acceptor (a correct one restarts unchanged)


class World(NamedTuple):
    acceptors: tuple[Acceptor, ...]
    proposers: tuple[Proposer, ...]
    started: tuple[int, ...]  # ballots each proposer has begun
    network: frozenset[Message]  # requests and promises in flight (see `_post`)
    votes: frozenset[Accepted]  # every Accepted sent to learner 21 (the others get copies)
    crashes: int  # acceptor restarts so far


def initial(bugs: dict[str, str]) -> World:
    return World(
        acceptors=tuple(Acceptor(a, LEARNERS, bug=bugs.get("acceptor")) for a in ACCEPTORS),
        proposers=tuple(
            Proposer(p, ACCEPTORS, value=b"v%d" % p, bug=bugs.get("proposer")) for p in PROPOSERS
        ),
        started=(0,) * len(PROPOSERS),
        network=frozenset(),
        votes=frozenset(),
        crashes=0,
    )


def _put(items: tuple, k: int, item: object) -> tuple:
    return items[:k] + (item,) + items[k + 1:]


def _post(w: World, net: frozenset[Message], out: tuple[Message, ...]) -> World:
    """Put `out` in flight, keeping only mail whose delivery could still change something.

    Learners are passive: rather than explore every order in which each learner hears each
    Accepted, keep the votes sent; `violation` asks whether two learners could learn
    different values under *some* delivery, which covers all of them at once. Nacks only
    steer which round a proposer tries next (liveness), so they count as lost. A request
    below its acceptor's durable promise, or a promise for a ballot its proposer has left,
    can only produce those: dropping it merges states that differ in dead mail alone."""
    votes = w.votes.union(m for m in out if isinstance(m, Accepted) and m.dst == LEARNERS[0])
    floor = {a.id: a.durable().promised for a in w.acceptors}
    wants = {p.id: (p.ballot, {a for a, _ in p.promises}) for p in w.proposers if p.phase == 1}

    def live(m: Message) -> bool:
        if isinstance(m, Prepare | Accept):
            return m.ballot >= floor[m.dst]
        if isinstance(m, Promise) and m.dst in wants:
            ballot, have = wants[m.dst]
            return m.ballot == ballot and m.src not in have
        return False

    return w._replace(network=frozenset(filter(live, (*net, *out))), votes=votes)


def successors(w: World, duplicate: bool) -> list[World]:
    out = []
    for k, p in enumerate(w.proposers):  # a proposer times out and starts a ballot
        if w.started[k] < MAX_BALLOTS:
            p, msgs = p.start()
            started = _put(w.started, k, w.started[k] + 1)
            w2 = w._replace(proposers=_put(w.proposers, k, p), started=started)
            out.append(_post(w2, w.network, msgs))
    for m in w.network:  # any message, in any order; never delivering one = losing it
        net = w.network if duplicate else w.network - {m}
        if isinstance(m, Promise):
            k = PROPOSERS.index(m.dst)
            p, msgs = w.proposers[k].step(m)
            out.append(_post(w._replace(proposers=_put(w.proposers, k, p)), net, msgs))
        else:
            k = ACCEPTORS.index(m.dst)
            a, msgs = w.acceptors[k].step(m)
            out.append(_post(w._replace(acceptors=_put(w.acceptors, k, a)), net, msgs))
    for k, a in enumerate(w.acceptors):  # crash, restart from what was persisted
        restarted = a.restart()
        if restarted != a and w.crashes < MAX_CRASHES:  # a correct acceptor restarts unchanged
            w2 = w._replace(acceptors=_put(w.acceptors, k, restarted), crashes=w.crashes + 1)
            out.append(_post(w2, w.network, ()))
    return out


def learnable(votes: frozenset[Accepted], bug: str | None) -> set[bytes]:
    """Values some learner learns when it is shown only that value's votes."""
    out = set()
    for v in {m.value for m in votes}:
        n = Learner(LEARNERS[0], len(ACCEPTORS), bug=bug)
        for m in votes:
            if m.value == v:
                n, _ = n.step(m)
        if n.value is not None:
            out.add(v)
    return out


def canonical(w: World) -> tuple:
    """A key equal for two worlds iff one is the other with acceptors renamed (symmetry
    reduction: acceptors are interchangeable). Every fact in
    a world involves at most one acceptor, so the sorted per-acceptor summaries together with
    the acceptor-free rest determine the world up to such a renaming."""
    about: dict[int, list] = {a.id: [] for a in w.acceptors}
    for m in w.network:
        if isinstance(m, Promise):
            about[m.src].append((0, m.dst, m.ballot, m.accepted))
        else:
            about[m.dst].append((1, type(m).__name__, m.ballot, getattr(m, "value", b"")))
    for m in w.votes:
        about[m.src].append((2, m.ballot, m.value))
    for p in w.proposers:
        for a, report in p.promises:
            about[a].append((3, p.id, report))
    # Ordered by hash, which is total and content-based; a tie only costs a missed merge.
    acceptors = sorted(((a.state, frozenset(about[a.id])) for a in w.acceptors), key=hash)
    proposers = tuple((p.ballot, p.phase, p.seen_round) for p in w.proposers)
    return tuple(acceptors), proposers, w.started, w.crashes


@dataclass
class Result:
    states: int
    seconds: float
    violated: bool
    depth: int  # length of the shortest counterexample, or of the longest run explored


def check(bugs: dict[str, str] | None = None, duplicate: bool = False, dfs: bool = False) -> Result:
    """Explore every reachable world, each expanded once; stop at the first world in which
    two learners could learn different values. Breadth-first finds the shortest such run;
    depth-first reaches deep runs sooner."""
    bugs = bugs or {}
    t0 = time.perf_counter()
    start = initial(bugs)
    seen = {canonical(start)}
    todo: deque[tuple[World, int]] = deque([(start, 0)])
    deepest = 0
    while todo:
        w, depth = todo.pop() if dfs else todo.popleft()
        deepest = max(deepest, depth)
        for w2 in successors(w, duplicate):
            key = canonical(w2)
            if key in seen:
                continue
            if w2.votes != w.votes and len(learnable(w2.votes, bugs.get("learner"))) > 1:
                return Result(len(seen), time.perf_counter() - t0, True, depth + 1)
            seen.add(key)
            todo.append((w2, depth + 1))
    return Result(len(seen), time.perf_counter() - t0, False, deepest)


# ---------------------------------------------------------------------------- the roles alone


def test_acceptor_promises_and_refuses_lower_ballots():
    a = Acceptor(1, LEARNERS)
    a, out = a.step(Prepare(11, 1, Ballot(2, 11)))
    assert out == (Promise(1, 11, Ballot(2, 11), None),)
    _, out = a.step(Prepare(12, 1, Ballot(1, 12)))
    assert out == (Nack(1, 12, Ballot(1, 12), Ballot(2, 11)),)
    a, out = a.step(Accept(11, 1, Ballot(2, 11), b"x"))
    assert {m.dst for m in out} == set(LEARNERS) and all(isinstance(m, Accepted) for m in out)
    assert a.durable() == AcceptorState(Ballot(2, 11), Ballot(2, 11), b"x")
    _, out = a.step(Prepare(12, 1, Ballot(3, 12)))
    assert out == (Promise(1, 12, Ballot(3, 12), (Ballot(2, 11), b"x")),)


def test_proposer_adopts_highest_accepted_value():
    p, prepares = Proposer(11, ACCEPTORS, b"mine").start()
    assert [m.ballot for m in prepares] == [Ballot(1, 11)] * 3
    p, out = p.step(Promise(1, 11, Ballot(1, 11), (Ballot(1, 3), b"old")))
    assert out == ()
    p, out = p.step(Promise(2, 11, Ballot(1, 11), (Ballot(1, 7), b"newer")))
    assert {m.value for m in out} == {b"newer"} and len(out) == 3


def test_proposer_beaten_by_nack_starts_above_it():
    p, _ = Proposer(11, ACCEPTORS, b"mine").start()
    p, _ = p.step(Nack(1, 11, Ballot(1, 11), Ballot(5, 12)))
    assert p.phase == 0
    p, out = p.start()
    assert p.ballot == Ballot(6, 11) > Ballot(5, 12)


def test_learner_needs_a_quorum_of_one_ballot():
    n = Learner(21, 3)
    n, _ = n.step(Accepted(1, 21, Ballot(1, 11), b"x"))
    n, _ = n.step(Accepted(2, 21, Ballot(2, 12), b"x"))
    assert n.value is None  # two acceptors, but of different ballots
    n, _ = n.step(Accepted(3, 21, Ballot(2, 12), b"x"))
    assert n.value == b"x"


def test_bad_bug_name_is_refused():
    with pytest.raises(ValueError, match="unknown bug"):
        Acceptor(1, LEARNERS, bug="skip-phase1")


def test_zero_ballot_is_below_every_real_ballot():
    assert ZERO < Ballot(1, 1) < Ballot(1, 2) < Ballot(2, 1)


# ---------------------------------------------------------------------------- model checking


def test_model_checker_finds_no_violation_exhaustively():
    r = check()
    print(f"\nsynod: {r.states} states, depth {r.depth}, {r.seconds:.1f}s (no duplication)")
    assert not r.violated
    assert r.states > 10_000  # the search really explored something


def test_model_checker_with_duplication():
    r = check(duplicate=True)
    print(f"\nsynod: {r.states} states, depth {r.depth}, {r.seconds:.1f}s (with duplication)")
    assert not r.violated
    assert r.states > 10_000


@pytest.mark.parametrize("bugs", [
    {"acceptor": "forget-promise"},
    {"proposer": "skip-phase1"},
    {"proposer": "ignore-accepted"},
    {"learner": "mix-ballots"},
], ids=lambda b: next(iter(b.values())))
def test_model_checker_has_teeth(bugs):
    r = check(bugs, dfs=True)  # depth-first reaches these deep runs sooner than breadth-first
    print(f"\nsynod {bugs}: violation after {r.states} states at depth {r.depth}, {r.seconds:.1f}s")
    assert r.violated
