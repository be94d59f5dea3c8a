"""Multi-version key space: etcd's treeIndex + keyIndex, and its revision-ordered backend.

Every write request that changes something gets the next main revision; the writes inside it
are ordered by a sub-revision. A key's history is kept as parallel lists sorted by revision, so
a read at any revision since the last compaction is a bisect. Keys sit in a SortedDict, so a
range costs O(log n + k). The events of each revision are also kept in revision order, for
watchers catching up from the past; they share the KeyValue objects of the key index."""

from __future__ import annotations

import zlib
from bisect import bisect_left, bisect_right
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

from sortedcontainers import SortedDict

from .codec import pack
from .errors import CorruptSnapshot, ErrCompacted, ErrFutureRev
from .keyvalue import ALL_KEYS, Event, EventType, KeyValue

RECORD_OVERHEAD = 48  # approximate bytes per stored version beyond key and value
RANGE_SLICE = 2000  # keys a read visits between pauses; about 2 ms of work

T = TypeVar("T")
Steps = Generator[None, None, T]  # work done in slices: each `yield` is a pause


def finish(steps: Steps[T]) -> T:
    """Run `steps` to the end without pausing; their result."""
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return cast(T, done.value)


def record_size(kv: KeyValue) -> int:
    return len(kv.key) + len(kv.value) + RECORD_OVERHEAD


@dataclass(slots=True)
class KeyHistory:
    """Surviving versions of one key, oldest first; a tombstone ends a generation."""

    revs: list[int] = field(default_factory=list)  # main revisions, strictly increasing
    subs: list[int] = field(default_factory=list)
    kvs: list[KeyValue] = field(default_factory=list)

    def append(self, rev: int, sub: int, kv: KeyValue) -> None:
        # One version per key per revision: txn validation (ErrDuplicateKey) guarantees it.
        assert not self.revs or rev > self.revs[-1], (kv.key, rev, self.revs[-1])
        assert kv.mod_revision == rev
        self.revs.append(rev)
        self.subs.append(sub)
        self.kvs.append(kv)

    def at(self, revision: int) -> KeyValue | None:
        """The live version at `revision`, or None if absent then."""
        i = bisect_right(self.revs, revision) - 1
        if i < 0 or self.kvs[i].tombstone:
            return None
        return self.kvs[i]

    def latest(self) -> KeyValue | None:
        return None if not self.kvs or self.kvs[-1].tombstone else self.kvs[-1]

    def compact(self, revision: int) -> int:
        """Drop versions older than `revision`, keeping the one visible at `revision` unless it
        is a tombstone (etcd's keyIndex.compact). Versions at `revision` and later stay: they
        are the events a watch from `revision` must see. Returns the bytes freed."""
        j = bisect_left(self.revs, revision)
        keep_from = j - 1 if j > 0 and not self.kvs[j - 1].tombstone else j
        freed = sum(record_size(kv) for kv in self.kvs[:keep_from])
        del self.revs[:keep_from], self.subs[:keep_from], self.kvs[:keep_from]
        return freed


@dataclass(frozen=True, slots=True)
class KVHash:
    hash: int  # crc32 of every version with revision <= `revision`, in key order
    revision: int
    compact_revision: int


