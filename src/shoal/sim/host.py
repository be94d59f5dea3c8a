"""One simulated node process: the production `Replica` over a simulated disk and clock.

The host is to the simulator what `server/node.py` is to production, minus the sockets: it
queues inputs while it is busy (an fsync in flight) or paused, hands them to the replica one by
one, and runs the replica's Ready loop. Its clock is a monotonic clock of its own: an arbitrary
offset from every other host's, advancing by one tick's worth per tick, so a host whose ticks
come slower (drift > 1) also reads a slower clock, as a real machine would."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

from ..consensus.engine import Engine
from ..consensus.messages import NodeId
from ..kv.requests import Command
from ..replica import Replica
from .disk import Disk


@dataclass(frozen=True, slots=True)
class Tick:
    pass


@dataclass(frozen=True, slots=True)
class Step:
    msg: Any


@dataclass(frozen=True, slots=True)
class Ask:
    """A client's request reaching this host: a write (`cmd`), or a read of `key` if `cmd` is
    None. `attempt` names the client attempt it answers."""

    attempt: int
    cmd: Command | None = None
    key: bytes = b""


@dataclass(frozen=True, slots=True)
class Change:
    """The world's membership nemesis asking this host's replica for a change."""

    op: str
    node: NodeId
    spec: str | None
    job: int


@dataclass(frozen=True, slots=True)
class PeerLost:
    """A peer's process died and its connection to this host closed (the FIN its kernel
    sends): what server/node.py hears from the transport."""

    peer: NodeId


Input = Tick | Step | Ask | Change | PeerLost

INBOX_LIMIT = 5000  # a paused process's socket buffers fill up; beyond this, input is lost


@dataclass(eq=False)
class Host:
    id: NodeId
    replica: Replica
    disk: Disk = field(default_factory=Disk)
    up: bool = True
    paused: bool = False
    busy: bool = False  # waiting for an fsync
    life: int = 0
    drift: float = 1.0  # true time per tick, relative to the nominal tick
    clock_ms: int = 0  # this host's monotonic clock
    inbox: deque[Input] = field(default_factory=deque)
    asks: dict[int, Ask] = field(default_factory=dict)  # replica token -> the ask it answers
    changes: dict[int, int] = field(default_factory=dict)  # replica token -> membership job
    # peer -> (when its last keep-alive arrived, {group: term} it claimed to lead then)
    claims: dict[NodeId, tuple[int, dict[int, int]]] = field(default_factory=dict)

    @property
    def engine(self) -> Engine:
        return self.replica.engine

    @property
    def applied(self) -> int:
        return self.replica.applied

    def reset(self) -> None:
        """A crash: everything in memory is gone."""
        self.up, self.busy, self.paused = False, False, False
        self.life += 1
        self.inbox.clear()
        self.asks.clear()
        self.changes.clear()
