"""The participant half of two-phase commit: intents and transaction records, in the store.

A transaction that spans shards is committed the way CockroachDB and Spanner commit one: every
shard it touches first *prepares*, then one *record* decides, then the shards *resolve*.

- **Prepare** (`TxnPrepareRequest`, through the shard's log) validates and locks in one step:
  every key the transaction read must still be at the version it saw (`mod_revision`, 0 for
  absent), and no other transaction may hold an intent that conflicts. If all holds, the shard
  writes an *intent* per key: a write intent carries the new value (or a delete), a read intent
  is a shared lock that keeps writers out until the decision. Once the entry is applied the
  prepared state is durable in the group's log, so the shard's yes vote survives any crash. A
  refusal names every conflicting key, why (`changed`, `locked`, `decided`) and, for a lock,
  which transaction holds it and where its record lives, so the caller can resolve it.
- **The record** lives in one shard's group (the *record group*), under the reserved keyspace.
  The prepare sent there creates it, `pending` and attached to the coordinator's lease; the
  coordinator commits by `pending -> committed`, a record operation that does nothing unless
  the record is still pending. If the coordinator dies, its lease expires and takes the pending
  record with it; a record that is absent means aborted (*presumed abort*), and whoever meets
  one of the transaction's intents writes `aborted` where the record was, so a late commit from
  a paused coordinator finds no pending record and fails.
- **Resolve** (`TxnResolveRequest`) applies a committed transaction's write intents as plain
  writes, or drops an aborted one's, in one revision per shard. It is idempotent: a key without
  this transaction's intent is left alone.
- **One-phase commit**: a transaction whose keys all live in one shard validates and writes in
  a single prepare with `one_phase`, no intents and no record.

Plain reads and writes keep their guarantees around intents: a write to a key with any intent,
or a read of a key with a write intent, is refused with `ErrIntentConflict`; the client
resolves the intent (from its record) and retries, as a CockroachDB reader pushes a writer.

The intents are kept as reserved keys, so they replicate, snapshot and restore with the rest of
the store; an in-memory index by user key (rebuilt on restore) answers "which intents does this
key or range hold" without a scan. Pure: no I/O, no clock."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import msgpack
from sortedcontainers import SortedDict

from .errors import CorruptSnapshot, ErrIntentConflict, MalformedRequest
from .keyvalue import ALL_KEYS, RESERVED, KeyValue, prefix_end
from .requests import (
    LOCKING_READ,
    PutRequest,
    RecordStatus,
    TxnConflict,
    TxnPrepareRequest,
    TxnPrepareResponse,
    TxnRecordAction,
    TxnRecordRequest,
    TxnRecordResponse,
    TxnResolveRequest,
    TxnResolveResponse,
)

if TYPE_CHECKING:
    from .store import KVStore

INTENT_PREFIX = RESERVED + b"intent/"
RANGE_PREFIX = RESERVED + b"intent-range/"  # + txn + start: a range lock (lock_ranges)
RECORD_PREFIX = RESERVED + b"txn/"
READ, PUT, DELETE = 0, 1, 2  # what an intent holds


@dataclass(frozen=True, slots=True)
class Intent:
    txn: bytes
    record_group: int
    kind: int  # READ, PUT or DELETE
    value: bytes = b""

    def encode(self) -> bytes:
        return msgpack.packb([self.txn, self.record_group, self.kind, self.value])

    @classmethod
    def decode(cls, data: bytes) -> Intent:
        try:
            txn, group, kind, value = msgpack.unpackb(data)
        except (ValueError, TypeError, msgpack.UnpackException) as exc:
            raise CorruptSnapshot(f"malformed intent: {exc}") from None
        if not (isinstance(txn, bytes) and type(group) is int and kind in (READ, PUT, DELETE)):
            raise CorruptSnapshot(f"malformed intent {txn!r:.40}")
        return cls(txn, group, kind, value)


def intent_key(key: bytes, txn: bytes) -> bytes:
    """Length-prefixed, so the intents of one key are one prefix whatever bytes keys hold."""
    return INTENT_PREFIX + len(key).to_bytes(4, "big") + key + txn


def split_intent_key(k: bytes) -> tuple[bytes, bytes]:
    n = int.from_bytes(k[len(INTENT_PREFIX):len(INTENT_PREFIX) + 4], "big")
    start = len(INTENT_PREFIX) + 4
    return k[start:start + n], k[start + n:]


def range_key(txn: bytes, start: bytes) -> bytes:
    return RANGE_PREFIX + bytes((len(txn),)) + txn + start  # (ids are 8 to 32 bytes)


def range_txn(key: bytes) -> bytes:
    n = key[len(RANGE_PREFIX)]
    return key[len(RANGE_PREFIX) + 1:len(RANGE_PREFIX) + 1 + n]


def record_key(txn: bytes) -> bytes:
    return RECORD_PREFIX + txn


class IntentIndex:
    """user key -> {txn: Intent}, the intents the store holds, in key order."""

    def __init__(self) -> None:
        self._by_key: SortedDict = SortedDict()
        self.count = 0
        # Range locks: txn -> [(start, range_end, record group)], few and short-lived.
        self.ranges: dict[bytes, list[tuple[bytes, bytes, int]]] = {}

    def range_conflicts(self, key: bytes, range_end: bytes, txn: bytes = b"") -> list[TxnConflict]:
        """Other transactions' range locks overlapping [key, range_end)."""
        out = []
        for holder, locks in self.ranges.items():
            if holder == txn:
                continue
            for start, end, group in locks:
                if ranges_overlap(key, range_end, start, end):
                    out.append(TxnConflict(key, "locked", holder, group))
                    break
        return out

    def get(self, key: bytes) -> dict[bytes, Intent]:
        found: dict[bytes, Intent] | None = self._by_key.get(key)
        return found or {}

    def add(self, key: bytes, intent: Intent) -> None:
        held = self._by_key.setdefault(key, {})
        if intent.txn not in held:
            self.count += 1
        held[intent.txn] = intent

    def remove(self, key: bytes, txn: bytes) -> None:
        held = self._by_key.get(key)
        if held is not None and held.pop(txn, None) is not None:
            self.count -= 1
            if not held:
                del self._by_key[key]
        assert self.count >= 0

    def in_range(self, key: bytes, range_end: bytes) -> Iterator[tuple[bytes, dict[bytes, Intent]]]:
        if self.count == 0:
            return
        if range_end == b"":
            held = self._by_key.get(key)
            if held:
                yield key, held
            return
        hi = None if range_end == ALL_KEYS else range_end
        for k in self._by_key.irange(key, hi, inclusive=(True, False)):
            yield k, self._by_key[k]

    @classmethod
    def rebuild(cls, store: KVStore) -> IntentIndex:
        index = cls()
        for kv in store.mvcc.range(RANGE_PREFIX, prefix_end(RANGE_PREFIX))[0]:
            start, end, group = msgpack.unpackb(kv.value)
            txn = range_txn(kv.key)
            index.ranges.setdefault(txn, []).append((bytes(start), bytes(end), int(group)))
        kvs, _, _ = store.mvcc.range(INTENT_PREFIX, prefix_end(INTENT_PREFIX))
        for kv in kvs:
            key, txn = split_intent_key(kv.key)
            intent = Intent.decode(kv.value)
            if intent.txn != txn:
                raise CorruptSnapshot(f"intent key {kv.key!r:.60} holds txn {intent.txn!r}")
            index.add(key, intent)
        return index


