"""The host's side of one consensus group: its replica, its storage, and the asyncio futures and
watch streams waiting on it. Everything that decides anything is in the replica; this only
turns the replica's `Done` values into resolved futures and its watch news into stream sends."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from ..kv.errors import ErrWrongShard
from ..kv.shards import check_owned
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
        self.writes: set[int] = set()  # the waiters' tokens that are writes
        self.watch_sinks: dict[int, WatchSink] = {}
        self.watch_ranges: dict[int, tuple[bytes, bytes]] = {}
        # Watch ids are unique per node: a group's start at its id << 32 (the meta group's at
        # 0, as etcd's), so one connection's watches of several groups never collide.
        self._next_watch = group_id << 32
        self._span_seen: object = None  # the store's shard span the watches were checked against

    def wait(self, token: int) -> asyncio.Future[Any]:
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.waiters[token] = fut
        return fut

    def settle(self, out: Applied) -> None:
        """Hand the outcomes of one advance to whoever waits for them."""
        for done in out.done:
            self.writes.discard(done.token)
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

    def fail_writes(self, error: Exception) -> list[int]:
        """Fail every write still waited for; their tokens (for the replica to forget)."""
        tokens = [t for t in self.writes if t in self.waiters]
        for t in tokens:
            fut = self.waiters.pop(t)
            if not fut.done():
                fut.set_exception(error)
        self.writes.clear()
        return tokens

    def fail_all(self, error: Exception) -> None:
        for fut in self.waiters.values():
            if not fut.done():
                fut.set_exception(error)
        self.waiters.clear()

    # ---------------------------------------------------------------- watches
    def watch(self, sink: WatchSink, **kw: Any) -> Any:
        if kw.get("watch_id") is None and self.id:
            while self._next_watch in self.watch_sinks:
                self._next_watch += 1
            kw["watch_id"] = self._next_watch
            self._next_watch += 1
        check_owned(self.replica.kv.span, [(kw.get("key", b""), kw.get("range_end", b""))])
        created = self.replica.hub.create(**kw)
        if not created.canceled:
            self.watch_sinks[created.watch_id] = sink
            self.watch_ranges[created.watch_id] = (kw.get("key", b""), kw.get("range_end", b""))
            self.push_watch_events()
        return created

    def cancel_watch(self, watch_id: int) -> None:
        self.watch_ranges.pop(watch_id, None)
        if self.watch_sinks.pop(watch_id, None) is not None:
            self.replica.hub.cancel(watch_id)

    def _moved(self, resp: WatchResponse) -> WatchResponse | None:
        """`resp` as its watcher may see it now that a split may have moved its keys: None
        if its range is still here; else the watch ends (a new shard's revisions are its own,
        so it cannot carry on there), and none of the dropped keys' deletes is shown."""
        span = self.replica.kv.span
        where = self.watch_ranges.get(resp.watch_id)
        if span is None or where is None or resp.canceled:
            return None
        try:
            check_owned(span, [where])
            return None
        except ErrWrongShard as exc:
            self.replica.hub.cancel(resp.watch_id)
            self.watch_ranges.pop(resp.watch_id, None)
            return WatchResponse(resp.watch_id, resp.revision, canceled=True,
                                 cancel_reason=f"the watched keys moved to another shard "
                                               f"(shard map version {exc.version}): watch again")

    def push_watch_events(self) -> None:
        span = self.replica.kv.span
        if span is not self._span_seen:  # a split: end the watches of keys it moved away
            self._span_seen = span
            for watch_id in list(self.watch_ranges):
                gone = self._moved(WatchResponse(watch_id, self.replica.kv.revision))
                sink = self.watch_sinks.pop(watch_id, None) if gone is not None else None
                if sink is not None and gone is not None:
                    sink(gone)
        # A watcher catching up from history gets a bounded batch per poll: keep polling a
        # while, then yield to the loop and carry on, so catch-up never waits for a new write.
        for _ in range(32):
            responses = self.replica.hub.poll_all()
            if not responses:
                return
            for resp in responses:
                sink = self.watch_sinks.get(resp.watch_id)
                if sink is not None:
                    resp = self._moved(resp) or resp
                    sink(resp)
                    if resp.canceled:
                        self.watch_sinks.pop(resp.watch_id, None)
                        self.watch_ranges.pop(resp.watch_id, None)
        asyncio.get_running_loop().call_soon(self.push_watch_events)

    def progress_notify(self) -> None:
        for resp in self.replica.hub.progress():
            sink = self.watch_sinks.get(resp.watch_id)
            if sink is not None:
                sink(resp)