class MVCC:
    def __init__(self) -> None:
        self.revision = 1  # etcd: an empty store is at revision 1; the first write makes 2
        self.compact_revision = 0
        self.size_bytes = 0  # approximate: every stored version, for the quota
        self._keys: SortedDict = SortedDict()  # bytes -> KeyHistory
        self._log: list[tuple[Event, ...]] = []  # events of revisions _log_first.. in order
        self._log_first = 2
        self._pending: list[Event] | None = None  # events of the open write

    # --- reads ---

    @property
    def read_revision(self) -> int:
        """What reads see: inside a write that changed something, its own writes (etcd)."""
        return self.revision + 1 if self._pending else self.revision

    def check_revision(self, revision: int) -> int:
        """The revision a read at `revision` (0 = current) sees, or ErrCompacted/ErrFutureRev."""
        current = self.read_revision
        if revision <= 0:
            return current
        if revision > current:
            raise ErrFutureRev(revision, current)
        if revision < self.compact_revision:
            raise ErrCompacted(revision, self.compact_revision)
        return revision

    def get(self, key: bytes) -> KeyValue | None:
        history = self._keys.get(key)
        return history.latest() if history is not None else None

    def range(
        self, key: bytes, range_end: bytes, revision: int = 0, limit: int = 0
    ) -> tuple[list[KeyValue], int, int]:
        """(up to `limit` live versions in key order at `revision`, how many there are in all,
        the current revision). Counting visits every key in the range, as etcd's index does."""
        return finish(self.range_steps(key, range_end, revision, limit))

    def range_steps(
        self, key: bytes, range_end: bytes, revision: int = 0, limit: int = 0
    ) -> Steps[tuple[list[KeyValue], int, int]]:
        """range() as steps: it pauses (yields) after every RANGE_SLICE keys, so a server can
        let the event loop run between slices of a read over 100k keys. Every slice reads at
        the revision of the first: versions are only ever added or compacted away, so only a
        compaction past it, while paused, can end the read (ErrCompacted, as etcd says to a
        read at a compacted revision)."""
        at = self.check_revision(revision)
        current = self.read_revision
        kvs: list[KeyValue] = []
        count = 0
        after: bytes | None = None  # the last key of the previous slice
        while True:
            seen = 0
            for k, history in self._histories(key, range_end, after):
                seen += 1
                kv = history.at(at)
                if kv is not None:
                    count += 1
                    if limit <= 0 or len(kvs) < limit:
                        kvs.append(kv)
                if seen == RANGE_SLICE:
                    after = k
                    break
            else:
                return kvs, count, current
            yield
            if at < self.compact_revision:
                raise ErrCompacted(at, self.compact_revision)

    def _histories(
        self, key: bytes, range_end: bytes, after: bytes | None = None
    ) -> Iterator[tuple[bytes, KeyHistory]]:
        """The keys in the range, in order; only those past `after`, if given."""
        if range_end == b"":
            history = self._keys.get(key)
            if history is not None and after is None:
                yield key, history
            return
        lo, inclusive = (key, True) if after is None else (after, False)
        if range_end == ALL_KEYS:
            keys = self._keys.irange(minimum=lo, inclusive=(inclusive, True))
        elif range_end <= key:
            return
        else:
            keys = self._keys.irange(lo, range_end, inclusive=(inclusive, False))
        for k in keys:
            yield k, self._keys[k]

    def events(self, revision: int) -> tuple[Event, ...]:
        """The events of one revision still in history (revision >= compact revision)."""
        assert self._log_first <= revision <= self.revision, (revision, self._log_first)
        return self._log[revision - self._log_first]

    @property
    def first_event_revision(self) -> int:
        return self._log_first

    # --- writes: begin(), then put/delete_range, then end() ---

    def begin(self) -> None:
        assert self._pending is None, "a write is already open"
        self._pending = []

    def put(self, key: bytes, value: bytes, lease: int) -> tuple[KeyValue, KeyValue | None]:
        """Writes a new version; returns it and the version it replaced (if live)."""
        assert self._pending is not None, "put outside begin()/end()"
        rev = self.revision + 1
        history = self._keys.get(key)
        if history is None:
            history = self._keys[key] = KeyHistory()
        prev = history.latest()
        if prev is None:  # a new generation: version restarts at 1
            kv = KeyValue(key, rev, rev, 1, value, lease)
        else:
            kv = KeyValue(key, prev.create_revision, rev, prev.version + 1, value, lease)
        history.append(rev, len(self._pending), kv)
        self._pending.append(Event(EventType.PUT, kv, prev))
        self.size_bytes += record_size(kv)
        return kv, prev

    def delete_range(self, key: bytes, range_end: bytes) -> list[KeyValue]:
        """Tombstones every live key in the range; returns the versions deleted, in key order."""
        assert self._pending is not None, "delete outside begin()/end()"
        rev = self.revision + 1
        deleted: list[KeyValue] = []
        for k, history in self._histories(key, range_end):
            prev = history.latest()
            if prev is None:
                continue
            tombstone = KeyValue(k, mod_revision=rev)
            history.append(rev, len(self._pending), tombstone)
            self._pending.append(Event(EventType.DELETE, tombstone, prev))
            self.size_bytes += record_size(tombstone)
            deleted.append(prev)
        return deleted

    def end(self) -> int:
        """Closes the write: the revision moves on by one if anything changed. Returns it."""
        assert self._pending is not None, "end() without begin()"
        if self._pending:
            self.revision += 1
            self._log.append(tuple(self._pending))
        self._pending = None
        assert self._log_first + len(self._log) == self.revision + 1
        return self.revision

    # --- compaction ---

    def compact(self, revision: int) -> None:
        if revision <= self.compact_revision:
            raise ErrCompacted(revision, self.compact_revision)
        if revision > self.revision:
            raise ErrFutureRev(revision, self.revision)
        assert self._pending is None
        for key in list(self._keys):  # O(keys), as etcd's index compaction
            history = self._keys[key]
            self.size_bytes -= history.compact(revision)
            if not history.kvs:
                del self._keys[key]
        drop = max(0, revision - self._log_first)
        del self._log[:drop]
        self._log_first += drop
        self.compact_revision = revision
        assert self.size_bytes >= 0

    # --- hash, snapshot ---

    def hash_kv(self, revision: int = 0) -> KVHash:
        """A digest of every stored version up to `revision` (etcd's HashKV): replicas at the
        same revision with the same compaction history agree on it."""
        at = self.check_revision(revision)
        crc = zlib.crc32(pack(self.compact_revision))
        for key, history in self._keys.items():
            n = bisect_right(history.revs, at)
            if n:
                rows = [_record(history, i) for i in range(n)]
                crc = zlib.crc32(pack([key, rows]), crc)
        return KVHash(crc, at, self.compact_revision)

    def dump(self) -> list[Any]:
        assert self._pending is None
        keys = [[k, [_record(h, i) for i in range(len(h.kvs))]] for k, h in self._keys.items()]
        return [self.revision, self.compact_revision, keys]

    @classmethod
    def load(cls, raw: Any) -> MVCC:
        """The inverse of dump(), checking every invariant a replica relies on."""
        _need(isinstance(raw, list) and len(raw) == 3, "mvcc: expected [revision, compact, keys]")
        revision, compact_revision, keys = raw
        _need(type(revision) is int and revision >= 1, "mvcc: bad revision")
        _need(type(compact_revision) is int and 0 <= compact_revision <= revision,
              "mvcc: bad compact revision")  # fmt: skip
        _need(isinstance(keys, list), "mvcc: keys is not an array")
        mvcc = cls()
        mvcc.revision, mvcc.compact_revision = revision, compact_revision
        mvcc._log_first = max(2, compact_revision)
        log: list[list[tuple[int, Event]]] = [[] for _ in range(mvcc._log_first, revision + 1)]
        previous_key = b""
        for entry in keys:
            _need(isinstance(entry, list) and len(entry) == 2, "mvcc: bad key entry")
            key, rows = entry
            _need(type(key) is bytes and key > previous_key, f"mvcc: key {key!r} out of order")
            _need(isinstance(rows, list) and len(rows) > 0, f"mvcc: key {key!r} has no versions")
            previous_key = key
            history = mvcc._keys[key] = KeyHistory()
            for row in rows:
                kv, sub = _load_record(key, row, history, revision)
                prev = history.latest()
                history.append(kv.mod_revision, sub, kv)
                mvcc.size_bytes += record_size(kv)
                if kv.mod_revision >= mvcc._log_first:
                    kind = EventType.DELETE if kv.tombstone else EventType.PUT
                    log[kv.mod_revision - mvcc._log_first].append((sub, Event(kind, kv, prev)))
        # The event log is derived state, rebuilt from the versions in (revision, sub) order.
        for i, events in enumerate(log):
            events.sort(key=lambda e: e[0])
            _need([sub for sub, _ in events] == list(range(len(events))) and len(events) > 0,
                  f"mvcc: revision {mvcc._log_first + i} has missing or repeated writes")  # fmt: skip
            mvcc._log.append(tuple(e for _, e in events))
        return mvcc


