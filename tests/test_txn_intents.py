"""The participant half of 2PC in the store (kv/intents.py) and shard ownership (kv/shards.py),
on a bare KVStore: what a prepare validates and locks, what plain requests do around intents,
what resolve and the record do, and that all of it survives a snapshot."""

from __future__ import annotations

import pytest

from shoal.kv.errors import ErrIntentConflict, ErrLeaseNotFound, ErrWrongShard, MalformedRequest
from shoal.kv.requests import (
    IntentRead,
    IntentWrite,
    LeaseGrantRequest,
    LeaseRevokeRequest,
    PutRequest,
    RangeRequest,
    RecordStatus,
    ShardAssignRequest,
    ShardDropRequest,
    ShardExportRequest,
    ShardImportRequest,
    TxnPrepareRequest,
    TxnRecordAction,
    TxnRecordRequest,
    TxnRequest,
    TxnResolveRequest,
)
from shoal.kv.store import KVStore
from shoal.shard.map import UNSHARDED, ShardMap, ShardMapError

T1, T2 = b"1" * 16, b"2" * 16


class Store:
    def __init__(self) -> None:
        self.kv = KVStore()
        self.index = 0

    def __call__(self, request):  # type: ignore[no-untyped-def]
        self.index += 1
        return self.kv.apply(request, self.index)

    def value(self, key: bytes) -> bytes | None:
        kv = self.kv.mvcc.get(key)
        return kv.value if kv is not None else None


def prepared(s: Store, txn: bytes, reads=(), writes=(), **kw) -> bool:  # type: ignore[no-untyped-def]
    return s(TxnPrepareRequest(txn, 0, tuple(reads), tuple(writes), **kw)).prepared  # type: ignore[no-any-return]


def test_prepare_validates_reads_and_locks_writes_until_resolved() -> None:
    s = Store()
    rev = s(PutRequest(b"a", b"1")).header.revision
    assert not prepared(s, T1, [IntentRead(b"a", rev - 1)])  # a stale read votes no
    resp = s(TxnPrepareRequest(T1, 0, (IntentRead(b"a", rev),), (IntentWrite(b"b", b"2"),)))
    assert resp.prepared
    assert s.value(b"b") is None  # not applied before the decision
    with pytest.raises(ErrIntentConflict) as exc:
        s(PutRequest(b"b", b"x"))  # a plain write may not pass the lock
    assert exc.value.conflicts[0].holder == T1
    with pytest.raises(ErrIntentConflict):
        s(RangeRequest(b"a", b"c"))  # nor a read pass a write intent
    with pytest.raises(ErrIntentConflict):
        s(PutRequest(b"a", b"x"))  # a read lock keeps writers out too
    assert s(RangeRequest(b"a")).kvs[0].value == b"1"  # but not readers
    refused = s(TxnPrepareRequest(T2, 7, (), (IntentWrite(b"a", b"9"),)))
    assert not refused.prepared and refused.conflicts[0].reason == "locked"
    assert refused.conflicts[0].holder == T1
    assert prepared(s, T2, [IntentRead(b"a", rev)])  # read locks are shared
    s(TxnResolveRequest(T1, True, (b"a", b"b")))
    assert s.value(b"b") == b"2" and s.kv.intents.count == 1  # T2's read lock is left
    s(TxnResolveRequest(T2, False, (b"a",)))
    assert s.kv.intents.count == 0
    s(PutRequest(b"b", b"x"))


def test_abort_drops_intents_and_resolve_is_idempotent() -> None:
    s = Store()
    assert prepared(s, T1, writes=[IntentWrite(b"k", b"v"), IntentWrite(b"d", delete=True)])
    assert s(TxnResolveRequest(T1, False, (b"k", b"d"))).resolved == 2
    assert s(TxnResolveRequest(T1, True, (b"k", b"d"))).resolved == 0  # too late: nothing
    assert s.value(b"k") is None and s.kv.intents.count == 0


def test_one_phase_commit_writes_at_once_or_not_at_all() -> None:
    s = Store()
    rev = s(PutRequest(b"x", b"1")).header.revision
    assert prepared(s, T1, [IntentRead(b"x", rev)], [IntentWrite(b"x", b"2")], one_phase=True)
    assert s.value(b"x") == b"2" and s.kv.intents.count == 0
    assert not prepared(s, T2, [IntentRead(b"x", rev)], [IntentWrite(b"y", b"3")],
                        one_phase=True)  # x moved on: nothing written
    assert s.value(b"y") is None


