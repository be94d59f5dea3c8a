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

    def empty(self) -> bool:
        return not (
            self.soft_state or self.hard_state or self.entries or self.snapshot
            or self.committed or self.messages or self.read_states
        )


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
