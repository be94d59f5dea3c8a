"""Which keys this group's store owns, and the requests a shard split applies.

An unsharded store owns every key. Once a group is a shard it owns one span [start, end) of
the keyspace (end b"" = no upper bound) as of a shard map version, and refuses any request
touching a key outside it with ErrWrongShard naming that version, so a client with a stale map
learns to refresh it; the check runs when the entry is applied, so no write slips past a split
in the log. Shoal's own keys (the reserved keyspace) belong to every group and are never
refused.

A split of [start, end) at `at` into a new group runs (shard/split.py drives it):
1. the new group is assigned [at, end), not yet serving, and refuses everything;
2. the old group is assigned [start, at): from that entry on it refuses [at, end);
3. the keys of [at, end) and their intents are exported from the old group in slices and
   imported into the new one, each slice an entry of the new group's log;
4. the new group is assigned [at, end) serving;
5. the old group drops the keys it no longer owns, then the shard map in the meta group
   moves on. An import after step 4 (a slice from an earlier attempt, arriving late) is
   refused: it would undo the writes made since.
Between 2 and 4 the moved range answers ErrWrongShard, and clients retry: the window is the
copy, which a split bounds by refusing a range too big to copy within an election timeout.
Pure: no I/O."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import msgpack

from .errors import CorruptSnapshot, ErrWrongShard, MalformedRequest
from .intents import (
    INTENT_PREFIX,
    RANGE_PREFIX,
    Intent,
    intent_key,
    range_key,
    range_txn,
    ranges_overlap,
    split_intent_key,
)
from .keyvalue import ALL_KEYS, RESERVED, KeyValue, prefix_end
from .requests import (
    PutRequest,
    ShardAssignRequest,
    ShardDropRequest,
    ShardExportRequest,
    ShardImportRequest,
    ShardResponse,
)

if TYPE_CHECKING:
    from .store import KVStore

SPAN_KEY = RESERVED + b"shard"
_RESERVED_END = prefix_end(RESERVED)


@dataclass(frozen=True, slots=True)
class Span:
    start: bytes
    end: bytes  # b"" = no upper bound
    version: int
    serving: bool = True

    def owns(self, key: bytes) -> bool:
        return self.start <= key and (self.end == b"" or key < self.end)

    def owns_range(self, key: bytes, range_end: bytes) -> bool:
        """etcd's range conventions (range_end b"" = the one key, b"\\0" = to the end)."""
        if range_end == b"":
            return self.owns(key)
        if not self.start <= key:
            return False
        if range_end == ALL_KEYS:
            return self.end == b""
        return self.end == b"" or range_end <= self.end

    def encode(self) -> bytes:
        return msgpack.packb([self.start, self.end, self.version, self.serving])

    @classmethod
    def decode(cls, data: bytes) -> Span:
        try:
            start, end, version, serving = msgpack.unpackb(data)
            return cls(bytes(start), bytes(end), int(version), bool(serving))
        except (ValueError, TypeError, msgpack.UnpackException) as exc:
            raise CorruptSnapshot(f"malformed shard span: {exc}") from None


def _reserved(key: bytes, range_end: bytes) -> bool:
    return RESERVED <= key and (range_end == b"" or range_end <= _RESERVED_END)


def user_ranges(start: bytes, end: bytes) -> list[tuple[bytes, bytes]]:
    """[start, end) (end b"" = no bound) without the reserved keyspace, as etcd ranges."""
    hi = end or ALL_KEYS
    out = []
    if start < RESERVED:
        out.append((start, RESERVED if hi == ALL_KEYS or hi > RESERVED else hi))
    if hi == ALL_KEYS or hi > _RESERVED_END:
        out.append((max(start, _RESERVED_END), hi))
    return out


def check_owned(span: Span | None, ranges: Iterable[tuple[bytes, bytes]]) -> None:
    if span is None:
        return
    for key, range_end in ranges:
        if _reserved(key, range_end):
            continue
        if not span.serving or not span.owns_range(key, range_end):
            raise ErrWrongShard(key, span.version)


def load_span(store: KVStore) -> Span | None:
    kv = store.mvcc.get(SPAN_KEY)
    return Span.decode(kv.value) if kv is not None else None


