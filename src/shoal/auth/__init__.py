"""Who may do what, on every port: users, roles with key-range permissions, tokens, and the
reserved keyspace no client reaches.

One model serves Shoal's client port and etcd's API alike (docs/security.md). The auth state is
replicated like everything else, in one reserved key of the store; the reserved keyspace
(`RESERVED`) also holds the group directory, and no request from any client reads, writes,
compares or watches it. Pure: no I/O, nothing here knows about sockets or the node."""

from .model import (
    AUTH_KEY,
    INVALID_TOKEN,
    PERMISSION_DENIED,
    READ,
    READWRITE,
    USER_EMPTY,
    WRITE,
    AuthError,
    AuthState,
    AuthView,
    check_password,
    hash_password,
)
from .reserved import (
    RESERVED_END,
    RESERVED_START,
    guard,
    hidden_counter,
    is_reserved,
    visible_events,
)

__all__ = [
    "AUTH_KEY", "INVALID_TOKEN", "PERMISSION_DENIED", "READ", "READWRITE", "RESERVED_END",
    "RESERVED_START", "USER_EMPTY", "WRITE", "AuthError", "AuthState", "AuthView",
    "check_password", "guard", "hash_password", "hidden_counter", "is_reserved", "visible_events",
]
