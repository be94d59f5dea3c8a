"""Kafka's classic group coordinator as a pure state machine: requests and time in, replies out.

A Kafka consumer group is coordinated by one broker, which runs the "classic" rebalance
protocol: members JoinGroup, the coordinator waits until every known member has (re)joined or
the rebalance timeout passes, picks a protocol all of them support, bumps the generation and
answers every JoinGroup at once (the leader's answer lists the members' metadata); the leader
computes an assignment and sends it in SyncGroup, and each member's SyncGroup is answered with
its own part. Heartbeats keep a member's session; a member that stops (or leaves) makes the
group rebalance again. Offsets are committed against a generation and fetched back.

This module is that coordinator (Kafka's GroupCoordinator/GroupMetadata, and the newer
GroupMetadataManager/ClassicGroup, followed decision for decision), without I/O, in the manner
of h11: it owns no socket, no clock and no storage.

- Every entry point takes the request body (the dataclasses of `shoal.events.protocol`), the
  version it was decoded at, an opaque `token` naming the request, and `now_ms`. It returns
  an `Output`: `replies`, each `Reply(token, response, version)`, and `persist`, each
  `Persist(key, value)`. A request answered at once has its token among the replies; one that
  Kafka parks (JoinGroup until the rebalance completes, a follower's SyncGroup until the
  leader's) is answered by a later call's Output, or by `tick`.
- Time moves only through `now_ms` (an earlier value than one already seen counts as the
  latest: time does not go backwards). Timers are Kafka's delayed operations: the rebalance
  timeout, the initial rebalance delay, each member's session, the wait for SyncGroups, the
  offset-retention sweep. Each call first fires every timer due by `now_ms`, each at its own
  deadline, then handles its request, then fires timers the request made due (a zero initial
  delay). `next_deadline()` says when to call `tick` next.
- Durability: committed offsets and group metadata (at the end of each rebalance, as Kafka
  writes it to __consumer_offsets) come back as `Persist` records (coordinator_store.py has the
  layout). The host writes an Output's records, and those of every earlier Output, before
  sending its replies. `load(records, now_ms)` rebuilds a new coordinator from the stored
  records after a move: committed offsets, and Stable groups with their members and
  assignments, whose sessions restart at `now_ms` (members that are gone time out, as after
  Kafka's coordinator failover). Rebalances in flight are lost; their clients rejoin. If a
  write fails, the host answers that Output's replies with `error_reply(reply,
  NOT_COORDINATOR)`, calls `unload()` (it answers everything still parked the same way) and
  builds a new coordinator from the store.

Group states, as Kafka's: Empty (no members: offsets only), PreparingRebalance (waiting for
joins), CompletingRebalance (waiting for the leader's SyncGroup), Stable; Dead is a group
being deleted, which this module removes from its table at once. `check_invariants()` states
what always holds; the core asserts its pre- and postconditions as it goes.

Left out, each answered the way Kafka answers what it does not support: static membership
(group_instance_id in JoinGroup, SyncGroup, Heartbeat or OffsetCommit gets UNSUPPORTED_VERSION,
as a Kafka broker below 2.3 answers; a LeaveGroup naming an instance id finds no such member);
KIP-848's consumer protocol (OffsetCommit/OffsetFetch v9 are handled as classic groups);
transactional offset commits; DescribeGroups, ListGroups and DeleteGroups; expiring the
offsets of a Stable group's unsubscribed topics (Kafka parses the consumer protocol for this;
offsets here expire only once their group is Empty, or for standalone consumers).
"""

from __future__ import annotations

import enum
import heapq
import random
import uuid
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field
from typing import NamedTuple

from .coordinator_store import (
    DEFAULT_PREFIX,
    GroupKey,
    GroupValue,
    MemberValue,
    OffsetValue,
    Persist,
    decode_group,
    decode_offset,
    encode_group,
    encode_offset,
    group_key,
    offset_key,
    parse_key,
)
from .protocol.error_codes import ErrorCode
from .protocol.heartbeat import HeartbeatRequest, HeartbeatResponse
from .protocol.join_group import JoinGroupRequest, JoinGroupResponse, JoinGroupResponseMember
from .protocol.leave_group import LeaveGroupRequest, LeaveGroupResponse, MemberResponse
from .protocol.offset_commit import (
    OffsetCommitRequest,
    OffsetCommitResponse,
    OffsetCommitResponsePartition,
    OffsetCommitResponseTopic,
)
from .protocol.offset_fetch import (
    OffsetFetchRequest,
    OffsetFetchResponse,
    OffsetFetchResponseGroup,
    OffsetFetchResponsePartition,
    OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic,
    OffsetFetchResponseTopics,
)
from .protocol.schema import Request, Response
from .protocol.sync_group import SyncGroupRequest, SyncGroupResponse

__all__ = [
    "CoordinatorConfig", "GroupCoordinator", "GroupState", "GroupView", "MemberView", "Output",
    "Persist", "Reply", "error_reply",
]

E = ErrorCode
Token = Hashable


class GroupState(enum.Enum):
    EMPTY = "Empty"
    PREPARING_REBALANCE = "PreparingRebalance"
    COMPLETING_REBALANCE = "CompletingRebalance"
    STABLE = "Stable"
    DEAD = "Dead"


EMPTY = GroupState.EMPTY
PREPARING = GroupState.PREPARING_REBALANCE
COMPLETING = GroupState.COMPLETING_REBALANCE
STABLE = GroupState.STABLE
DEAD = GroupState.DEAD

# GroupState.validPreviousStates in Kafka's GroupMetadata.scala.
_VALID_PREVIOUS: dict[GroupState, frozenset[GroupState]] = {
    PREPARING: frozenset({STABLE, COMPLETING, EMPTY}),
    COMPLETING: frozenset({PREPARING}),
    STABLE: frozenset({COMPLETING}),
    DEAD: frozenset(GroupState),
    EMPTY: frozenset({PREPARING}),
}


@dataclass(frozen=True, slots=True)
class CoordinatorConfig:
    """The coordinator's settings; Kafka's broker setting named where there is one."""

    #: group.min.session.timeout.ms / group.max.session.timeout.ms (Kafka's defaults).
    min_session_timeout_ms: int = 6_000
    max_session_timeout_ms: int = 1_800_000
    #: group.initial.rebalance.delay.ms: how long a group that was Empty waits for more members
    #: before its first generation, extended while members keep arriving. Kafka's default is
    #: 3000; 0 here so that tests and single consumers need no wait. A server should pass 3000.
    initial_rebalance_delay_ms: int = 0
    #: How long a new member's JoinGroup may wait before it is dropped (Kafka's constant: a
    #: new member cannot heartbeat yet, and a client that gave up would otherwise linger).
    new_member_join_timeout_ms: int = 300_000
    #: group.max.size (Kafka's default is unbounded): GROUP_MAX_SIZE_REACHED beyond it.
    max_group_size: int = 1000
    #: Bounds Kafka leaves to the size of __consumer_offsets records; POLICY_VIOLATION beyond.
    max_groups: int = 100_000
    max_metadata_bytes: int = 256 * 1024  # a member's protocols, names and metadata together
    max_assignment_bytes: int = 1024 * 1024  # a leader's SyncGroup assignments together
    max_offsets_per_group: int = 100_000
    #: offset.metadata.max.bytes: OFFSET_METADATA_TOO_LARGE beyond (counted in characters).
    max_offset_metadata_bytes: int = 4096
    #: offsets.retention.minutes (7 days) and offsets.retention.check.interval.ms (10 min).
    offsets_retention_ms: int = 7 * 24 * 3600 * 1000
    offsets_retention_check_interval_ms: int = 600_000
    #: Where the persisted records live in the host's key space.
    key_prefix: bytes = DEFAULT_PREFIX

    def __post_init__(self) -> None:
        assert 0 <= self.min_session_timeout_ms <= self.max_session_timeout_ms
        assert self.initial_rebalance_delay_ms >= 0
        assert self.new_member_join_timeout_ms > 0
        assert self.max_group_size >= 1 and self.max_groups >= 1
        assert self.offsets_retention_check_interval_ms > 0


