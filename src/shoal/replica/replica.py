"""One consensus group's runtime as a deterministic state machine: no I/O, no clock.

A consensus engine (Raft or Multi-Paxos) only orders opaque entries. Between it and the
sockets sits everything that makes a group a replicated key-value service, and it lives here,
so the simulator runs exactly what production runs:

- applying committed entries to the state machine (the MVCC store, leases, sessions,
  watches) and the membership table, in log order;
- proposal waiters: a write is answered by the application of *its* entry, recognised by
  (proposer id, incarnation, token); the incarnation is drawn at every start, so an entry
  proposed in a previous life can never answer a request of this one;
- ReadIndex waiters: a linearizable read is released once the engine confirmed a read index
  and the state machine has applied it;
- membership waiters, keyed by the change's log index *and term*, so a change overwritten by a
  new leader's log is reported as lost instead of answered by someone else's entry;
- lease clocks: the host hands wall-clock time in with every `tick(now_ms)`; grants and
  keep-alives are stamped with it at proposal time, a new leader restarts every lease's clock
  (LeasePromote), and only a leader whose promotion of *this* term is applied expires leases,
  so no lease is judged by a clock other than the one that last stamped it;
- automatic history compaction and snapshots of the whole replicated state;
- alarms (etcd's NOSPACE and CORRUPT), replicated through the log like a write, so every
  member holds the same list at the same index. While any NOSPACE alarm is raised, entries
  that add data (a put, a txn with a put in either branch, a lease grant) are refused when
  applied, on every replica alike; deletes, reads, compaction and lease revocation go on.
  The leader raises NOSPACE for itself when a write would take the store's size (the MVCC
  store's estimated bytes, every version kept, what compaction frees: `KVStore.size_bytes`)
  past `ReplicaConfig.quota_bytes`; an operator clears it (Alarm DEACTIVATE) after freeing
  space.

The driving contract extends the engine's Ready loop (consensus/messages.py):

    replica.tick(now_ms) | replica.step(msg) | replica.propose(cmd) | replica.read_index() ...
    while replica.has_ready():
        rd = replica.ready()
        persist rd (snapshot, entries, hard state; fsync if rd.must_sync); then send rd.messages
        out = replica.advance(rd)   # applies; returns Applied: finished requests, a changed
                                    # member table, a snapshot to persist, watch news
        persist out.snapshot (then release the log it covers); reconcile peers with out.members

Requests are named by integer tokens the replica hands out; their outcomes come back as `Done`
values in `Applied.done`. A host that gives up on a request calls `forget(token)`. Nothing is
queued as a closure: every input and output is a value a test can compare."""

from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass, field, replace
from typing import Any

import msgpack

from ..consensus.confchange import ConfChange
from ..consensus.engine import Engine
from ..consensus.messages import (
    ConsensusError,
    Durable,
    Entry,
    EntryKind,
    Message,
    MsgType,
    NotLeader,
    ProposalDropped,
    Ready,
    Snapshot,
    SnapshotMeta,
)
from ..consensus.paxos import InstallSnapshot, Promise
from ..consensus.raft import Raft
from ..events.protocol.records import iter_batches
from ..events.segments import Directory
from ..kv import KVStore
from ..kv.errors import CorruptSnapshot, ErrNoSpace, KVError, MalformedRequest
from ..kv.keyvalue import prefix_end
from ..kv.limits import KVLimits
from ..kv.mvcc import RECORD_OVERHEAD
from ..kv.partition import PRODUCER_PREFIX, LogState, is_partition
from ..kv.requests import (
    Command,
    CompactionRequest,
    LeaseExpireRequest,
    LeaseGrantRequest,
    LeaseKeepAliveRequest,
    LeasePromoteRequest,
    LogAppendRequest,
    LogAppendResponse,
    OpenSessionRequest,
    PutRequest,
    Request,
    TxnRequest,
    decode_command,
    encode_command,
)
from ..kv.watch import WatchHub
from .errors import NodeError
from .membership import Members, apply_change, encode_context

# Planted bugs the simulator must catch (tests only): a membership change applied twice (when
# its entry is appended, and again when it commits), a re-added member forgotten, and a new
# leader that expires leases without restarting their clocks, judging stamps another node's
# clock made by its own. The event log's (sim/log_bugs.py): a leader that answers a LogAppend
# once it is in its own log, before a quorum has it, and a replica restored from a snapshot
# that forgets its idempotent producers.
BUGS = frozenset({"apply-conf-twice", "forget-readd", "expire-on-follower-clock",
                  "ack-before-quorum", "lose-idempotence"})
