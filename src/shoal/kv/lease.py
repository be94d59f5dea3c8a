"""Leases, as etcd's lessor keeps them, minus its clock.

The state machine never reads a clock. Expiries are in the clock of the leader that stamped the
last grant, keep-alive or promotion (`now_ms` in the request). The leader asks `expired(now_ms)`
with its own clock and proposes a LeaseExpire for each answer; every replica then deletes the
same keys at the same revision. A new leader first proposes LeasePromote with its clock, which
gives every lease a full TTL, and the replica stamps it one election timeout ahead (etcd's
Promote(extend)), so no lease expires because of the failover or because two leaders' clocks
disagree."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sortedcontainers import SortedList

from .errors import CorruptSnapshot, ErrLeaseExists, ErrLeaseNotFound, ErrTooManyLeases

MAX_LEASE_ID = (1 << 63) - 1


@dataclass(slots=True)
class Lease:
    id: int
    ttl: int  # seconds, as granted
    expiry_ms: int  # in the clock of the leader that stamped it last
    keys: set[bytes] = field(default_factory=set)

    def remaining(self, now_ms: int) -> int:
        """Whole seconds left (etcd truncates too), never below 0."""
        return max(0, (self.expiry_ms - now_ms) // 1000)


class Lessor:
    def __init__(self, max_leases: int) -> None:
        assert max_leases > 0
        self.max_leases = max_leases
        self._leases: dict[int, Lease] = {}
        self._by_expiry = SortedList()  # (expiry_ms, id): expired() is a prefix of it
        self._next_id = 1

    def __len__(self) -> int:
        return len(self._leases)

    def __contains__(self, lease_id: int) -> bool:
        return lease_id in self._leases

    def get(self, lease_id: int) -> Lease:
        lease = self._leases.get(lease_id)
        if lease is None:
            raise ErrLeaseNotFound(lease_id)
        return lease

    def check_grant(self, lease_id: int) -> None:
        if lease_id in self._leases:
            raise ErrLeaseExists(lease_id)
        if len(self._leases) >= self.max_leases:
            raise ErrTooManyLeases(f"{len(self._leases)} leases, limit {self.max_leases}")

    def grant(self, lease_id: int, ttl: int, now_ms: int) -> Lease:
        """`lease_id` 0 picks the next id of a counter that only moves up: deterministic,
        unlike etcd's random ids, because every replica must pick the same one, and never an id
        granted before (as etcd never reuses one), so a client still refreshing a dead lease's
        id cannot keep someone else's lease alive."""
        if lease_id == 0:
            lease_id = self._next_id
            if lease_id > MAX_LEASE_ID:  # (only after a client granted the largest id itself)
                raise ErrTooManyLeases("no lease id is left above the largest ever granted")
        self.check_grant(lease_id)
        self._next_id = max(self._next_id, lease_id + 1)
        lease = self._leases[lease_id] = Lease(lease_id, ttl, now_ms + ttl * 1000)
        self._by_expiry.add((lease.expiry_ms, lease_id))
        return lease

    def revoke(self, lease_id: int) -> list[bytes]:
        """Forgets the lease; returns its keys in order, for the caller to delete at one
        revision."""
        lease = self.get(lease_id)
        del self._leases[lease_id]
        self._by_expiry.remove((lease.expiry_ms, lease_id))
        return sorted(lease.keys)

    def keep_alive(self, lease_id: int, now_ms: int) -> Lease:
        lease = self.get(lease_id)
        self._set_expiry(lease, now_ms + lease.ttl * 1000)
        return lease

    def promote(self, now_ms: int) -> None:
        for lease in self._leases.values():
            self._set_expiry(lease, now_ms + lease.ttl * 1000)

    def expired(self, now_ms: int, limit: int = 1000) -> list[int]:
        """Leases whose expiry is at or before `now_ms`, soonest first, at most `limit`
        (bounded: the leader proposes revocations in batches)."""
        out: list[int] = []
        for expiry_ms, lease_id in self._by_expiry:
            if expiry_ms > now_ms or len(out) >= limit:
                break
            out.append(lease_id)
        return out

    def attach(self, lease_id: int, key: bytes) -> None:
        self.get(lease_id).keys.add(key)

    def detach(self, lease_id: int, key: bytes) -> None:
        keys = self.get(lease_id).keys
        assert key in keys, (lease_id, key)
        keys.remove(key)

    def ids(self) -> list[int]:
        return sorted(self._leases)

    def _set_expiry(self, lease: Lease, expiry_ms: int) -> None:
        self._by_expiry.remove((lease.expiry_ms, lease.id))
        lease.expiry_ms = expiry_ms
        self._by_expiry.add((expiry_ms, lease.id))

    def dump(self) -> list[Any]:
        leases = [
            [i, le.ttl, le.expiry_ms, sorted(le.keys)] for i, le in sorted(self._leases.items())
        ]
        return [self._next_id, leases]

    @classmethod
    def load(cls, raw: Any, max_leases: int) -> Lessor:
        if not (isinstance(raw, list) and len(raw) == 2 and isinstance(raw[1], list)):
            raise CorruptSnapshot("leases: expected [next_id, leases]")
        lessor = cls(max_leases)
        next_id, leases = raw
        if type(next_id) is not int or not 1 <= next_id <= MAX_LEASE_ID + 1:
            raise CorruptSnapshot(f"leases: bad next id {next_id!r}")
        lessor._next_id = next_id
        for row in leases:
            ok = isinstance(row, list) and len(row) == 4
            lease_id, ttl, expiry_ms, keys = row if ok else (0, 0, 0, [])
            ok = ok and all(type(x) is int for x in (lease_id, ttl, expiry_ms))
            ok = ok and 0 < lease_id <= MAX_LEASE_ID and ttl > 0 and lease_id not in lessor
            ok = ok and isinstance(keys, list) and all(type(k) is bytes and k for k in keys)
            if not ok:
                raise CorruptSnapshot(f"leases: bad lease {row!r}")
            lessor._leases[lease_id] = Lease(lease_id, ttl, expiry_ms, set(keys))
            lessor._by_expiry.add((expiry_ms, lease_id))
            if lease_id >= next_id:
                raise CorruptSnapshot(f"leases: lease {lease_id} at or above the next id {next_id}")
        return lessor
