"""Splitting a shard, on the client API, resumable from any step.

`split(client, at)` moves [at, end) of the shard holding `at` into a new group. The steps (the
store's side is kv/shards.py):

0. write the intent into the shard map (`splitting`: at, new group), compare-and-put, after
   creating the group; from here on anyone can finish the split (`resume`), and no other split
   starts until it is done;
1. assign the new group [at, end), not serving;
2. assign the old group [start, at): the moved range is refused there from this entry on;
3. copy [at, end) with its intents, slice by slice, from the old group to the new;
4. assign the new group [at, end), serving;
5. drop the moved keys from the old group;
6. write the new shard map (version + 1), which ends the split.

Every step is idempotent, and step 1 reports whether the new group already serves, in which
case 3 and 4 are done and must not run again (the copy would overwrite newer writes). Writes to
the moved range are refused (and retried by clients) from step 2 to step 4: the copy. A split
is refused when the range holds more than MAX_SPLIT_KEYS keys or MAX_SPLIT_BYTES, which keeps
that window well under an election timeout."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from ..kv.errors import MalformedRequest
from ..kv.keyvalue import RESERVED
from ..kv.requests import (
    ShardAssignRequest,
    ShardDropRequest,
    ShardExportRequest,
    ShardImportRequest,
    ShardResponse,
)
from .map import ShardMap, ShardMapError, Split
from .router import ShardRouter

if TYPE_CHECKING:
    from ..client.aio import Client

SLICE_KEYS = 500
MAX_SPLIT_KEYS = 20_000
MAX_SPLIT_BYTES = 16 << 20


class SplitError(Exception):
    """A split that cannot run; the message says why."""


async def _cas_map(client: Client, new: ShardMap, revision: int) -> bool:
    body = await client.call("shard_map_cas", {"map": new.encode(), "revision": revision})
    return bool(body["succeeded"])


async def split(client: Client, at: bytes, replicas: int = 3) -> ShardMap:
    """Split the shard holding `at` there; returns the new map."""
    router = ShardRouter(client)
    current = await router.refresh()
    if current.splitting is not None:
        raise SplitError(f"a split at {current.splitting.at!r:.80} is in progress: "
                         "resume it first (shoal shard resume)")
    try:
        current.split(at, 0x7FFF_FFFF)  # (checks `at` before a group is made for it)
    except ShardMapError as exc:
        raise SplitError(str(exc)) from None
    shard = current.lookup(at)
    count = await client.sharded().resolving(lambda: client.group(shard.group).get(
        at, range_end=shard.end or b"\0", count_only=True))
    if count.count > MAX_SPLIT_KEYS:
        raise SplitError(f"{count.count} keys from {at!r:.80} to the shard's end, more than "
                         f"{MAX_SPLIT_KEYS} a split copies at once: split nearer its end first")
    groups = await client.groups()
    group = max([0, *groups]) + 1
    await client.create_group(group, replicas)
    pending = replace(current, splitting=Split(at, group))
    if not await _cas_map(client, pending, router.revision):
        raise SplitError("the shard map changed while the split was being set up; try again")
    return await resume(client)


async def resume(client: Client) -> ShardMap:
    """Finish the split the shard map says is in progress (nothing if none is)."""
    router = ShardRouter(client)
    current = await router.refresh()
    pending = current.splitting
    if pending is None:
        return current
    done = current.split(pending.at, pending.group)  # the map it ends with
    old = current.lookup(pending.at)
    moved = done.lookup(pending.at)
    version = done.version
    new_view, old_view = router.view(pending.group), router.view(old.group)
    first: ShardResponse = await new_view.write_request(
        ShardAssignRequest(moved.start, moved.end, version, serving=False), ShardResponse)
    try:
        await old_view.write_request(ShardAssignRequest(old.start, pending.at, version),
                                     ShardResponse)
    except MalformedRequest as exc:  # nothing is frozen yet: call the split off
        await _cas_map(client, replace(current, splitting=None), router.revision)
        raise SplitError(f"split at {pending.at!r:.80} called off: {exc}") from None
    if not first.serving:  # the new group does not serve yet: copy
        await _copy(old_view, new_view, moved.start, moved.end)
        await new_view.write_request(ShardAssignRequest(moved.start, moved.end, version),
                                     ShardResponse)
    # The drop comes before the map moves on, so a split the map calls done has dropped its
    # keys (the old group refuses them since step 2 either way).
    await old_view.write_request(ShardDropRequest(moved.start, moved.end), ShardResponse)
    if not await _cas_map(client, done, router.revision):
        again = await router.refresh()
        if again != done:  # (equal: an earlier try of this very write went through)
            raise SplitError("the shard map changed during the split; run `shoal shard resume`")
    return done


async def _copy(src: Client, dst: Client, start: bytes, end: bytes) -> None:
    after, keys, size = b"", 0, 0
    while True:
        page: ShardResponse = await src.write_request(
            ShardExportRequest(start, end, after, SLICE_KEYS), ShardResponse)
        keys += len(page.kvs)
        size += sum(len(kv.key) + len(kv.value) for kv in page.kvs)
        if keys > MAX_SPLIT_KEYS or size > MAX_SPLIT_BYTES:
            raise SplitError(f"[{start!r:.40}, {end!r:.40}) holds more than {MAX_SPLIT_KEYS} "
                             f"keys or {MAX_SPLIT_BYTES >> 20} MiB: split it nearer its start")
        if page.kvs:
            await dst.write_request(ShardImportRequest(page.kvs), ShardResponse)
        user = [kv.key for kv in page.kvs if not kv.key.startswith(RESERVED)]
        if not page.more:
            return
        after = user[-1]


async def middle_key(client: Client, group: int, start: bytes, end: bytes) -> bytes | None:
    """The key halfway through [start, end) in `group`, to split at; None if there are too
    few keys to split."""
    view = client.group(group)
    sharded = client.sharded()
    hi = end or b"\0"
    total = (await sharded.resolving(lambda: view.get(start, range_end=hi, count_only=True))).count
    if total < 2:
        return None
    half = await sharded.resolving(lambda: view.get(start, range_end=hi, keys_only=True,
                                                    limit=total // 2 + 1))
    at = half.kvs[-1].key
    return at if at > start else None