def test_write_skew_is_refused() -> None:
    """Two transactions each read both keys and write one: under snapshot isolation both
    commit; here the second to prepare finds the first's locks and votes no."""
    s = Store()
    ra = s(PutRequest(b"a", b"1")).header.revision
    rb = s(PutRequest(b"b", b"1")).header.revision
    reads = [IntentRead(b"a", ra), IntentRead(b"b", rb)]
    assert prepared(s, T1, reads, [IntentWrite(b"a", b"0")])
    assert not prepared(s, T2, reads, [IntentWrite(b"b", b"0")])


def test_the_record_decides_once_and_presumes_abort() -> None:
    s = Store()
    lease = s(LeaseGrantRequest(5, now_ms=1)).id
    assert prepared(s, T1, writes=[IntentWrite(b"k", b"v")], record_lease=lease)

    def record(action: TxnRecordAction) -> RecordStatus:
        return s(TxnRecordRequest(T1, action)).status  # type: ignore[no-any-return]

    assert record(TxnRecordAction.STATUS) == RecordStatus.PENDING
    assert record(TxnRecordAction.ABORT_ABANDONED) == RecordStatus.PENDING  # its lease lives
    s(LeaseRevokeRequest(lease))  # the coordinator died: its lease ends, the record goes
    assert record(TxnRecordAction.STATUS) == RecordStatus.ABSENT
    assert record(TxnRecordAction.ABORT_ABANDONED) == RecordStatus.ABORTED
    assert record(TxnRecordAction.COMMIT) == RecordStatus.ABORTED  # a late commit fails
    assert not prepared(s, T1, writes=[IntentWrite(b"j", b"v")], record_lease=lease + 1)
    assert record(TxnRecordAction.FORGET) == RecordStatus.ABSENT
    with pytest.raises(ErrLeaseNotFound):
        prepared(s, T2, writes=[IntentWrite(b"j", b"v")], record_lease=lease)


def test_committed_record_outlives_the_lease() -> None:
    s = Store()
    lease = s(LeaseGrantRequest(5, now_ms=1)).id
    assert prepared(s, T1, writes=[IntentWrite(b"k", b"v")], record_lease=lease)
    assert s(TxnRecordRequest(T1, TxnRecordAction.COMMIT)).status == RecordStatus.COMMITTED
    s(LeaseRevokeRequest(lease))
    assert s(TxnRecordRequest(T1, TxnRecordAction.STATUS)).status == RecordStatus.COMMITTED


def test_intents_and_span_survive_a_snapshot() -> None:
    s = Store()
    assert prepared(s, T1, writes=[IntentWrite(b"k\x00z", b"v")], )
    assert prepared(s, T2, reads=[IntentRead(b"k", 0)])
    s(ShardAssignRequest(b"a", b"m", 3))
    restored = KVStore.restore(s.kv.snapshot())
    assert restored.intents.count == 2 and restored.span == s.kv.span
    assert set(restored.intents.get(b"k\x00z")) == {T1} and set(restored.intents.get(b"k")) == {T2}
    assert restored.snapshot() == s.kv.snapshot()


def test_a_shard_refuses_keys_it_does_not_own() -> None:
    s = Store()
    s(PutRequest(b"a", b"1"))
    s(ShardAssignRequest(b"", b"m", 1))
    with pytest.raises(ErrWrongShard) as exc:
        s(PutRequest(b"q", b"1"))
    assert exc.value.version == 1
    with pytest.raises(ErrWrongShard):
        s(RangeRequest(b"a", b"\0"))  # a range past the shard's end
    with pytest.raises(ErrWrongShard):
        s(TxnRequest((), (PutRequest(b"a", b"2"), PutRequest(b"z", b"2"))))
    with pytest.raises(ErrWrongShard):
        prepared(s, T1, writes=[IntentWrite(b"z", b"1")])
    s(PutRequest(b"\xff\xfe/shoal/own", b"1"))  # Shoal's own keys are every group's
    assert s(RangeRequest(b"a", b"m")).kvs[0].value == b"1"
    with pytest.raises(MalformedRequest):
        s(ShardAssignRequest(b"", b"m", 0))  # never back to an older map


