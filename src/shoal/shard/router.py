"""Routing by key: the client's cached shard map, and a client per shard's group.

A client reads the map from the meta group once and keeps it; a shard that answers
ErrWrongShard (its key moved in a split) names the map version it knows, and the router reads
the map again until it has at least that version, then routes again. Built on the public
client API, so it works against any cluster."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from ..kv.errors import ErrWrongShard
from .map import UNSHARDED, Shard, ShardMap

if TYPE_CHECKING:
    from ..client.aio import Client

T = TypeVar("T")
MAX_REROUTES = 50  # a key moves once per split; more reroutes than this is a broken map


class ShardRouter:
    def __init__(self, client: Client):
        self.client = client
        self.map: ShardMap = UNSHARDED
        self.revision = -1  # the map's mod_revision in the meta group; -1: never read
        self._views: dict[int, Client] = {0: client}
        self._refreshing: asyncio.Future[None] | None = None

    def view(self, group: int) -> Client:
        """The client for `group`'s store (one per group, so its sessions are reused)."""
        view = self._views.get(group)
        if view is None:
            view = self._views[group] = self.client.group(group)
        return view

    async def refresh(self, at_least: int = 0) -> ShardMap:
        """Read the map again (one read for every caller waiting at the same time), until its
        version is at least `at_least`."""
        for attempt in range(MAX_REROUTES):
            if self.revision >= 0 and self.map.version >= at_least and attempt:
                break
            if self._refreshing is None:
                self._refreshing = asyncio.get_running_loop().create_future()
                try:
                    body = await self.client.call("shard_map", {})
                    if body["map"] is not None and body["revision"] != self.revision:
                        self.map = ShardMap.decode(body["map"])
                    self.revision = body["revision"]
                finally:
                    fut, self._refreshing = self._refreshing, None
                    fut.set_result(None)
            else:
                await asyncio.shield(self._refreshing)
            if self.map.version >= at_least:
                return self.map
            await asyncio.sleep(0.01 * (attempt + 1))  # the split is still being written
        return self.map

    async def shard_of(self, key: bytes) -> Shard:
        if self.revision < 0:
            await self.refresh()
        return self.map.lookup(key)

    async def on_key(self, key: bytes, call: Callable[[Client], Awaitable[T]]) -> T:
        """`call(client of key's shard)`, routed again whenever the shard says it moved."""
        for attempt in range(MAX_REROUTES):
            shard = await self.shard_of(key)
            try:
                return await call(self.view(shard.group))
            except ErrWrongShard as exc:
                before = self.map.version
                await self.refresh(exc.version)
                if self.map.version == before:  # a split between its steps: give it a moment
                    await asyncio.sleep(min(0.1, 0.005 * (attempt + 1)))
        raise RuntimeError(f"key {key!r:.80} moved shards {MAX_REROUTES} times in one call")

    def groups(self) -> list[int]:
        return [s.group for s in self.map.shards]

    def describe(self) -> list[dict[str, Any]]:
        return [{"start": s.start, "end": s.end, "group": s.group} for s in self.map.shards]
