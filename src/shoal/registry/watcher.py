"""Discovery: the live instances of a service, kept current by a watch, served from a cache.

The watcher lists the service's prefix once, then follows a prefix watch from the revision
after the list, so no change between the two is missed. The client resumes the watch after a
reconnect from the last delivered revision; a compacted history forces a fresh list. A
separate probe asks the store every `probe_interval`: while it gets no answer the cache keeps
serving the last known set, marked stale, rather than emptying a service because the store
is briefly unreachable."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from ..client import Client, ClientError
from ..kv.errors import ErrCompacted, KVError
from ..kv.keyvalue import EventType
from .instance import Instance, service_prefix

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Snapshot:
    instances: tuple[Instance, ...]  # sorted by id
    revision: int  # the store revision this set reflects
    stale: bool  # True while the store is not answering: the set may be out of date
    stale_since: float | None = None  # time.monotonic() when the store stopped answering


async def list_instances(client: Client, service: str) -> tuple[Instance, ...]:
    """One listing of a service's live instances, sorted by id (no watch, no cache)."""
    resp = await client.get(service_prefix(service), prefix=True)
    found = (_decode(kv.key, kv.value) for kv in resp.kvs)
    return tuple(sorted((i for i in found if i is not None), key=lambda i: i.id))


def _decode(key: bytes, value: bytes) -> Instance | None:
    try:
        return Instance.from_kv(key, value)
    except ValueError as exc:  # someone else's junk under our prefix: skip it, say so
        log.warning("ignoring %s", exc)
        return None


class ServiceWatcher:
    """`async with ServiceWatcher(client, "api") as w: w.snapshot().instances`"""

    def __init__(self, client: Client, service: str, *, probe_interval: float = 1.0,
                 probe_timeout: float = 2.0):
        self.client, self.service = client, service
        self.prefix = service_prefix(service)
        self.probe_interval, self.probe_timeout = probe_interval, probe_timeout
        self._instances: dict[str, Instance] = {}
        self._revision = 0
        self._stale_since: float | None = None
        self._snapshot = Snapshot((), 0, False)
        self._listeners: list[Callable[[Snapshot], None]] = []
        self._tasks: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> ServiceWatcher:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        """List the service (raises if the store cannot answer: there is no cache yet)."""
        await self._list()
        self._tasks = [asyncio.create_task(self._follow()), asyncio.create_task(self._probe())]

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        self._tasks = []

    def snapshot(self) -> Snapshot:
        return self._snapshot

    def listen(self, callback: Callable[[Snapshot], None]) -> None:
        """Call `callback(snapshot)` on every change of the set or of staleness. Callbacks run
        in the event loop and must not block."""
        self._listeners.append(callback)

    async def changes(self, maxsize: int = 16) -> AsyncIterator[Snapshot]:
        """The current snapshot, then every change. A slow consumer skips intermediate
        snapshots (the queue is bounded and only the newest state matters)."""
        queue: asyncio.Queue[Snapshot] = asyncio.Queue(maxsize)

        def push(s: Snapshot) -> None:
            if queue.full():
                queue.get_nowait()
            queue.put_nowait(s)

        push(self._snapshot)
        self._listeners.append(push)
        try:
            while True:
                yield await queue.get()
        finally:
            self._listeners.remove(push)

    # ------------------------------------------------------------------ internals
    async def _list(self) -> None:
        resp = await self.client.get(self.prefix, prefix=True)
        self._instances = {}
        for kv in resp.kvs:
            self._add(kv.key, kv.value)
        self._revision = resp.header.revision
        self._set_stale(False)
        self._publish()

    def _add(self, key: bytes, value: bytes) -> None:
        inst = _decode(key, value)
        if inst is not None:
            self._instances[inst.id] = inst

    async def _follow(self) -> None:
        while True:
            try:
                async for resp in self.client.watch(self.prefix, prefix=True,
                                                    start_revision=self._revision + 1):
                    for ev in resp.events:
                        if ev.type == EventType.PUT:
                            self._add(ev.kv.key, ev.kv.value)
                        else:
                            self._instances.pop(ev.kv.key[len(self.prefix):].decode(), None)
                        self._revision = ev.kv.mod_revision
                    if resp.events:
                        self._set_stale(False)
                        self._publish()
            except ErrCompacted:
                log.info("watch on %s compacted; listing again", self.prefix.decode())
                await self._relist()
            except (ClientError, KVError) as exc:  # the watch was refused: start over
                log.warning("watch on %s failed (%s); listing again", self.prefix.decode(), exc)
                await asyncio.sleep(0.5)
                await self._relist()

    async def _relist(self) -> None:
        delay = 0.1
        while True:
            try:
                await self._list()
                return
            except (ClientError, KVError, TimeoutError):
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

    async def _probe(self) -> None:
        while True:
            await asyncio.sleep(self.probe_interval)
            try:
                await asyncio.wait_for(self.client.get(self.prefix, prefix=True, count_only=True),
                                       self.probe_timeout)
                ok = True
            except (ClientError, KVError, TimeoutError):
                ok = False
            if ok == (self._stale_since is not None):  # staleness flipped
                self._set_stale(not ok)
                self._publish()

    def _set_stale(self, stale: bool) -> None:
        if not stale:
            self._stale_since = None
        elif self._stale_since is None:
            self._stale_since = time.monotonic()
            log.warning("store unreachable: serving the last known %s", self.service)

    def _publish(self) -> None:
        self._snapshot = Snapshot(tuple(sorted(self._instances.values(), key=lambda i: i.id)),
                                  self._revision, self._stale_since is not None, self._stale_since)
        for cb in list(self._listeners):
            cb(self._snapshot)
