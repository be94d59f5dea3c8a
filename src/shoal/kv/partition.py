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

Durability composes with the consensus log this way. The group's WAL holds every entry since
the oldest snapshot kept, so segments need no fsync of their own on the append path. A snapshot
syncs the segments (files and directory) and then names them rather than copying them
(`KVStore.snapshot`, SegmentLog.manifest: per segment its base, next offset, size and a digest
of its batch headers; for the active one also what its rolling depends on, its fill and first
timestamp): the files are the state, as Kafka's and Redpanda's are, and only once the snapshot
is durable may the WAL before it go. So every byte a snapshot names is on disk before the
entries that wrote it can be released, and an acknowledged batch is always in the WAL of a
quorum or in synced segments a durable snapshot names. After kill -9 a replica restores its
snapshot (SegmentLog.restore): each segment is recovered (torn tail cut), the files are cut
back to the snapshot's next offset (the WAL applies the rest again), and every named segment
must be there as named, or the replica refuses to start (CorruptSegment: an acknowledged batch
is missing).

Trims and compactions delete or rewrite closed segments the last snapshot names. Each first
records its entry's index, durably (REWRITE_CHECKPOINT), and the replica takes a snapshot right
after applying it (replica.py), so the newest snapshot describes the files again. A crash in
between leaves a snapshot older than the checkpoint: then a named segment may be missing or
different, legitimately, because the WAL after the snapshot holds the trim or compaction and
applies it again. Both are idempotent over their own output (a trim of what is gone deletes
nothing; the cleaner keeps a batch whose records all stay byte for byte), appends cut back
are written again with the same bytes, and the segment the snapshot had active keeps the
snapshot's fill and first timestamp, so it rolls at the same batch as on every other replica:
the files come out byte for byte as a replica's that never crashed would be (tested in
tests/test_kafka_segments.py).

A follower installing a snapshot from the leader gets the segments' bytes: the leader reads
what its snapshot names back from its files when it sends the snapshot (Replica's
`_with_segments`, `KVStore.carrying_segments`). The files still hold those bytes unchanged,
because appends only add after them and every trim or compaction is followed by a new
snapshot. The follower writes each segment it does not already hold and persists the snapshot
with the bytes in it (the WAL it replaces is gone), until its own next snapshot names them.

Fetches read the segments after a ReadIndex, so they see exactly what is committed: the high
watermark is the next offset. Pure: no I/O (the files come through the store's `Directory`),
no clock (the leader's clock arrives in the request)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgpack

from ..events.compaction import clean, latest_offsets
from ..events.protocol.error_codes import ErrorCode
from ..events.protocol.records import RecordBatch, iter_batches
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


def restore_segments(store: KVStore, segments: list[list[object]]) -> SegmentLog:
    """The store's segment files made what its snapshot says (SegmentLog.restore): the
    snapshot was just loaded into `store`, so its state is the snapshot's."""
    log = SegmentLog.open(store.files)
    log.restore(segments, LogState.of(store).next_offset, log.rewritten > store.applied_index)
    return log


def append(store: KVStore, r: LogAppendRequest) -> LogAppendResponse:
    try:
        # Views, not copies: the segment writes each batch from this entry's bytes.
        batches = list(iter_batches(memoryview(r.batches), verify=False))
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
        log.append(raw, r.segment_bytes, r.segment_ms, offset)
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
    start = store.segments.delete_before(r.before_offset, store.applied_index)
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
                log.replace(seg, [out for _, out in results if out is not None],
                            store.applied_index)
        state.cleaned = closed[-1].next_offset
        _save(store, state)
    return LogAppendResponse(store._header(), -1, 0, state.start_offset)
