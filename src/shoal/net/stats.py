"""Counters for the metrics endpoint. Plain values; `Transport.stats()` hands out copies."""

from __future__ import annotations

from dataclasses import dataclass, field

from shoal.consensus.messages import NodeId


@dataclass(slots=True)
class PeerStats:
    sent_frames: int = 0  # written to the peer's socket
    sent_bytes: int = 0
    writes: int = 0  # socket writes; sent_frames / writes is the coalescing ratio
    received_frames: int = 0  # decoded from the peer (before inbound faults)
    received_bytes: int = 0
    dropped_frames: int = 0  # refused because the peer's queue was full
    dropped_bytes: int = 0
    fault_dropped: int = 0  # dropped by the FaultPlan, either direction
    connects: int = 0  # outbound connections established (handshake done)
    reconnects: int = 0  # of those, the ones after the first
    queue_depth: int = 0  # messages waiting, including those held by a fault delay
    queue_bytes: int = 0
    connected: bool = False


@dataclass(slots=True)
class NetStats:
    peers: dict[NodeId, PeerStats] = field(default_factory=dict)
    rejected_connections: int = 0  # inbound connections closed for a protocol error
    unroutable: int = 0  # sends to a node that is not a peer
    strangers: dict[NodeId, PeerStats] = field(default_factory=dict)  # heard, never dialed
