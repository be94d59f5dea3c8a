"""The interface every consensus engine (Raft, Multi-Paxos) offers its driver.

The simulator and the node runtime are written against this protocol only, so a second
engine is driven, persisted and verified exactly like the first. Both engines get
`has_ready`, `ready` and `advance` from one place, `RawNode` (rawnode.py), so the Ready
contract (messages.py) means the same for both."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from .messages import ConfState, NodeId, Ready, Snapshot


@dataclass(frozen=True, slots=True)
class Status:
    id: NodeId
    role: str  # "leader", "follower", "candidate", "pre-candidate" (a learner is a follower)
    term: int  # Raft term, or Paxos ballot round
    leader: NodeId
    commit: int
    applied: int
    last_index: int
    conf: ConfState
    progress: dict[NodeId, int] = field(default_factory=dict)  # leader only: match index
    recovering: bool = False  # Raft: catching up after losing log entries; votes for no one


class Engine(Protocol):
    id: NodeId

    # Cheap reads (O(1), no allocation), for drivers that need one of them and not a whole
    # `status()`. Each equals the field of the same name in `status()`.
    @property
    def term(self) -> int:
        """Raft: the current term. Multi-Paxos: the round of the promised ballot (its
        HardState.term holds the whole ballot). Never decreases."""

    @property
    def role(self) -> str:
        """"leader", "follower", "candidate", or with Raft's pre-vote "pre-candidate"; a
        learner is a "follower". A Ready's `soft_state` reports each change of it."""

    @property
    def leader(self) -> NodeId:
        """The leader this node knows of (itself when leading), NONE when it knows none."""

    def tick(self) -> None:
        """One unit of logical time has passed."""

    def step(self, msg: object) -> None:
        """A message from a peer arrived. Bad messages raise RemoteProtocolError."""

    def propose(self, data: bytes) -> None:
        """Append a command; raises NotLeader / ProposalDropped when it cannot."""

    def propose_conf_change(self, change: bytes) -> None:
        """Propose an encoded membership change."""

    def read_index(self, context: bytes) -> None:
        """Ask for a linearizable read point; answered later as a ReadState in a Ready."""

    def transfer_leadership(self, to: NodeId) -> None:
        """Hand leadership to `to` (graceful shutdown)."""

    def forget_leader(self) -> None:
        """The host has seen the leader's process go (its connection closed): a follower
        stops counting on it and stands for election within a random part of one election
        timeout, not a whole one. Timing only: no vote is granted that would not be."""

    def compact(self, index: int, data: bytes) -> Snapshot:
        """The state machine as of applied `index` is `data`: drop the log up to it and
        return the snapshot, which the driver persists atomically."""

    def has_ready(self) -> bool:
        """True exactly when `ready()` may be called now and would hand out work. False
        while a Ready is outstanding; never raises."""

    def ready(self) -> Ready:
        """The next batch of work. Until it is handed back to `advance`, every input above
        (and `ready` itself) raises LocalProtocolError."""

    def advance(self, rd: Ready) -> None:
        """`rd` has been carried out; it must be the very object `ready()` returned."""

    def status(self) -> Status: ...