FOLLOWER_QUIET_TICKS = 2  # above one heartbeat interval, far below an election timeout
MAX_FORMER = 64  # removed members whose addresses a replica remembers
ALARM_TYPES = ("NOSPACE", "CORRUPT")  # etcd's AlarmType names (NONE means "any" in a query)
ALARM_ENTRY = "alarm"  # first field of an alarm entry; a kv entry's is the proposer id
BATCH_ENTRY = "batch"  # first field of an entry holding several commands (batch_proposals)
BATCH_COMMANDS, BATCH_BYTES = 256, 1 << 20


@dataclass(frozen=True, slots=True)
class ReplicaConfig:
    snapshot_entries: int = 10_000  # applied entries between snapshots
    auto_compact_revisions: int = 100_000  # history kept (0 = never compact automatically)
    max_pending: int = 10_000  # requests in flight (writes, reads, membership changes)
    lease_expiry_batch: int = 100  # expirations proposed per tick
    # Quiescence (CockroachDB's): a leader idle this many ticks, with every follower caught
    # up and no lease to watch, stops ticking, so it sends no heartbeats; a follower stops
    # ticking once it has heard nothing for FOLLOWER_QUIET_TICKS while its leader's process
    # is alive. Any request or message wakes the group. 0 = never (Paxos: never).
    quiesce_after_ticks: int = 0
    # etcd's Promote(extend): a new leader gives every lease its full TTL plus this much
    # (etcd: one election timeout), time for clients that were talking to the old leader to
    # find the new one before their leases run out.
    lease_promote_extend_ms: int = 0
    # etcd's --quota-backend-bytes, checked by the leader against KVStore.size_bytes before
    # it proposes a write that adds data; past it, it raises NOSPACE (0 = no quota). Each
    # member checks its own setting, as in etcd: give every member the same one.
    quota_bytes: int = 0
    # Several commands per log entry: proposals wait for the host's next Ready and go as one
    # entry (Multi-Paxos, whose window of instances in flight is small; Raft pipelines
    # entries and needs none of this). Bounded by BATCH_COMMANDS and BATCH_BYTES.
    batch_proposals: bool = False
    bugs: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        assert self.snapshot_entries > 0 and self.max_pending > 0 and self.lease_expiry_batch > 0
        assert self.auto_compact_revisions >= 0 and self.quiesce_after_ticks >= 0
        assert self.lease_promote_extend_ms >= 0
        assert self.quota_bytes >= 0
        if unknown := self.bugs - BUGS:
            raise ValueError(f"unknown replica bugs {sorted(unknown)}; known: {sorted(BUGS)}")


@dataclass(frozen=True, slots=True)
class Done:
    """A request finished: `result` is a kv Response (writes), None (reads, membership
    changes); `error` is set instead when it failed (a KVError or a NodeError)."""

    token: int
    result: Any = None
    error: Exception | None = None


@dataclass(slots=True)
class Applied:
    """What one `advance` produced, for the host to act on."""

    done: list[Done] = field(default_factory=list)
    members: Members | None = None  # the member table, whenever it changed
    snapshot: Snapshot | None = None  # taken now: persist it, then the log it covers may go
    store_replaced: bool = False  # a snapshot replaced the store: its watches have ended
    store_changed: bool = False  # entries were applied: watchers may have news
    became_leader: bool = False
    lost_leadership: bool = False  # its writes in flight may be cut or applied by the next


