"""shoal.kv MVCC: etcd's revision semantics for put, range, delete, txn and compaction; the
snapshot, the hash and the quota; a model-based test against a dict-of-history reference."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shoal.kv import (
    ALL_KEYS,
    CompactionRequest,
    Compare,
    CompareResult,
    CompareTarget,
    CorruptSnapshot,
    DeleteRangeRequest,
    ErrCompacted,
    ErrDuplicateKey,
    ErrFutureRev,
    ErrKeyNotFound,
    ErrNoSpace,
    KeyValue,
    KVError,
    KVLimits,
    KVStore,
    MalformedRequest,
    PutRequest,
    RangeRequest,
    SortOrder,
    SortTarget,
    TxnRequest,
    encode_command,
    prefix_end,
)
from shoal.kv.codec import pack

EQ, GT, LT, NE = (CompareResult.EQUAL, CompareResult.GREATER, CompareResult.LESS,
                  CompareResult.NOT_EQUAL)  # fmt: skip


class Node:
    """A store fed through encoded log entries, with the index the runtime would give."""

    def __init__(self, limits: KVLimits | None = None) -> None:
        self.store = KVStore(limits)
        self.index = 0

    def __call__(self, request, session=None):
        self.index += 1
        return self.store.apply_entry(encode_command(request, session), self.index)

    def get(self, key: bytes, **kw) -> list[KeyValue]:
        return list(self(RangeRequest(key, **kw)).kvs)


def keys(kvs) -> list[bytes]:
    return [kv.key for kv in kvs]


def test_empty_store_is_at_revision_1_and_the_first_write_makes_2():
    n = Node()
    assert n(RangeRequest(b"a")).header.revision == 1
    r = n(PutRequest(b"a", b"1"))
    assert r.header.revision == 2
    assert n.get(b"a") == [KeyValue(b"a", 2, 2, 1, b"1", 0)]


def test_each_write_moves_the_revision_by_exactly_one_and_reads_do_not():
    n = Node()
    for i in range(5):
        assert n(PutRequest(b"k", b"%d" % i)).header.revision == 2 + i
    assert n(RangeRequest(b"k")).header.revision == 6
    assert n(DeleteRangeRequest(b"absent")).header.revision == 6  # nothing changed (etcd)
    assert n(DeleteRangeRequest(b"k")).header.revision == 7


def test_version_counts_puts_and_restarts_after_delete():
    n = Node()
    n(PutRequest(b"k", b"1"))
    n(PutRequest(b"k", b"2"))
    assert n.get(b"k")[0] == KeyValue(b"k", 2, 3, 2, b"2")
    n(DeleteRangeRequest(b"k"))
    assert n.get(b"k") == []
    n(PutRequest(b"k", b"3"))
    assert n.get(b"k")[0] == KeyValue(b"k", 5, 5, 1, b"3")
    # the old generation is still readable at its revisions
    assert n.get(b"k", revision=3)[0].value == b"2"
    assert n.get(b"k", revision=4) == []


def test_prefix_end():
    assert prefix_end(b"abc") == b"abd"
    assert prefix_end(b"a\xff") == b"b"
    assert prefix_end(b"\xff\xff") == ALL_KEYS
    assert prefix_end(b"") == ALL_KEYS


def fill(n: Node) -> None:
    for k, v in [(b"a", b"3"), (b"b", b"1"), (b"ba", b"2"), (b"bb", b"5"), (b"c", b"4")]:
        n(PutRequest(k, v))
    n(PutRequest(b"bb", b"0"))  # bb: version 2, mod 7


def test_range_end_conventions():
    n = Node()
    fill(n)
    assert keys(n.get(b"b")) == [b"b"]
    assert keys(n.get(b"b", range_end=prefix_end(b"b"))) == [b"b", b"ba", b"bb"]
    assert keys(n.get(b"b", range_end=ALL_KEYS)) == [b"b", b"ba", b"bb", b"c"]
    assert keys(n.get(b"\0", range_end=ALL_KEYS)) == [b"a", b"b", b"ba", b"bb", b"c"]
    assert n.get(b"c", range_end=b"a") == []  # an empty interval


def test_range_limit_count_more_and_only_flags():
    n = Node()
    fill(n)
    r = n(RangeRequest(b"a", ALL_KEYS, limit=2))
    assert keys(r.kvs) == [b"a", b"b"] and r.more and r.count == 5
    r = n(RangeRequest(b"a", ALL_KEYS, limit=5))
    assert len(r.kvs) == 5 and not r.more
    r = n(RangeRequest(b"a", ALL_KEYS, count_only=True))
    assert r.kvs == () and r.count == 5
    r = n(RangeRequest(b"a", ALL_KEYS, keys_only=True))
    assert all(kv.value == b"" for kv in r.kvs) and r.kvs[0].mod_revision == 2


def test_range_sorting():
    n = Node()
    fill(n)
    by_value = n(RangeRequest(b"a", ALL_KEYS, sort_target=SortTarget.VALUE)).kvs
    assert keys(by_value) == [b"bb", b"b", b"ba", b"a", b"c"]  # NONE + VALUE means ASCEND
    desc = n(RangeRequest(b"a", ALL_KEYS, sort_order=SortOrder.DESCEND))
    assert keys(desc.kvs) == [b"c", b"bb", b"ba", b"b", b"a"]
    by_mod = n(RangeRequest(b"a", ALL_KEYS, sort_order=SortOrder.DESCEND,
                            sort_target=SortTarget.MOD, limit=2))  # fmt: skip
    assert keys(by_mod.kvs) == [b"bb", b"c"] and by_mod.more
    by_version = n(RangeRequest(b"a", ALL_KEYS, sort_target=SortTarget.VERSION,
                                sort_order=SortOrder.DESCEND))  # fmt: skip
    assert by_version.kvs[0].key == b"bb"


def test_range_revision_filters_and_history():
    n = Node()
    fill(n)
    assert keys(n.get(b"a", range_end=ALL_KEYS, min_mod_revision=5)) == [b"bb", b"c"]
    assert keys(n.get(b"a", range_end=ALL_KEYS, max_create_revision=3)) == [b"a", b"b"]
    r = n(RangeRequest(b"a", ALL_KEYS, max_mod_revision=3))
    assert keys(r.kvs) == [b"a", b"b"] and r.count == 5  # count ignores the filters (etcd)
    old = n(RangeRequest(b"a", ALL_KEYS, revision=4))
    assert keys(old.kvs) == [b"a", b"b", b"ba"] and old.header.revision == 7
    with pytest.raises(ErrFutureRev):
        n(RangeRequest(b"a", revision=8))


def test_put_options():
    n = Node()
    assert n(PutRequest(b"k", b"1", prev_kv=True)).prev_kv is None
    assert n(PutRequest(b"k", b"2", prev_kv=True)).prev_kv.value == b"1"
    assert n(PutRequest(b"k", b"2")).prev_kv is None  # only when asked
    with pytest.raises(ErrKeyNotFound):
        n(PutRequest(b"nope", ignore_value=True))
    with pytest.raises(MalformedRequest, match="value is provided"):
        n(PutRequest(b"k", b"x", ignore_value=True))
    n(PutRequest(b"k", ignore_value=True))
    kv = n.get(b"k")[0]
    assert kv.value == b"2" and kv.version == 4


def test_delete_range_returns_count_and_prev_kvs():
    n = Node()
    fill(n)
    r = n(DeleteRangeRequest(b"b", prefix_end(b"b"), prev_kv=True))
    assert r.deleted == 3 and keys(r.prev_kvs) == [b"b", b"ba", b"bb"]
    assert r.header.revision == 8
    assert keys(n.get(b"a", range_end=ALL_KEYS)) == [b"a", b"c"]
    assert n(DeleteRangeRequest(b"a", ALL_KEYS)).prev_kvs == ()


def cmp(key, target, result, operand, range_end=b""):
    return Compare(key, target, result, operand, range_end)


def test_txn_branches_and_one_revision_for_all_its_writes():
    n = Node()
    n(PutRequest(b"x", b"1"))
    txn = TxnRequest(
        compare=(cmp(b"x", CompareTarget.VALUE, EQ, b"1"), cmp(b"x", CompareTarget.VERSION, EQ, 1)),
        success=(PutRequest(b"y", b"2"), PutRequest(b"z", b"3"), RangeRequest(b"y"),
                 DeleteRangeRequest(b"x")),
        failure=(PutRequest(b"failed", b"!"),),
    )  # fmt: skip
    r = n(txn)
    assert r.succeeded and r.header.revision == 3
    put_y, put_z, read_y, del_x = r.responses
    assert read_y.kvs[0].value == b"2"  # a txn reads its own writes (etcd)
    assert del_x.deleted == 1
    assert {kv.mod_revision for kv in n.get(b"a", range_end=ALL_KEYS)} == {3}
    # sub-revisions order the writes inside the revision
    assert [e.kv.key for e in n.store.mvcc.events(3)] == [b"y", b"z", b"x"]
    r = n(txn)  # x is gone: the value compare fails, the failure branch runs
    assert not r.succeeded and r.header.revision == 4 and n.get(b"failed")


def test_txn_compares_every_target_and_result():
    n = Node()
    n(PutRequest(b"k", b"m"))
    n(PutRequest(b"k", b"m"))  # version 2, create 2, mod 3
    cases = [
        (CompareTarget.VERSION, EQ, 2, True), (CompareTarget.VERSION, GT, 1, True),
        (CompareTarget.CREATE, LT, 2, False), (CompareTarget.CREATE, EQ, 2, True),
        (CompareTarget.MOD, NE, 3, False), (CompareTarget.MOD, GT, 2, True),
        (CompareTarget.VALUE, GT, b"l", True), (CompareTarget.VALUE, LT, b"m", False),
        (CompareTarget.LEASE, EQ, 0, True),
    ]  # fmt: skip
    for target, result, operand, want in cases:
        r = n(TxnRequest(compare=(cmp(b"k", target, result, operand),)))
        assert r.succeeded is want, (target, result, operand)
        assert r.header.revision == 3  # no writes: no new revision
    # a missing key: version 0, and never equal in value
    assert n(TxnRequest(compare=(cmp(b"none", CompareTarget.VERSION, EQ, 0),))).succeeded
    assert not n(TxnRequest(compare=(cmp(b"none", CompareTarget.VALUE, EQ, b""),))).succeeded
    # over a range: every key must hold
    n(PutRequest(b"k2", b"z"))
    over = cmp(b"k", CompareTarget.VALUE, GT, b"a", range_end=b"k3")
    assert n(TxnRequest(compare=(over,))).succeeded
    over = cmp(b"k", CompareTarget.VALUE, LT, b"y", range_end=b"k3")
    assert not n(TxnRequest(compare=(over,))).succeeded


def test_nested_txn_and_duplicate_keys():
    n = Node()
    inner = TxnRequest(compare=(cmp(b"a", CompareTarget.VERSION, EQ, 0),),
                       success=(PutRequest(b"b", b"inner"),))  # fmt: skip
    r = n(TxnRequest(success=(PutRequest(b"a", b"outer"), inner)))
    # nested compares see the state before the outer txn's writes (etcd's compareToPath)
    assert r.responses[1].succeeded and n.get(b"b")[0].value == b"inner"
    with pytest.raises(ErrDuplicateKey):
        n(TxnRequest(success=(PutRequest(b"a"), PutRequest(b"a"))))
    with pytest.raises(ErrDuplicateKey):
        n(TxnRequest(success=(DeleteRangeRequest(b"a", b"c"), PutRequest(b"b"))))
    with pytest.raises(ErrDuplicateKey):
        n(TxnRequest(success=(PutRequest(b"b"), TxnRequest(success=(PutRequest(b"b"),)))))
    # then and else of one nested txn may write the same key
    both = TxnRequest(success=(PutRequest(b"c"),), failure=(PutRequest(b"c"),))
    n(TxnRequest(success=(both,)))
    assert n.store.revision == 3 and n.get(b"c")


def test_a_failing_txn_changes_nothing():
    n = Node()
    n(PutRequest(b"a", b"1"))
    before = n.store.snapshot()
    with pytest.raises(ErrKeyNotFound):
        n(TxnRequest(success=(PutRequest(b"b", b"2"), PutRequest(b"c", ignore_value=True))))
    after = KVStore.restore(n.store.snapshot())
    assert after.mvcc.dump() == KVStore.restore(before).mvcc.dump()


def test_compaction():
    n = Node()
    for i in range(5):
        n(PutRequest(b"k", b"%d" % i))  # revisions 2..6
    n(PutRequest(b"gone", b"x"))  # 7
    n(DeleteRangeRequest(b"gone"))  # 8
    size = n.store.size_bytes
    with pytest.raises(ErrFutureRev):
        n(CompactionRequest(9))
    assert n(CompactionRequest(5)).header.revision == 8  # compaction is not a write
    assert n.store.size_bytes < size
    assert n.get(b"k", revision=5)[0].value == b"3"  # the version visible at 5 stays
    with pytest.raises(ErrCompacted) as e:
        n(RangeRequest(b"k", revision=4))
    assert e.value.compact_revision == 5
    with pytest.raises(ErrCompacted):
        n(CompactionRequest(5))
    n(CompactionRequest(8))  # the tombstone at 8 stays: a watch from 8 must see it
    assert n.store.mvcc.events(8)[0].kv == KeyValue(b"gone", mod_revision=8)
    n(PutRequest(b"k", b"4"))
    n(CompactionRequest(9))
    assert b"gone" not in n.store.mvcc._keys  # a deleted key leaves the index entirely
    assert n.get(b"k", revision=9)[0].version == 6


def test_quota():
    n = Node(KVLimits(quota_bytes=300))
    n(PutRequest(b"k", b"v" * 100))
    with pytest.raises(ErrNoSpace):
        n(PutRequest(b"k", b"v" * 200))
    n(DeleteRangeRequest(b"k"))  # deletes are allowed at the quota
    n(PutRequest(b"x"))
    n(CompactionRequest(n.store.revision))  # frees k's versions older than the compaction
    n(PutRequest(b"k", b"v" * 200))


def test_snapshot_round_trip_and_hash():
    n = Node()
    fill(n)
    n(DeleteRangeRequest(b"ba"))
    n(CompactionRequest(4))
    data = n.store.snapshot()
    copy = KVStore.restore(data)
    assert copy.snapshot() == data and copy.hash() == n.store.hash()
    assert copy.hash_kv(6) == n.store.hash_kv(6)
    assert copy.hash_kv(6) != n.store.hash_kv(7)
    assert copy.range(RangeRequest(b"a", ALL_KEYS, revision=4)) == n(
        RangeRequest(b"a", ALL_KEYS, revision=4)
    )


def test_corrupt_snapshots_are_named():
    n = Node()
    fill(n)
    data = n.store.snapshot()
    flipped = data[:10] + bytes([data[10] ^ 1]) + data[11:]
    with pytest.raises(CorruptSnapshot, match="checksum"):
        KVStore.restore(flipped)
    with pytest.raises(CorruptSnapshot, match="too short"):
        KVStore.restore(b"")

    def sealed(body) -> bytes:
        import zlib

        raw = pack(body)
        return raw + zlib.crc32(raw).to_bytes(4, "big")

    with pytest.raises(CorruptSnapshot, match="format"):
        KVStore.restore(sealed([99]))
    good = n.store
    bad_mvcc = [7, 0, [[b"b", [[3, 0, 2, 1, b"x", 0]]], [b"a", [[2, 0, 2, 1, b"y", 0]]]]]
    with pytest.raises(CorruptSnapshot, match="out of order"):
        KVStore.restore(sealed([1, 1, bad_mvcc, good.lessor.dump(), []]))
    bad_lease = [1, [[5, 10, 0, [b"a"]]]]  # lease lists a key that is not attached to it
    with pytest.raises(CorruptSnapshot, match="lease"):
        KVStore.restore(sealed([1, 1, good.mvcc.dump(), bad_lease, []]))


# --- model-based: a reference that keeps every revision's full state in a dict -----------

KEYS = [b"a", b"b", b"c", b"d"]


class Reference:
    def __init__(self) -> None:
        self.states: dict[int, dict[bytes, KeyValue]] = {1: {}}
        self.revision = 1
        self.compacted = 0

    def write(self, changes: list[tuple[bytes, bytes | None]]) -> None:
        state = dict(self.states[self.revision])
        rev = self.revision + 1
        changed = False
        for key, value in changes:
            old = state.get(key)
            if value is None:
                changed |= state.pop(key, None) is not None
            else:
                created = old.create_revision if old else rev
                state[key] = KeyValue(key, created, rev, old.version + 1 if old else 1, value)
                changed = True
        if changed:
            self.revision = rev
            self.states[rev] = state

    def range(self, start: bytes, end: bytes, revision: int) -> list[KeyValue]:
        at = revision or self.revision
        if at > self.revision:
            raise ErrFutureRev(at, self.revision)
        if at < self.compacted:
            raise ErrCompacted(at, self.compacted)
        state = self.states[at]
        return [state[k] for k in sorted(state) if (k == start if not end else start <= k < end)]


ops = st.one_of(
    st.tuples(st.just("put"), st.sampled_from(KEYS), st.binary(max_size=3)),
    st.tuples(st.just("del"), st.sampled_from(KEYS), st.sampled_from([b"", b"c", b"e"])),
    st.tuples(st.just("range"), st.sampled_from(KEYS), st.sampled_from([b"", b"c", b"e"]),
              st.integers(0, 12)),
    st.tuples(st.just("cas"), st.sampled_from(KEYS), st.integers(0, 3), st.binary(max_size=2)),
    st.tuples(st.just("compact"), st.integers(0, 12)),
)  # fmt: skip


@settings(max_examples=60, deadline=None)
@given(st.lists(ops, max_size=40))
def test_model_based_against_a_dict_of_history(program):
    n, ref = Node(), Reference()
    for op in program:
        match op:
            case ("put", key, value):
                n(PutRequest(key, value))
                ref.write([(key, value)])
            case ("del", key, end):
                n(DeleteRangeRequest(key, end if end > key else b""))
                ref.write([(kv.key, None) for kv in ref.range(key, end if end > key else b"", 0)])
            case ("range", key, end, rev):
                end = end if end > key else b""
                try:
                    want = ref.range(key, end, rev)
                except KVError as e:
                    with pytest.raises(type(e)):
                        n(RangeRequest(key, end, revision=rev))
                    continue
                r = n(RangeRequest(key, end, revision=rev))
                assert list(r.kvs) == want and r.count == len(want)
                assert r.header.revision == ref.revision
            case ("cas", key, version, value):  # put if the version matches
                current = ref.range(key, b"", 0)
                ok = (current[0].version if current else 0) == version
                guard = cmp(key, CompareTarget.VERSION, EQ, version)
                r = n(TxnRequest(compare=(guard,), success=(PutRequest(key, value),)))
                assert r.succeeded is ok
                if ok:
                    ref.write([(key, value)])
            case ("compact", rev):
                if rev <= ref.compacted or rev > ref.revision:
                    with pytest.raises((ErrCompacted, ErrFutureRev)):
                        n(CompactionRequest(rev))
                else:
                    n(CompactionRequest(rev))
                    ref.compacted = rev
        assert n.store.revision == ref.revision


@settings(max_examples=40, deadline=None)
@given(st.lists(ops, max_size=30), st.integers(0, 30))
def test_replicas_reach_byte_identical_snapshots(program, restart_at):
    """Two replicas apply the same entries; one restarts from a snapshot part way."""
    a, b = Node(), Node()
    for i, op in enumerate(program):
        if i == restart_at:
            b.store = KVStore.restore(b.store.snapshot())
        match op:
            case ("put", key, value):
                request = PutRequest(key, value)
            case ("del", key, end):
                request = DeleteRangeRequest(key, end)
            case ("range", key, end, rev):
                request = RangeRequest(key, end, revision=rev)
            case ("cas", key, version, value):
                request = TxnRequest(
                    compare=(cmp(key, CompareTarget.VERSION, EQ, version),),
                    success=(PutRequest(key, value), DeleteRangeRequest(b"d")),
                    failure=(PutRequest(b"d", value),),
                )
            case ("compact", rev):
                request = CompactionRequest(rev)
        outcomes = []
        for node in (a, b):
            try:
                outcomes.append(node(request))
            except KVError as e:
                outcomes.append(str(e))
        assert outcomes[0] == outcomes[1]
    assert a.store.snapshot() == b.store.snapshot()
    assert a.store.hash_kv() == b.store.hash_kv()