def _load_record(key: bytes, row: Any, history: KeyHistory, revision: int) -> tuple[KeyValue, int]:
    what = f"mvcc: key {key!r} version {row!r}"
    _need(isinstance(row, list) and len(row) == 6, what)
    rev, sub, create, version, value, lease = row
    _need(all(type(x) is int for x in (rev, sub, create, version, lease)), what)
    _need(type(value) is bytes and 1 < rev <= revision and sub >= 0, what)
    _need(not history.revs or rev > history.revs[-1], f"{what}: revisions out of order")
    kv = KeyValue(key, create, rev, version, value, lease)
    prev = history.latest()
    if kv.tombstone:
        _need(create == 0 and value == b"" and lease == 0 and prev is not None, what)
    elif prev is not None:
        _need(version == prev.version + 1 and create == prev.create_revision, what)
    elif history.kvs:  # after a tombstone: a new generation
        _need(version == 1 and create == rev, what)
    else:  # the oldest surviving version
        _need(version >= 1 and 1 < create <= rev and lease >= 0, what)
    return kv, sub


def _need(ok: bool, what: str) -> None:
    if not ok:
        raise CorruptSnapshot(what)


def _record(history: KeyHistory, i: int) -> list[Any]:
    kv = history.kvs[i]
    return [history.revs[i], history.subs[i], kv.create_revision, kv.version, kv.value, kv.lease]