def assign(store: KVStore, r: ShardAssignRequest) -> ShardResponse:
    current = store.span
    if current is not None and r.version < current.version:
        raise MalformedRequest(f"shard map version {r.version} is older than this shard's "
                               f"{current.version}")
    span = Span(r.start, r.end, r.version, r.serving)
    if current is not None and current.serving and not r.serving and \
            (current.start, current.end, current.version) == (r.start, r.end, r.version):
        return ShardResponse(store._header(), serving=True)  # a resumed split: done already
    if r.end and (current is None or current.end == b"" or r.end < current.end):
        # Narrowing: the keys given up must be free to move. Checked here, in the entry that
        # freezes them, so no key takes a lease between a check and the freeze.
        gone_end = current.end if current is not None else b""
        for lo, hi in user_ranges(r.end, gone_end):
            for kv in store.mvcc.range(lo, hi)[0]:
                if kv.lease:
                    raise MalformedRequest(
                        f"key {kv.key!r:.80} is attached to lease {kv.lease}, and leases do "
                        "not move between shards: revoke it, or split elsewhere")
    store.mvcc.begin()
    store._put(PutRequest(SPAN_KEY, span.encode()))
    store.mvcc.end()
    store.span = span
    return ShardResponse(store._header(), serving=span.serving)


def export(store: KVStore, r: ShardExportRequest) -> ShardResponse:
    """Up to `limit` keys of the range after `after`, each followed by its intents. Keys on a
    lease cannot move (leases belong to one group): `assign` refused the split before the
    range was frozen; this checks again."""
    first = r.after + b"\0" if r.after else r.start
    kvs = [kv for lo, hi in user_ranges(first, r.end)
           for kv in store.mvcc.range(lo, hi, limit=r.limit + 1)[0]][: r.limit + 1]
    more = len(kvs) > r.limit
    out: list[KeyValue] = []
    for kv in kvs[: r.limit]:
        if kv.lease:
            raise MalformedRequest(f"key {kv.key!r:.80} is attached to lease {kv.lease}, and "
                                   "leases do not move between shards: revoke it to split here")
        out.append(kv)
    # Intents of keys in the range (including those of keys with no value yet), in this slice.
    last = kvs[r.limit - 1].key if more else None
    forget = "forget-intents-on-split" in store.bugs  # (a planted bug: tests only)
    for key, held in store.intents.in_range(first, (last + b"\0") if last else (r.end or ALL_KEYS)):
        if forget:
            break
        for intent in held.values():
            out.append(KeyValue(intent_key(key, intent.txn), value=intent.encode()))
    if not r.after:  # range locks over the moved keys go along, once (with the first slice)
        for txn, locks in store.intents.ranges.items():
            for start, end, group in locks:
                if ranges_overlap(start, end, r.start, r.end or ALL_KEYS):
                    out.append(KeyValue(range_key(txn, start),
                                        value=msgpack.packb([start, end, group])))
    return ShardResponse(store._header(), tuple(out), more)


def import_keys(store: KVStore, r: ShardImportRequest) -> ShardResponse:
    span = store.span
    if span is not None and span.serving:
        # A slice from a split's earlier attempt, applied after the group opened: it would
        # overwrite every write since with the frozen copy (found by sim/txn.py, seed 13).
        raise MalformedRequest("this shard already serves its keys: a late import is refused")
    store.mvcc.begin()
    for kv in r.kvs:
        if kv.key.startswith(RANGE_PREFIX):
            start, end, group = msgpack.unpackb(kv.value)
            txn = range_txn(kv.key)
            store._put(PutRequest(kv.key, kv.value))
            store.intents.ranges.setdefault(txn, []).append((bytes(start), bytes(end), int(group)))
        elif kv.key.startswith(INTENT_PREFIX):
            key, txn = split_intent_key(kv.key)
            intent = Intent.decode(kv.value)
            if span is not None and not span.owns(key):
                raise MalformedRequest(f"imported intent for {key!r:.80}, outside this shard")
            store._put(PutRequest(kv.key, kv.value))
            store.intents.add(key, intent)
        else:
            if span is not None and not span.owns(kv.key):
                raise MalformedRequest(f"imported key {kv.key!r:.80}, outside this shard")
            store._put(PutRequest(kv.key, kv.value))
    store.mvcc.end()
    return ShardResponse(store._header())


def drop(store: KVStore, r: ShardDropRequest) -> ShardResponse:
    span = store.span
    if span is not None and span.owns_range(r.start, r.end or ALL_KEYS):
        raise MalformedRequest("refusing to drop keys this shard still owns")
    store.mvcc.begin()
    for lo, hi in user_ranges(r.start, r.end):
        store._delete(lo, hi)
    for key, held in list(store.intents.in_range(r.start, r.end or ALL_KEYS)):
        for txn in list(held):
            store._delete(intent_key(key, txn), b"")
            store.intents.remove(key, txn)
    store.mvcc.end()
    return ShardResponse(store._header())
