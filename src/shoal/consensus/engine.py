"""The interface every consensus engine (Raft, Multi-Paxos) offers its driver.

The simulator and the node runtime are written against this protocol only, so a second
engine is driven, persisted and verified exactly like the first."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Protocol

from .messages import ConfState, Durable, NodeId, Ready, Snapshot


@dataclass(frozen=True, slots=True)
class Status:
    id: NodeId
    role: str  # "leader", "follower", "candidate", "pre-candidate", "learner"
    term: int  # Raft term, or Paxos ballot round
    leader: NodeId
    commit: int
    applied: int
    last_index: int
    conf: ConfState
    progress: dict[NodeId, int] = field(default_factory=dict)  # leader only: match index


class Engine(Protocol):
    id: NodeId

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

    def compact(self, index: int, data: bytes) -> Snapshot:
        """The state machine as of applied `index` is `data`: drop the log up to it and
        return the snapshot, which the driver persists atomically."""

    def has_ready(self) -> bool: ...

    def ready(self) -> Ready: ...

    def advance(self, rd: Ready) -> None: ...

    def status(self) -> Status: ...


class EngineFactory(Protocol):
    def __call__(
        self, id: NodeId, peers: ConfState, rng: random.Random, durable: Durable | None
    ) -> Engine: ...
