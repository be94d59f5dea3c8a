"""Shoal's RPC: a sans-I/O framed codec (protocol.py), one multiplexed pipelined connection
per pair of processes (client.py), a server running each call as a task (server.py), and
deadlines that travel across hops (deadline.py). See docs/components.md ("RPC")."""

from .client import ClientConnection, Pool, connect
from .errors import (
    BadRequest,
    Cancelled,
    ConnectionLost,
    DeadlineExceeded,
    Internal,
    NotConnected,
    RemoteError,
    RequestTooLarge,
    RpcError,
    Unauthenticated,
    Unavailable,
    UnknownMethod,
)
from .server import Handler, RpcServer

__all__ = [
    "BadRequest", "Cancelled", "ClientConnection", "ConnectionLost", "DeadlineExceeded",
    "Handler", "Internal", "NotConnected", "Pool", "RemoteError", "RequestTooLarge", "RpcError",
    "RpcServer", "Unauthenticated", "Unavailable", "UnknownMethod", "connect",
]