# --- the checks plain requests pass -----------------------------------------------------


def _conflict(key: bytes, intent: Intent) -> TxnConflict:
    return TxnConflict(key, "locked", intent.txn, intent.record_group)


def check_plain_write(index: IntentIndex, spans: Iterable[tuple[bytes, bytes]]) -> None:
    """A plain write may not touch a key any transaction has prepared on, or a range one
    has locked."""
    if index.count == 0 and not index.ranges:
        return
    spans = list(spans)
    found = [_conflict(k, i) for key, end in spans for k, held in index.in_range(key, end)
             for i in held.values()]
    found += [c for key, end in spans for c in index.range_conflicts(key, end)]
    if found:
        raise ErrIntentConflict(tuple(found))


def check_plain_read(index: IntentIndex, key: bytes, range_end: bytes) -> None:
    """A plain read may not pass a write intent: its transaction may have committed already."""
    if index.count == 0:
        return
    found = [_conflict(k, i) for k, held in index.in_range(key, range_end)
             for i in held.values() if i.kind != READ]
    if found:
        raise ErrIntentConflict(tuple(found))


# --- the transaction requests -------------------------------------------------------------


# Planted bugs the transaction simulator must catch (sim/txn.py; tests only).
BUGS = frozenset({"apply-before-decision", "skip-read-validation", "forget-intents-on-split"})