def test_split_moves_keys_and_intents_and_drops_them() -> None:
    old, new = Store(), Store()
    for k in (b"a", b"n", b"p"):
        old(PutRequest(k, k))
    assert prepared(old, T1, writes=[IntentWrite(b"q", b"1")])  # an intent on a key not yet there
    new(ShardAssignRequest(b"m", b"", 1, serving=False))
    with pytest.raises(ErrWrongShard):
        new(RangeRequest(b"n"))  # not serving while the keys arrive
    old(ShardAssignRequest(b"", b"m", 1))
    page = old(ShardExportRequest(b"m", b"", limit=1))
    assert page.more and [kv.key for kv in page.kvs] == [b"n"]
    new(ShardImportRequest(page.kvs))
    page = old(ShardExportRequest(b"m", b"", after=b"n", limit=10))
    assert not page.more
    new(ShardImportRequest(page.kvs))
    assert new(ShardAssignRequest(b"m", b"", 1)).serving
    assert new(ShardAssignRequest(b"m", b"", 1, serving=False)).serving  # a resumed split
    old(ShardDropRequest(b"m", b""))
    assert old.value(b"n") is None and old.kv.intents.count == 0
    assert old.value(b"\xff\xfe/shoal/shard") is not None  # the drop kept Shoal's keys
    assert new.value(b"n") == b"n" and new.value(b"p") == b"p"
    assert set(new.kv.intents.get(b"q")) == {T1}
    new(TxnResolveRequest(T1, True, (b"q",)))
    assert new.value(b"q") == b"1"


def test_a_split_refuses_keys_on_leases() -> None:
    s = Store()
    lease = s(LeaseGrantRequest(5, now_ms=1)).id
    s(PutRequest(b"x", b"1", lease=lease))
    with pytest.raises(MalformedRequest, match="lease"):
        s(ShardAssignRequest(b"", b"m", 1))  # the freeze itself is refused (b"x" is past b"m")
    assert s.kv.span is None  # nothing changed: the split is called off before it froze
    with pytest.raises(MalformedRequest, match="lease"):
        s(ShardExportRequest(b"m", b""))


def test_shard_map_lookup_pieces_and_split() -> None:
    m = UNSHARDED.split(b"m", 1).split(b"f", 2)
    assert m.version == 2 and [s.group for s in m.shards] == [0, 2, 1]
    assert m.lookup(b"a").group == 0 and m.lookup(b"f").group == 2 and m.lookup(b"z").group == 1
    assert [(s.group, lo, hi) for s, lo, hi in m.pieces(b"c", b"p")] == [
        (0, b"c", b"f"), (2, b"f", b"m"), (1, b"m", b"p")]
    assert [(s.group, lo, hi) for s, lo, hi in m.pieces(b"g", b"\0")] == [
        (2, b"g", b"m"), (1, b"m", b"\0")]
    assert ShardMap.decode(m.encode()) == m
    with pytest.raises(ShardMapError, match="already"):
        m.split(b"m", 5)
    with pytest.raises(ShardMapError, match="group 1"):
        m.split(b"q", 1)
    with pytest.raises(ShardMapError, match="malformed"):
        ShardMap.decode(b"\x93garbage")


def test_a_range_lock_keeps_out_writers_and_phantoms_until_resolved() -> None:
    from shoal.kv.requests import IntentRange

    s = Store()
    s(PutRequest(b"r/1", b"1"))
    resp = s(TxnPrepareRequest(T1, 0, lock_ranges=(IntentRange(b"r/", b"r0"),)))
    assert resp.prepared and [kv.key for kv in resp.kvs] == [b"r/1"]
    with pytest.raises(ErrIntentConflict):
        s(PutRequest(b"r/1", b"2"))  # a writer of a locked key
    with pytest.raises(ErrIntentConflict):
        s(PutRequest(b"r/2", b"new"))  # a phantom: a new key inside the range
    assert not prepared(s, T2, writes=[IntentWrite(b"r/5", b"x")])
    s(PutRequest(b"s/1", b"outside"))  # outside the range: free
    restored = KVStore.restore(s.kv.snapshot())
    assert restored.intents.ranges == s.kv.intents.ranges  # (survives a snapshot)
    s(TxnResolveRequest(T1, False, ()))
    assert not s.kv.intents.ranges
    s(PutRequest(b"r/2", b"new"))
