"""etcd's gRPC errors (api/v3rpc/rpctypes/error.go): status codes and messages, exactly, since
etcd clients match on the message text. And the mapping from Shoal's errors to them."""

from __future__ import annotations

import grpc

from ..auth import AuthError
from ..kv import errors as kv
from ..server.node import NodeError


class EtcdError(Exception):
    """An error to send as a gRPC status: `code` and etcd's exact `message`."""

    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(message)
        self.code, self.message = code, message


C = grpc.StatusCode

EMPTY_KEY = EtcdError(C.INVALID_ARGUMENT, "etcdserver: key is not provided")
KEY_NOT_FOUND = EtcdError(C.INVALID_ARGUMENT, "etcdserver: key not found")
VALUE_PROVIDED = EtcdError(C.INVALID_ARGUMENT, "etcdserver: value is provided")
LEASE_PROVIDED = EtcdError(C.INVALID_ARGUMENT, "etcdserver: lease is provided")
TOO_MANY_OPS = EtcdError(C.INVALID_ARGUMENT, "etcdserver: too many operations in txn request")
DUPLICATE_KEY = EtcdError(C.INVALID_ARGUMENT, "etcdserver: duplicate key given in txn request")
COMPACTED = EtcdError(C.OUT_OF_RANGE, "etcdserver: mvcc: required revision has been compacted")
FUTURE_REV = EtcdError(C.OUT_OF_RANGE, "etcdserver: mvcc: required revision is a future revision")
NO_SPACE = EtcdError(C.RESOURCE_EXHAUSTED, "etcdserver: mvcc: database space exceeded")
LEASE_NOT_FOUND = EtcdError(C.NOT_FOUND, "etcdserver: requested lease not found")
LEASE_EXIST = EtcdError(C.FAILED_PRECONDITION, "etcdserver: lease already exists")
LEASE_TTL_TOO_LARGE = EtcdError(C.OUT_OF_RANGE, "etcdserver: too large lease TTL")
MEMBER_EXIST = EtcdError(C.FAILED_PRECONDITION, "etcdserver: member ID already exist")
PEER_URL_EXIST = EtcdError(C.FAILED_PRECONDITION, "etcdserver: Peer URLs already exists")
MEMBER_BAD_URLS = EtcdError(C.INVALID_ARGUMENT, "etcdserver: given member URLs are invalid")
MEMBER_NOT_FOUND = EtcdError(C.NOT_FOUND, "etcdserver: member not found")
MEMBER_NOT_LEARNER = EtcdError(C.FAILED_PRECONDITION, "etcdserver: can only promote a learner member")
LEARNER_NOT_READY = EtcdError(
    C.FAILED_PRECONDITION,
    "etcdserver: can only promote a learner member which is in sync with leader")
REQUEST_TOO_LARGE = EtcdError(C.INVALID_ARGUMENT, "etcdserver: request is too large")
TOO_MANY_REQUESTS = EtcdError(C.RESOURCE_EXHAUSTED, "etcdserver: too many requests")
ROOT_USER_NOT_EXIST = EtcdError(C.FAILED_PRECONDITION, "etcdserver: root user does not exist")
ROOT_ROLE_NOT_EXIST = EtcdError(C.FAILED_PRECONDITION, "etcdserver: root user does not have root role")
USER_ALREADY_EXIST = EtcdError(C.FAILED_PRECONDITION, "etcdserver: user name already exists")
USER_EMPTY = EtcdError(C.INVALID_ARGUMENT, "etcdserver: user name is empty")
USER_NOT_FOUND = EtcdError(C.FAILED_PRECONDITION, "etcdserver: user name not found")
ROLE_ALREADY_EXIST = EtcdError(C.FAILED_PRECONDITION, "etcdserver: role name already exists")
ROLE_NOT_FOUND = EtcdError(C.FAILED_PRECONDITION, "etcdserver: role name not found")
ROLE_EMPTY = EtcdError(C.INVALID_ARGUMENT, "etcdserver: role name is empty")
AUTH_FAILED = EtcdError(C.INVALID_ARGUMENT,
                        "etcdserver: authentication failed, invalid user ID or password")
PERMISSION_DENIED = EtcdError(C.PERMISSION_DENIED, "etcdserver: permission denied")
ROLE_NOT_GRANTED = EtcdError(C.FAILED_PRECONDITION, "etcdserver: role is not granted to the user")
PERMISSION_NOT_GRANTED = EtcdError(C.FAILED_PRECONDITION,
                                   "etcdserver: permission is not granted to the role")