class Replica:
    def __init__(self, node_id: int, engine: Engine, durable: Durable, members: Members,
                 incarnation: int, cfg: ReplicaConfig | None = None,
                 limits: KVLimits | None = None, files: Directory | None = None):
        assert node_id > 0 and engine.id == node_id
        assert incarnation > 0, "draw the incarnation from the host's generator, at every start"
        self.id = node_id
        self.engine = engine
        self.cfg = cfg or ReplicaConfig()
        self.incarnation = incarnation
        self.kv = KVStore(limits, files)  # files: an event-log partition's segments
        self.hub = WatchHub(self.kv.mvcc)
        # Until the log or a snapshot says otherwise: a joining node needs these to answer.
        self.members: Members = dict(members)
        self.applied = self.snapshot_index = 0
        self._snapshot = durable.snapshot  # the engine's latest, which it sends to followers
        # That snapshot as sent, with the segment bytes it names (`_with_segments`).
        self._shipped: tuple[SnapshotMeta, bytes | None] | None = None
        if durable.snapshot is not None:
            self._restore(durable.snapshot.data)
            self.applied = self.snapshot_index = durable.snapshot.meta.index
        self.role, self.leader = "follower", 0
        self.now_ms = 0
        self._tokens = itertools.count(1)
        self._live: set[int] = set()  # tokens whose outcome someone still waits for
        # The Command of each write proposed here and not yet applied, by token: applying our
        # own entry uses it instead of decoding the entry's bytes a second time (they are its
        # encoding, made or checked by `propose`).
        self._commands: dict[int, Command] = {}
        self._reads: dict[bytes, int] = {}  # ReadIndex context -> token
        self._read_waits: list[tuple[int, int]] = []  # heap of (read index, token)
        self._conf_waits: dict[int, tuple[int, int]] = {}  # log index -> (entry term, token)
        self._pending_done: list[Done] = []  # finished while handling input, out next advance
        self._batch: list[list[Any]] = []  # proposals waiting for one entry (batch_proposals)
        self._batch_bytes = 0
        self._promote_token = 0
        self._promoted_term = -1  # the term whose lease promotion (ours) has been applied
        self._expiring: set[int] = set()  # leases whose revocation we proposed
        self._compacting = -1  # compact revision when we last proposed a compaction
        self._removed: set[int] = set()  # for the planted forget-readd bug
        self._early_term = self._early_next = 0  # for ack-before-quorum: offsets answered
        self._leaving: set[int] = set()  # removed, but the engine still counts them
        self._former: Members = {}  # removed members' specs, oldest first (see `addresses`)
        self.alarms: set[tuple[int, str]] = set()  # (member id, alarm type), replicated
        self._nospace_term = -1  # the term in which we proposed NOSPACE for ourselves
        self._idle = 0  # ticks since the last sign of work (a request, an entry, a message)
        self.quiet = False  # quiescent: ticks are skipped until something happens
        self.stats = {"proposals": 0, "applied_entries": 0, "read_index": 0, "snapshots": 0,
                      "dropped_proposals": 0, "quiet_ticks": 0}

    # ================================================================ inputs
    def tick(self, now_ms: int, leader_alive: bool = True) -> None:
        """One tick of logical time; `now_ms` is the host's monotonic clock, for lease clocks;
        `leader_alive` says whether the leader's process lately claimed, in the hosts'
        coalesced heartbeat, to lead this group in our term: what a quiescent follower relies
        on instead of the group's own heartbeats."""
        self.now_ms = now_ms
        self._idle += 1
        if self._quiescent(leader_alive):
            self.stats["quiet_ticks"] += 1
            return
        self.engine.tick()
        if self.role == "leader":
            self._expire_leases()
            self._auto_compact()

    def step(self, msg: object) -> None:
        """A peer's message. Raises ConsensusError for one the engine refuses."""
        if self.role != "leader" or getattr(msg, "type", None) is not MsgType.HEARTBEAT_RESP:
            self._wake()  # a leader's own heartbeats coming back are not work
        self.engine.step(msg)

    def _wake(self) -> None:
        self._idle = 0
        self.quiet = False

    def _quiescent(self, leader_alive: bool) -> bool:
        q = self.cfg.quiesce_after_ticks
        if not q:
            return False
        if self.quiet:
            if self.role == "leader" or leader_alive:
                return True
            self._wake()  # the leader went silent or stopped leading: tick, so we may elect
            return False
        if self.role == "leader":
            if self._idle < q or self._live or len(self.kv.lessor):
                return False
            st = self.engine.status()
            self.quiet = st.commit == st.last_index == self.applied and all(
                m == st.last_index for n, m in st.progress.items())
        elif self.role == "follower":
            self.quiet = (self._idle >= FOLLOWER_QUIET_TICKS and self.leader != 0 and leader_alive
                          and self.engine.leader == self.leader)
        return self.quiet

    def propose(self, cmd: Command, data: bytes | None = None) -> int:
        """Propose a kv write; its outcome arrives as Done(token). `data` is `cmd` already
        encoded, when the caller has it, to save an encode."""
        self._check_capacity()
        if self.role != "leader":
            raise self.not_leader()
        self._check_space(cmd.request)
        self._wake()
        stamped = _stamp(cmd.request, self.now_ms)
        if data is None or stamped is not cmd.request:
            data = encode_command(stamped, cmd.session)
        token = next(self._tokens)
        # A new session's id is its entry's index, so each opens in an entry of its own.
        self._propose(token, data, batch=not isinstance(stamped, OpenSessionRequest))
        self._live.add(token)
        self._commands[token] = cmd if stamped is cmd.request else Command(stamped, cmd.session)
        self.stats["proposals"] += 1
        return token

    def read_index(self) -> int:
        """Ask for a linearizable read point; Done(token) once it is applied here."""
        self._check_capacity()
        self._wake()
        token = next(self._tokens)
        ctx = token.to_bytes(8, "big")
        try:
            self.engine.read_index(ctx)
        except ConsensusError:
            raise self.not_leader() from None
        self._reads[ctx] = token
        self._live.add(token)
        self.stats["read_index"] += 1
        return token

    def change_membership(self, op: str, node_id: int, spec: str | None = None) -> int:
        """Propose one membership change; Done(token) once it is applied here."""
        self._check_capacity()
        if self.role != "leader":
            raise self.not_leader()
        self._wake()
        context = encode_context({node_id: spec}) if spec else ""
        try:
            self.engine.propose_conf_change(ConfChange(((op, node_id),), context=context).encode())
        except NotLeader:
            raise self.not_leader() from None
        except ProposalDropped as exc:  # e.g. the previous change is still settling: retry
            raise NodeError("unavailable", str(exc)) from None
        except (ConsensusError, ValueError) as exc:
            raise NodeError("bad_request", str(exc)) from None
        token = next(self._tokens)
        index = self.engine.status().last_index
        if (old := self._conf_waits.pop(index, None)) is not None:
            self._pending_done.append(Done(old[1], error=_lost()))
        self._conf_waits[index] = (self.engine.term, token)
        self._live.add(token)
        return token

    def alarm(self, action: str, member: int, alarm: str) -> int:
        """Propose raising ("activate") or clearing ("deactivate") `alarm` for `member`;
        Done(token, result) once applied here, `result` the [member, alarm] pairs it changed
        (empty: it was already so), as etcd's AlarmResponse lists them."""
        if action not in ("activate", "deactivate") or alarm not in ALARM_TYPES or member <= 0:
            raise NodeError("bad_request", f"bad alarm request {action!r} {alarm!r} for {member}")
        self._check_capacity()
        if self.role != "leader":
            raise self.not_leader()
        self._wake()
        token = next(self._tokens)
        self._propose_entry(msgpack.packb([ALARM_ENTRY, self.id, self.incarnation, token,
                                           action, member, alarm]))
        self._live.add(token)
        return token

    def transfer_leadership(self, to: int) -> None:
        if self.role != "leader":
            raise self.not_leader()
        self._wake()
        try:
            self.engine.transfer_leadership(to)
        except ConsensusError as exc:
            raise NodeError("bad_request", str(exc)) from None

    def forget_leader(self, peer: int) -> None:
        """`peer`'s process went away (the host saw its connection close): if it led this
        group, elect another without waiting out a whole election timeout."""
        if self.role == "follower" and self.engine.leader == peer:
            self._wake()
            self.engine.forget_leader()

    def forget(self, token: int) -> None:
        """The host stopped waiting for `token` (a timeout): report nothing more about it."""
        self._live.discard(token)
        self._commands.pop(token, None)
        self._reads.pop(token.to_bytes(8, "big"), None)

    def not_leader(self) -> NodeError:
        if self.leader == 0 or self.leader not in self.members:
            return NodeError("no_leader", "no leader is known right now; retry shortly")
        return NodeError("not_leader", f"not leader, leader is {self.leader}", leader=self.leader)

    # ================================================================ the Ready loop
    def has_ready(self) -> bool:
        return bool(self._batch) or self.engine.has_ready()

    def ready(self) -> Ready:
        self._flush_batch()
        rd = self.engine.ready()
        if rd.messages and self._snapshot is not None and is_partition(self.kv):
            rd.messages = [out for m in rd.messages if (out := self._with_segments(m)) is not None]
        return rd

    def _with_segments(self, m: object) -> object | None:
        """`m`, and if it carries our snapshot, with the segment bytes the snapshot names in it
        (an event-log partition's snapshot names its segments instead of copying them,
        kv/partition.py). None while they cannot be read back: the engine sends again."""
        if isinstance(m, Message) and m.type is MsgType.SNAP and isinstance(self.engine, Raft):
            full = self._carried(m.snapshot)
            if full is None:
                return None
            chunk = full[m.offset : m.offset + self.engine.cfg.snapshot_chunk_bytes]
            return replace(m, chunk=chunk, done=m.offset + len(chunk) >= len(full))
        if isinstance(m, Promise | InstallSnapshot) and m.snapshot is not None:
            full = self._carried(m.snapshot.meta)
            return None if full is None else replace(m, snapshot=Snapshot(m.snapshot.meta, full))
        return m

    def _carried(self, meta: SnapshotMeta | None) -> bytes | None:
        snap = self._snapshot
        if snap is None or snap.meta != meta:
            return None
        if self._shipped is None or self._shipped[0] != meta:
            kv_bytes, *rest = msgpack.unpackb(snap.data, strict_map_key=False)
            carried = self.kv.carrying_segments(kv_bytes)
            self._shipped = (meta, None if carried is None else msgpack.packb([carried, *rest]))
        return self._shipped[1]

    def _flush_batch(self) -> None:
        """The waiting proposals as one entry; if the engine refuses it, each fails alike."""
        if not self._batch:
            return
        batch, self._batch, self._batch_bytes = self._batch, [], 0
        try:
            self._propose_entry(msgpack.packb([BATCH_ENTRY, *batch]))
        except NodeError as exc:
            for _, _, token, _ in batch:
                self._commands.pop(token, None)
                self._pending_done.append(Done(token, error=exc))
        assert not self._batch

    def advance(self, rd: Ready) -> Applied:
        """`rd` is persisted and its messages sent: apply it and hand it back to the engine."""
        out = Applied(done=self._pending_done)
        self._pending_done = []
        if rd.snapshot is not None:
            assert rd.snapshot.meta.index > self.applied, (rd.snapshot.meta.index, self.applied)
            self._restore(rd.snapshot.data)
            self.applied = self.snapshot_index = rd.snapshot.meta.index
            self._snapshot, self._shipped = rd.snapshot, None
            out.members, out.store_replaced = dict(self.members), True
            for index in [i for i in self._conf_waits if i <= self.applied]:
                # Its outcome is inside the snapshot, not in any entry we will apply: unknown.
                self._finish(out, Done(self._conf_waits.pop(index)[1], error=_lost()))
        if "apply-conf-twice" in self.cfg.bugs:  # once when appended, again when committed
            for e in rd.entries:
                if e.kind is EntryKind.CONFIG:
                    for op, n in ConfChange.decode(e.data).changes:
                        if op == "remove":
                            self.members.pop(n, None)
        if "ack-before-quorum" in self.cfg.bugs and self.role == "leader":
            self._ack_appended(rd.entries, out)
        for e in rd.committed:
            assert e.index == self.applied + 1, f"applies {e.index} after {self.applied}"
            waiter = self._conf_waits.pop(e.index, None)
            if e.kind is EntryKind.CONFIG:
                self._apply_membership(e, out)
            elif e.data:
                self._apply_command(e, out)
            if waiter is not None:
                ok = e.kind is EntryKind.CONFIG and e.term == waiter[0]
                self._finish(out, Done(waiter[1], error=None if ok else _lost()))
            self.applied = e.index
            # Per entry, not per batch: a compaction later in this batch drops the history
            # the hub has not yet handed to its watchers.
            self.hub.advance()
        if rd.committed or rd.entries or rd.snapshot is not None:
            self._wake()
        self.stats["applied_entries"] += len(rd.committed)
        out.store_changed = bool(rd.committed) or rd.snapshot is not None
        for rs in rd.read_states:
            token = self._reads.pop(rs.context, None)
            if token is not None:
                heapq.heappush(self._read_waits, (rs.index, token))
        while self._read_waits and self._read_waits[0][0] <= self.applied:
            self._finish(out, Done(heapq.heappop(self._read_waits)[1]))
        self.engine.advance(rd)
        if self._leaving:
            self._let_go(out)
        if rd.soft_state is not None:
            self._wake()
            was_leader = self.role == "leader"
            self.role, self.leader = rd.soft_state.role, rd.soft_state.leader
            if self.role == "leader" and not was_leader:
                out.became_leader = True
                # A new leader restarts every lease's clock so none expires during failover.
                self._promote_token = 0
                self._promote()
            if self.role != "leader":
                self._expiring.clear()
                out.lost_leadership = was_leader
            # The engine drops the reads it has not confirmed when its leader changes (a
            # forwarded one dies with the old leader): fail them now, not at their callers'
            # timeouts, so they ask the new leader.
            for token in self._reads.values():
                self._finish(out, Done(token, error=self.not_leader()))
            self._reads.clear()
        # Also right after a trim or compaction deleted or rewrote segments: our snapshot names
        # segments, and a follower is sent what the files hold of them (`_with_segments`).
        if (self.applied - self.snapshot_index >= self.cfg.snapshot_entries
                or self.snapshot_index < self.kv.rewritten_index <= self.applied):
            try:
                out.snapshot = self.engine.compact(self.applied, self.snapshot_data())
                self._snapshot, self._shipped = out.snapshot, None
                self.snapshot_index = self.applied
                self.stats["snapshots"] += 1
            except ProposalDropped:
                pass  # the engine asks to compact later (Paxos: a change not yet in effect)
        assert self.snapshot_index <= self.applied
        return out

    # ================================================================ applying
    def _apply_command(self, e: Entry, out: Applied) -> None:
        fields = msgpack.unpackb(e.data)
        if fields[0] == ALARM_ENTRY:
            self._apply_alarm(fields[1:], out)
            return
        if fields[0] == BATCH_ENTRY:  # several commands, applied in order at this index
            for one in fields[1:]:
                self._apply_one(e, one, out)
            return
        self._apply_one(e, fields, out)

    def _apply_one(self, e: Entry, fields: list[Any], out: Applied) -> None:
        proposer, incarnation, token, command = fields
        mine = proposer == self.id and incarnation == self.incarnation
        cmd = self._commands.pop(token, None) if mine else None
        result: Any
        if self.alarms and self._capped() and _adds_data(command, self.kv.limits):
            # Decided by replicated state alone, so every replica refuses the same entries.
            result = ErrNoSpace(f"database space exceeded: alarm NOSPACE is raised for member "
                                f"{self._capped()}; compact, then deactivate the alarm")
        else:
            try:
                if cmd is not None:  # ours, decoded when proposed: validated again, not decoded
                    result = self.kv.apply(cmd.request, e.index, cmd.session)
                else:
                    result = self.kv.apply_entry(command, e.index)
            except KVError as exc:
                result = exc
        if not mine:
            return
        if token == self._promote_token:
            self._promoted_term = e.term  # leases may expire in this term, not a later one
        elif isinstance(result, KVError):
            self._finish(out, Done(token, error=result))
        else:
            self._finish(out, Done(token, result))

    def _ack_appended(self, entries: list[Entry], out: Applied) -> None:
        """Planted bug: answer our LogAppends as soon as they are in our own log, with the
        offsets they would get, before a quorum holds them (a new leader may never have them)."""
        state = LogState.of(self.kv)
        if self._early_term != self.engine.term:
            self._early_term, self._early_next = self.engine.term, 0
        next_offset = max(self._early_next, state.next_offset)
        for e in entries:
            if e.kind is EntryKind.CONFIG or not e.data:
                continue
            fields = msgpack.unpackb(e.data)
            if fields[0] != self.id or fields[1] != self.incarnation:
                continue
            cmd = self._commands.get(fields[2])
            if cmd is not None and isinstance(cmd.request, LogAppendRequest):
                self._finish(out, Done(fields[2], LogAppendResponse(
                    self.kv._header(), next_offset, 0, state.start_offset)))
                next_offset += sum(h.last_offset_delta + 1
                                   for h, _ in iter_batches(cmd.request.batches, verify=False))
        self._early_next = next_offset

    def _apply_alarm(self, fields: list[Any], out: Applied) -> None:
        proposer, incarnation, token, action, member, alarm = fields
        key = (member, alarm)
        changed = (key not in self.alarms) == (action == "activate")
        if action == "activate":
            self.alarms.add(key)
        else:
            self.alarms.discard(key)
            if key == (self.id, "NOSPACE"):
                self._nospace_term = -1  # cleared: a write still past the quota raises it again
        if proposer == self.id and incarnation == self.incarnation and token:
            self._finish(out, Done(token, [list(key)] if changed else []))

    def _capped(self) -> int:
        """A member with NOSPACE raised (0: none): writes that add data are refused."""
        return min((m for m, a in self.alarms if a == "NOSPACE"), default=0)

    def _check_space(self, request: Request) -> None:
        """etcd's quota check, before proposing: ErrNoSpace for a write that adds data while
        NOSPACE is raised, or that would take the store past the quota (which raises it)."""
        cost = _cost(request)
        if not cost:
            return
        if member := self._capped():
            raise ErrNoSpace(f"database space exceeded: alarm NOSPACE is raised for member "
                             f"{member}; compact, then deactivate the alarm")
        quota, size = self.cfg.quota_bytes, self.kv.size_bytes
        if quota and size + cost > quota:
            if self._nospace_term != self.engine.term:  # once per term: a lost one is redone
                self._nospace_term = self.engine.term
                try:
                    self._propose_entry(msgpack.packb([ALARM_ENTRY, self.id, self.incarnation, 0,
                                                       "activate", self.id, "NOSPACE"]))
                except NodeError:
                    self._nospace_term = -1
            raise ErrNoSpace(f"database space exceeded: the store holds {size} bytes, this "
                             f"write adds {cost}, the quota is {quota}; NOSPACE raised")

    def _apply_membership(self, e: Entry, out: Applied) -> None:
        cc = ConfChange.decode(e.data)
        if "forget-readd" in self.cfg.bugs:
            cc = replace(cc, changes=tuple(c for c in cc.changes
                                           if c[0] == "remove" or c[1] not in self._removed))
            self._removed |= {n for op, n in cc.changes if op == "remove"}
        self.members = apply_change(self.members, cc, self._leaving)
        out.members = dict(self.members)

    def _let_go(self, out: Applied) -> None:
        """Drop the members the engine no longer counts. A removed member keeps its place in
        the table while a joint configuration still needs its votes, and a member re-added
        before that keeps it for good: the table only ever shrinks to the engine's view."""
        conf = self.engine.status().conf.members()
        if gone := {n for n in self._leaving if n not in conf}:
            self._leaving -= gone
            for n in gone:
                if (spec := self.members.pop(n, None)) is not None:
                    self._former[n] = spec
            while len(self._former) > MAX_FORMER:
                del self._former[next(iter(self._former))]
            out.members = dict(self.members)

    @property
    def addresses(self) -> Members:
        """Where this group's messages may go: its members, and the members it removed. A
        former member re-added under its old id may lead before a lagging replica applies the
        re-add; that replica must still answer it, or it never learns of the re-add."""
        return {**self._former, **self.members}

    def _finish(self, out: Applied, done: Done) -> None:
        if done.token in self._live:
            self._live.discard(done.token)
            out.done.append(done)

    # ================================================================ the leader's chores
    def _promote(self) -> None:
        """Propose this term's LeasePromote, once it is accepted (a refusal is retried on the
        next tick: without it this leader could never expire a lease)."""
        if "expire-on-follower-clock" in self.cfg.bugs:
            self._promoted_term = self.engine.term
            return
        token = next(self._tokens)
        try:
            stamp = self.now_ms + self.cfg.lease_promote_extend_ms
            self._propose(token, encode_command(LeasePromoteRequest(stamp)))
            self._promote_token = token
        except NodeError:
            pass

    def _expire_leases(self) -> None:
        if self._promoted_term != self.engine.term:
            if not self._promote_token:
                self._promote()
            return  # leases carry the previous leader's stamps until our promotion applies
        now = self.now_ms
        for lease_id in self.kv.lessor.expired(now, limit=self.cfg.lease_expiry_batch):
            if lease_id not in self._expiring:
                self._expiring.add(lease_id)
                self._propose_quietly(0, LeaseExpireRequest(lease_id, now))
        self._expiring &= set(self.kv.lessor.ids())

    def _auto_compact(self) -> None:
        """Keep the last `auto_compact_revisions` revisions of history (etcd's revision mode):
        the store lives in memory, so unbounded history would be unbounded memory. Proposed in
        steps of half the retention, so compaction is rare and cheap per write."""
        keep = self.cfg.auto_compact_revisions
        if keep and self.kv.revision - self.kv.compact_revision >= keep + keep // 2:
            if self._compacting != self.kv.compact_revision:
                self._compacting = self.kv.compact_revision
                self._propose_quietly(0, CompactionRequest(self.kv.revision - keep))

    def _propose(self, token: int, data: bytes, batch: bool = True) -> None:
        if self.cfg.batch_proposals and not batch:
            self._flush_batch()  # (the batch's commands were proposed first: keep their order)
        elif self.cfg.batch_proposals:
            if len(self._batch) >= BATCH_COMMANDS or self._batch_bytes + len(data) > BATCH_BYTES:
                self._flush_batch()
            self._batch.append([self.id, self.incarnation, token, data])
            self._batch_bytes += len(data)
            return
        self._propose_entry(msgpack.packb([self.id, self.incarnation, token, data]))

    def _propose_entry(self, entry: bytes) -> None:
        try:
            self.engine.propose(entry)
        except NotLeader:
            raise self.not_leader() from None
        except ProposalDropped as exc:
            self.stats["dropped_proposals"] += 1
            raise NodeError("too_many_requests", str(exc)) from None

    def _propose_quietly(self, token: int, request: Request) -> None:
        try:
            self._propose(token, encode_command(request))
        except NodeError:
            pass  # the leader's chores are retried on a later tick

    def _check_capacity(self) -> None:
        if len(self._live) >= self.cfg.max_pending:
            raise NodeError("too_many_requests", f"{len(self._live)} requests in flight; retry later")

    # ================================================================ snapshots
    def snapshot_data(self) -> bytes:
        """The replicated state as of `applied` (what `shoal snapshot save` writes)."""
        return msgpack.packb([self.kv.snapshot(), dict(sorted(self.members.items())),
                              sorted(self._leaving), sorted(self.alarms)])

    def _restore(self, data: bytes) -> None:
        # Snapshots written before alarms existed have three fields.
        kv_bytes, members, leaving, *alarms = msgpack.unpackb(data, strict_map_key=False)
        self.alarms = {(int(m), str(a)) for m, a in (alarms[0] if alarms else ())}
        self.kv = KVStore.restore(kv_bytes, self.kv.limits, self.kv.files)
        if "lose-idempotence" in self.cfg.bugs:  # planted: the producer table is not restored
            self.kv.mvcc.begin()
            self.kv._delete(PRODUCER_PREFIX, prefix_end(PRODUCER_PREFIX))
            self.kv.mvcc.end()
        self.hub = WatchHub(self.kv.mvcc)
        self.members = {int(n): str(spec) for n, spec in members.items()}
        self._leaving = {int(n) for n in leaving}

    # ================================================================ status
    def status(self) -> dict[str, Any]:
        st = self.engine.status()
        return {
            "role": self.role, "term": st.term, "leader": self.leader, "commit": st.commit,
            "applied": self.applied, "last_index": st.last_index, "revision": self.kv.revision,
            "voters": sorted(st.conf.voters), "learners": sorted(st.conf.learners),
            "members": dict(sorted(self.members.items())),
            "peers": {n: {"match": m} for n, m in sorted(st.progress.items())},
            "db_size": self.kv.size_bytes,
            "recovering": st.recovering,  # cut by --repair, not yet caught up: votes for no one
            "alarms": [list(a) for a in sorted(self.alarms)],
        }