def prepare(store: KVStore, r: TxnPrepareRequest) -> TxnPrepareResponse:
    index = store.intents
    conflicts: list[TxnConflict] = []
    if "skip-read-validation" in store.bugs:  # neither validates nor locks what was read
        r = TxnPrepareRequest(r.txn, r.record_group, (), r.writes, r.one_phase, r.record_lease)
    locked: list[KeyValue] = []
    for read in r.reads:
        kv = store.mvcc.get(read.key)
        if read.mod_revision == LOCKING_READ:
            if kv is not None:
                locked.append(kv)
        elif (kv.mod_revision if kv is not None else 0) != read.mod_revision:
            conflicts.append(TxnConflict(read.key, "changed"))
    written = {w.key for w in r.writes}
    for key in sorted(written):
        conflicts.extend(index.range_conflicts(key, b"", r.txn))
    for rg in r.lock_ranges:  # a range lock keeps out writers, so no write intent may be in it
        conflicts.extend(_conflict(k, i) for k, held in index.in_range(rg.key, rg.range_end)
                         for i in held.values() if i.txn != r.txn and i.kind != READ)
    for key in sorted(written | {read.key for read in r.reads}):
        for intent in index.get(key).values():
            if intent.txn != r.txn and (key in written or intent.kind != READ):
                conflicts.append(_conflict(key, intent))
    status = RecordStatus.ABSENT
    if r.record_lease:
        status = _record_status(store, r.txn)
        if status not in (RecordStatus.ABSENT, RecordStatus.PENDING):
            conflicts.append(TxnConflict(b"", "decided"))
        else:
            store.lessor.get(r.record_lease)  # raises ErrLeaseNotFound before anything is written
    if conflicts:
        return TxnPrepareResponse(store._header(), False, tuple(conflicts), status)
    store.mvcc.begin()
    if r.one_phase:
        for w in r.writes:
            _apply_write(store, w.key, DELETE if w.delete else PUT, w.value)
    else:
        for w in r.writes:
            _place(store, w.key, Intent(r.txn, r.record_group, DELETE if w.delete else PUT, w.value))
            if "apply-before-decision" in store.bugs:
                _apply_write(store, w.key, DELETE if w.delete else PUT, w.value)
        for read in r.reads:
            if read.key not in written and r.txn not in index.get(read.key):
                _place(store, read.key, Intent(r.txn, r.record_group, READ))
        for rg in r.lock_ranges:
            store._put(PutRequest(range_key(r.txn, rg.key),
                                  msgpack.packb([rg.key, rg.range_end, r.record_group])))
            index.ranges.setdefault(r.txn, []).append((rg.key, rg.range_end, r.record_group))
            locked.extend(kv for kv in store.mvcc.range(rg.key, rg.range_end)[0]
                          if not kv.key.startswith(RESERVED))
        if r.record_lease and status == RecordStatus.ABSENT:
            store._put(PutRequest(record_key(r.txn), _status_value(RecordStatus.PENDING),
                                  lease=r.record_lease))
            status = RecordStatus.PENDING
    store.mvcc.end()
    return TxnPrepareResponse(store._header(), True, (), status, tuple(locked))


def resolve(store: KVStore, r: TxnResolveRequest) -> TxnResolveResponse:
    """Apply or drop `r.txn`'s intents on `r.keys`, and give back every range it locked here."""
    index, resolved = store.intents, 0
    store.mvcc.begin()
    for start, _, _ in index.ranges.pop(r.txn, []):
        store._delete(range_key(r.txn, start), b"")
        resolved += 1
    for key in r.keys:
        intent = index.get(key).get(r.txn)
        if intent is None:
            continue
        store._delete(intent_key(key, r.txn), b"")
        index.remove(key, r.txn)
        if r.commit and intent.kind != READ:
            _apply_write(store, key, intent.kind, intent.value)
        resolved += 1
    store.mvcc.end()
    return TxnResolveResponse(store._header(), resolved)


def record(store: KVStore, r: TxnRecordRequest) -> TxnRecordResponse:
    status = _record_status(store, r.txn)
    new = status
    match r.action:
        case TxnRecordAction.COMMIT:
            new = RecordStatus.COMMITTED if status == RecordStatus.PENDING else status
        case TxnRecordAction.ABORT:  # the coordinator's own abort
            new = RecordStatus.ABORTED if status in (RecordStatus.ABSENT,
                                                      RecordStatus.PENDING) else status
        case TxnRecordAction.ABORT_ABANDONED:  # anyone's: only a record whose lease ended
            new = RecordStatus.ABORTED if status == RecordStatus.ABSENT else status
        case TxnRecordAction.FORGET:
            new = RecordStatus.ABSENT if status != RecordStatus.PENDING else status
    if new != status:
        store.mvcc.begin()
        if new == RecordStatus.ABSENT:
            store._delete(record_key(r.txn), b"")
        else:  # a decided record outlives the lease the pending one had
            store._put(PutRequest(record_key(r.txn), _status_value(new)))
        store.mvcc.end()
    return TxnRecordResponse(store._header(), new)


def ranges_overlap(a: bytes, a_end: bytes, b: bytes, b_end: bytes) -> bool:
    """Do [a, a_end) and [b, b_end) meet (etcd's conventions: b"" one key, b"\0" no end)?"""
    def hi(k: bytes, end: bytes) -> bytes | None:
        return k + b"\0" if end == b"" else None if end == ALL_KEYS else end
    ha, hb = hi(a, a_end), hi(b, b_end)
    return (hb is None or a < hb) and (ha is None or b < ha)


def _record_status(store: KVStore, txn: bytes) -> RecordStatus:
    kv = store.mvcc.get(record_key(txn))
    if kv is None:
        return RecordStatus.ABSENT
    try:
        return RecordStatus(msgpack.unpackb(kv.value))
    except (ValueError, TypeError, msgpack.UnpackException):
        raise MalformedRequest(f"transaction record {txn.hex()} is malformed") from None


def _status_value(status: RecordStatus) -> bytes:
    return msgpack.packb(int(status))


def _place(store: KVStore, key: bytes, intent: Intent) -> None:
    store._put(PutRequest(intent_key(key, intent.txn), intent.encode()))
    store.intents.add(key, intent)


def _apply_write(store: KVStore, key: bytes, kind: int, value: bytes) -> None:
    if kind == PUT:
        store._put(PutRequest(key, value))
    else:
        store._delete(key, b"")