class Reply(NamedTuple):
    """An answer to deliver: the request's token, its response, the version to encode it at."""

    token: Token
    response: Response
    version: int


@dataclass(slots=True)
class Output:
    """What one call produced. Write `persist` (after every earlier Output's), then send."""

    replies: list[Reply] = field(default_factory=list)
    persist: list[Persist] = field(default_factory=list)

    def reply_for(self, token: Token) -> Response | None:
        for reply in self.replies:
            if reply.token == token:
                return reply.response
        return None


@dataclass(frozen=True, slots=True)
class MemberView:
    member_id: str
    client_id: str
    session_timeout_ms: int
    rebalance_timeout_ms: int
    protocols: tuple[str, ...]
    assignment: bytes | None  # None: none received in this generation yet
    awaiting_join: bool
    awaiting_sync: bool


@dataclass(frozen=True, slots=True)
class GroupView:
    """A read-only snapshot of a group, for tests, metrics and debugging."""

    group_id: str
    state: GroupState
    generation: int
    protocol_type: str | None
    protocol_name: str | None
    leader: str | None
    members: tuple[MemberView, ...]
    pending_members: tuple[str, ...]
    offsets: int


class _Parked(NamedTuple):
    token: Token
    version: int


@dataclass(slots=True)
class _Member:
    member_id: str
    client_id: str
    client_host: str
    rebalance_timeout_ms: int
    session_timeout_ms: int
    protocol_type: str
    protocols: list[tuple[str, bytes]]  # in the member's order of preference
    assignment: bytes | None = None
    join: _Parked | None = None  # its JoinGroup, parked until the rebalance completes
    sync: _Parked | None = None  # its SyncGroup, parked until the leader's arrives
    is_new: bool = False  # joined but has not had a JoinGroup answer yet

    def names(self) -> list[str]:
        return [name for name, _ in self.protocols]

    def metadata(self, protocol: str) -> bytes:
        for name, meta in self.protocols:
            if name == protocol:
                return meta
        raise AssertionError(f"member {self.member_id} does not support {protocol}")


@dataclass(slots=True)
class _Group:
    group_id: str
    state: GroupState
    state_ts: int
    generation: int = 0
    protocol_type: str | None = None
    protocol_name: str | None = None
    leader: str | None = None
    members: dict[str, _Member] = field(default_factory=dict)  # in order of joining
    pending: dict[str, None] = field(default_factory=dict)  # ids handed out by MEMBER_ID_REQUIRED
    pending_sync: set[str] = field(default_factory=set)  # members whose SyncGroup is awaited
    initial_rebalance: bool = False  # this PreparingRebalance came from Empty (delayed join)
    new_member_added: bool = False  # a member arrived during the initial delay: extend it
    offsets: dict[tuple[str, int], OffsetValue] = field(default_factory=dict)

    def rebalance_timeout_ms(self) -> int:
        return max((m.rebalance_timeout_ms for m in self.members.values()), default=0)

    def num_awaiting_join(self) -> int:
        return sum(1 for m in self.members.values() if m.join is not None)

    def all_members_joined(self) -> bool:
        return self.num_awaiting_join() == len(self.members) and not self.pending

    def count_supporting(self, protocol: str) -> int:
        return sum(1 for m in self.members.values() if protocol in m.names())


_TimerKey = tuple[str, ...]


def error_reply(reply: Reply, code: int) -> Reply:
    """The same reply carrying `code` instead, e.g. NOT_COORDINATOR when a write failed."""
    r = reply.response
    v = reply.version
    out: Response
    if isinstance(r, JoinGroupResponse):
        out = _join_error(v, code, r.member_id)
    elif isinstance(r, SyncGroupResponse):
        out = SyncGroupResponse(error_code=code)
    elif isinstance(r, HeartbeatResponse):
        out = HeartbeatResponse(error_code=code)
    elif isinstance(r, LeaveGroupResponse):
        out = LeaveGroupResponse(error_code=code)
    elif isinstance(r, OffsetCommitResponse):
        out = OffsetCommitResponse(topics=[OffsetCommitResponseTopic(name=t.name, partitions=[
            OffsetCommitResponsePartition(partition_index=p.partition_index, error_code=code)
            for p in t.partitions]) for t in r.topics])
    elif isinstance(r, OffsetFetchResponse):
        if v >= 8:
            out = OffsetFetchResponse(groups=[OffsetFetchResponseGroup(
                group_id=g.group_id, error_code=code) for g in r.groups])
        elif v >= 2:
            out = OffsetFetchResponse(error_code=code)
        else:  # no top-level error before v2: Kafka puts it on each partition
            out = OffsetFetchResponse(topics=[OffsetFetchResponseTopic(name=t.name, partitions=[
                OffsetFetchResponsePartition(partition_index=p.partition_index,
                                             committed_offset=-1, metadata="", error_code=code)
                for p in t.partitions]) for t in r.topics])
    else:
        raise TypeError(f"not a coordinator response: {type(r).__name__}")
    return Reply(reply.token, out, v)


def _join_error(version: int, code: int, member_id: str) -> JoinGroupResponse:
    return _join_response(version, code, member_id)


def _join_response(version: int, code: int, member_id: str, *, generation: int = -1,
                   protocol_type: str | None = None, protocol_name: str | None = None,
                   leader: str = "",
                   members: list[JoinGroupResponseMember] | None = None) -> JoinGroupResponse:
    # JoinGroupResponse's constructor in Kafka: before v7 the protocol name is not nullable and
    # an absent one is "", from v7 an empty one is null.
    if version < 7 and protocol_name is None:
        protocol_name = ""
    if version >= 7 and protocol_name == "":
        protocol_name = None
    return JoinGroupResponse(error_code=int(code), generation_id=generation,
                             protocol_type=protocol_type, protocol_name=protocol_name,
                             leader=leader, member_id=member_id, members=members or [])


