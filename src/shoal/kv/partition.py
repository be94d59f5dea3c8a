"""One partition of the event log: the state machine of a partition's consensus group.

A Kafka partition is a consensus group whose store holds, under the reserved keyspace:
- each record batch as it was produced, restamped with its base offset (`log/b/<offset>`):
  offsets are dense, assigned here in log order, so every replica gives a batch the same;
- the partition's state (`log/state`): the next offset, the log start offset, bytes held;
- the idempotent producers (`log/p/<producer id>`): the epoch, and the sequence numbers and
  offsets of the producer's last batches (Kafka keeps five), so a retried batch is written
  once and answered with its first offset, a gap is refused (OUT_OF_ORDER_SEQUENCE_NUMBER) and
  an older epoch is fenced (INVALID_PRODUCER_EPOCH).

`LogAppendRequest` goes through the log like any write, so an acknowledged batch is on a
quorum's disks (acks=all). `LogTrimRequest` drops whole batches before an offset: retention by
time and by size is the leader's decision (server/kafka.py), applied by every replica alike.
Fetches read the batches straight from the store after a ReadIndex, so they see exactly what is
committed: the high watermark is the next offset. Batches sit in the store's memory, bounded by
retention; segment files on disk are the next step (docs/kafka.md). Pure: no I/O, no clock
(the leader's clock arrives in the request)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgpack

from ..events.protocol.error_codes import ErrorCode
from ..events.protocol.records import iter_batches, restamp
from .errors import MalformedRequest
from .keyvalue import RESERVED, prefix_end
from .requests import LogAppendRequest, LogAppendResponse, LogTrimRequest, PutRequest

if TYPE_CHECKING:
    from .store import KVStore

LOG_PREFIX = RESERVED + b"log/"
BATCH_PREFIX = LOG_PREFIX + b"b/"
BATCH_END = prefix_end(BATCH_PREFIX)
STATE_KEY = LOG_PREFIX + b"state"
PRODUCER_PREFIX = LOG_PREFIX + b"p/"
PRODUCER_BATCHES = 5  # retried batches recognised per producer (Kafka's)


def batch_key(base_offset: int) -> bytes:
    return BATCH_PREFIX + b"%020d" % base_offset


def offset_of(key: bytes) -> int:
    return int(key[len(BATCH_PREFIX):])


class LogState:
    """next offset, log start offset, bytes held."""

    def __init__(self, next_offset: int = 0, start_offset: int = 0, size: int = 0):
        self.next_offset, self.start_offset, self.size = next_offset, start_offset, size

    @classmethod
    def of(cls, store: KVStore) -> LogState:
        kv = store.mvcc.get(STATE_KEY)
        if kv is None:
            return cls()
        n, s, b = msgpack.unpackb(kv.value)
        return cls(int(n), int(s), int(b))

    def save(self, store: KVStore) -> None:
        store._put(PutRequest(STATE_KEY, msgpack.packb([self.next_offset, self.start_offset,
                                                         self.size])))


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
    store.mvcc.begin()
    base = state.next_offset
    for h, raw in batches:
        offset = state.next_offset
        store._put(PutRequest(batch_key(offset), restamp(raw, offset)))
        state.next_offset += h.last_offset_delta + 1
        state.size += len(raw)
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


def _refuse(store: KVStore, state: LogState, code: int) -> LogAppendResponse:
    return LogAppendResponse(store._header(), -1, int(code), state.start_offset)


def trim(store: KVStore, r: LogTrimRequest) -> LogAppendResponse:
    """Drop every batch wholly before `before_offset` (retention); the log start moves up to
    the first batch kept."""
    state = LogState.of(store)
    kvs, _, _ = store.mvcc.range(BATCH_PREFIX, BATCH_END)
    store.mvcc.begin()
    for i, kv in enumerate(kvs):
        nxt = offset_of(kvs[i + 1].key) if i + 1 < len(kvs) else state.next_offset
        if nxt > r.before_offset:
            break
        store._delete(kv.key, b"")
        state.size -= len(kv.value)
        state.start_offset = nxt
    state.save(store)
    store.mvcc.end()
    return LogAppendResponse(store._header(), -1, 0, state.start_offset)