AUTH_NOT_ENABLED = EtcdError(C.FAILED_PRECONDITION, "etcdserver: authentication is not enabled")
INVALID_AUTH_TOKEN = EtcdError(C.UNAUTHENTICATED, "etcdserver: invalid auth token")
INVALID_AUTH_MGMT = EtcdError(C.INVALID_ARGUMENT, "etcdserver: invalid auth management")
NO_LEADER = EtcdError(C.UNAVAILABLE, "etcdserver: no leader")
NOT_LEADER = EtcdError(C.FAILED_PRECONDITION, "etcdserver: not leader")
LEADER_CHANGED = EtcdError(C.UNAVAILABLE, "etcdserver: leader changed")
STOPPED = EtcdError(C.UNAVAILABLE, "etcdserver: server stopped")
TIMEOUT = EtcdError(C.UNAVAILABLE, "etcdserver: request timed out")
BAD_LEADER_TRANSFEREE = EtcdError(C.FAILED_PRECONDITION, "etcdserver: bad leader transferee")
# the concurrency services' own errors (v3lock / v3election)
ELECTION_NOT_LEADER = EtcdError(C.FAILED_PRECONDITION, "election: not leader")
ELECTION_NO_LEADER = EtcdError(C.NOT_FOUND, "election: no leader")
MISSING_LEADER_KEY = EtcdError(C.INVALID_ARGUMENT, "election: missing leader key")
EMPTY_LOCK_NAME = EtcdError(C.INVALID_ARGUMENT, "lock: empty name")
SESSION_EXPIRED = EtcdError(C.FAILED_PRECONDITION, "concurrency: session expired")

_NODE_CODES = {
    "user_empty": USER_EMPTY,
    "invalid_auth_token": INVALID_AUTH_TOKEN,
    "permission_denied": PERMISSION_DENIED,
    "auth_not_enabled": AUTH_NOT_ENABLED,
    "auth_failed": AUTH_FAILED,
    "not_leader": NOT_LEADER,
    "no_leader": NO_LEADER,
    "too_many_requests": TOO_MANY_REQUESTS,
    "timeout": TIMEOUT,
    "unavailable": STOPPED,
    "request_too_large": REQUEST_TOO_LARGE,
}


def from_exception(exc: BaseException) -> EtcdError:
    """The etcd error for anything a Shoal layer raised; a store error keeps etcd's message."""
    if isinstance(exc, EtcdError):
        return exc
    if isinstance(exc, AuthError):
        return _NODE_CODES[exc.code]
    if isinstance(exc, NodeError):
        if exc.details.get("cause") == "storage":  # this member's disk refuses: say so
            return EtcdError(C.UNAVAILABLE, f"etcdserver: {exc}")
        mapped = _NODE_CODES.get(exc.code)
        if mapped is not None:
            return mapped
        return EtcdError(C.INVALID_ARGUMENT, f"etcdserver: {exc}")
    match exc:
        case kv.ErrCompacted():
            return COMPACTED
        case kv.ErrFutureRev():
            return FUTURE_REV
        case kv.ErrLeaseNotFound():
            return LEASE_NOT_FOUND
        case kv.ErrLeaseExists():
            return LEASE_EXIST
        case kv.ErrKeyNotFound():
            return KEY_NOT_FOUND
        case kv.ErrNoSpace():
            return NO_SPACE
        case kv.ErrTooManyOps():
            return TOO_MANY_OPS
        case kv.ErrDuplicateKey():
            return DUPLICATE_KEY
        case kv.ErrRequestTooLarge():
            return REQUEST_TOO_LARGE
        case kv.ErrTooManyLeases() | kv.ErrTooManyWatchers():
            return TOO_MANY_REQUESTS
        case kv.MalformedRequest():
            return EtcdError(C.INVALID_ARGUMENT, f"etcdserver: {exc}")
    return EtcdError(C.UNKNOWN, f"etcdserver: {type(exc).__name__}: {exc}")


def from_client_error(code: str, message: str) -> EtcdError:
    """A leader's answer on Shoal's client protocol, as the etcd error (see forwarding)."""
    cls = getattr(kv, code, None)
    if isinstance(cls, type) and issubclass(cls, kv.KVError):
        exc = cls.__new__(cls)
        Exception.__init__(exc, message)
        return from_exception(exc)
    mapped = _NODE_CODES.get(code)
    if mapped is not None:
        return mapped
    if code == "bad_request":
        return EtcdError(C.INVALID_ARGUMENT, f"etcdserver: {message}")
    return EtcdError(C.UNAVAILABLE, f"etcdserver: {message}")
