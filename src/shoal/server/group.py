"""The host's side of one consensus group: its replica, its storage, and the asyncio futures and
watch streams waiting on it. Everything that decides anything is in the replica; this only
turns the replica's `Done` values into resolved futures and its watch news into stream sends."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from ..kv.watch import STORE_REPLACED, WatchResponse
from ..replica import Applied, Replica
from ..storage import Storage

log = logging.getLogger("shoal.node")

WatchSink = Callable[[Any], None]


class Group:
    def __init__(self, group_id: int, replica: Replica, storage: Storage):
        self.id = group_id
        self.replica = replica
        self.storage = storage
        self.waiters: dict[int, asyncio.Future[Any]] = {}  # replica token -> its caller
        self.watch_sinks: dict[int, WatchSink] = {}

    def wait(self, token: int) -> asyncio.Future[Any]:
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.waiters[token] = fut
        return fut

    def settle(self, out: Applied) -> None:
        """Hand the outcomes of one advance to whoever waits for them."""
        for done in out.done:
            fut = self.waiters.pop(done.token, None)
            if fut is None or fut.done():
                continue
            if done.error is not None:
                fut.set_exception(done.error)
            else:
                fut.set_result(done.result)
        if out.store_replaced:
            # The old hub's watchers cannot follow a store replaced wholesale: end their
            # streams (canceled, no compaction); clients re-create them from their last revision.
            for watch_id, sink in self.watch_sinks.items():
                sink(WatchResponse(watch_id, 0, canceled=True,
                                   cancel_reason=STORE_REPLACED))
            self.watch_sinks.clear()
        if out.store_changed:
            self.push_watch_events()

    def fail_all(self, error: Exception) -> None:
        for fut in self.waiters.values():
            if not fut.done():
                fut.set_exception(error)
        self.waiters.clear()

    # ---------------------------------------------------------------- watches
    def watch(self, sink: WatchSink, **kw: Any) -> Any:
        created = self.replica.hub.create(**kw)
        if not created.canceled:
            self.watch_sinks[created.watch_id] = sink
            self.push_watch_events()
        return created

    def cancel_watch(self, watch_id: int) -> None:
        if self.watch_sinks.pop(watch_id, None) is not None:
            self.replica.hub.cancel(watch_id)

    def push_watch_events(self) -> None:
        # A watcher catching up from history gets a bounded batch per poll: keep polling a
        # while, then yield to the loop and carry on, so catch-up never waits for a new write.
        for _ in range(32):
            responses = self.replica.hub.poll_all()
            if not responses:
                return
            for resp in responses:
                sink = self.watch_sinks.get(resp.watch_id)
                if sink is not None:
                    sink(resp)
                    if resp.canceled:
                        self.watch_sinks.pop(resp.watch_id, None)
        asyncio.get_running_loop().call_soon(self.push_watch_events)

    def progress_notify(self) -> None:
        for resp in self.replica.hub.progress():
            sink = self.watch_sinks.get(resp.watch_id)
            if sink is not None:
                sink(resp)