class GroupCoordinator:
    """The consumer groups of one coordinator. Not thread-safe: one caller at a time."""

    def __init__(self, config: CoordinatorConfig | None = None, *,
                 rng: random.Random | None = None) -> None:
        self.config = config if config is not None else CoordinatorConfig()
        # Member ids are client id + "-" + a UUID, as Kafka's; a seeded rng makes them
        # reproducible in tests. (The default is seeded from the OS, never from a clock.)
        self._rng = rng if rng is not None else random.Random()
        self._groups: dict[str, _Group] = {}
        self._timers: dict[_TimerKey, tuple[int, int, Callable[[int], None]]] = {}
        self._heap: list[tuple[int, int, _TimerKey]] = []
        self._seq = 0
        self._now: int | None = None
        self._out = Output()
        self._touched: set[str] = set()
        self._in_call = False

    # ------------------------------------------------------------------ entry points

    def handle(self, token: Token, request: Request, *, version: int, now_ms: int,
               client_id: str | None = None, client_host: str = "",
               partition_exists: Callable[[str, int], bool] | None = None) -> Output:
        """Dispatch any of the six group requests by type (for a server's handler table)."""
        if isinstance(request, JoinGroupRequest):
            return self.join_group(token, request, version=version, now_ms=now_ms,
                                   client_id=client_id, client_host=client_host)
        if isinstance(request, SyncGroupRequest):
            return self.sync_group(token, request, version=version, now_ms=now_ms)
        if isinstance(request, HeartbeatRequest):
            return self.heartbeat(token, request, version=version, now_ms=now_ms)
        if isinstance(request, LeaveGroupRequest):
            return self.leave_group(token, request, version=version, now_ms=now_ms)
        if isinstance(request, OffsetCommitRequest):
            return self.offset_commit(token, request, version=version, now_ms=now_ms,
                                      partition_exists=partition_exists)
        if isinstance(request, OffsetFetchRequest):
            return self.offset_fetch(token, request, version=version, now_ms=now_ms)
        raise TypeError(f"not a group coordinator request: {type(request).__name__}")

    def join_group(self, token: Token, request: JoinGroupRequest, *, version: int, now_ms: int,
                   client_id: str | None = None, client_host: str = "") -> Output:
        """JoinGroup: answered at once (errors, MEMBER_ID_REQUIRED) or parked."""
        t = self._begin(now_ms)
        self._join(_Parked(token, version), request, client_id or "", client_host, t)
        return self._end()

    def sync_group(self, token: Token, request: SyncGroupRequest, *, version: int,
                   now_ms: int) -> Output:
        """SyncGroup: parked until the leader's assignment while CompletingRebalance."""
        t = self._begin(now_ms)
        self._sync(_Parked(token, version), request, t)
        return self._end()

    def heartbeat(self, token: Token, request: HeartbeatRequest, *, version: int,
                  now_ms: int) -> Output:
        t = self._begin(now_ms)
        self._heartbeat(_Parked(token, version), request, t)
        return self._end()

    def leave_group(self, token: Token, request: LeaveGroupRequest, *, version: int,
                    now_ms: int) -> Output:
        t = self._begin(now_ms)
        self._leave(_Parked(token, version), request, t)
        return self._end()

    def offset_commit(self, token: Token, request: OffsetCommitRequest, *, version: int,
                      now_ms: int,
                      partition_exists: Callable[[str, int], bool] | None = None) -> Output:
        """OffsetCommit. `partition_exists` is the server's metadata: partitions it says do not
        exist get UNKNOWN_TOPIC_OR_PARTITION, as Kafka's request handler answers them."""
        t = self._begin(now_ms)
        self._commit(_Parked(token, version), request, t, partition_exists)
        return self._end()

    def offset_fetch(self, token: Token, request: OffsetFetchRequest, *, version: int,
                     now_ms: int) -> Output:
        self._begin(now_ms)
        self._fetch(_Parked(token, version), request)
        return self._end()

    def tick(self, now_ms: int) -> Output:
        """Fire the timers due by now_ms: completed rebalances, expired sessions, retention."""
        self._begin(now_ms)
        return self._end()

    def next_deadline(self) -> int | None:
        """The earliest time at which `tick` has something to do (None: nothing scheduled)."""
        while self._heap:
            deadline, seq, key = self._heap[0]
            entry = self._timers.get(key)
            if entry is not None and entry[1] == seq:
                return deadline
            heapq.heappop(self._heap)  # superseded or cancelled
        return None

    def unload(self) -> Output:
        """Give the groups up (coordinator moved, or a write failed): every parked request is
        answered NOT_COORDINATOR, as Kafka's onGroupUnloaded does, and the state is dropped.
        Also the way out after a call raised (a failed assertion is a bug: the state is not to
        be trusted, and a new coordinator loads from the store)."""
        self._in_call = False
        self._out = Output()
        for g in self._groups.values():
            for m in g.members.values():
                if m.join is not None:
                    self._reply(m.join, _join_error(m.join.version, E.NOT_COORDINATOR,
                                                    m.member_id))
                    m.join = None
                if m.sync is not None:
                    self._reply(m.sync, SyncGroupResponse(error_code=E.NOT_COORDINATOR))
                    m.sync = None
            g.state = DEAD
        self._groups.clear()
        self._timers.clear()
        self._heap.clear()
        out, self._out = self._out, Output()
        return out

    def load(self, records: Iterable[tuple[bytes, bytes | None]], *, now_ms: int) -> None:
        """Rebuild from stored records (the host's key-value pairs, or Persist items replayed
        in order: None deletes). Only on a fresh coordinator. Groups with members come back
        Stable with their generation, leader and assignments and fresh sessions; the rest
        Empty. Raises ValueError on a record this module did not write."""
        assert not self._groups, "load() is for a fresh coordinator"
        prefix = self.config.key_prefix
        latest: dict[bytes, bytes] = {}
        for key, value in records:
            parse_key(prefix, key)  # refuse foreign keys before anything is applied
            if value is None:
                latest.pop(key, None)
            else:
                latest[key] = value
        t = self._begin(now_ms)
        for key in sorted(latest):
            parsed = parse_key(prefix, key)
            if isinstance(parsed, GroupKey):
                self._load_group(parsed.group_id, decode_group(latest[key]), t)
        for key in sorted(latest):
            parsed = parse_key(prefix, key)
            if not isinstance(parsed, GroupKey):
                g = self._groups.get(parsed.group_id)
                if g is None:  # offsets without group metadata: a standalone consumer's
                    g = self._new_group(parsed.group_id, t)
                g.offsets[(parsed.topic, parsed.partition)] = decode_offset(latest[key])
        for g in self._groups.values():
            self._touched.add(g.group_id)
            if len(g.members) > self.config.max_group_size:
                self._prepare_rebalance(g, t)  # Kafka: "freshly-loaded group is over capacity"
        out = self._end()
        assert not out.replies, "nothing was parked before the load"

    # ------------------------------------------------------------------ inspection

    def group_ids(self) -> list[str]:
        return list(self._groups)

    def describe(self, group_id: str) -> GroupView | None:
        g = self._groups.get(group_id)
        if g is None:
            return None
        return GroupView(
            g.group_id, g.state, g.generation, g.protocol_type, g.protocol_name, g.leader,
            tuple(MemberView(m.member_id, m.client_id, m.session_timeout_ms,
                             m.rebalance_timeout_ms, tuple(m.names()), m.assignment,
                             m.join is not None, m.sync is not None)
                  for m in g.members.values()),
            tuple(g.pending), len(g.offsets))

    def check_invariants(self) -> None:
        """Assert what holds between calls, for every group (tests call this)."""
        for g in self._groups.values():
            self._check_group(g)

    # ------------------------------------------------------------------ call framing, timers

    def _begin(self, now_ms: int) -> int:
        assert not self._in_call, "the coordinator is not re-entrant"
        self._in_call = True
        t = now_ms if self._now is None else max(now_ms, self._now)
        self._now = t
        self._out = Output()
        self._touched = set()
        if ("cleanup",) not in self._timers:
            self._schedule(("cleanup",), t + self.config.offsets_retention_check_interval_ms,
                           self._cleanup)
        self._advance(t)
        return t

    def _end(self) -> Output:
        assert self._in_call and self._now is not None
        self._advance(self._now)
        if __debug__:
            for gid in self._touched:
                g = self._groups.get(gid)
                if g is not None:
                    self._check_group(g)
        out, self._out = self._out, Output()
        self._in_call = False
        return out

    def _schedule(self, key: _TimerKey, deadline: int, fn: Callable[[int], None]) -> None:
        """Arm `key` (replacing what it held, as Kafka's timer.schedule does)."""
        self._seq += 1
        self._timers[key] = (deadline, self._seq, fn)
        heapq.heappush(self._heap, (deadline, self._seq, key))

    def _cancel(self, key: _TimerKey) -> None:
        self._timers.pop(key, None)  # its heap entry is skipped when it surfaces

    def _advance(self, now: int) -> None:
        """Fire every timer due by `now`, in deadline order, each at its own deadline."""
        while self._heap and self._heap[0][0] <= now:
            deadline, seq, key = heapq.heappop(self._heap)
            entry = self._timers.get(key)
            if entry is None or entry[1] != seq:
                continue
            del self._timers[key]
            entry[2](deadline)

    def _reply(self, parked: _Parked, response: Response) -> None:
        self._out.replies.append(Reply(parked.token, response, parked.version))

    def _persist(self, key: bytes, value: bytes | None) -> None:
        self._out.persist.append(Persist(key, value))

    # ------------------------------------------------------------------ group bookkeeping

    def _new_group(self, group_id: str, t: int) -> _Group:
        assert group_id not in self._groups
        g = _Group(group_id, EMPTY, t)
        self._groups[group_id] = g
        return g

    def _drop_if_unused(self, g: _Group) -> None:
        """A group a failed request created holds nothing: forget it (Kafka's next cleanup
        would; doing it now keeps refused requests from filling the group table)."""
        if (g.state is EMPTY and not g.members and not g.pending and not g.offsets
                and g.generation == 0 and self._groups.get(g.group_id) is g):
            del self._groups[g.group_id]
            self._cancel(("join", g.group_id))

    def _transition(self, g: _Group, state: GroupState, t: int) -> None:
        assert g.state in _VALID_PREVIOUS[state], f"{g.group_id}: {g.state} -> {state}"
        g.state = state
        g.state_ts = t
        self._touched.add(g.group_id)

    def _add_member(self, g: _Group, m: _Member) -> None:
        """GroupMetadata.add: the first member sets the protocol type, and leads if none does."""
        assert m.member_id not in g.members
        if not g.members:
            g.protocol_type = m.protocol_type
        assert g.protocol_type == m.protocol_type
        if g.leader is None:
            g.leader = m.member_id
        g.members[m.member_id] = m
        g.pending.pop(m.member_id, None)
        self._touched.add(g.group_id)

    def _remove(self, g: _Group, member_id: str) -> None:
        """GroupMetadata.remove: forget a member (or pending member); a new leader is the
        oldest member left."""
        m = g.members.pop(member_id, None)
        if m is not None:
            assert m.join is None, "callers answer a parked JoinGroup first"
            if m.sync is not None:
                # Kafka drops this callback and the client times out; answering it means a
                # parked request never outlives its member.
                self._reply(m.sync, SyncGroupResponse(error_code=E.UNKNOWN_MEMBER_ID))
                m.sync = None
        if g.leader == member_id:
            g.leader = next(iter(g.members), None)
        g.pending.pop(member_id, None)
        self._remove_pending_sync(g, member_id)
        self._cancel(("hb", g.group_id, member_id))
        self._touched.add(g.group_id)

    def _remove_pending_sync(self, g: _Group, member_id: str) -> None:
        g.pending_sync.discard(member_id)
        if not g.pending_sync:
            self._cancel(("sync", g.group_id))  # every SyncGroup arrived: the wait is over

    def _supports_protocols(self, g: _Group, protocol_type: str, names: list[str]) -> bool:
        """GroupMetadata.supportsProtocols: an Empty group takes any non-empty type and list;
        otherwise the type must match and one protocol be supported by every member."""
        if g.state is EMPTY:
            return bool(protocol_type) and bool(names)
        return (g.protocol_type == protocol_type
                and any(g.count_supporting(p) == len(g.members) for p in names))

    def _select_protocol(self, g: _Group) -> str:
        """GroupMetadata.selectProtocol: of the protocols every member supports, each member
        votes for its most preferred; most votes wins. Kafka breaks ties by hash order; here
        the leader's preference breaks them, so the choice is reproducible."""
        assert g.members and g.leader is not None
        candidates = {p for p in g.members[g.leader].names()
                      if g.count_supporting(p) == len(g.members)}
        assert candidates, "members always share a protocol (checked at every join)"
        votes: dict[str, int] = {}
        for m in g.members.values():
            vote = next(p for p in m.names() if p in candidates)
            votes[vote] = votes.get(vote, 0) + 1
        best = max(votes.values())
        chosen = next(p for p in g.members[g.leader].names() if votes.get(p) == best)
        assert chosen in candidates
        return chosen

    def _reschedule_heartbeat(self, g: _Group, m: _Member, timeout_ms: int, t: int) -> None:
        gid, mid = g.group_id, m.member_id
        self._schedule(("hb", gid, mid), t + timeout_ms,
                       lambda at: self._expire_heartbeat(gid, mid, at))

    def _group_value(self, g: _Group) -> GroupValue:
        assert g.state in (STABLE, EMPTY)
        members: tuple[MemberValue, ...] = ()
        if g.state is STABLE:
            assert g.protocol_name is not None
            members = tuple(MemberValue(
                m.member_id, m.client_id, m.client_host, m.rebalance_timeout_ms,
                m.session_timeout_ms, m.metadata(g.protocol_name), m.assignment or b"")
                for m in g.members.values())
        return GroupValue(g.protocol_type, g.generation, g.protocol_name, g.leader,
                          g.state_ts, members)

    def _store_group(self, g: _Group) -> None:
        self._persist(group_key(self.config.key_prefix, g.group_id),
                      encode_group(self._group_value(g)))

    def _load_group(self, group_id: str, value: GroupValue, t: int) -> None:
        g = self._new_group(group_id, value.state_timestamp_ms)
        g.generation = value.generation
        g.protocol_type = value.protocol_type
        if not value.members:
            return
        assert value.protocol_name is not None, f"group {group_id}: members but no protocol"
        g.protocol_name = value.protocol_name
        g.state = STABLE  # Kafka loads a group with members as Stable, others as Empty
        for mv in value.members:
            m = _Member(mv.member_id, mv.client_id, mv.client_host, mv.rebalance_timeout_ms,
                        mv.session_timeout_ms, value.protocol_type or "",
                        [(value.protocol_name, mv.subscription)], mv.assignment)
            g.members[m.member_id] = m
            self._reschedule_heartbeat(g, m, m.session_timeout_ms, t)
        g.leader = value.leader if value.leader in g.members else next(iter(g.members))

    # ------------------------------------------------------------------ rebalancing

    def _maybe_prepare_rebalance(self, g: _Group, t: int) -> None:
        if g.state in _VALID_PREVIOUS[PREPARING]:
            self._prepare_rebalance(g, t)

    def _prepare_rebalance(self, g: _Group, t: int) -> None:
        """GroupCoordinator.prepareRebalance: cancel the sync phase, wait for joins."""
        if g.state is COMPLETING:
            # Members waiting for an assignment must rejoin instead.
            self._reset_and_propagate(g, E.REBALANCE_IN_PROGRESS, t)
        self._remove_sync_expiration(g)
        initial = g.state is EMPTY
        self._transition(g, PREPARING, t)
        g.initial_rebalance = initial
        g.new_member_added = False
        gid = g.group_id
        timeout = g.rebalance_timeout_ms()
        if initial:
            # InitialDelayedJoin: a new group waits for more members before generation 1.
            delay = self.config.initial_rebalance_delay_ms
            remaining = max(timeout - delay, 0)
            self._schedule(("join", gid), t + delay,
                           lambda at: self._initial_join_expired(gid, delay, remaining, at))
        else:
            self._schedule(("join", gid), t + timeout, lambda at: self._join_expired(gid, at))
            self._maybe_complete_join(g, t)
        assert g.state in (PREPARING, COMPLETING, EMPTY)

    def _initial_join_expired(self, gid: str, delay: int, remaining: int, t: int) -> None:
        g = self._groups.get(gid)
        assert g is not None and g.state is PREPARING, "the join timer dies with the phase"
        if g.new_member_added and remaining != 0:
            g.new_member_added = False
            new_delay = min(self.config.initial_rebalance_delay_ms, remaining)
            new_remaining = max(remaining - delay, 0)
            self._schedule(("join", gid), t + new_delay,
                           lambda at: self._initial_join_expired(gid, new_delay, new_remaining,
                                                                 at))
        else:
            self._complete_join(g, t)

    def _join_expired(self, gid: str, t: int) -> None:
        g = self._groups.get(gid)
        assert g is not None and g.state is PREPARING, "the join timer dies with the phase"
        self._complete_join(g, t)

    def _maybe_complete_join(self, g: _Group, t: int) -> None:
        """DelayedJoin.tryComplete: done once every member has rejoined and no id handed out
        by MEMBER_ID_REQUIRED is outstanding (never early in the initial delay)."""
        if g.state is PREPARING and not g.initial_rebalance and g.all_members_joined():
            self._complete_join(g, t)

    def _complete_join(self, g: _Group, t: int) -> None:
        """GroupCoordinator.onCompleteJoin: drop who did not rejoin, start the next generation
        and answer every parked JoinGroup."""
        assert g.state is PREPARING
        self._cancel(("join", g.group_id))
        generation_before = g.generation
        for m in [m for m in g.members.values() if m.join is None]:
            self._remove(g, m.member_id)
        # maybeElectNewJoinedLeader: a leader that did not rejoin was removed above, and
        # remove() handed leadership to a remaining (so rejoined) member.
        assert g.leader is None or g.members[g.leader].join is not None
        g.generation += 1
        g.pending_sync.clear()
        if not g.members:
            g.protocol_name = None
            self._transition(g, EMPTY, t)
            self._store_group(g)
        else:
            g.protocol_name = self._select_protocol(g)
            self._transition(g, COMPLETING, t)
            assert g.leader is not None
            leader_view = [JoinGroupResponseMember(member_id=m.member_id,
                                                   metadata=m.metadata(g.protocol_name))
                           for m in g.members.values()]
            for m in g.members.values():
                assert m.join is not None
                self._reply(m.join, _join_response(
                    m.join.version, E.NONE, m.member_id, generation=g.generation,
                    protocol_type=g.protocol_type, protocol_name=g.protocol_name,
                    leader=g.leader, members=leader_view if m.member_id == g.leader else None))
                m.join = None
                self._reschedule_heartbeat(g, m, m.session_timeout_ms, t)
                m.is_new = False
                g.pending_sync.add(m.member_id)
            gid, generation = g.group_id, g.generation
            self._schedule(("sync", gid), t + g.rebalance_timeout_ms(),
                           lambda at: self._expire_pending_sync(gid, generation, at))
        assert g.generation == generation_before + 1
        assert all(m.join is None for m in g.members.values())

    def _remove_sync_expiration(self, g: _Group) -> None:
        g.pending_sync.clear()
        self._cancel(("sync", g.group_id))

    def _expire_pending_sync(self, gid: str, generation: int, t: int) -> None:
        """DelayedSync expired: members that never sent SyncGroup are dropped; rebalance."""
        g = self._groups.get(gid)
        if g is None or g.generation != generation or g.state not in (COMPLETING, STABLE):
            return
        if g.pending_sync:
            for member_id in sorted(g.pending_sync):
                self._remove(g, member_id)
            self._prepare_rebalance(g, t)

    def _reset_and_propagate(self, g: _Group, error: int, t: int) -> None:
        assert g.state is COMPLETING
        for m in g.members.values():
            m.assignment = None
        self._propagate(g, error, t)

    def _set_and_propagate(self, g: _Group, assignment: dict[str, bytes], t: int) -> None:
        assert g.state is COMPLETING and set(assignment) == set(g.members)
        for m in g.members.values():
            m.assignment = assignment[m.member_id]
        self._propagate(g, E.NONE, t)

    def _propagate(self, g: _Group, error: int, t: int) -> None:
        """Answer every parked SyncGroup; their sessions restart now (Kafka: a session that
        expired while it waited was ignored, so a new one must be scheduled)."""
        ok = error == E.NONE
        for m in g.members.values():
            if m.sync is not None:
                self._reply(m.sync, SyncGroupResponse(
                    error_code=int(error), assignment=m.assignment or b"",
                    protocol_type=g.protocol_type if ok else None,
                    protocol_name=g.protocol_name if ok else None))
                m.sync = None
                self._reschedule_heartbeat(g, m, m.session_timeout_ms, t)

    def _expire_heartbeat(self, gid: str, mid: str, t: int) -> None:
        """A session (or a new member's join wait, or a handed-out id) ran out."""
        g = self._groups.get(gid)
        if g is None:
            return
        if mid in g.pending:
            self._remove(g, mid)
            self._maybe_complete_join(g, t)
            return
        m = g.members.get(mid)
        if m is None:
            return
        # ClassicGroupMember.hasSatisfiedHeartbeat: a member waiting in JoinGroup or
        # SyncGroup is alive (its session restarts when it is answered), unless it is new.
        if not m.is_new and (m.join is not None or m.sync is not None):
            return
        self._remove_member_and_update(g, m, t)

    def _remove_member_and_update(self, g: _Group, m: _Member, t: int) -> None:
        if m.join is not None:
            # Its JoinGroup is answered so that a client still there retries from scratch.
            self._reply(m.join, _join_error(m.join.version, E.UNKNOWN_MEMBER_ID, ""))
            m.join = None
        self._remove(g, m.member_id)
        if g.state in (STABLE, COMPLETING):
            self._maybe_prepare_rebalance(g, t)
        elif g.state is PREPARING:
            self._maybe_complete_join(g, t)

    # ------------------------------------------------------------------ JoinGroup

    def _join(self, p: _Parked, req: JoinGroupRequest, client_id: str, client_host: str,
              t: int) -> None:
        cfg = self.config
        v = p.version

        def fail(code: int, member_id: str = req.member_id) -> None:
            self._reply(p, _join_error(v, code, member_id))

        if not req.group_id:
            return fail(E.INVALID_GROUP_ID)
        if req.group_instance_id is not None:
            return fail(E.UNSUPPORTED_VERSION)  # static membership is not implemented
        session = req.session_timeout_ms
        if not cfg.min_session_timeout_ms <= session <= cfg.max_session_timeout_ms:
            return fail(E.INVALID_SESSION_TIMEOUT)
        # v0 has no rebalance timeout, and v9's -1 placeholder means "use the session's" (the
        # JSON says so); at least 1 ms, so that a rebalance always lets time pass.
        rebalance = req.rebalance_timeout_ms if v >= 1 and req.rebalance_timeout_ms >= 0 \
            else session
        rebalance = max(1, rebalance)
        size = sum(len(pr.name.encode()) + len(pr.metadata) for pr in req.protocols)
        if size > cfg.max_metadata_bytes:
            return fail(E.POLICY_VIOLATION)
        protocols = [(pr.name, pr.metadata) for pr in req.protocols]
        is_unknown = req.member_id == ""
        g = self._groups.get(req.group_id)
        if g is None:
            # Created by a new member; a member id for a group that does not exist is stale.
            if not is_unknown:
                return fail(E.UNKNOWN_MEMBER_ID)
            if len(self._groups) >= cfg.max_groups:
                return fail(E.POLICY_VIOLATION)
            g = self._new_group(req.group_id, t)
        self._touched.add(g.group_id)
        if not self._accept_joining_member(g, req.member_id):
            # Kafka removes the member: in a full PreparingRebalance group, one that has not
            # rejoined yet (one that has is accepted), or an id handed out earlier.
            if req.member_id in g.members or req.member_id in g.pending:
                self._remove(g, req.member_id)
            fail(E.GROUP_MAX_SIZE_REACHED, "")
        elif is_unknown:
            self._join_new_member(p, req, g, client_id, client_host, rebalance, protocols, t)
        else:
            self._join_existing_member(p, req, g, client_id, client_host, rebalance, protocols,
                                       t)
        if g.state is PREPARING:
            self._maybe_complete_join(g, t)
        self._drop_if_unused(g)

    def _accept_joining_member(self, g: _Group, member_id: str) -> bool:
        """GroupCoordinator.acceptJoiningMember (group.max.size)."""
        limit = self.config.max_group_size
        if g.state in (EMPTY, DEAD):
            return True
        if g.state is PREPARING:
            # Awaiting members count, so the last ones to rejoin an oversized group are cut.
            m = g.members.get(member_id)
            return (m is not None and m.join is not None) or g.num_awaiting_join() < limit
        return member_id in g.members or len(g.members) < limit

    def _join_new_member(self, p: _Parked, req: JoinGroupRequest, g: _Group, client_id: str,
                         client_host: str, rebalance: int, protocols: list[tuple[str, bytes]],
                         t: int) -> None:
        names = [name for name, _ in protocols]
        if not self._supports_protocols(g, req.protocol_type, names):
            self._reply(p, _join_error(p.version, E.INCONSISTENT_GROUP_PROTOCOL, ""))
            return
        new_id = f"{client_id}-{uuid.UUID(int=self._rng.getrandbits(128), version=4)}"
        assert new_id not in g.members and new_id not in g.pending
        if p.version >= 4:
            # KIP-394: hand out an id and have the client rejoin with it, so a client that
            # times out and retries does not leave a ghost member behind.
            if len(g.pending) >= self.config.max_group_size:
                self._reply(p, _join_error(p.version, E.GROUP_MAX_SIZE_REACHED, ""))
                return
            g.pending[new_id] = None
            gid = g.group_id
            self._schedule(("hb", gid, new_id), t + req.session_timeout_ms,
                           lambda at: self._expire_heartbeat(gid, new_id, at))
            self._reply(p, _join_error(p.version, E.MEMBER_ID_REQUIRED, new_id))
        else:
            self._add_member_and_rebalance(p, req, g, new_id, client_id, client_host, rebalance,
                                           protocols, t)

    def _join_existing_member(self, p: _Parked, req: JoinGroupRequest, g: _Group,
                              client_id: str, client_host: str, rebalance: int,
                              protocols: list[tuple[str, bytes]], t: int) -> None:
        mid = req.member_id
        names = [name for name, _ in protocols]
        if not self._supports_protocols(g, req.protocol_type, names):
            self._reply(p, _join_error(p.version, E.INCONSISTENT_GROUP_PROTOCOL, mid))
            return
        if mid in g.pending:
            self._add_member_and_rebalance(p, req, g, mid, client_id, client_host, rebalance,
                                           protocols, t)
            return
        m = g.members.get(mid)
        if m is None:
            self._reply(p, _join_error(p.version, E.UNKNOWN_MEMBER_ID, mid))
            return
        if g.state is PREPARING:
            self._update_member_and_rebalance(p, g, m, protocols, rebalance, req, t)
        elif g.state is COMPLETING:
            if m.protocols == protocols:
                # The same metadata (it missed its JoinGroup answer): the current generation.
                self._reply(p, self._current_join_response(g, m, p.version,
                                                           with_members=mid == g.leader))
            else:
                self._update_member_and_rebalance(p, g, m, protocols, rebalance, req, t)
        elif g.state is STABLE:
            # A leader's JoinGroup always rebalances (it saw metadata change, e.g. new
            # partitions); a follower's only if its metadata changed.
            if mid == g.leader or m.protocols != protocols:
                self._update_member_and_rebalance(p, g, m, protocols, rebalance, req, t)
            else:
                self._reply(p, self._current_join_response(g, m, p.version,
                                                           with_members=False))
        else:
            raise AssertionError(f"a member in an {g.state} group")

    def _current_join_response(self, g: _Group, m: _Member, version: int, *,
                               with_members: bool) -> JoinGroupResponse:
        assert g.state in (COMPLETING, STABLE) and g.protocol_name is not None
        assert g.leader is not None
        members = None
        if with_members:
            members = [JoinGroupResponseMember(member_id=o.member_id,
                                               metadata=o.metadata(g.protocol_name))
                       for o in g.members.values()]
        return _join_response(version, E.NONE, m.member_id, generation=g.generation,
                              protocol_type=g.protocol_type, protocol_name=g.protocol_name,
                              leader=g.leader, members=members)

    def _add_member_and_rebalance(self, p: _Parked, req: JoinGroupRequest, g: _Group,
                                  member_id: str, client_id: str, client_host: str,
                                  rebalance: int, protocols: list[tuple[str, bytes]],
                                  t: int) -> None:
        m = _Member(member_id, client_id, client_host, rebalance, req.session_timeout_ms,
                    req.protocol_type, protocols, join=p, is_new=True)
        if g.state is PREPARING and g.initial_rebalance:
            g.new_member_added = True  # extends the initial delay
        self._add_member(g, m)
        # A new member cannot heartbeat before its JoinGroup is answered, so it gets the new
        # member timeout instead of its session (a client that gave up then disappears).
        self._reschedule_heartbeat(g, m, self.config.new_member_join_timeout_ms, t)
        self._maybe_prepare_rebalance(g, t)

    def _update_member_and_rebalance(self, p: _Parked, g: _Group, m: _Member,
                                     protocols: list[tuple[str, bytes]], rebalance: int,
                                     req: JoinGroupRequest, t: int) -> None:
        m.protocols = protocols
        m.rebalance_timeout_ms = rebalance
        m.session_timeout_ms = req.session_timeout_ms
        if m.join is not None:
            # A second JoinGroup from the same member replaces the first (Kafka drops the
            # first callback and the client times out; here it is told to retry).
            self._reply(m.join, _join_error(m.join.version, E.REBALANCE_IN_PROGRESS,
                                            m.member_id))
        m.join = p
        self._maybe_prepare_rebalance(g, t)

    # ------------------------------------------------------------------ SyncGroup

    def _sync(self, p: _Parked, req: SyncGroupRequest, t: int) -> None:
        def fail(code: int) -> None:
            self._reply(p, SyncGroupResponse(error_code=int(code)))

        if not req.group_id:
            return fail(E.INVALID_GROUP_ID)
        if req.group_instance_id is not None:
            return fail(E.UNSUPPORTED_VERSION)
        if p.version >= 5 and (req.protocol_type is None or req.protocol_name is None):
            return fail(E.INCONSISTENT_GROUP_PROTOCOL)  # mandatory from v5 (KafkaApis)
        g = self._groups.get(req.group_id)
        if g is None or req.member_id not in g.members:
            return fail(E.UNKNOWN_MEMBER_ID)
        if req.generation_id != g.generation:
            return fail(E.ILLEGAL_GENERATION)
        if req.protocol_type is not None and req.protocol_type != g.protocol_type:
            return fail(E.INCONSISTENT_GROUP_PROTOCOL)
        if req.protocol_name is not None and req.protocol_name != g.protocol_name:
            return fail(E.INCONSISTENT_GROUP_PROTOCOL)
        self._touched.add(g.group_id)
        m = g.members[req.member_id]
        if g.state is PREPARING:
            return fail(E.REBALANCE_IN_PROGRESS)
        if g.state is STABLE:
            self._remove_pending_sync(g, m.member_id)
            assert m.assignment is not None
            self._reply(p, SyncGroupResponse(assignment=m.assignment,
                                             protocol_type=g.protocol_type,
                                             protocol_name=g.protocol_name))
            self._reschedule_heartbeat(g, m, m.session_timeout_ms, t)
            return
        assert g.state is COMPLETING, g.state
        if m.sync is not None:
            # Replaced by this one (Kafka overwrites the callback; see _update_member...).
            self._reply(m.sync, SyncGroupResponse(error_code=E.REBALANCE_IN_PROGRESS))
        m.sync = p
        self._remove_pending_sync(g, m.member_id)
        if m.member_id != g.leader:
            return  # a follower waits for the leader's assignment
        given = {a.member_id: a.assignment for a in req.assignments}
        if sum(len(a) for mid, a in given.items() if mid in g.members) \
                > self.config.max_assignment_bytes:
            # As when Kafka fails to store the group: everyone waiting gets the error and the
            # group rebalances.
            self._reset_and_propagate(g, E.POLICY_VIOLATION, t)
            self._maybe_prepare_rebalance(g, t)
            return
        # Members the leader left out get an empty assignment, as in Kafka.
        self._set_and_propagate(g, {mid: given.get(mid, b"") for mid in g.members}, t)
        self._transition(g, STABLE, t)
        self._store_group(g)

    # ------------------------------------------------------------------ Heartbeat, LeaveGroup

    def _heartbeat(self, p: _Parked, req: HeartbeatRequest, t: int) -> None:
        def answer(code: int) -> None:
            self._reply(p, HeartbeatResponse(error_code=int(code)))

        if not req.group_id:
            return answer(E.INVALID_GROUP_ID)
        if req.group_instance_id is not None:
            return answer(E.UNSUPPORTED_VERSION)
        g = self._groups.get(req.group_id)
        if g is None or req.member_id not in g.members:
            return answer(E.UNKNOWN_MEMBER_ID)
        if req.generation_id != g.generation:
            return answer(E.ILLEGAL_GENERATION)
        m = g.members[req.member_id]
        self._touched.add(g.group_id)
        self._reschedule_heartbeat(g, m, m.session_timeout_ms, t)
        # The answer that tells a member to rejoin.
        answer(E.REBALANCE_IN_PROGRESS if g.state is PREPARING else E.NONE)

    def _leave(self, p: _Parked, req: LeaveGroupRequest, t: int) -> None:
        v = p.version
        # LeaveGroupRequest.normalizedData: v0-2 name one member, v3+ a batch.
        leaving: list[tuple[str, str | None]] = [(req.member_id, None)] if v <= 2 else \
            [(mi.member_id, mi.group_instance_id) for mi in req.members]
        if not req.group_id:
            self._reply(p, LeaveGroupResponse(error_code=E.INVALID_GROUP_ID))
            return
        g = self._groups.get(req.group_id)
        errors: list[int] = []
        for member_id, instance_id in leaving:
            if g is None or member_id == "":
                # No such group, or removal by instance id alone (there are no static members).
                errors.append(E.UNKNOWN_MEMBER_ID)
            elif member_id in g.pending:
                self._remove(g, member_id)
                self._maybe_complete_join(g, t)
                errors.append(E.NONE)
            elif instance_id is not None:
                errors.append(E.UNKNOWN_MEMBER_ID)  # validateMember: no member has that id
            elif member_id in g.members:
                self._remove_member_and_update(g, g.members[member_id], t)
                errors.append(E.NONE)
            else:
                errors.append(E.UNKNOWN_MEMBER_ID)
        if v <= 2:
            # LeaveGroupResponse for v0-2: the one member's error is the top-level error.
            self._reply(p, LeaveGroupResponse(error_code=errors[0]))
        else:
            self._reply(p, LeaveGroupResponse(members=[
                MemberResponse(member_id=mid, group_instance_id=iid, error_code=code)
                for (mid, iid), code in zip(leaving, errors, strict=True)]))

    # ------------------------------------------------------------------ offsets

    def _commit(self, p: _Parked, req: OffsetCommitRequest, t: int,
                partition_exists: Callable[[str, int], bool] | None) -> None:
        v = p.version
        cfg = self.config
        # v0 carries neither a generation nor a member id: a standalone commit.
        generation = req.generation_id_or_member_epoch if v >= 1 else -1
        member_id = req.member_id if v >= 1 else ""
        codes: list[list[int]] = [[E.NONE] * len(topic.partitions) for topic in req.topics]

        def respond() -> None:
            self._reply(p, OffsetCommitResponse(topics=[
                OffsetCommitResponseTopic(name=topic.name, partitions=[
                    OffsetCommitResponsePartition(partition_index=part.partition_index,
                                                  error_code=code)
                    for part, code in zip(topic.partitions, tcodes, strict=True)])
                for topic, tcodes in zip(req.topics, codes, strict=True)]))

        wanted = []  # (topic index, partition index) of the partitions to commit
        for ti, topic in enumerate(req.topics):
            for pi, part in enumerate(topic.partitions):
                if partition_exists is not None \
                        and not partition_exists(topic.name, part.partition_index):
                    codes[ti][pi] = E.UNKNOWN_TOPIC_OR_PARTITION
                else:
                    wanted.append((ti, pi))

        def fail(code: int) -> None:
            for ti, pi in wanted:
                codes[ti][pi] = code
            respond()

        if not wanted:
            return respond()
        if req.group_instance_id is not None:
            return fail(E.UNSUPPORTED_VERSION)
        g = self._groups.get(req.group_id)
        if g is None:
            if generation >= 0:
                # From v9 Kafka says so; before, the commit is from a generation long gone.
                return fail(E.GROUP_ID_NOT_FOUND if v >= 9 else E.ILLEGAL_GENERATION)
            if len(self._groups) >= cfg.max_groups:
                return fail(E.POLICY_VIOLATION)
            g = self._new_group(req.group_id, t)  # a "simple" group: offsets only
        self._touched.add(g.group_id)
        error = self._validate_offset_commit(g, generation, member_id)
        if error != E.NONE:
            self._drop_if_unused(g)
            return fail(error)
        if g.state in (STABLE, PREPARING) and member_id in g.members:
            # A commit keeps the session, as a heartbeat would.
            m = g.members[member_id]
            self._reschedule_heartbeat(g, m, m.session_timeout_ms, t)
        # OffsetAndMetadata.fromRequest: v1's commit timestamp, v2-4's retention time.
        expire = t + req.retention_time_ms if 2 <= v <= 4 and req.retention_time_ms != -1 \
            else None
        for ti, pi in wanted:
            topic = req.topics[ti]
            part = topic.partitions[pi]
            metadata = part.committed_metadata if part.committed_metadata is not None else ""
            key = (topic.name, part.partition_index)
            if len(metadata) > cfg.max_offset_metadata_bytes:
                codes[ti][pi] = E.OFFSET_METADATA_TOO_LARGE
                continue
            if key not in g.offsets and len(g.offsets) >= cfg.max_offsets_per_group:
                codes[ti][pi] = E.POLICY_VIOLATION
                continue
            commit_ts = part.commit_timestamp if v == 1 and part.commit_timestamp != -1 else t
            value = OffsetValue(part.committed_offset,
                                part.committed_leader_epoch if v >= 6 else -1,
                                metadata, commit_ts, expire)
            g.offsets[key] = value
            self._persist(offset_key(cfg.key_prefix, g.group_id, key[0], key[1]),
                          encode_offset(value))
        self._drop_if_unused(g)
        respond()

    def _validate_offset_commit(self, g: _Group, generation: int, member_id: str) -> int:
        """ClassicGroup.validateOffsetCommit."""
        if g.state is DEAD:
            return E.COORDINATOR_NOT_AVAILABLE
        if generation < 0 and g.state is EMPTY:
            # No group management (a standalone consumer, the admin client): allowed while
            # the group has no members.
            return E.NONE
        if generation >= 0 or member_id != "":
            if member_id not in g.members:
                return E.UNKNOWN_MEMBER_ID
            if generation != g.generation:
                return E.ILLEGAL_GENERATION
        elif g.state is not EMPTY:
            return E.UNKNOWN_MEMBER_ID  # only members commit to a group with members
        if g.state is COMPLETING:
            # It has the new generation but no assignment yet: let it finish the sync.
            return E.REBALANCE_IN_PROGRESS
        return E.NONE

    def _fetch(self, p: _Parked, req: OffsetFetchRequest) -> None:
        v = p.version
        if v >= 8:
            groups = []
            for rg in req.groups:
                wanted = None if rg.topics is None else \
                    [(tp.name, tp.partition_indexes) for tp in rg.topics]
                groups.append(OffsetFetchResponseGroup(group_id=rg.group_id, topics=[
                    OffsetFetchResponseTopics(name=name, partitions=[
                        OffsetFetchResponsePartitions(
                            partition_index=pi, committed_offset=o, committed_leader_epoch=ep,
                            metadata=md, error_code=E.NONE) for pi, o, ep, md in parts])
                    for name, parts in self._committed(rg.group_id, wanted)]))
            self._reply(p, OffsetFetchResponse(groups=groups))
            return
        wanted = None if req.topics is None else \
            [(tp.name, tp.partition_indexes) for tp in req.topics]
        self._reply(p, OffsetFetchResponse(topics=[
            OffsetFetchResponseTopic(name=name, partitions=[
                OffsetFetchResponsePartition(
                    partition_index=pi, committed_offset=o, committed_leader_epoch=ep,
                    metadata=md, error_code=E.NONE) for pi, o, ep, md in parts])
            for name, parts in self._committed(req.group_id, wanted)]))

    def _committed(self, group_id: str, wanted: list[tuple[str, list[int]]] | None
                   ) -> list[tuple[str, list[tuple[int, int, int, str]]]]:
        """GroupMetadataManager.getOffsets, by topic: every committed offset of the group
        (wanted None), or the listed partitions with -1 where nothing is committed."""
        g = self._groups.get(group_id)
        offsets = g.offsets if g is not None else {}
        if wanted is None:
            by_topic: dict[str, list[tuple[int, int, int, str]]] = {}
            for (topic, partition), o in sorted(offsets.items()):
                by_topic.setdefault(topic, []).append(
                    (partition, o.offset, o.leader_epoch, o.metadata))
            return list(by_topic.items())
        result = []
        for topic, partitions in wanted:
            rows = []
            for partition in partitions:
                got = offsets.get((topic, partition))
                rows.append((partition, -1, -1, "") if got is None else
                            (partition, got.offset, got.leader_epoch, got.metadata))
            result.append((topic, rows))
        return result

    def _cleanup(self, t: int) -> None:
        """The offset-retention sweep (Kafka's cleanupGroupMetadata, every check interval):
        expire offsets, then delete groups left Empty with no offsets."""
        cfg = self.config
        # A sweep that fell due during a gap between calls runs once, at the present, and the
        # next one an interval later (not once per interval missed).
        assert self._now is not None
        t = max(t, self._now)
        self._schedule(("cleanup",), t + cfg.offsets_retention_check_interval_ms, self._cleanup)
        for g in list(self._groups.values()):
            if g.protocol_type is not None and g.state is EMPTY:
                base: int | None = g.state_ts  # retention counts from when it became Empty
            elif g.protocol_type is None and not g.members:
                base = None  # a standalone consumer's: from each commit
            else:
                continue  # an active group keeps its offsets
            for key, o in list(g.offsets.items()):
                if o.expire_timestamp_ms is not None:
                    expired = t >= o.expire_timestamp_ms
                else:
                    since = base if base is not None else o.commit_timestamp_ms
                    expired = t - since >= cfg.offsets_retention_ms
                if expired:
                    del g.offsets[key]
                    self._persist(offset_key(cfg.key_prefix, g.group_id, key[0], key[1]), None)
            if g.state is EMPTY and not g.offsets and not g.pending:
                self._transition(g, DEAD, t)  # and gone: Kafka tombstones its metadata record
                del self._groups[g.group_id]
                self._cancel(("join", g.group_id))
                self._persist(group_key(cfg.key_prefix, g.group_id), None)

    # ------------------------------------------------------------------ invariants

    def _check_group(self, g: _Group) -> None:
        gid = g.group_id
        assert self._groups.get(gid) is g and g.state is not DEAD
        assert g.generation >= 0
        assert (g.leader is None) == (not g.members), f"{gid}: leader {g.leader!r}"
        assert g.leader is None or g.leader in g.members
        assert not set(g.pending) & set(g.members)
        assert g.pending_sync <= set(g.members)
        has_join_timer = ("join", gid) in self._timers
        assert has_join_timer == (g.state is PREPARING), f"{gid}: {g.state} join timer"
        if g.pending_sync:
            assert ("sync", gid) in self._timers
            assert g.state in (COMPLETING, STABLE)
        for mid in g.pending:
            assert ("hb", gid, mid) in self._timers
        for m in g.members.values():
            assert m.protocol_type == g.protocol_type
            assert m.rebalance_timeout_ms >= 1
            # A member is watched by a timer unless it waits in JoinGroup or SyncGroup.
            assert ("hb", gid, m.member_id) in self._timers or m.join or m.sync
            assert m.join is None or g.state is PREPARING
            assert m.sync is None or g.state is COMPLETING
        if g.state is EMPTY:
            assert not g.members and g.protocol_name is None
        if g.state in (COMPLETING, STABLE):
            assert g.members and g.protocol_name is not None
            assert all(g.protocol_name in m.names() for m in g.members.values())
        if g.state is STABLE:
            assert all(m.assignment is not None for m in g.members.values())
