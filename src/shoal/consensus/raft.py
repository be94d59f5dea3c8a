"""Raft as a pure state machine (Ongaro & Ousterhout; the shape follows etcd-io/raft).

The core never touches a socket, a disk, a clock or global randomness. The driver calls
`tick()`, `step(msg)`, `propose(data)` and friends, then collects a `Ready` batch, carries it
out (persist, send, apply — see `Ready`) and hands it back with `advance()`; that hand-over
is shared with Multi-Paxos and lives in `RawNode` (rawnode.py). The same object runs under
the deterministic simulator and in the node runtime.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from .confchange import ConfChange, ConfChangeError, apply_change
from .engine import Status
from .log import RaftLog
from .messages import (
    NONE,
    ConfState,
    Durable,
    Entry,
    EntryKind,
    HardState,
    LocalProtocolError,
    Message,
    MsgType,
    NodeId,
    NotLeader,
    ProposalDropped,
    ReadState,
    Ready,
    RemoteProtocolError,
    Snapshot,
    SnapshotMeta,
)
from .progress import Progress, State
from .quorum import committed_index, has_quorum, vote_result
from .rawnode import RawNode

# Deliberately broken behaviours, switched on only by tests that prove the harness has teeth.
BUGS = frozenset({
    "commit-old-terms",  # count replicas of old-term entries (ignores the Figure 8 rule)
    "read-without-readindex",  # answer reads from local state without a quorum round
    "forget-vote",  # never persist the vote
    "skip-log-matching",  # accept appends without checking prev log term
})

TRANSFER = b"transfer"


class Role(StrEnum):  # a str (Role.LEADER == "leader"): the attribute is the protocol's `role`
    FOLLOWER = "follower"
    PRE_CANDIDATE = "pre-candidate"
    CANDIDATE = "candidate"
    LEADER = "leader"


@dataclass(frozen=True, slots=True)
class RaftConfig:
    election_tick: int = 10  # followers campaign after [election_tick, 2*election_tick) quiet ticks
    heartbeat_tick: int = 1
    pre_vote: bool = True
    check_quorum: bool = True
    read_only: str = "safe"  # "safe" = ReadIndex; "lease" = leader lease (needs check_quorum)
    forward_proposals: bool = True  # off: followers answer NotLeader(leader) instead
    max_size_per_msg: int = 64 * 1024  # bytes of entries per append
    max_inflight_msgs: int = 64  # appends in flight per follower
    max_uncommitted_size: int = 4 * 1024 * 1024  # proposal queue bound (bytes)
    max_apply_bytes: int = 4 * 1024 * 1024  # committed entries per Ready
    max_pending_reads: int = 10_000
    snapshot_chunk_bytes: int = 64 * 1024
    max_learner_lag: int = 100  # entries a learner may trail by and still be promoted
    bugs: frozenset[str] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        if self.heartbeat_tick <= 0 or self.election_tick <= self.heartbeat_tick:
            raise ValueError("need 0 < heartbeat_tick < election_tick")
        if self.read_only not in ("safe", "lease"):
            raise ValueError(f"read_only must be 'safe' or 'lease', not {self.read_only!r}")
        if self.read_only == "lease" and not self.check_quorum:
            raise ValueError("lease-based reads are only safe with check_quorum on")
        if unknown := set(self.bugs) - BUGS:
            raise ValueError(f"unknown bugs {sorted(unknown)}; known: {sorted(BUGS)}")
        for name in ("max_size_per_msg", "max_inflight_msgs", "max_uncommitted_size",
                     "max_apply_bytes", "max_pending_reads", "snapshot_chunk_bytes"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")


@dataclass(slots=True)
class _ReadRound:
    """One quorum round of heartbeats that confirms leadership for a batch of reads."""

    round: int
    index: int  # commit index when the round started
    requests: list[tuple[bytes, NodeId]]  # (context, who asked)


class Raft(RawNode[Message]):
    # The Engine protocol's cheap `role`, `leader` and `term` are these plain attributes.
    role: Role
    leader: NodeId  # NONE when unknown
    term: int

    def __init__(
        self,
        id: NodeId,
        conf: ConfState,
        rng: random.Random,
        durable: Durable | None = None,
        config: RaftConfig | None = None,
    ):
        assert id != NONE
        self.id = id
        self.cfg = config or RaftConfig()
        self.rng = rng
        hs = durable.hard_state if durable else HardState()
        snap = durable.snapshot if durable else None
        self.log = RaftLog(snap, durable.entries if durable else ())
        self.conf = snap.meta.conf if snap else conf
        assert self.log.offset <= hs.commit <= self.log.last_index() or hs.commit <= self.log.offset
        self.log.commit_to(max(hs.commit, self.log.offset))
        self.term, self.vote = hs.term, hs.vote
        # Set by a repair that cut the log (storage/recovery.py); see `_maybe_recovered`.
        self.epoch, self.recovering = hs.epoch, hs.recovering
        self.leader = NONE
        self.role = Role.FOLLOWER
        self.prs: dict[NodeId, Progress] = {}
        self.votes: dict[NodeId, bool] = {}
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self.randomized_timeout = 0
        self.lead_transferee = NONE
        self.pending_conf_index = 0
        self.uncommitted_size = 0
        self.read_queue: list[tuple[bytes, NodeId]] = []  # reads waiting for the next round
        self.read_rounds: list[_ReadRound] = []  # rounds in flight (at most one)
        self.read_round = 0
        self.read_acked: dict[NodeId, int] = {}
        self.snap_buf: tuple[SnapshotMeta, bytearray] | None = None  # chunks so far
        self.needs_bcast = False
        super().__init__(self._hard_state())  # what the driver persisted, as we read it back
        self._reset_randomized_timeout()

    # ================================================================ driver API
    def tick(self) -> None:
        self._refuse_mid_ready()
        if self.role is Role.LEADER:
            self._tick_heartbeat()
        else:
            self._tick_election()

    def step(self, m: object) -> None:
        self._refuse_mid_ready()
        if not isinstance(m, Message) or m.dst != self.id:
            raise RemoteProtocolError(f"node {self.id} got a message that is not for it: {m!r:.200}")
        if m.src == self.id or m.src == NONE or m.term < 0:
            raise RemoteProtocolError(f"node {self.id} got a message with a bad sender/term: {m!r:.200}")
        self._step(m)

    def propose(self, data: bytes) -> None:
        self._refuse_mid_ready()
        if self.role is not Role.LEADER:
            if self.leader == NONE or not self.cfg.forward_proposals:
                raise NotLeader(self.leader)
            self._send(Message(MsgType.PROP, self.id, self.leader, entries=(Entry(0, 0, data=data),)))
            return
        self._leader_append([(EntryKind.NORMAL, data)], local=True)

    def propose_conf_change(self, change: bytes) -> None:
        self._refuse_mid_ready()
        if self.role is not Role.LEADER:
            raise NotLeader(self.leader)
        cc = ConfChange.decode(change)
        if self.pending_conf_index > self.log.applied:
            raise ProposalDropped("a membership change is already in progress")
        apply_change(self.conf, cc)  # dry run: raises ConfChangeError if it cannot apply
        for op, n in cc.changes:
            if op == "add" and n in self.conf.learners:
                match = self.prs[n].match
                if match == 0:
                    raise ConfChangeError(f"learner {n} has acknowledged nothing yet; is it running?")
                lag = self.log.last_index() - match
                if lag > self.cfg.max_learner_lag:
                    raise ConfChangeError(f"learner {n} is {lag} entries behind; promote it once caught up")
        self._leader_append([(EntryKind.CONFIG, cc.encode())], local=True)
        self.pending_conf_index = self.log.last_index()

    def read_index(self, context: bytes) -> None:
        self._refuse_mid_ready()
        if self.role is Role.LEADER:
            self._leader_read(context, self.id)
        elif self.leader != NONE:
            self._send(Message(MsgType.READ_INDEX, self.id, self.leader, context=context))
        else:
            raise NotLeader(NONE)

    def transfer_leadership(self, to: NodeId) -> None:
        self._refuse_mid_ready()
        if self.role is not Role.LEADER:
            raise NotLeader(self.leader)
        if to == self.id:
            return
        if to not in self.conf.voters:
            raise LocalProtocolError(f"cannot transfer leadership to {to}: not a voter")
        self.lead_transferee = to
        self.election_elapsed = 0  # the transfer is abandoned after one election timeout
        if self.prs[to].match == self.log.last_index():
            self._send(Message(MsgType.TIMEOUT_NOW, self.id, to, term=self.term))
        else:
            self._send_append(to)

    def forget_leader(self) -> None:
        # etcd's ForgetLeader: leaderless, it grants pre-votes at once instead of honouring
        # check_quorum's lease for a leader that is gone; and its own campaign comes within
        # 1 to election_tick ticks. Lease reads rely on no follower voting within an
        # election timeout of hearing the leader, so with them this does nothing.
        self._refuse_mid_ready()
        if self.role is not Role.FOLLOWER or self.leader == NONE or self.cfg.read_only == "lease":
            return
        self.leader = NONE
        soon = self.randomized_timeout - 1 - self.rng.randrange(self.cfg.election_tick)
        self.election_elapsed = max(self.election_elapsed, soon)

    def compact(self, index: int, data: bytes) -> Snapshot:
        self._refuse_mid_ready()
        if index != self.log.applied:
            raise LocalProtocolError(f"compact at {index} but applied is {self.log.applied}")
        term = self.log.term(index)
        assert term is not None
        snap = Snapshot(SnapshotMeta(index, term, self.conf), data)
        self.log.compact(snap)
        return snap

    def status(self) -> Status:
        return Status(
            id=self.id, role=self.role.value, term=self.term, leader=self.leader,
            commit=self.log.committed, applied=self.log.applied,
            last_index=self.log.last_index(), conf=self.conf,
            progress={n: pr.match for n, pr in self.prs.items()}, recovering=self.recovering,
        )

    # ================================================================ Ready hooks (RawNode)
    def _flush(self) -> None:
        if self.role is Role.LEADER and self.needs_bcast:
            self._bcast_append()  # every proposal since the last Ready, in one append each

    def _log_pending(self) -> bool:
        return self.log.stable < self.log.last_index() or self.log.committed > self.log.applied

    def _take_log(self) -> tuple[list[Entry], list[Entry]]:
        entries = self.log.unstable()
        committed = self.log.next_committed(self.cfg.max_apply_bytes)
        assert not entries or entries[0].index == self.log.stable + 1
        assert not committed or committed[0].index == self.log.applied + 1
        return entries, committed

    def _on_advance(self, rd: Ready) -> None:
        assert not rd.committed or rd.committed[0].index == self.log.applied + 1, "applied out of order"
        if rd.entries:
            self.log.stable_to(rd.entries[-1].index)
        for e in rd.committed:
            if e.kind is EntryKind.CONFIG:
                self._apply_conf_change(e)
        if rd.committed:
            self.log.applied_to(rd.committed[-1].index)
        self._maybe_leave_joint()
        assert self.log.applied <= self.log.committed <= self.log.last_index()

    # ================================================================ state changes
    def _durable_vote(self) -> NodeId:
        return NONE if "forget-vote" in self.cfg.bugs else self.vote

    def _hard_state(self) -> HardState:
        return HardState(self.term, self._durable_vote(), self.log.committed, self.epoch,
                         self.recovering)

    def _reset_randomized_timeout(self) -> None:
        self.randomized_timeout = self.cfg.election_tick + self.rng.randrange(self.cfg.election_tick)

    def _reset(self, term: int) -> None:
        assert term >= self.term, f"term went back from {self.term} to {term}"
        if term != self.term:
            self.term, self.vote = term, NONE
        self.leader = NONE
        self.election_elapsed = self.heartbeat_elapsed = 0
        self._reset_randomized_timeout()
        self.lead_transferee = NONE
        self.votes = {}
        self.prs = {}
        self.read_queue, self.read_rounds, self.read_acked = [], [], {}
        self.needs_bcast = False
        self.uncommitted_size = 0

    def _become_follower(self, term: int, lead: NodeId) -> None:
        self._reset(term)
        self.role, self.leader = Role.FOLLOWER, lead

    def _become_pre_candidate(self) -> None:
        assert self.role is not Role.LEADER
        self.role, self.leader, self.votes = Role.PRE_CANDIDATE, NONE, {}

    def _become_candidate(self) -> None:
        assert self.role is not Role.LEADER
        self._reset(self.term + 1)
        self.role, self.vote = Role.CANDIDATE, self.id

    def _become_leader(self) -> None:
        assert self.role is Role.CANDIDATE
        self._reset(self.term)
        self.role, self.leader = Role.LEADER, self.id
        last = self.log.last_index()
        for n in self.conf.members():
            self.prs[n] = Progress(match=0, next=last + 1, max_inflight=self.cfg.max_inflight_msgs,
                                   is_learner=n in self.conf.learners)
        if self.id in self.prs:
            self.prs[self.id].match = last
            self.prs[self.id].become_replicate()
        self.pending_conf_index = last  # no membership change until earlier ones are applied
        self._leader_append([(EntryKind.NORMAL, b"")], local=False)  # commits earlier terms (§5.4.2)

    def _promotable(self) -> bool:
        return not self.recovering and (self.id in self.conf.voters or self.id in self.conf.outgoing)

    # ================================================================ ticks
    def _tick_election(self) -> None:
        self.election_elapsed += 1
        if self.recovering and self.conf.voters == {self.id} and not self.conf.outgoing:
            # The sole voter: no one else could hold what the cut took, and no one else
            # could ever bring it back. Waiting would only keep it down for good.
            self.recovering = False
        if self._promotable() and self.election_elapsed >= self.randomized_timeout:
            self.election_elapsed = 0
            self._campaign(pre_vote=self.cfg.pre_vote)
        elif self.role in (Role.CANDIDATE, Role.PRE_CANDIDATE):
            self._request_votes(transfer=False)  # retry voters that have not answered (§5.1)

    def _tick_heartbeat(self) -> None:
        self.heartbeat_elapsed += 1
        self.election_elapsed += 1
        if self.election_elapsed >= self.cfg.election_tick:
            self.election_elapsed = 0
            if self.cfg.check_quorum:
                active = {n for n, pr in self.prs.items() if pr.recent_active} | {self.id}
                for n, pr in self.prs.items():
                    pr.recent_active = n == self.id
                if not has_quorum(self.conf, active):
                    self._become_follower(self.term, NONE)  # lost touch with a quorum: step down
                    return
            self.lead_transferee = NONE  # a transfer that did not finish in time is abandoned
        if self.heartbeat_elapsed >= self.cfg.heartbeat_tick:
            self.heartbeat_elapsed = 0
            self._bcast_heartbeat()

    # ================================================================ elections
    def _campaign(self, pre_vote: bool, transfer: bool = False) -> None:
        if pre_vote:
            self._become_pre_candidate()
        else:
            self._become_candidate()
        self.votes[self.id] = True
        if not self._poll():
            self._request_votes(transfer)

    def _request_votes(self, transfer: bool) -> None:
        pre = self.role is Role.PRE_CANDIDATE
        kind, term = (MsgType.PRE_VOTE, self.term + 1) if pre else (MsgType.VOTE, self.term)
        for n in sorted(self.conf.voters | self.conf.outgoing):
            if n != self.id and n not in self.votes:
                self._send(Message(kind, self.id, n, term=term, index=self.log.last_index(),
                                   log_term=self.log.last_term(),
                                   context=TRANSFER if transfer else b""))

    def _poll(self) -> bool:
        """Count votes; act on a decided election. True if it was decided."""
        result = vote_result(self.conf, self.votes)
        if result is None:
            return False
        if not result:
            self._become_follower(self.term, NONE)
        elif self.role is Role.PRE_CANDIDATE:
            self._campaign(pre_vote=False)
        else:
            self._become_leader()
        return True

    def _handle_vote_request(self, m: Message) -> None:
        pre = m.type is MsgType.PRE_VOTE
        # A recovering node may have lost entries it acknowledged and the vote it cast this
        # term: any vote it gave could elect a leader without them, or a second leader.
        can_vote = not self.recovering and (
            self.vote == m.src
            or (self.vote == NONE and self.leader == NONE)
            or (pre and m.term > self.term))
        resp = MsgType.PRE_VOTE_RESP if pre else MsgType.VOTE_RESP
        if can_vote and self.log.is_up_to_date(m.index, m.log_term):
            # Grants carry the candidate's term so a pre-candidate can tell them apart.
            self._send(Message(resp, self.id, m.src, term=m.term))
            if not pre:
                assert self.vote in (NONE, m.src), "one vote per term"
                self.vote = m.src
                self.election_elapsed = 0
        else:
            self._send(Message(resp, self.id, m.src, term=self.term, reject=True))

    # ================================================================ message dispatch
    def _step(self, m: Message) -> None:
        if m.term == 0 and m.type in (MsgType.PROP, MsgType.READ_INDEX):
            pass  # forwarded requests carry no term
        elif m.term > self.term:
            if m.type in (MsgType.VOTE, MsgType.PRE_VOTE):
                in_lease = (self.cfg.check_quorum and self.leader != NONE
                            and self.election_elapsed < self.cfg.election_tick)
                if in_lease and m.context != TRANSFER:
                    return  # we heard from a live leader recently: do not disrupt it
            if m.type is MsgType.PRE_VOTE or (m.type is MsgType.PRE_VOTE_RESP and not m.reject):
                pass  # pre-votes never change terms
            else:
                lead = m.src if m.type in (MsgType.APP, MsgType.HEARTBEAT, MsgType.SNAP) else NONE
                self._become_follower(m.term, lead)
        elif m.term < self.term:
            if m.type in (MsgType.APP, MsgType.HEARTBEAT) and (self.cfg.check_quorum or self.cfg.pre_vote):
                # A stale leader cut off by a partition: tell it the current term so it steps down.
                self._send(self._resp(MsgType.APP_RESP, m.src))
            elif m.type is MsgType.PRE_VOTE:
                self._send(Message(MsgType.PRE_VOTE_RESP, self.id, m.src, term=self.term, reject=True))
            return
        if m.type in (MsgType.VOTE, MsgType.PRE_VOTE):
            self._handle_vote_request(m)
        elif self.role is Role.LEADER:
            self._step_leader(m)
        elif self.role is Role.FOLLOWER:
            self._step_follower(m)
        else:
            self._step_candidate(m)

    def _step_leader(self, m: Message) -> None:
        t = m.type
        if t is MsgType.PROP:
            if self.lead_transferee == NONE:
                self._leader_append([(EntryKind.NORMAL, e.data) for e in m.entries], local=False)
            return
        if t is MsgType.READ_INDEX:
            if len(self.read_queue) < self.cfg.max_pending_reads:  # else the caller times out
                self._leader_read(m.context, m.src)
            return
        pr = self.prs.get(m.src)
        if pr is None:
            return  # not (or no longer) a member
        if m.epoch < pr.epoch:
            return  # sent before its log lost entries: what it says no longer holds
        if m.epoch > pr.epoch:
            # Its log regressed (a repair cut it): our match for it is void, and a rejection
            # below that match is news, not a stale message. While it recovers it counts for
            # no commit and no read until it holds all we hold now.
            pr.regressed(m.epoch, m.recovering, self.log.last_index())
            pr.recent_active = True
            self._send_append(m.src)
            return
        pr.recovering = m.recovering
        if t is MsgType.APP_RESP:
            pr.recent_active = True
            self._handle_append_response(m, pr)
        elif t is MsgType.HEARTBEAT_RESP:
            pr.recent_active = True
            pr.paused = False
            if pr.state is State.REPLICATE and pr.inflight and pr.is_paused():
                pr.inflight.popleft()  # appends may have been lost: let one more through
            if pr.state is State.SNAPSHOT:
                self._send_snapshot_chunk(m.src, pr)  # resume a stream whose chunk was lost
            elif pr.match < self.log.last_index():
                # Possibly lost appends: an (even empty) append makes the follower say where it is.
                self._send_append(m.src, send_if_empty=True)
            if m.read_round > self.read_acked.get(m.src, 0) and _counts(pr):
                self.read_acked[m.src] = m.read_round
                self._release_reads()
        elif t is MsgType.SNAP_RESP:
            pr.recent_active = True
            if pr.state is State.SNAPSHOT and m.snapshot and m.snapshot.index == pr.snap_index:
                pr.snap_offset = m.offset
                self._send_snapshot_chunk(m.src, pr)

    def _step_candidate(self, m: Message) -> None:
        t = m.type
        if t in (MsgType.APP, MsgType.HEARTBEAT, MsgType.SNAP):
            self._become_follower(m.term, m.src)  # someone won this term
            self._step_follower(m)
        elif t is (MsgType.PRE_VOTE_RESP if self.role is Role.PRE_CANDIDATE else MsgType.VOTE_RESP):
            self.votes.setdefault(m.src, not m.reject)
            self._poll()

    def _step_follower(self, m: Message) -> None:
        t = m.type
        if t is MsgType.PROP:
            if self.leader != NONE and self.cfg.forward_proposals:
                self._send(Message(MsgType.PROP, self.id, self.leader, entries=m.entries))
        elif t is MsgType.APP:
            self.election_elapsed, self.leader = 0, m.src
            self._handle_append(m)
        elif t is MsgType.HEARTBEAT:
            self.election_elapsed, self.leader = 0, m.src
            self.log.commit_to(max(self.log.committed, min(m.commit, self.log.last_index())))
            self._send(self._resp(MsgType.HEARTBEAT_RESP, m.src, read_round=m.read_round))
        elif t is MsgType.SNAP:
            self.election_elapsed, self.leader = 0, m.src
            self._handle_snapshot_chunk(m)
        elif t is MsgType.TIMEOUT_NOW:
            if self._promotable():
                self._campaign(pre_vote=False, transfer=True)
        elif t is MsgType.READ_INDEX:
            if self.leader != NONE:
                self._send(Message(MsgType.READ_INDEX, self.id, self.leader, context=m.context))
        elif t is MsgType.READ_INDEX_RESP:
            self.read_states.append(ReadState(m.context, m.index))

    # ================================================================ replication (leader)
    def _leader_append(self, items: list[tuple[EntryKind, bytes]], local: bool) -> None:
        if self.lead_transferee != NONE:
            if local:
                raise ProposalDropped(f"leadership is moving to {self.lead_transferee}")
            return
        size = sum(len(d) + 24 for _, d in items)
        if self.uncommitted_size and self.uncommitted_size + size > self.cfg.max_uncommitted_size:
            if local:
                raise ProposalDropped("too many uncommitted proposals; retry later")
            return
        last = self.log.last_index()
        entries = [Entry(self.term, last + 1 + k, kind, d) for k, (kind, d) in enumerate(items)]
        self.log.append(entries)
        self.uncommitted_size += size
        if self.id in self.prs:
            self.prs[self.id].maybe_update(self.log.last_index())
        self._maybe_commit()
        self.needs_bcast = True  # sent in one batch when the driver next asks for Ready

    def _maybe_commit(self) -> bool:
        idx = committed_index(self.conf, {n: pr.match for n, pr in self.prs.items()
                                          if not pr.is_learner and _counts(pr)})
        if idx <= self.log.committed:
            return False
        # Figure 8: only an entry of the leader's own term is committed by counting replicas.
        if self.log.term(idx) != self.term and "commit-old-terms" not in self.cfg.bugs:
            return False
        first_in_term = self.log.term(self.log.committed) != self.term
        for i in range(self.log.committed + 1, idx + 1):
            e = self.log.entry(i)
            if e.term == self.term:
                self.uncommitted_size = max(0, self.uncommitted_size - len(e.data) - 24)
        self.log.commit_to(idx)
        if first_in_term:
            self._start_read_round()
        self.needs_bcast = True
        return True

    def _bcast_append(self) -> None:
        self.needs_bcast = False
        for n in sorted(self.prs):
            if n != self.id:
                self._send_append(n, send_if_empty=True)

    def _bcast_heartbeat(self) -> None:
        for n, pr in sorted(self.prs.items()):
            if n != self.id:
                self._send(Message(MsgType.HEARTBEAT, self.id, n, term=self.term,
                                   commit=min(pr.match, self.log.committed),
                                   read_round=self.read_round))

    def _send_append(self, to: NodeId, send_if_empty: bool = False) -> None:
        pr = self.prs[to]
        if pr.state is State.SNAPSHOT:
            return
        if pr.is_paused():
            return
        prev = pr.next - 1
        prev_term = self.log.term(prev)
        if prev_term is None:
            assert self.log.snapshot is not None, f"entry {prev} is gone but there is no snapshot"
            pr.become_snapshot(self.log.snapshot.meta.index)
            self._send_snapshot_chunk(to, pr)
            return
        last = self.log.last_index()
        entries = self.log.slice(pr.next, last + 1, self.cfg.max_size_per_msg) if pr.next <= last else []
        if not entries and not send_if_empty and pr.state is State.REPLICATE:
            return
        self._send(Message(MsgType.APP, self.id, to, term=self.term, index=prev, log_term=prev_term,
                           entries=tuple(entries), commit=self.log.committed,
                           epoch=pr.epoch, recovering=pr.recovering))
        if entries or pr.state is State.PROBE:
            pr.sent(entries[-1].index if entries else prev)
        # Pipelining: keep the window full while there is more to send.
        if entries and pr.state is State.REPLICATE and pr.next <= last and not pr.is_paused():
            self._send_append(to)

    def _send_snapshot_chunk(self, to: NodeId, pr: Progress) -> None:
        snap = self.log.snapshot
        assert snap is not None
        if snap.meta.index != pr.snap_index:
            pr.become_snapshot(snap.meta.index)  # we compacted further since: send the newer one
        off = pr.snap_offset
        chunk = snap.data[off : off + self.cfg.snapshot_chunk_bytes]
        self._send(Message(MsgType.SNAP, self.id, to, term=self.term, snapshot=snap.meta,
                           offset=off, chunk=chunk, done=off + len(chunk) >= len(snap.data)))

    def _handle_append_response(self, m: Message, pr: Progress) -> None:
        if m.reject:
            # Fast back-off: jump over the whole conflicting term using the follower's hint.
            hint = m.reject_hint
            if m.log_term > 0:
                hint, _ = self.log.find_conflict_by_term(hint, m.log_term)
            if pr.maybe_decrease(m.index, hint):
                if pr.state is State.REPLICATE:
                    pr.become_probe()
                self._send_append(m.src)
            return
        old_paused = pr.is_paused()
        if not pr.maybe_update(m.index):
            if old_paused and not pr.is_paused():
                self._send_append(m.src)
            return
        if pr.state is State.PROBE:
            pr.become_replicate()
        elif pr.state is State.SNAPSHOT and pr.match >= pr.snap_index:
            pr.become_probe()
            pr.become_replicate()
        if self._maybe_commit():
            self._bcast_append()
        else:
            self._send_append(m.src)
        if m.src == self.lead_transferee and pr.match == self.log.last_index():
            self._send(Message(MsgType.TIMEOUT_NOW, self.id, m.src, term=self.term))

    # ================================================================ replication (follower)
    def _handle_append(self, m: Message) -> None:
        if m.index < self.log.committed:
            self._maybe_recovered(m)
            self._send(self._resp(MsgType.APP_RESP, m.src, index=self.log.committed))
            return
        prev_term = m.log_term
        if "skip-log-matching" in self.cfg.bugs and m.index <= self.log.last_index():
            prev_term = self.log.term(m.index) or 0  # pretend whatever we hold matches
        last_new = self.log.maybe_append(m.index, prev_term, m.entries)
        if last_new is not None:
            self.log.commit_to(max(self.log.committed, min(m.commit, last_new)))
            self._maybe_recovered(m)
            self._send(self._resp(MsgType.APP_RESP, m.src, index=last_new))
            return
        hint, hint_term = self.log.find_conflict_by_term(min(m.index, self.log.last_index()), m.log_term)
        self._send(self._resp(MsgType.APP_RESP, m.src, index=m.index, reject=True,
                              reject_hint=hint, log_term=hint_term))

    def _maybe_recovered(self, m: Message) -> None:
        """Leave recovery once we hold everything the leader had committed when it sent `m`,
        provided it sent `m` knowing we recover (so it had heard every acknowledgement of our
        earlier life: messages die with the process that sent them) and that commit index is
        of its own term (so it
        covers every earlier leader's commits, §5.4.2). Then we hold every entry our lost
        acknowledgements could have helped commit, and may vote again."""
        if (self.recovering and m.recovering and m.epoch == self.epoch
                and self.log.committed >= m.commit and self.log.term(m.commit) == m.term):
            self.recovering = False

    def _handle_snapshot_chunk(self, m: Message) -> None:
        meta = m.snapshot
        if meta is None:
            raise RemoteProtocolError(f"snapshot chunk from {m.src} without metadata")
        if m.offset == 0:
            self.snap_buf = (meta, bytearray())
        buf = self.snap_buf
        if buf is None or buf[0] != meta or m.offset != len(buf[1]):
            have = len(buf[1]) if buf is not None and buf[0] == meta else 0
            self._send(self._resp(MsgType.SNAP_RESP, m.src, snapshot=meta, offset=have, reject=True))
            return
        buf[1].extend(m.chunk)
        if not m.done:
            self._send(self._resp(MsgType.SNAP_RESP, m.src, snapshot=meta, offset=len(buf[1])))
            return
        self.snap_buf = None
        self._restore(Snapshot(meta, bytes(buf[1])))
        # Everything up to our commit index now matches the leader (it covers the snapshot).
        self._send(self._resp(MsgType.APP_RESP, m.src, index=self.log.committed))

    def _restore(self, snap: Snapshot) -> None:
        meta = snap.meta
        if meta.index <= self.log.committed:
            return  # we already have everything it covers
        if self.log.match_term(meta.index, meta.term):
            self.log.commit_to(meta.index)  # our log already agrees up to it: fast-forward
            return
        self.log.restore(snap)
        self.conf = meta.conf
        self.pending_snapshot = snap

    # ================================================================ membership
    def _apply_conf_change(self, e: Entry) -> None:
        try:
            self.conf = apply_change(self.conf, ConfChange.decode(e.data))
        except ConfChangeError:
            return  # every replica skips the same committed entry the same way
        if self.role is not Role.LEADER:
            return
        last = self.log.last_index()
        for n in self.conf.members():
            if n not in self.prs:
                self.prs[n] = Progress(match=0, next=last + 1, max_inflight=self.cfg.max_inflight_msgs)
            self.prs[n].is_learner = n in self.conf.learners
        for n in list(self.prs):
            if n not in self.conf.members():
                del self.prs[n]
                self.read_acked.pop(n, None)
        if not self._promotable():
            self._become_follower(self.term, NONE)  # removed leader steps down once C(new) applies
        else:
            self.needs_bcast = True

    def _maybe_leave_joint(self) -> None:
        if (self.role is Role.LEADER and self.conf.joint
                and self.pending_conf_index <= self.log.applied and self.lead_transferee == NONE):
            self._leader_append([(EntryKind.CONFIG, ConfChange().encode())], local=False)
            self.pending_conf_index = self.log.last_index()

    # ================================================================ reads
    def _leader_read(self, context: bytes, requester: NodeId) -> None:
        committed_in_term = self.log.term(self.log.committed) == self.term
        lease = self.cfg.read_only == "lease" and committed_in_term
        if lease or "read-without-readindex" in self.cfg.bugs:
            self._answer_read(context, requester, self.log.committed)
            return
        if len(self.read_queue) >= self.cfg.max_pending_reads:
            raise ProposalDropped("too many pending reads; retry later")
        self.read_queue.append((context, requester))
        if committed_in_term:
            self._start_read_round()

    def _start_read_round(self) -> None:
        """One heartbeat round confirms leadership for every read queued so far (batching)."""
        if self.read_rounds or not self.read_queue:
            return
        if self.log.term(self.log.committed) != self.term:
            # Until it commits an entry of its own term, a new leader's commit index may lag
            # what an earlier leader acknowledged (§6.4): such a read index would be stale.
            return
        self.read_round += 1
        self.read_rounds.append(_ReadRound(self.read_round, self.log.committed, self.read_queue))
        self.read_queue = []
        self._bcast_heartbeat()
        self._release_reads()  # a single-voter cluster confirms at once

    def _release_reads(self) -> None:
        while self.read_rounds:
            rnd = self.read_rounds[0]
            acked = {n for n, r in self.read_acked.items() if r >= rnd.round} | {self.id}
            if not has_quorum(self.conf, acked):
                return
            self.read_rounds.pop(0)
            for context, requester in rnd.requests:
                self._answer_read(context, requester, rnd.index)
        self._start_read_round()

    def _answer_read(self, context: bytes, requester: NodeId, index: int) -> None:
        if requester == self.id:
            self.read_states.append(ReadState(context, index))
        else:
            self._send(Message(MsgType.READ_INDEX_RESP, self.id, requester, term=self.term,
                               index=index, context=context))

    # ================================================================ output
    def _resp(self, type: MsgType, to: NodeId, **fields: Any) -> Message:
        """A reply to the leader: it carries our log epoch and recovery state."""
        return Message(type, self.id, to, term=self.term, epoch=self.epoch,
                       recovering=self.recovering, **fields)

    def _send(self, m: Message) -> None:
        self.msgs.append(m)


def _counts(pr: Progress) -> bool:
    """Does this follower's word count toward a commit or a read round? Not while it
    recovers and lacks part of what the leader held when it learnt of the loss."""
    return not pr.recovering or pr.match >= pr.recover_to
