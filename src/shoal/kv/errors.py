"""Errors of the key-value state machine. Each message names what was wrong, and the etcd names
are kept (ErrCompacted, ErrFutureRev, ...) so an etcd-compatible API can map them one to one.

Every error raised by `KVStore.apply` leaves the state untouched: the store checks before it
writes, so every replica that applies the same entry raises the same error and stays equal."""

from __future__ import annotations


class KVError(Exception):
    """Base of every error this package raises on purpose."""


class MalformedRequest(KVError):
    """A log entry or request that does not decode or does not validate."""


class UnknownRequest(MalformedRequest):
    """A request type this version does not know."""


class ErrTooManyOps(MalformedRequest):
    """A transaction with more compares or operations than `KVLimits.max_txn_ops`."""


class ErrRequestTooLarge(MalformedRequest):
    """A key or value beyond `KVLimits`."""


class ErrDuplicateKey(MalformedRequest):
    """A transaction branch writes one key twice (etcd: "duplicate key given in txn request")."""


class CorruptSnapshot(KVError):
    """Snapshot bytes that fail their checksum or their structure."""


class ErrCompacted(KVError):
    """The revision asked for is older than the compact revision."""

    def __init__(self, revision: int, compact_revision: int):
        super().__init__(
            f"required revision {revision} has been compacted (compact revision {compact_revision})"
        )
        self.revision = revision
        self.compact_revision = compact_revision


class ErrFutureRev(KVError):
    """The revision asked for is beyond the current revision."""

    def __init__(self, revision: int, current: int):
        super().__init__(f"required revision {revision} is a future revision (current {current})")
        self.revision = revision
        self.current = current


class ErrKeyNotFound(KVError):
    """A put with ignore_value or ignore_lease on a key that does not exist."""


class ErrLeaseNotFound(KVError):
    def __init__(self, lease: int):
        super().__init__(f"lease {lease} not found")
        self.lease = lease


class ErrLeaseExists(KVError):
    def __init__(self, lease: int):
        super().__init__(f"lease {lease} already exists")
        self.lease = lease


class ErrTooManyLeases(KVError):
    """The lease table is at `KVLimits.max_leases`."""


class ErrNoSpace(KVError):
    """The write would take the store beyond `KVLimits.quota_bytes` (etcd's NOSPACE alarm)."""


class ErrSessionExpired(KVError):
    """The client's session is unknown: never opened, closed, or evicted. The outcome of the
    client's outstanding request is unknown; it must open a new session."""


class ErrStaleSequence(KVError):
    """A sequence number older than the latest one applied for the client: that request was
    applied, but only the latest response is kept."""


class ErrWatchNotFound(KVError):
    def __init__(self, watch_id: int):
        super().__init__(f"watch {watch_id} not found")
        self.watch_id = watch_id


class ErrWatchExists(KVError):
    def __init__(self, watch_id: int):
        super().__init__(f"watch {watch_id} already exists")
        self.watch_id = watch_id


class ErrTooManyWatchers(KVError):
    """The hub is at its bound on watchers."""
