"""One partition of the event log: the state machine of a partition's consensus group.

A Kafka partition is a consensus group. Its record batches live in segment files
(events/segments.py: `.log`, `.index`, `.timeindex`, Kafka's layout) in the group's data
directory, appended when an entry applies; its store holds only the small state, under the
reserved keyspace:
- the partition's state (`log/state`): the next offset, the log start offset, and the offset
  up to which the log has been compacted;
- the idempotent producers (`log/p/<producer id>`): the epoch, and the sequence numbers and
  offsets of the producer's last batches (Kafka keeps five), so a retried batch is written
  once and answered with its first offset, a gap is refused (OUT_OF_ORDER_SEQUENCE_NUMBER) and
  an older epoch is fenced (INVALID_PRODUCER_EPOCH).

`LogAppendRequest` goes through the log like any write; offsets are assigned here in log
order, dense, so every replica writes the same bytes to the same segments (rolled at the same
batch: segment.bytes and segment.ms arrive in the request). `LogTrimRequest` deletes whole
segments before an offset (retention by time and size is the leader's decision,
server/kafka.py); `LogCompactRequest` runs the cleaner (events/compaction.py) over the closed
segments, on every replica alike.

Durability composes with the consensus log this way: the group's WAL holds every entry since
the last snapshot, so segments need no fsync of their own on the append path; a snapshot
syncs the segments and carries their bytes (`KVStore.snapshot`), and only then may the WAL
before it go. After kill -9 a replica restores its snapshot, whose segments its files are
compared with (a segment that differs is rewritten from the snapshot), cuts the files back to
the snapshot's next offset, and the WAL applies the rest again; a lagging follower installing
a snapshot gets the segments the same way. So an acknowledged batch is always in the WAL of
a quorum or in a synced snapshot. Fetches read the segments after a ReadIndex, so they see
exactly what is committed: the high watermark is the next offset. Pure: no I/O (the files come
through the store's `Directory`), no clock (the leader's clock arrives in the request)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgpack

from ..events.compaction import clean, latest_offsets
from ..events.protocol.error_codes import ErrorCode
from ..events.protocol.records import RecordBatch, iter_batches, restamp
from ..events.segments import CorruptSegment, SegmentLog
from .errors import MalformedRequest
from .keyvalue import RESERVED
from .requests import (
    LogAppendRequest,
    LogAppendResponse,
    LogCompactRequest,
    LogTrimRequest,
    PutRequest,
)

if TYPE_CHECKING:
    from .store import KVStore

LOG_PREFIX = RESERVED + b"log/"
STATE_KEY = LOG_PREFIX + b"state"
PRODUCER_PREFIX = LOG_PREFIX + b"p/"
PRODUCER_BATCHES = 5  # retried batches recognised per producer (Kafka's)


class LogState:
    """next offset, log start offset, and the offset before which the log is compacted."""

    def __init__(self, next_offset: int = 0, start_offset: int = 0, cleaned: int = 0):
        self.next_offset, self.start_offset, self.cleaned = next_offset, start_offset, cleaned

    @classmethod
    def of(cls, store: KVStore) -> LogState:
        kv = store.mvcc.get(STATE_KEY)
        if kv is None:
            return cls()
        n, s, c = msgpack.unpackb(kv.value)
        return cls(int(n), int(s), int(c))

    def save(self, store: KVStore) -> None:
        store._put(PutRequest(STATE_KEY, msgpack.packb([self.next_offset, self.start_offset,
                                                         self.cleaned])))


def is_partition(store: KVStore) -> bool:
    return store.mvcc.get(STATE_KEY) is not None


def open_segments(store: KVStore) -> SegmentLog:
    """The store's segment files, recovered and cut back to what its state says is applied
    (the consensus log applies the rest again)."""
    log = SegmentLog.open(store.files)
    state = LogState.of(store)
    log.truncate(state.next_offset)
    if log.next_offset < state.next_offset and log.segments:
        raise CorruptSegment(f"{log.segments[-1].log}: the segments end at offset "
                             f"{log.next_offset}, the partition's state at "
                             f"{state.next_offset}: acknowledged batches are missing")
    if not log.segments and state.next_offset > state.start_offset:
        raise CorruptSegment(f"no segment file holds offsets {state.start_offset} to "
                             f"{state.next_offset}: acknowledged batches are missing")
    return log


def append(store: KVStore, r: LogAppendRequest) -> LogAppendResponse:
    try:
        batches = list(iter_batches(r.batches, verify=False))
    except Exception as exc:  # noqa: BLE001 - the leader checked; a bad entry fails alike
        raise MalformedRequest(f"LogAppendRequest: {exc}") from None
    if not batches:
        raise MalformedRequest("LogAppendRequest: no record batch")
    state = LogState.of(store)
    producers: dict[int, tuple[int, list[list[int]]]] = {}
    for h, _ in batches:
        if h.records_count <= 0 or h.last_offset_delta != h.records_count - 1 or h.magic != 2:
            return _refuse(store, state, ErrorCode.CORRUPT_MESSAGE)
        if h.producer_id < 0:
            continue  # not idempotent: nothing to check
        epoch, recent = producers.get(h.producer_id) or _producer(store, h.producer_id)
        if h.producer_epoch < epoch:
            return _refuse(store, state, ErrorCode.INVALID_PRODUCER_EPOCH)
        if h.producer_epoch > epoch:  # a new producer, or a new epoch: sequences restart
            if h.base_sequence != 0:
                return _refuse(store, state, ErrorCode.UNKNOWN_PRODUCER_ID if epoch < 0
                               else ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER)
            recent = []
        else:
            dup = next((off for first, _, off in recent if first == h.base_sequence), None)
            if dup is not None and len(batches) == 1:  # a retry: written once, same answer
                return LogAppendResponse(store._header(), dup, 0, state.start_offset)
            expected = recent[-1][1] + 1 if recent else 0
            if h.base_sequence != expected:
                return _refuse(store, state, ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER)
        last_seq = h.base_sequence + h.last_offset_delta
        producers[h.producer_id] = (h.producer_epoch, [*recent, [h.base_sequence, last_seq, -1]])
    log = store.segments
    store.mvcc.begin()
    base = state.next_offset
    for h, raw in batches:
        offset = state.next_offset
        log.append(restamp(raw, offset), r.segment_bytes, r.segment_ms)
        state.next_offset += h.last_offset_delta + 1
        if h.producer_id >= 0:
            for entry in producers[h.producer_id][1]:
                if entry[2] == -1 and entry[0] == h.base_sequence:
                    entry[2] = offset
    for pid, (epoch, recent) in producers.items():
        store._put(PutRequest(PRODUCER_PREFIX + b"%020d" % pid,
                              msgpack.packb([epoch, recent[-PRODUCER_BATCHES:]])))
    state.save(store)
    store.mvcc.end()
    assert state.next_offset > base
    return LogAppendResponse(store._header(), base, 0, state.start_offset)


def _producer(store: KVStore, pid: int) -> tuple[int, list[list[int]]]:
    kv = store.mvcc.get(PRODUCER_PREFIX + b"%020d" % pid)
    if kv is None:
        return -1, []
    epoch, recent = msgpack.unpackb(kv.value)
    return int(epoch), [[int(a), int(b), int(c)] for a, b, c in recent]


def _save(store: KVStore, state: LogState) -> None:
    store.mvcc.begin()
    state.save(store)
    store.mvcc.end()


def _refuse(store: KVStore, state: LogState, code: int) -> LogAppendResponse:
    return LogAppendResponse(store._header(), -1, int(code), state.start_offset)


def trim(store: KVStore, r: LogTrimRequest) -> LogAppendResponse:
    """Delete the whole segments before `before_offset` (retention; never the active one):
    the log start moves up to the first segment kept."""
    state = LogState.of(store)
    start = store.segments.delete_before(r.before_offset)
    if start > state.start_offset:
        state.start_offset = start
        _save(store, state)
    return LogAppendResponse(store._header(), -1, 0, state.start_offset)


def compact(store: KVStore, r: LogCompactRequest) -> LogAppendResponse:
    """Clean the closed segments: each key's latest record stays, tombstones older than
    `delete_retention_ms` go, offsets are kept (events/compaction.py)."""
    state = LogState.of(store)
    log = store.segments
    closed = log.closed()
    if closed and closed[-1].next_offset > state.cleaned:
        decoded = [[(raw, RecordBatch.decode(raw)) for raw in log.segment_batches(seg)]
                   for seg in closed]
        latest = latest_offsets(b for seg in decoded for _, b in seg)
        horizon = r.now_ms - r.delete_retention_ms
        for seg, batches in zip(closed, decoded, strict=True):
            results = [(raw, clean(raw, b, latest, horizon)) for raw, b in batches]
            if any(out is not raw for raw, out in results):
                log.replace(seg, [out for _, out in results if out is not None])
        state.cleaned = closed[-1].next_offset
        _save(store, state)
    return LogAppendResponse(store._header(), -1, 0, state.start_offset)