def _stamp(request: Request, now_ms: int) -> Request:
    """Lease requests carry the proposing leader's clock (the state machine reads none)."""
    if isinstance(request, LeaseGrantRequest | LeaseKeepAliveRequest):
        return replace(request, now_ms=now_ms)
    return request


def _cost(request: Request | Any) -> int:
    """The bytes a request adds to the store, as etcd's quota counts them (a txn: its larger
    branch); 0 for one that adds nothing (delete, range, compaction, revoke)."""
    match request:
        case PutRequest():
            return len(request.key) + len(request.value) + RECORD_OVERHEAD
        case TxnRequest():
            return max(sum(_cost(op) for op in request.success),
                       sum(_cost(op) for op in request.failure))
        case LeaseGrantRequest():
            return RECORD_OVERHEAD
    return 0


def _adds_data(command: bytes, limits: KVLimits) -> bool:
    try:
        return _cost(decode_command(command, limits).request) > 0
    except MalformedRequest:
        return False  # the store refuses it when applying, on every replica alike


def _lost() -> NodeError:
    return NodeError("unavailable", "the membership change's outcome is unknown: the log moved "
                     "on under another leader; check the member list and retry")


def snapshot_contents(data: bytes) -> tuple[KVStore, Members]:
    """The store and member table in a `Replica.snapshot_data()` (what `shoal snapshot save`
    writes), read without a replica. CorruptSnapshot if it is not one."""
    try:
        kv_bytes, members, *_ = msgpack.unpackb(data, strict_map_key=False)
        table = {int(n): str(spec) for n, spec in members.items()}
    except (ValueError, TypeError, AttributeError, msgpack.UnpackException) as e:
        raise CorruptSnapshot(f"snapshot: not a replica snapshot ({e})") from None
    return KVStore.restore(kv_bytes), table


def rebase_snapshot(data: bytes, members: Members) -> bytes:
    """`data` as the first state of a new cluster of `members` (`shoal snapshot restore`, as
    etcdutl's): the same store under that member table, no removal pending, no alarm raised."""
    store, _ = snapshot_contents(data)
    return msgpack.packb([store.snapshot(), dict(sorted(members.items())), [], []])
