"""Failover patterns for a user's own state. This package holds the master-slave pattern:
primary-backup replication of a user's state machine with promotion through Shoal's store and
fencing tokens (docs/failover.md).

member.py    a member process's roles, promotion rule, replication and port
storage.py   the durable log and snapshot of one member
protocol.py  bounded msgpack frames, the HMAC handshake, message checks
fencing.py   the service's keys in the store, Token, fenced_put
client.py    MemberConn and ServiceClient (find the primary, write, read with staleness)
machine.py   the StateMachine protocol and the examples (KVMap, Counter)"""

from .client import MemberConn, OutcomeUnknown, ServiceClient
from .fencing import FencedOut, Keys, Token, fenced_put
from .machine import APPS, Counter, KVMap, StateMachine
from .member import MODES, Member, MemberConfig, ServiceError
from .protocol import Denied, FrameTooLarge, ProtocolError, Secret
from .storage import Storage, StorageError

__all__ = [
    "APPS", "Counter", "Denied", "FencedOut", "FrameTooLarge", "KVMap", "Keys", "MODES",
    "Member", "MemberConfig", "MemberConn", "OutcomeUnknown", "ProtocolError", "Secret",
    "ServiceClient", "ServiceError", "StateMachine", "Storage", "StorageError", "Token",
    "fenced_put",
]
