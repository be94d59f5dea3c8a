"""Coordination recipes built only on the key-value API and leases, as etcd's concurrency
package builds them: every contender puts a key under a common prefix, attached to its lease;
the key with the lowest create revision holds the lock (or leads), and each waiter watches
only the key just ahead of it, so a release wakes one waiter, not all (no thundering herd).
A crashed holder's lease expires and its key goes with it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from ..kv.requests import (
    Compare,
    CompareResult,
    CompareTarget,
    DeleteRangeRequest,
    PutRequest,
    RangeRequest,
    SortOrder,
    SortTarget,
)
from .aio import Client


class _Queue:
    """A place in line under `prefix`, held by a lease."""

    def __init__(self, client: Client, prefix: bytes, ttl: int):
        self.client, self.prefix, self.ttl = client, prefix.rstrip(b"/") + b"/", ttl
        self.lease = 0
        self.key = b""
        self.revision = 0  # our key's create revision: the fencing token
        self._keepalive: asyncio.Task[None] | None = None

    async def enqueue(self, value: bytes) -> None:
        grant = await self.client.lease_grant(self.ttl)
        self.lease = grant.id
        self._keepalive = self.client.keep_alive(self.lease, self.ttl)
        self.key = self.prefix + f"{self.lease:016x}".encode()
        # Create our key only if absent: a retried enqueue must not move us to the back.
        resp = await self.client.txn(
            [Compare(self.key, CompareTarget.CREATE, CompareResult.EQUAL, 0)],
            [PutRequest(self.key, value, lease=self.lease)],
            [RangeRequest(self.key)])
        if resp.succeeded:
            self.revision = resp.header.revision
        else:
            self.revision = resp.responses[0].kvs[0].create_revision

    async def wait_turn(self) -> None:
        """Return once no key under the prefix is older than ours."""
        while True:
            before = await self.client.get(
                self.prefix, prefix=True, limit=1, sort_target=SortTarget.CREATE,
                sort_order=SortOrder.DESCEND, max_create_revision=self.revision - 1)
            if not before.kvs:
                return
            await self._wait_deleted(before.kvs[0].key, before.header.revision + 1)

    async def _wait_deleted(self, key: bytes, from_revision: int) -> None:
        async for resp in self.client.watch(key, start_revision=from_revision):
            if any(e.type == 1 for e in resp.events):  # EventType.DELETE
                return

    async def leave(self) -> None:
        if self._keepalive is not None:
            self._keepalive.cancel()
        if self.lease:
            await self.client._write(DeleteRangeRequest(self.key))
            await self.client.lease_revoke(self.lease)
            self.lease = 0


class Lock:
    """A distributed mutex. `token` (the lock key's create revision) increases with every
    acquisition: pass it to the resource you guard so it can refuse a stale holder."""

    def __init__(self, client: Client, name: str, ttl: int = 10):
        self._q = _Queue(client, b"/shoal/lock/" + name.encode(), ttl)

    @property
    def token(self) -> int:
        return self._q.revision

    async def acquire(self) -> int:
        await self._q.enqueue(b"")
        await self._q.wait_turn()
        return self._q.revision

    async def release(self) -> None:
        await self._q.leave()

    async def __aenter__(self) -> Lock:
        await self.acquire()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.release()


class Election:
    """Leader election: campaign (wait to lead), proclaim (change the value while leading),
    leader (who leads now), observe (follow changes), resign."""

    def __init__(self, client: Client, name: str, ttl: int = 10):
        self.client = client
        self.prefix = b"/shoal/election/" + name.encode()
        self._q = _Queue(client, self.prefix, ttl)
        self._leading = False

    async def campaign(self, value: bytes) -> int:
        await self._q.enqueue(value)
        await self._q.wait_turn()
        self._leading = True
        return self._q.revision

    async def proclaim(self, value: bytes) -> None:
        if not self._leading:
            raise RuntimeError("election: not leader (campaign first)")
        resp = await self.client.txn(
            [Compare(self._q.key, CompareTarget.CREATE, CompareResult.EQUAL, self._q.revision)],
            [PutRequest(self._q.key, value, lease=self._q.lease)])
        if not resp.succeeded:
            raise RuntimeError("not the leader any more: our election key is gone")

    async def leader(self) -> bytes | None:
        resp = await self.client.get(self.prefix + b"/", prefix=True, sort_target=SortTarget.CREATE,
                                     sort_order=SortOrder.ASCEND, limit=1)
        return resp.kvs[0].value if resp.kvs else None

    async def observe(self) -> AsyncIterator[bytes | None]:
        """Yield the leader's value now and after every change of leader or value."""
        current = await self.leader()
        yield current
        async for _ in self.client.watch(self.prefix + b"/", prefix=True):
            now = await self.leader()
            if now != current:
                current = now
                yield now

    async def resign(self) -> None:
        self._leading = False
        await self._q.leave()
