"""The shard map: which consensus group holds which range of keys.

The map is one value in the meta group's reserved keyspace, so every change to it is one
compare-and-put on its mod_revision, and its `version` counts the changes. The shards cover
the whole keyspace, contiguous and in key order; until the first split there is one shard, the
meta group itself, holding everything, so an unsharded cluster is a sharded one with one shard.
A split in progress is written into the map first (`splitting`) so whoever resumes it knows
what was asked. Pure: encoding, decoding, lookup and the split's new map."""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass, replace

import msgpack

from ..kv.keyvalue import ALL_KEYS, RESERVED

MAP_KEY = RESERVED + b"shardmap"
MAX_SHARDS = 4096


class ShardMapError(ValueError):
    """A shard map or a change to it that cannot be used; the message says why."""


@dataclass(frozen=True, slots=True)
class Shard:
    start: bytes
    end: bytes  # b"" = no upper bound
    group: int

    def owns(self, key: bytes) -> bool:
        return self.start <= key and (self.end == b"" or key < self.end)


@dataclass(frozen=True, slots=True)
class Split:
    at: bytes
    group: int  # the new group that takes [at, end of the shard holding `at`)


@dataclass(frozen=True, slots=True)
class ShardMap:
    version: int
    shards: tuple[Shard, ...]
    splitting: Split | None = None

    def __post_init__(self) -> None:
        shards = self.shards
        if not 0 < len(shards) <= MAX_SHARDS:
            raise ShardMapError(f"a shard map holds 1 to {MAX_SHARDS} shards, not {len(shards)}")
        if shards[0].start != b"" or shards[-1].end != b"":
            raise ShardMapError("the shards must cover every key, from b'' to no upper bound")
        for a, b in zip(shards, shards[1:], strict=False):
            if a.end != b.start or a.end == b"" or not a.start < a.end:
                raise ShardMapError(f"shards out of order or not contiguous at {a.end!r:.80}")
        if len({s.group for s in shards}) != len(shards):
            raise ShardMapError("a group holds two shards")

    def lookup(self, key: bytes) -> Shard:
        starts = [s.start for s in self.shards]
        return self.shards[bisect_right(starts, key) - 1]

    def pieces(self, key: bytes, range_end: bytes) -> list[tuple[Shard, bytes, bytes]]:
        """[key, range_end) (etcd's conventions) cut at the shard boundaries, in key order:
        (shard, key, range_end) per shard it touches, each range_end in the same conventions."""
        if range_end == b"":
            return [(self.lookup(key), key, b"")]
        out = []
        for shard in self.shards[self.shards.index(self.lookup(key)):]:
            lo = max(key, shard.start)
            if range_end != ALL_KEYS and lo >= range_end:
                break
            if shard.end == b"":
                hi = range_end
            elif range_end == ALL_KEYS:
                hi = shard.end
            else:
                hi = min(range_end, shard.end)
            out.append((shard, lo, hi))
        return out

    def split(self, at: bytes, group: int) -> ShardMap:
        """The map after splitting the shard that holds `at` there, [at, its end) to `group`."""
        old = self.lookup(at)
        if old.start == at:
            raise ShardMapError(f"{at!r:.80} is already where a shard starts")
        if any(s.group == group for s in self.shards):
            raise ShardMapError(f"group {group} already holds a shard")
        if at >= RESERVED:
            raise ShardMapError("cannot split inside Shoal's reserved keyspace")
        i = self.shards.index(old)
        shards = (*self.shards[:i], replace(old, end=at), Shard(at, old.end, group),
                  *self.shards[i + 1:])
        return ShardMap(self.version + 1, shards)

    def encode(self) -> bytes:
        split = [self.splitting.at, self.splitting.group] if self.splitting else None
        return msgpack.packb([self.version, [[s.start, s.end, s.group] for s in self.shards],
                              split])

    @classmethod
    def decode(cls, data: bytes) -> ShardMap:
        try:
            version, shards, split = msgpack.unpackb(data)
            return cls(int(version), tuple(Shard(bytes(a), bytes(b), int(g)) for a, b, g in shards),
                       Split(bytes(split[0]), int(split[1])) if split else None)
        except (ValueError, TypeError, IndexError, msgpack.UnpackException) as exc:
            raise ShardMapError(f"malformed shard map: {exc}") from None


UNSHARDED = ShardMap(0, (Shard(b"", b"", 0),))
