"""Multi-Paxos as a pure state machine behind the same `Engine` interface as Raft.

A distinguished leader runs phase 1 once for every instance from its commit point on
(`Prepare(ballot, start)`), adopts the highest-ballot value each promiser reports per
instance, fills holes with no-ops, and then runs only phase 2 (`Accept`) per instance.
Instances are chosen independently (out of order) and applied in index order.

The mapping onto the shared `Ready` contract (messages.py):
  - HardState.term   = the promised ballot; HardState.commit = the chosen prefix.
  - Entry.term       = the ballot the value was accepted in (0: a hole, nothing accepted).
  - Ready.entries    = acceptances (and re-writes of the suffix they displace, because the
                       contract truncates after a rewritten index and an acceptor must never
                       forget an accepted value);
  - Ready.messages   = promises and acceptances, sent only once the above is durable. An
                       acceptor's vote, the leader's own included, counts only after that.

Ballots are ints, `round << 16 | node id`, so they order by (round, node) and fit in a term.
The engine's `term` (as `status().term`) is the promised ballot's round.
The Ready hand-over (has_ready, ready, advance, the mid-Ready guard) is shared with Raft and
lives in `RawNode` (rawnode.py); this module supplies its hooks.
Nothing here reads a clock, a socket, a disk or global randomness.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from enum import StrEnum

from .confchange import ConfChange, ConfChangeError, apply_change
from .engine import Status
from .messages import (
    NONE,
    ConfState,
    Durable,
    Entry,
    EntryKind,
    HardState,
    LocalProtocolError,
    NodeId,
    NotLeader,
    ProposalDropped,
    ReadState,
    Ready,
    RemoteProtocolError,
    Snapshot,
    SnapshotMeta,
)
from .quorum import has_quorum
from .rawnode import RawNode

# Deliberately broken behaviours, switched on only by tests that prove the harness has teeth.
BUGS = frozenset({
    "forget-promise",  # the promised ballot is not persisted across a restart
    "skip-phase1",  # a new leader goes straight to phase 2 with its own log
    "mix-ballots",  # count acceptances from earlier ballots towards the new ballot's quorum
})

NODE_BITS = 16
NO_BOUNDARY = 1 << 62


def ballot(round: int, node: NodeId) -> int:
    assert 0 < node < 1 << NODE_BITS, f"node id {node} does not fit in a ballot"
    return round << NODE_BITS | node


def ballot_round(b: int) -> int:
    return b >> NODE_BITS


def ballot_node(b: int) -> NodeId:
    return b & ((1 << NODE_BITS) - 1)


@dataclass(frozen=True, slots=True)
class PaxosConfig:
    election_ticks: int = 10  # follower timeout is randomised in [n, 2n)
    heartbeat_ticks: int = 2
    alpha: int = 8  # a CONFIG entry chosen at i governs instances from i + alpha on
    max_batch: int = 64  # entries per Accept
    max_catchup: int = 256  # entries in flight to one follower
    max_pending_reads: int = 1024
    max_apply: int = 1024  # committed entries per Ready
    bugs: frozenset[str] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        if not 0 < self.heartbeat_ticks < self.election_ticks:
            raise ValueError("need 0 < heartbeat_ticks < election_ticks")
        if min(self.alpha, self.max_batch, self.max_catchup, self.max_apply) < 1:
            raise ValueError("alpha, max_batch, max_catchup and max_apply must be positive")
        if unknown := set(self.bugs) - BUGS:
            raise ValueError(f"unknown bugs {sorted(unknown)}; known: {sorted(BUGS)}")


# ------------------------------------------------------------------------------ messages


def _entries_size(entries: tuple[Entry, ...]) -> int:
    return sum(e.size() for e in entries)


@dataclass(frozen=True, slots=True)
class Prepare:
    """Phase 1a: promise `ballot` for every instance >= `start`."""

    src: NodeId
    dst: NodeId
    ballot: int
    start: int

    def size(self) -> int:
        return 32


@dataclass(frozen=True, slots=True)
class Promise:
    """Phase 1b: what this acceptor accepted from `start` on (holes omitted); everything up to
    `commit` is known chosen. `snapshot` is attached when the acceptor compacted past start."""

    src: NodeId
    dst: NodeId
    ballot: int
    commit: int
    entries: tuple[Entry, ...]
    snapshot: Snapshot | None = None

    def size(self) -> int:
        snap = len(self.snapshot.data) if self.snapshot else 0
        return 40 + _entries_size(self.entries) + snap


@dataclass(frozen=True, slots=True)
class Nack:
    """A Prepare, Accept or snapshot below what this acceptor promised."""

    src: NodeId
    dst: NodeId
    ballot: int
    promised: int

    def size(self) -> int:
        return 32


@dataclass(frozen=True, slots=True)
class Accept:
    """Phase 2a for `entries` (each with term == ballot). Empty, it is the heartbeat, the
    commit notice and the read-barrier probe (`read_round`)."""

    src: NodeId
    dst: NodeId
    ballot: int
    entries: tuple[Entry, ...]
    commit: int
    read_round: int

    def size(self) -> int:
        return 48 + _entries_size(self.entries)


@dataclass(frozen=True, slots=True)
class Accepted:
    """Phase 2b: instances lo..hi are accepted at `ballot` (or already chosen here, with the
    same value), and so is every instance in (commit, run_end]."""

    src: NodeId
    dst: NodeId
    ballot: int
    lo: int
    hi: int
    run_end: int
    commit: int
    read_round: int

    def size(self) -> int:
        return 56


@dataclass(frozen=True, slots=True)
class InstallSnapshot:
    """Catch-up for a follower that needs instances the leader has compacted away."""

    src: NodeId
    dst: NodeId
    ballot: int
    snapshot: Snapshot

    def size(self) -> int:
        return 48 + len(self.snapshot.data)


@dataclass(frozen=True, slots=True)
class TimeoutNow:
    """Leadership transfer: start phase 1 now."""

    src: NodeId
    dst: NodeId
    ballot: int

    def size(self) -> int:
        return 24


PaxosMessage = Prepare | Promise | Nack | Accept | Accepted | InstallSnapshot | TimeoutNow


class Role(StrEnum):  # a str (Role.LEADER == "leader"): the attribute is the protocol's `role`
    FOLLOWER = "follower"
    CANDIDATE = "candidate"
    LEADER = "leader"


# ------------------------------------------------------------------------------ the core


class MultiPaxos(RawNode[PaxosMessage]):
    # The Engine protocol's cheap `role` and `leader` are these plain attributes; `term` is
    # a property over `promised`.
    role: Role
    leader: NodeId  # NONE when unknown

    def __init__(
        self,
        id: NodeId,
        conf: ConfState,
        rng: random.Random,
        durable: Durable | None,
        config: PaxosConfig | None = None,
    ):
        assert 0 < id < 1 << NODE_BITS
        self.id = id
        self.rng = rng
        self.cfg = config or PaxosConfig()
        self.role = Role.FOLLOWER
        self.leader = NONE
        self.ballot = 0  # ours, while candidate or leader
        self.max_round = 0  # highest round seen anywhere, to pick the next ballot above it
        self.elapsed = 0
        self.timeout = 0
        self._reset_timeout()

        # Acceptor state. log[k] holds instance offset + 1 + k; term 0 marks a hole.
        self.promised = 0
        self.snapshot: Snapshot | None = None
        self.offset = 0
        self.log: list[Entry] = []
        self.commit = 0
        self.applied = 0
        self.confs: list[tuple[int, ConfState]] = [(0, conf)]  # (first instance, config)

        # Leader and candidate state.
        self.start = 0  # first instance of our ballot's phase 1
        self.auth = conf  # the configuration whose quorum promised our ballot
        self.boundary = NO_BOUNDARY  # first instance our phase 1 does not cover
        self.read_floor = 0  # commit must reach this before reads are served
        self.promises: dict[NodeId, Promise] = {}
        self.acks: dict[int, set[NodeId]] = {}  # instance -> who accepted it at our ballot
        self.match: dict[NodeId, int] = {}  # follower -> its run_end at our ballot
        self.next: dict[NodeId, int] = {}  # follower -> next instance to send
        self.heartbeat_elapsed = 0
        self.read_round = 0
        self.read_acks: set[NodeId] = set()
        self.reads_in_round: list[tuple[bytes, int]] = []  # awaiting the current round
        self.reads_waiting: list[tuple[bytes, int]] = []  # arrived during a round
        self.reads_confirmed: list[tuple[bytes, int]] = []  # awaiting commit >= index

        # Driver-facing state (the rest is RawNode's).
        self.unstable_from = 1  # first instance not yet handed out for persistence
        self.commit_dirty = False  # followers have not heard the latest commit
        super().__init__(durable.hard_state if durable is not None else HardState())
        if durable is not None:
            self._restore(durable)

    # ================================================================ Engine interface
    @property
    def term(self) -> int:
        """The round of the promised ballot (HardState.term holds the whole ballot)."""
        return ballot_round(self.promised)

    def tick(self) -> None:
        self._refuse_mid_ready()
        if self.role is Role.LEADER:
            self.heartbeat_elapsed += 1
            if self.heartbeat_elapsed >= self.cfg.heartbeat_ticks:
                self.heartbeat_elapsed = 0
                self._heartbeat()
            return
        self.elapsed += 1
        if self.elapsed >= self.timeout and self._is_voter():
            self._campaign()

    def forget_leader(self) -> None:
        # Acceptors promise any higher ballot, so only the wait is shortened.
        self._refuse_mid_ready()
        if self.role is not Role.FOLLOWER or self.leader == NONE:
            return
        self.leader = NONE
        self.elapsed = max(self.elapsed,
                           self.timeout - 1 - self.rng.randrange(self.cfg.election_ticks))

    def step(self, msg: object) -> None:
        self._refuse_mid_ready()
        if not isinstance(msg, PaxosMessage):
            raise RemoteProtocolError(f"node {self.id} got a non-Paxos message: {msg!r:.200}")
        if msg.dst != self.id or msg.src == self.id or ballot_node(msg.ballot) == 0:
            raise RemoteProtocolError(f"node {self.id} got a misaddressed message: {msg!r:.200}")
        self.max_round = max(self.max_round, ballot_round(msg.ballot))
        if isinstance(msg, Prepare):
            self._on_prepare(msg)
        elif isinstance(msg, Promise):
            if self.role is Role.CANDIDATE and msg.ballot == self.ballot:
                self._on_promise(msg)
        elif isinstance(msg, Nack):
            self._on_nack(msg)
        elif isinstance(msg, Accept | InstallSnapshot):
            self._on_accept(msg)
        elif isinstance(msg, Accepted):
            if self.role is Role.LEADER and msg.ballot == self.ballot:
                self._on_accepted(msg)
        elif msg.ballot >= self.promised and self._is_voter():  # TimeoutNow
            self._campaign()

    def propose(self, data: bytes) -> None:
        self._refuse_mid_ready()
        self._propose(EntryKind.NORMAL, data)

    def propose_conf_change(self, change: bytes) -> None:
        self._refuse_mid_ready()
        try:
            self._next_conf(self._latest_conf(), change)
        except ConfChangeError as exc:
            raise LocalProtocolError(str(exc)) from None
        if self.role is Role.LEADER and self._pending_conf_change():
            raise ProposalDropped("a membership change is already pending")
        self._propose(EntryKind.CONFIG, change)

    def read_index(self, context: bytes) -> None:
        self._refuse_mid_ready()
        self._require_leader()
        pending = len(self.reads_in_round) + len(self.reads_waiting) + len(self.reads_confirmed)
        if pending >= self.cfg.max_pending_reads:
            raise ProposalDropped(f"{pending} reads pending")
        self.reads_waiting.append((context, max(self.commit, self.read_floor)))

    def transfer_leadership(self, to: NodeId) -> None:
        self._refuse_mid_ready()
        self._require_leader()
        if to == self.id:
            return
        if to not in self._conf_for(self.commit + 1).voters:
            raise LocalProtocolError(f"cannot transfer leadership to {to}: not a voter")
        self.msgs.append(TimeoutNow(self.id, to, self.ballot))

    def compact(self, index: int, data: bytes) -> Snapshot:
        """Drop the log up to `index`; the driver persists the returned snapshot itself (it is
        not repeated in a Ready)."""
        self._refuse_mid_ready()
        if not self.offset < index <= self.applied:
            raise LocalProtocolError(f"compact at {index}: not in ({self.offset}, {self.applied}]")
        if self.confs[-1][0] > index + 1:
            raise ProposalDropped("a chosen membership change is not in effect yet; compact later")
        meta = SnapshotMeta(index, self._entry(index).term, self._conf_for(index + 1))
        snap = Snapshot(meta, data)
        self._drop_through(snap)
        return snap

    def status(self) -> Status:
        return Status(
            id=self.id, role=self.role.value, term=self.term, leader=self.leader,
            commit=self.commit, applied=self.applied, last_index=self._last(),
            conf=self._conf_for(self.commit + 1),
            progress=dict(self.match) if self.role is Role.LEADER else {},
        )

    # ================================================================ Ready hooks (RawNode)
    def _log_pending(self) -> bool:
        return self.unstable_from <= self._last() or self.commit > self._applied_floor()

    def _take_log(self) -> tuple[list[Entry], list[Entry]]:
        assert self.unstable_from > self.offset, "unstable instances were compacted away"
        entries = self.log[self.unstable_from - self.offset - 1:]
        first = self._applied_floor() + 1
        last = min(self.commit, first + self.cfg.max_apply - 1)
        assert first > self.offset, f"instance {first} to apply is compacted away"
        committed = self.log[first - self.offset - 1:last - self.offset]
        self.unstable_from = self._last() + 1
        return entries, committed

    def _on_advance(self, rd: Ready) -> None:
        if rd.snapshot is not None:
            self.applied = max(self.applied, rd.snapshot.meta.index)
        if rd.committed:
            assert rd.committed[0].index == self.applied + 1, "applied out of order"
            self.applied = rd.committed[-1].index
        # What this Ready persisted is our own vote: count it only now that it is durable.
        if self.role is Role.CANDIDATE and self.id not in self.promises:
            self._on_promise(self._own_promise(self.ballot, self.start))
        elif self.role is Role.LEADER:
            for e in rd.entries:
                if e.term == self.ballot and e.index > self.commit:
                    self.acks.setdefault(e.index, set()).add(self.id)
            self._maybe_commit()
        assert self.offset <= self.applied <= self.commit <= self._last()

    # ================================================================ acceptor
    def _on_prepare(self, m: Prepare) -> None:
        if m.ballot < self.promised:
            self.msgs.append(Nack(self.id, m.src, m.ballot, self.promised))
            return
        if m.ballot > self.promised:
            self._follow(m.ballot, NONE)
        self.elapsed = 0  # give the candidate time to finish
        self.msgs.append(self._own_promise(m.ballot, m.start, to=m.src))

    def _own_promise(self, b: int, start: int, to: NodeId = NONE) -> Promise:
        first = max(start, self.offset + 1)
        entries = tuple(e for e in self.log[first - self.offset - 1:] if e.term > 0)
        snap = self.snapshot if self.snapshot is not None and start <= self.offset else None
        return Promise(self.id, to or self.id, b, self.commit, entries, snap)

    def _on_accept(self, m: Accept | InstallSnapshot) -> None:
        if m.ballot < self.promised:
            self.msgs.append(Nack(self.id, m.src, m.ballot, self.promised))
            return
        if m.ballot > self.promised or self.role is not Role.FOLLOWER:
            assert m.ballot != self.ballot or self.role is Role.FOLLOWER, "two leaders, one ballot"
            self._follow(m.ballot, m.src)
        self.leader, self.elapsed = m.src, 0
        lo, hi, read_round, commit = 1, 0, 0, 0
        if isinstance(m, InstallSnapshot):
            if m.snapshot.meta.index > self.commit:
                self._install(m.snapshot)
        else:
            for e in m.entries:
                self._accept_entry(m.ballot, e)
            if m.entries:
                lo, hi = m.entries[0].index, m.entries[-1].index
            read_round, commit = m.read_round, m.commit
        run_end = self._run_end(m.ballot)
        if min(commit, run_end) > self.commit:
            self._commit_to(min(commit, run_end))
        ack = Accepted(self.id, m.src, m.ballot, lo, hi, run_end, self.commit, read_round)
        self.msgs.append(ack)

    def _accept_entry(self, b: int, e: Entry) -> None:
        if e.term != b:
            raise RemoteProtocolError(f"Accept at ballot {b} carries {e}")
        if e.index <= self.offset:
            return  # chosen and compacted here
        if e.index <= self.commit:
            mine = self._entry(e.index)
            assert (mine.kind, mine.data) == (e.kind, e.data), f"chosen instance {e.index} changed"
            return
        self._write(e)

    def _run_end(self, b: int) -> int:
        """The last instance i such that every instance in (commit, i] is accepted at `b`."""
        i = self.commit
        while i < self._last() and self._entry(i + 1).term == b:
            i += 1
        return i

    def _write(self, e: Entry) -> None:
        """Store an acceptance, padding any gap before it with holes (term 0)."""
        assert e.index > self.commit, "a chosen instance is never rewritten"
        k = e.index - self.offset - 1
        if k < len(self.log):
            self.log[k] = e
            self.unstable_from = min(self.unstable_from, e.index)
            return
        self.unstable_from = min(self.unstable_from, self._last() + 1)
        self.log.extend(Entry(0, i) for i in range(self._last() + 1, e.index))
        self.log.append(e)

    def _install(self, snap: Snapshot) -> None:
        """A snapshot of chosen state beyond our commit: keep only the acceptances after it."""
        assert snap.meta.index > self.commit
        self._drop_through(snap)
        self.pending_snapshot = snap
        self.unstable_from = self.offset + 1  # installing a snapshot empties the stored log
        self.commit = snap.meta.index
        self.confs = [(0, snap.meta.conf)]

    def _drop_through(self, snap: Snapshot) -> None:
        index = snap.meta.index
        del self.log[:max(0, min(index, self._last()) - self.offset)]
        self.offset, self.snapshot = index, snap

    # ================================================================ candidate
    def _campaign(self) -> None:
        """Phase 1 for every instance after our commit, at a ballot above all we have seen."""
        self.max_round = max(self.max_round, ballot_round(self.promised)) + 1
        b = ballot(self.max_round, self.id)
        self._follow(b, NONE)
        self.role, self.ballot = Role.CANDIDATE, b
        self.start = self.commit + 1
        self.auth = self._conf_for(self.start)
        self.promises = {}
        if "skip-phase1" in self.cfg.bugs:
            self.promises[self.id] = self._own_promise(b, self.start)
            self._become_leader()
            return
        for n in self.auth.members() - {self.id}:
            self.msgs.append(Prepare(self.id, n, b, self.start))

    def _on_promise(self, m: Promise) -> None:
        self.promises[m.src] = m
        if has_quorum(self.auth, set(self.promises)):
            self._become_leader()

    def _become_leader(self) -> None:
        """Adopt what the promisers know is chosen, re-propose the highest-ballot value of
        every other instance they report, and fill holes with no-ops."""
        b, promises = self.ballot, list(self.promises.values())
        snaps = [p.snapshot for p in promises if p.snapshot is not None]
        best = max(snaps, key=lambda s: s.meta.index, default=None)
        if best is not None and best.meta.index > self.commit:
            self._install(best)
        chosen: dict[int, Entry] = {}
        accepted: dict[int, Entry] = {}
        for p in promises:
            for e in p.entries:
                if e.index <= p.commit:
                    chosen[e.index] = e
                elif e.term > accepted.get(e.index, Entry(0, 0)).term:
                    accepted[e.index] = e
        end = max((*chosen, *accepted), default=0)
        self.role, self.leader = Role.LEADER, self.id
        self.acks, self.match = {}, {}
        self.boundary = self._conf_boundary(NO_BOUNDARY)
        self.next = {n: self.start for n in self._members() - {self.id}}
        self.heartbeat_elapsed = 0
        for i in range(self.commit + 1, end + 1):
            e = chosen.get(i) or accepted.get(i) or Entry(b, i)  # a hole becomes a no-op
            if i not in chosen and i >= self.boundary:
                end = i - 1  # beyond what our phase 1 covers: a later ballot recovers it
                break
            self._write(Entry(b, i, e.kind, e.data))
            if e.kind is EntryKind.CONFIG:
                self.boundary = min(self.boundary, i + self.cfg.alpha)
            if i in chosen and i == self.commit + 1:
                self._commit_to(i)
        if "mix-ballots" in self.cfg.bugs:
            for p in promises:
                for e in p.entries:
                    if e.index > self.commit:
                        self.acks.setdefault(e.index, set()).add(p.src)
        self.read_floor = max(end, self.commit)
        self.boundary = self._conf_boundary(self.boundary)  # recovery may have chosen some
        self._broadcast()
        self._maybe_commit()

    def _on_nack(self, m: Nack) -> None:
        self.max_round = max(self.max_round, ballot_round(m.promised))
        if self.role is not Role.FOLLOWER and m.ballot == self.ballot and m.promised > self.ballot:
            self._follow(self.promised, NONE)  # beaten; wait for the newer leader or time out

    # ================================================================ leader
    def _propose(self, kind: EntryKind, data: bytes) -> None:
        self._require_leader()
        i = self._last() + 1
        if i >= self.boundary or i > self.commit + self.cfg.alpha:
            raise ProposalDropped(f"instance {i} is beyond the window (commit {self.commit})")
        self._write(Entry(self.ballot, i, kind, data))
        if kind is EntryKind.CONFIG:
            self.boundary = min(self.boundary, i + self.cfg.alpha)

    def _on_accepted(self, m: Accepted) -> None:
        self.match[m.src] = m.run_end  # the latest word, even if lower: it only steers resends
        for i in (*range(max(m.lo, self.commit + 1), m.hi + 1),
                  *range(self.commit + 1, m.run_end + 1)):
            if i <= self._last():
                self.acks.setdefault(i, set()).add(m.src)
        if self.reads_in_round and m.read_round == self.read_round:
            self.read_acks.add(m.src)
            self._maybe_confirm_reads()
        self._maybe_commit()
        if self.role is Role.LEADER:  # a commit may have sent us back to phase 1 (`_renew`)
            self._send_entries(m.src)

    def _maybe_commit(self) -> None:
        """Instances are chosen one by one; the commit point is their contiguous prefix."""
        while self.commit < self._last():
            i = self.commit + 1
            if not has_quorum(self._conf_for(i), self.acks.get(i, set())):
                break
            self._commit_to(i)
            self.commit_dirty = True
        self._release_reads()
        if self.commit + 1 >= self.boundary:
            self._renew()

    def _renew(self) -> None:
        """Our phase 1 covered instances below the boundary, where a membership change takes
        effect: everything before it is chosen, so run phase 1 again in the new configuration
        (or hand over, if we are no longer a voter)."""
        if self._is_voter():
            self._campaign()
            return
        voters = sorted(self._conf_for(self.commit + 1).voters)
        self._follow(self.promised, NONE)
        self.msgs.append(TimeoutNow(self.id, voters[0], self.promised))

    def _heartbeat(self) -> None:
        for n in self.next:
            self.next[n] = self._match(n) + 1  # resend what is unacknowledged
        self._broadcast()

    def _broadcast(self) -> None:
        for n in self.next:
            if not self._send_entries(n):
                self._send_empty(n)
        self.commit_dirty = False

    def _flush(self) -> None:
        """Batching: proposals made since the last Ready leave as one Accept per follower,
        and reads asked since then share one quorum round."""
        if self.role is not Role.LEADER:
            return
        if self.reads_waiting and not self.reads_in_round:
            self._start_read_round()
        for n in self.next:
            if not self._send_entries(n) and self.commit_dirty:
                self._send_empty(n)
        self.commit_dirty = False

    def _send_entries(self, n: NodeId) -> bool:
        sent = False
        while (lo := self.next[n]) <= self._last() and lo - self._match(n) <= self.cfg.max_catchup:
            if lo <= self.offset:
                assert self.snapshot is not None
                self.msgs.append(InstallSnapshot(self.id, n, self.ballot, self.snapshot))
                self.next[n] = self.offset + 1
            else:
                hi = min(self._last(), lo + self.cfg.max_batch - 1)
                batch = self.log[lo - self.offset - 1:hi - self.offset]
                entries = tuple(Entry(self.ballot, e.index, e.kind, e.data) for e in batch)
                self.msgs.append(
                    Accept(self.id, n, self.ballot, entries, self.commit, self.read_round))
                self.next[n] = hi + 1
            sent = True
        return sent

    def _match(self, n: NodeId) -> int:
        return self.match.get(n, self.start - 1)

    def _send_empty(self, n: NodeId) -> None:
        self.msgs.append(Accept(self.id, n, self.ballot, (), self.commit, self.read_round))

    def _start_read_round(self) -> None:
        """One quorum round at our ballot serves every read asked before it began: a quorum
        that has not promised a higher ballot since proves no newer leader chose anything."""
        assert not self.reads_in_round and self.reads_waiting
        self.reads_in_round, self.reads_waiting = self.reads_waiting, []
        self.read_round += 1
        self.read_acks = {self.id}
        for n in self.next:
            self._send_empty(n)
        self._maybe_confirm_reads()

    def _maybe_confirm_reads(self) -> None:
        confs = (self.auth, self._conf_for(self.commit + 1))
        if all(has_quorum(c, self.read_acks) for c in confs):
            self.reads_confirmed += self.reads_in_round
            self.reads_in_round = []
            self._release_reads()

    def _release_reads(self) -> None:
        ready = [r for r in self.reads_confirmed if r[1] <= self.commit]
        self.reads_confirmed = [r for r in self.reads_confirmed if r[1] > self.commit]
        self.read_states += [ReadState(ctx, index) for ctx, index in ready]

    # ================================================================ shared
    def _follow(self, promised: int, leader: NodeId) -> None:
        """Become (or stay) a follower, promising `promised`."""
        assert promised >= self.promised, f"promise went back from {self.promised} to {promised}"
        self.promised = promised
        self.role, self.leader, self.ballot = Role.FOLLOWER, leader, 0
        self.promises, self.acks, self.match, self.next = {}, {}, {}, {}
        self.reads_in_round, self.reads_waiting, self.reads_confirmed = [], [], []
        self.boundary, self.elapsed = NO_BOUNDARY, 0
        self._reset_timeout()

    def _commit_to(self, index: int) -> None:
        assert index > self.commit, f"commit went back from {self.commit} to {index}"
        assert index <= self._last()
        for i in range(self.commit + 1, index + 1):
            e = self._entry(i)
            assert e.term > 0, f"instance {i} committed while a hole"
            self.acks.pop(i, None)
            if e.kind is EntryKind.CONFIG:
                conf = self._next_conf(self._latest_conf(), e.data)
                self.confs.append((i + self.cfg.alpha, conf))
                if self.role is Role.LEADER:  # start replicating to new members now
                    for n in conf.members() - {self.id}:
                        self.next.setdefault(n, i + 1)
        self.commit = index
        while len(self.confs) > 1 and self.confs[1][0] <= index + 1:
            del self.confs[0]  # superseded before the next instance

    def _next_conf(self, conf: ConfState, change: bytes) -> ConfState:
        """With changes taking effect alpha instances later, no joint phase is needed."""
        new = apply_change(conf, ConfChange.decode(change))
        return ConfState(voters=new.voters, learners=new.learners)

    def _conf_boundary(self, boundary: int) -> int:
        """Lower `boundary` to where a chosen membership change takes effect after our start."""
        return min([boundary, *(first for first, _ in self.confs if first > self.start)])

    def _conf_for(self, instance: int) -> ConfState:
        return next(c for first, c in reversed(self.confs) if first <= instance)

    def _latest_conf(self) -> ConfState:
        return self.confs[-1][1]

    def _pending_conf_change(self) -> bool:
        return self.boundary != NO_BOUNDARY

    def _members(self) -> frozenset[NodeId]:
        out = self.auth.members()
        for _, c in self.confs:
            out |= c.members()
        return out

    def _is_voter(self) -> bool:
        return self.id in self._conf_for(self.commit + 1).voters

    def _require_leader(self) -> None:
        if self.role is not Role.LEADER:
            raise NotLeader(self.leader)

    def _reset_timeout(self) -> None:
        self.timeout = self.cfg.election_ticks + self.rng.randrange(self.cfg.election_ticks)

    def _last(self) -> int:
        return self.offset + len(self.log)

    def _entry(self, index: int) -> Entry:
        assert self.offset < index <= self._last(), f"instance {index} not in log"
        return self.log[index - self.offset - 1]

    def _applied_floor(self) -> int:
        snap = self.pending_snapshot.meta.index if self.pending_snapshot else 0
        return max(self.applied, snap)

    def _hard_state(self) -> HardState:
        promised = 0 if "forget-promise" in self.cfg.bugs else self.promised
        return HardState(promised, NONE, self.commit)

    def _restore(self, d: Durable) -> None:
        if d.snapshot is not None:
            self.snapshot, self.offset = d.snapshot, d.snapshot.meta.index
            self.confs = [(0, d.snapshot.meta.conf)]
        self.log = list(d.entries)
        assert all(e.index == self.offset + 1 + k for k, e in enumerate(self.log)), "log has gaps"
        # Acceptances imply the promise, even if a crash lost the hard state written after them.
        self.promised = max(d.hard_state.term, *(e.term for e in self.log), 0)
        self.max_round = ballot_round(self.promised)
        self.applied = self.offset
        self.commit = self.offset
        if d.hard_state.commit > self.offset:
            self._commit_to(min(d.hard_state.commit, self._last()))
        self.unstable_from = self._last() + 1
