"""Values that cross the boundary of a consensus core: log entries, durable state,
snapshots and peer messages. Plain frozen dataclasses so the simulator can copy,
reorder and duplicate them freely, and the transport can encode them."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum

NodeId = int
NONE: NodeId = 0  # "no node": node ids start at 1


class EntryKind(IntEnum):
    NORMAL = 0  # application command (empty data = the leader's no-op)
    CONFIG = 1  # membership change; data is an encoded ConfChange


@dataclass(frozen=True, slots=True)
class Entry:
    term: int
    index: int
    kind: EntryKind = EntryKind.NORMAL
    data: bytes = b""

    def size(self) -> int:
        return len(self.data) + 24


@dataclass(frozen=True, slots=True)
class HardState:
    """What must be on stable storage before any message that depends on it leaves."""

    term: int = 0
    vote: NodeId = NONE
    commit: int = 0
    # Raft only. `epoch` counts the times this node's log lost entries it may have
    # acknowledged (a `--repair` cut); `recovering` is True from such a loss until the node
    # holds everything its leader had committed: meanwhile it does not vote, and the leader
    # does not count it toward a commit or a read.
    epoch: int = 0
    recovering: bool = False


@dataclass(frozen=True, slots=True)
class ConfState:
    """A configuration. While `outgoing` is non-empty the cluster is in joint consensus:
    decisions need a majority of `voters` AND a majority of `outgoing`."""

    voters: frozenset[NodeId] = frozenset()
    outgoing: frozenset[NodeId] = frozenset()
    learners: frozenset[NodeId] = frozenset()

    def members(self) -> frozenset[NodeId]:
        return self.voters | self.outgoing | self.learners

    @property
    def joint(self) -> bool:
        return bool(self.outgoing)


@dataclass(frozen=True, slots=True)
class SnapshotMeta:
    index: int
    term: int
    conf: ConfState


@dataclass(frozen=True, slots=True)
class Snapshot:
    meta: SnapshotMeta
    data: bytes  # the state machine's own encoding, opaque to the core


@dataclass(frozen=True, slots=True)
class ReadState:
    """A linearizable read may be served once the local state machine has applied `index`."""

    context: bytes
    index: int


@dataclass(frozen=True, slots=True)
class SoftState:
    leader: NodeId
    role: str


@dataclass(slots=True)
class Ready:
    """One batch of work for the driver. The contract, in order:

    1. persist `snapshot`, then `entries` (appending; an entry at an index that is already
       stored replaces it and everything after), then `hard_state`, and sync if `must_sync`;
    2. only then send `messages` — votes, acknowledgements and terms in them promise state
       that must already be durable;
    3. apply `snapshot` (if any) and then `committed` to the state machine, in order;
    4. serve `read_states` once the state machine has applied their index;
    5. call `advance(ready)` on the core with this very object.
    """

    soft_state: SoftState | None = None
    hard_state: HardState | None = None
    entries: list[Entry] = field(default_factory=list)
    snapshot: Snapshot | None = None
    committed: list[Entry] = field(default_factory=list)
    messages: list[object] = field(default_factory=list)
    read_states: list[ReadState] = field(default_factory=list)
    must_sync: bool = False


@dataclass(frozen=True, slots=True)
class Durable:
    """What a restarting node hands its core: everything the driver persisted."""

    hard_state: HardState
    snapshot: Snapshot | None
    entries: tuple[Entry, ...]  # contiguous, starting right after the snapshot


class ConsensusError(Exception):
    """Base of errors a core reports to its driver."""


class NotLeader(ConsensusError):
    """This node cannot take the request; `leader` is the node that can (NONE if unknown)."""

    def __init__(self, leader: NodeId):
        super().__init__(f"not leader, leader is {leader}" if leader else "not leader, no leader known")
        self.leader = leader


class ProposalDropped(ConsensusError):
    """The request was refused for a reason that may pass (transfer in progress, queue full)."""


class LocalProtocolError(ConsensusError):
    """The driver used the core wrongly (h11's split: our misuse vs a peer's)."""


class RemoteProtocolError(ConsensusError):
    """A peer sent something no correct peer would send."""


class MsgType(IntEnum):
    PROP = 1  # follower -> leader: forwarded proposal
    APP = 2  # AppendEntries
    APP_RESP = 3
    VOTE = 4  # RequestVote
    VOTE_RESP = 5
    PRE_VOTE = 6  # would you vote for me at term+1? (changes no state)
    PRE_VOTE_RESP = 7
    HEARTBEAT = 8
    HEARTBEAT_RESP = 9
    SNAP = 10  # one chunk of InstallSnapshot
    SNAP_RESP = 11
    TIMEOUT_NOW = 12  # leadership transfer: campaign now
    READ_INDEX = 13  # follower -> leader: forwarded linearizable read
    READ_INDEX_RESP = 14


@dataclass(frozen=True, slots=True)
class Message:
    """A Raft peer message (etcd's raftpb.Message, trimmed to what we use)."""

    type: MsgType
    src: NodeId
    dst: NodeId
    term: int = 0  # 0 only on forwarded PROP / READ_INDEX, which carry no term
    log_term: int = 0  # APP: term of entry `index`; reject: term at the hint
    index: int = 0  # APP: index before `entries`; APP_RESP: last match / rejected index
    entries: tuple[Entry, ...] = ()
    commit: int = 0
    reject: bool = False
    reject_hint: int = 0
    context: bytes = b""  # READ_INDEX*: the caller's read context; VOTE: b"transfer"
    read_round: int = 0  # HEARTBEAT*: ReadIndex round being confirmed
    snapshot: SnapshotMeta | None = None  # SNAP / SNAP_RESP
    offset: int = 0  # SNAP: where `chunk` starts; SNAP_RESP: bytes received so far
    chunk: bytes = b""
    done: bool = False  # SNAP: last chunk
    # *_RESP: the sender's log epoch and whether it is recovering (HardState). APP: the
    # leader's record of both for the receiver, so a recovering follower knows the leader
    # has seen it as recovering and its `commit` covers everything it may have acknowledged.
    epoch: int = 0
    recovering: bool = False

    def size(self) -> int:
        return 64 + len(self.chunk) + len(self.context) + sum(e.size() for e in self.entries)
