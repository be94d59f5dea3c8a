"""Errors of the key-value state machine. Each message names what was wrong, and the etcd names
are kept (ErrCompacted, ErrFutureRev, ...) so an etcd-compatible API can map them one to one.

Every error raised by `KVStore.apply` leaves the state untouched: the store checks before it
writes, so every replica that applies the same entry raises the same error and stays equal."""

from __future__ import annotations

from typing import Any


class KVError(Exception):
    """Base of every error this package raises on purpose."""

    def details(self) -> dict[str, Any]:
        """What a client needs besides the message to act on the error (sent on the wire)."""
        return {}

    def restore_details(self, details: dict[str, Any]) -> None:
        """On the client: set what `details` sent (the inverse of `details`)."""
        for name, value in details.items():
            setattr(self, name, value)


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


class ErrIntentConflict(KVError):
    """A plain request met the intents of prepared transactions (`conflicts`: TxnConflicts).
    Retryable: the client resolves each intent from its transaction's record, then retries."""

    def __init__(self, conflicts: tuple[Any, ...]):
        keys = ", ".join(repr(c.key) for c in conflicts[:3]) + (" ..." if len(conflicts) > 3 else "")
        super().__init__(f"{len(conflicts)} key(s) held by prepared transactions: {keys}")
        self.conflicts = conflicts

    def details(self) -> dict[str, Any]:
        return {"conflicts": [[c.key, c.reason, c.holder, c.holder_group]
                              for c in self.conflicts]}

    def restore_details(self, details: dict[str, Any]) -> None:
        from .requests import TxnConflict

        self.conflicts = tuple(TxnConflict(bytes(k), str(r), bytes(h), int(g))
                               for k, r, h, g in details.get("conflicts", ()))


class ErrWrongShard(KVError):
    """A key this group does not own (any more): the shard map moved it. `version` is the
    shard map version the group knows; refresh the map to at least that and route again."""

    def __init__(self, key: bytes, version: int):
        super().__init__(f"key {key!r:.80} is not in this shard (shard map version {version})")
        self.key, self.version = key, version

    def details(self) -> dict[str, Any]:
        return {"key": self.key, "version": self.version}
