"""Coordination recipes built only on the key-value API and leases, as etcd's concurrency
package builds them: every contender puts a key under a common prefix, attached to its lease;
the key with the lowest create revision holds the lock (or leads), and each waiter watches
only the key just ahead of it, so a release wakes one waiter, not all (no thundering herd).
A crashed holder's lease expires and its key goes with it.

Blocking versions for SyncClient (SyncLock, SyncElection) are in shoal.client.sync."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from ..kv.errors import KVError
from ..kv.keyvalue import EventType
from ..kv.requests import (
    Compare,
    CompareResult,
    CompareTarget,
    PutRequest,
    RangeRequest,
    RangeResponse,
    SortOrder,
    SortTarget,
)
from .aio import Client
from .errors import ClientError


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
            mine = resp.responses[0]
            assert isinstance(mine, RangeResponse)
            self.revision = mine.kvs[0].create_revision

    async def join(self, value: bytes, timeout: float | None) -> int:
        """Take a place in line and wait for our turn, for at most `timeout` seconds
        (TimeoutError then). Given up for any reason (a timeout, a cancel, an error), the
        place is left, so those behind are not kept waiting for a lease that is kept alive."""
        try:
            async with asyncio.timeout(timeout):
                await self.enqueue(value)
                await self.wait_turn()
        except BaseException:
            with contextlib.suppress(ClientError, KVError, TimeoutError):  # else its lease expires
                await asyncio.shield(self.leave())
            raise
        return self.revision

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
            lease, self.lease = self.lease, 0
            await self.client.delete(self.key)
            await self.client.lease_revoke(lease)


class Lock:
    """A distributed mutex: `async with client.lock("jobs"): ...`. `token` (the lock key's
    create revision) increases with every acquisition: pass it to the resource you guard so it
    can refuse a stale holder. `ttl`: how long a holder that crashed keeps it, in seconds."""

    def __init__(self, client: Client, name: str, ttl: int = 10):
        self._q = _Queue(client, b"/shoal/lock/" + name.encode(), ttl)

    @property
    def token(self) -> int:
        return self._q.revision

    async def acquire(self, timeout: float | None = None) -> int:
        """Wait until this client holds the lock (at most `timeout` seconds, else
        TimeoutError); returns the fencing token."""
        return await self._q.join(b"", timeout)

    async def release(self) -> None:
        """Let the next waiter have it."""
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

    async def campaign(self, value: bytes, timeout: float | None = None) -> int:
        """Wait until this client leads, announcing `value` (at most `timeout` seconds, else
        TimeoutError); returns the leadership's revision, which increases with every leader."""
        await self._q.join(value, timeout)
        self._leading = True
        return self._q.revision

    async def proclaim(self, value: bytes) -> None:
        """Change the value this leader announces (RuntimeError if it does not lead)."""
        if not self._leading:
            raise RuntimeError("election: not leader (campaign first)")
        resp = await self.client.txn(
            [Compare(self._q.key, CompareTarget.CREATE, CompareResult.EQUAL, self._q.revision)],
            [PutRequest(self._q.key, value, lease=self._q.lease)])
        if not resp.succeeded:
            raise RuntimeError("not the leader any more: our election key is gone")

    async def leader(self) -> bytes | None:
        """The current leader's value, or None if nobody leads."""
        return _value(await self._first())

    async def _first(self) -> RangeResponse:
        return await self.client.get(self.prefix + b"/", prefix=True, sort_target=SortTarget.CREATE,
                                     sort_order=SortOrder.ASCEND, limit=1)

    async def observe(self) -> AsyncIterator[bytes | None]:
        """Yield the leader's value now and after every change of leader or value, each one:
        the candidates are read once and then followed event by event from just after that
        read, so a value proclaimed and replaced before we look is still seen."""
        resp = await self.client.get(self.prefix + b"/", prefix=True)
        candidates = {kv.key: kv for kv in resp.kvs}

        def leading() -> bytes | None:  # the oldest candidate leads
            return min(candidates.values(), key=lambda kv: kv.create_revision).value \
                if candidates else None

        current = leading()
        yield current
        async for batch in self.client.watch(self.prefix + b"/", prefix=True,
                                             start_revision=resp.header.revision + 1):
            for event in batch.events:
                if event.type is EventType.PUT:
                    candidates[event.kv.key] = event.kv
                else:
                    candidates.pop(event.kv.key, None)
                if (now := leading()) != current:
                    current = now
                    yield now

    async def resign(self) -> None:
        """Stop leading (or campaigning): the next in line leads."""
        self._leading = False
        await self._q.leave()


def _value(resp: RangeResponse) -> bytes | None:
    return resp.kvs[0].value if resp.kvs else None
