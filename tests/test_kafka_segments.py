"""A partition's segment files (events/segments.py), its state machine over them
(kv/partition.py) and the log cleaner (events/compaction.py): rolling, index lookups,
recovery of a torn tail and of a corrupt index, refusal of corruption in the middle,
retention by whole segments, compaction keeping the latest record of each key, and a
a snapshot naming the segments and carrying them to a store with other files, and a crash
after a snapshot, a compaction and a trim restoring the same files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from shoal.events import topics as T
from shoal.events.protocol.records import NewRecord, RecordBatch, build_batch, decode_batches
from shoal.events.segments import INDEX_INTERVAL, CorruptSegment, MemoryDirectory, SegmentLog
from shoal.kv import KVStore
from shoal.kv.partition import LogState
from shoal.kv.requests import LogAppendRequest, LogCompactRequest, LogTrimRequest
from shoal.server.kafka import retention_cut
from shoal.sim.disk import SegmentFiles as SimSegmentFiles
from shoal.storage.segment_files import SegmentFiles

DAY = 24 * 3600 * 1000


def batch(offset: int, n: int = 1, ts: int = 1000, key: bytes | None = None,
          value: bytes | None = b"v" * 100) -> bytes:
    return build_batch([NewRecord(value, key, ts) for _ in range(n)],
                       base_offset=offset).encode()


def filled(dir: MemoryDirectory | SegmentFiles, batches: int, segment_bytes: int = 1 << 30
           ) -> SegmentLog:
    log = SegmentLog.open(dir)
    for i in range(batches):
        log.append(batch(i * 2, 2, ts=1000 + i), segment_bytes, 7 * DAY)
    return log


def offsets(data: bytes) -> list[int]:
    return [b.base_offset + r.offset_delta for b in decode_batches(data) for r in b.records]


def test_segments_roll_at_segment_bytes_and_segment_ms() -> None:
    dir = MemoryDirectory()
    log = filled(dir, 50, segment_bytes=1000)
    size = len(batch(0, 2))
    per = 1000 // size
    assert len(log.segments) == -(-50 // per)
    assert [s.base for s in log.segments] == list(range(0, 100, 2 * per))
    assert all(s.size <= 1000 for s in log.segments)
    assert {n.split(".")[1] for n in dir.names()} == {"log", "index", "timeindex"}
    assert "00000000000000000000.log" in dir.names()
    # segment.ms: a batch 10 ms past the segment's first one starts a new segment
    timed = SegmentLog(MemoryDirectory())
    for i, ts in enumerate([0, 5, 9, 10, 15, 25]):
        timed.append(batch(i, ts=ts), 1 << 30, 10)
    assert [s.base for s in timed.segments] == [0, 3, 5]


def test_fetch_finds_its_batch_by_the_index_and_stops_at_max_bytes() -> None:
    dir = MemoryDirectory()
    log = filled(dir, 400, segment_bytes=64 * 1024)
    assert len(log.segments) > 1 and len(log.segments[0].index) > 1  # sparse, not per batch
    assert all(b - a >= INDEX_INTERVAL for (_, a), (_, b) in
               zip(log.segments[0].index, log.segments[0].index[1:], strict=False))
    for offset in (0, 1, 2, 377, 501, 799):
        got = offsets(log.read(offset, 1000))
        assert got[0] == offset - offset % 2 and offset in got
        assert got == list(range(got[0], got[0] + len(got)))
        assert len(log.read(offset, 1000)) <= 1000
    assert log.read(0, 1) == batch(0, 2, ts=1000)  # at least one batch, however small the limit
    assert log.read(800, 1000) == b""
    # the reads go through the index: a corrupt byte before the indexed position is not read
    seg = log.segments[0]
    off, pos = seg.index[-1]
    dir.files[seg.log][pos - 30] ^= 0xFF
    assert offsets(log.read(off, 10_000))[0] == off


def test_list_offsets_by_time_uses_the_time_index() -> None:
    log = filled(MemoryDirectory(), 400, segment_bytes=64 * 1024)  # batch i: offset 2i, ts 1000+i
    assert len(log.segments[0].times) > 1
    for i in (0, 1, 150, 333, 399):
        assert log.offset_for_time(1000 + i) == (2 * i, 1000 + i)
    assert log.offset_for_time(0) == (0, 1000)
    assert log.offset_for_time(1400) is None


def test_recovery_cuts_a_torn_tail_and_rebuilds_a_corrupt_or_missing_index(
        tmp_path: Path) -> None:
    files = SegmentFiles(tmp_path)
    log = filled(files, 300, segment_bytes=16 * 1024)
    expected = b"".join(log.batches())
    last = log.segments[-1]
    index = files.read(log.segments[0].offset_index)
    files.truncate(last.log, last.size - 7)  # a torn write
    files.write(log.segments[0].offset_index, index[:-3])  # an index cut mid-entry
    files.delete(log.segments[1].time_index)
    files.close()
    again = SegmentLog.open(SegmentFiles(tmp_path))
    assert again.next_offset == 598  # the torn last batch is gone, nothing else
    assert b"".join(again.batches()) == expected[:-len(batch(598, 2, ts=1299))]
    assert (tmp_path / last.log).stat().st_size == last.size - len(batch(598, 2, ts=1299))
    assert SegmentFiles(tmp_path).read(log.segments[0].offset_index) == index
    assert [s.index for s in again.segments] == [s.index for s in log.segments]
    assert again.segments[1].times == log.segments[1].times
    assert offsets(again.read(301, 100))[0] == 300


def test_a_bad_crc_in_the_middle_is_refused_naming_the_file() -> None:
    dir = MemoryDirectory()
    log = filled(dir, 100, segment_bytes=8 * 1024)
    seg = log.segments[1]
    dir.files[seg.log][200] ^= 0x01
    with pytest.raises(CorruptSegment, match=seg.log + ": corrupt record batch at position"):
        SegmentLog.open(dir)


def test_retention_deletes_whole_closed_segments_never_the_active_one() -> None:
    log = filled(MemoryDirectory(), 100, segment_bytes=2000)
    segs = list(log.segments)
    total = sum(s.size for s in segs)
    # by size: keep at least retention.bytes
    cut = retention_cut(segs, 0, -1, total - segs[0].size - 1)
    assert cut == segs[1].base
    assert retention_cut(segs, 0, -1, 0) == segs[-1].base  # the active segment stays
    # by time: segments whose newest record is older than retention.ms
    assert retention_cut(segs, segs[2].max_ts + 11, 10, -1) == segs[3].base
    assert retention_cut(segs, 10**9, -1, -1) == segs[0].base
    assert log.delete_before(segs[3].base, 1) == segs[3].base
    assert log.start_offset == segs[3].base and offsets(log.read(0, 100))[0] == segs[3].base


def keyed(offset: int, items: list[tuple[bytes, bytes | None]], ts: int = 1000) -> bytes:
    return build_batch([NewRecord(v, k, ts) for k, v in items], base_offset=offset).encode()


def store_with(batches: list[list[tuple[bytes, bytes | None]]], segment_bytes: int,
               ts: int = 1000) -> KVStore:
    kv = KVStore()
    for i, items in enumerate(batches, 1):
        kv.apply(LogAppendRequest(keyed(0, items, ts), ts, segment_bytes, 7 * DAY), i)
    return kv


def test_compaction_keeps_each_keys_latest_record_with_its_offset() -> None:
    rounds: list[list[tuple[bytes, bytes | None]]] = [
        [(b"k%d" % (j % 5), b"v%d" % j) for j in range(i * 4, i * 4 + 4)] for i in range(30)]
    kv = store_with(rounds, segment_bytes=400)
    closed = kv.segments.closed()
    assert len(closed) >= 3
    before = {b.base_offset: b for b in map(RecordBatch.decode, kv.segments.batches())}
    kv.apply(LogCompactRequest(now_ms=2000, delete_retention_ms=DAY), 100)
    after = [RecordBatch.decode(raw) for raw in kv.segments.batches()]
    active = kv.segments.active
    assert active is not None
    seen: dict[bytes, int] = {}
    cleaned = [(b.offset_of(r), r.key, r.value) for b in after if b.base_offset < active.base
               for r in b.records]
    for off, key, value in cleaned:
        assert key is not None and key not in seen  # one record per key in the closed part
        seen[key] = off
        assert value == b"v%d" % off  # at its original offset
    # the closed part keeps, per key, its last offset there
    last = {}
    for b in before.values():
        if b.base_offset < active.base:
            for r in b.records:
                last[r.key] = b.offset_of(r)
    assert seen == last
    # every kept batch still checks (CRC-32C recomputed) and keeps its offsets
    for b in after:
        assert b.last_offset == before[b.base_offset].last_offset
    assert [o for o, _, _ in cleaned] == sorted(o for o, _, _ in cleaned)
    assert LogState.of(kv).next_offset == 120  # offsets are not reused
    # a fetch across a gap lands on the next batch kept
    assert offsets(kv.segments.read(1, 10_000))[0] >= 1


def test_tombstones_go_after_delete_retention_ms() -> None:
    kv = store_with([[(b"a", b"1"), (b"b", b"1")], [(b"a", None)], [(b"c", b"1")] * 3,
                     [(b"d", b"1")]], segment_bytes=120, ts=1000)
    assert len(kv.segments.closed()) >= 2
    kv.apply(LogCompactRequest(now_ms=1500, delete_retention_ms=1000), 10)  # too young
    kept = {r.key: r.value for raw in kv.segments.batches() for r in RecordBatch.decode(raw).records}
    assert kept[b"a"] is None and kept[b"b"] == b"1"
    # a new closed segment triggers the cleaner again; now the tombstone is old enough
    kv.apply(LogAppendRequest(keyed(0, [(b"e", b"1")] * 3), 5000, 120, 7 * DAY), 11)
    kv.apply(LogAppendRequest(keyed(0, [(b"f", b"1")]), 5000, 120, 7 * DAY), 12)
    kv.apply(LogCompactRequest(now_ms=5000, delete_retention_ms=1000), 13)
    keys = [r.key for raw in kv.segments.batches() for r in RecordBatch.decode(raw).records]
    assert b"a" not in keys and b"b" in keys


def test_a_snapshot_names_the_segments_and_carries_them_to_a_follower() -> None:
    kv = store_with([[(b"k", b"x" * 50)]] * 40, segment_bytes=500)
    kv.apply(LogTrimRequest(kv.segments.segments[2].base), 41)
    state = LogState.of(kv)
    assert state.start_offset == kv.segments.start_offset > 0
    snap = kv.snapshot()
    assert len(snap) < kv.segments.size // 4  # the segments are named, not copied
    shipped = kv.carrying_segments(snap)
    assert shipped is not None and len(shipped) > kv.segments.size
    other = MemoryDirectory()
    other.write("00000000000000000000.log", b"stale")  # a follower's old files
    restored = KVStore.restore(shipped, files=other)
    assert list(restored.segments.batches()) == list(kv.segments.batches())
    assert "00000000000000000000.log" not in other.names()
    assert restored.snapshot() == snap
    # files without the named segments: acknowledged batches would be lost
    with pytest.raises(CorruptSegment, match="acknowledged batches are missing"):
        KVStore.restore(snap, files=MemoryDirectory())
    # a restart over files that went further than the snapshot: cut back to it
    kv.apply(LogAppendRequest(keyed(0, [(b"k", b"y")]), 1000, 500, 7 * DAY), 42)
    again = KVStore.restore(snap, files=kv.files)
    assert again.segments.next_offset == state.next_offset
    assert again.snapshot() == snap
    # once a trim deleted a named segment, the leader's files no longer hold the snapshot
    kv.apply(LogTrimRequest(kv.segments.segments[3].base), 43)
    assert kv.carrying_segments(snap) is None


def test_a_crash_after_a_snapshot_and_a_compaction_and_trim_restores_the_same_files() -> None:
    """kill -9 after a snapshot, with appends (unsynced), a compaction (which rewrites the
    segment that was active at the snapshot) and a trim since: the snapshot and the entries
    after it give back byte for byte the files of a replica that never crashed."""
    def two(i: int, value: bytes) -> bytes:  # a key overwritten later and a key of its own
        return keyed(0, [(b"k%d" % (i % 3), value), (b"u%d" % i, value)])

    # One batch per segment, but a compacted batch and a whole one fit together: a restart
    # that measured the compacted segment would append to it where the others rolled.
    whole, compacted = len(two(0, b"v" * 40)), len(keyed(0, [(b"u0", b"v" * 40)]))
    seg_bytes = compacted + whole + 2
    assert seg_bytes < 2 * whole
    entries: list[Any] = [LogAppendRequest(two(i, b"v" * 40), 1000, seg_bytes, 7 * DAY)
                          for i in range(12)]
    later: list[Any] = [
        *[LogAppendRequest(two(i, b"w" * 40), 1000, seg_bytes, 7 * DAY) for i in range(12)],
        LogCompactRequest(now_ms=5000, delete_retention_ms=1000),
        LogTrimRequest(4),
        *[LogAppendRequest(two(i, b"z" * 40), 1000, seg_bytes, 7 * DAY) for i in range(3)]]
    crashing, steady = KVStore(files=SimSegmentFiles()), KVStore()
    for i, r in enumerate(entries, 1):
        crashing.apply(r, i)
        steady.apply(r, i)
    snap = crashing.snapshot()
    active = crashing.segments.active
    assert active is not None and active.size
    for i, r in enumerate(later, len(entries) + 1):
        crashing.apply(r, i)
        steady.apply(r, i)
    assert crashing.segments.rewritten == len(entries) + 13  # the compaction's index
    files = crashing.files
    assert isinstance(files, SimSegmentFiles)
    files.crash()  # the appends since the snapshot are lost; the rewrite is not
    restarted = KVStore.restore(snap, files=files)
    for i, r in enumerate(later, len(entries) + 1):
        restarted.apply(r, i)
    assert restarted.snapshot() == steady.snapshot()
    assert {n: bytes(files.files[n]) for n in files.names()} == {
        n: bytes(d) for n, d in steady.files.files.items()}  # type: ignore[attr-defined]


def test_a_store_with_no_segment_for_its_state_refuses_to_open() -> None:
    kv = store_with([[(b"k", b"v")]] * 3, segment_bytes=1 << 20)
    fresh = KVStore(files=MemoryDirectory())
    fresh.mvcc = kv.mvcc  # the state says 3 offsets, the files hold none
    with pytest.raises(CorruptSegment, match="acknowledged batches are missing"):
        _ = fresh.segments


def test_topic_configs_for_segments_and_compaction_are_checked() -> None:
    config = T.check_config({"cleanup.policy": "compact,delete", "segment.bytes": "1048576",
                             "segment.ms": "60000", "delete.retention.ms": "0"})
    assert T.compacted(config) and T.deletes(config)
    assert T.compacted(T.check_config({"cleanup.policy": "compact"}))
    assert not T.deletes(T.check_config({"cleanup.policy": "compact"}))
    for bad in ({"cleanup.policy": "shred"}, {"segment.bytes": "10"}, {"segment.ms": "0"},
                {"delete.retention.ms": "-1"}, {"segment.bytes": "big"}):
        with pytest.raises(T.TopicError, match=next(iter(bad))):
            T.check_config(bad)
    assert T.DEFAULTS["segment.bytes"] == str(1 << 30)


# ---------------------------------------------------------------- end to end, real processes

def _produce(bs: str, topic: str, items: list[tuple[bytes, bytes]]) -> dict[int, tuple[bytes, bytes]]:
    """Produce with acks=all and idempotence; the acknowledged records by offset."""
    from confluent_kafka import Producer

    acked: dict[int, tuple[bytes, bytes]] = {}

    def done(err: object, msg: object) -> None:
        if err is None:
            acked[msg.offset()] = (msg.key(), msg.value())  # type: ignore[attr-defined]

    p = Producer({"bootstrap.servers": bs, "acks": "all", "enable.idempotence": True,
                  "linger.ms": 5, "batch.num.messages": 10,  # many batches, many segments
                  "message.timeout.ms": 60_000})
    for key, value in items:
        p.produce(topic, key=key, value=value, on_delivery=done)
        p.poll(0)
    assert p.flush(90) == 0
    assert len(acked) == len(items)
    return acked


def _consume(bs: str, topic: str, deadline_s: float = 60.0) -> list[tuple[int, Any, Any]]:
    """Everything in partition 0 from the beginning, (offset, key, value), read to its end."""
    import time

    from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

    end = time.monotonic() + deadline_s
    while True:  # (after a restart the partition may have no leader for a moment)
        c = Consumer({"bootstrap.servers": bs, "group.id": "segments-check",
                      "enable.auto.commit": False, "enable.partition.eof": True})
        try:
            c.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
            got: list[tuple[int, Any, Any]] = []
            while time.monotonic() < end:
                m = c.poll(1.0)
                if m is None:
                    continue
                if (error := m.error()) is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        return got
                    continue
                got.append((m.offset() or 0, m.key(), m.value()))
        finally:
            c.close()
        assert time.monotonic() < end, f"{topic}: not read to its end in {deadline_s}s"


def test_a_compacted_topic_and_a_kill_9_of_every_node_keep_acknowledged_records(
        tmp_path: Path) -> None:
    import time

    from confluent_kafka.admin import AdminClient, NewTopic

    from shoal.local.cluster import LocalProcessCluster

    with LocalProcessCluster(3, tmp_path, node_args=["--snapshot-entries", "10"]) as cluster:
        cluster.start()
        bs = ",".join(cluster.kafka_bootstrap)
        admin = AdminClient({"bootstrap.servers": bs})
        futures = admin.create_topics([
            NewTopic("latest", 1, 3, config={"cleanup.policy": "compact", "segment.bytes": "2048"}),
            NewTopic("plain", 1, 3, config={"segment.bytes": "4096"}),
            NewTopic("short", 1, 3, config={"segment.bytes": "1024", "retention.bytes": "3000"})])
        for f in futures.values():
            f.result(30)
        keys = [(b"key-%d" % (i % 10), b"value-%03d" % i) for i in range(300)]
        compacted = _produce(bs, "latest", keys)
        plain = _produce(bs, "plain", [(b"p", b"first-%03d" % i) for i in range(300)])
        assert sorted(plain) == list(range(300))  # dense offsets

        # The cleaner runs on the leader's round: wait until a consumer sees it.
        deadline = time.monotonic() + 30
        while len(seen := _consume(bs, "latest")) >= 300:
            assert time.monotonic() < deadline, "the compacted topic was never compacted"
            time.sleep(0.5)
        offsets = [o for o, _, _ in seen]
        assert offsets == sorted(set(offsets))  # increasing, with gaps
        assert all(compacted[o] == (k, v) for o, k, v in seen)  # each at its own offset
        last = {k: v for _, (k, v) in sorted(compacted.items())}
        assert {k: v for _, k, v in seen} == last  # the latest of every key survives

        # Retention deletes whole old segments; the log start moves, the rest stays dense.
        _produce(bs, "short", [(b"s", b"%03d" % i) for i in range(300)])
        deadline = time.monotonic() + 30
        while (start := _consume(bs, "short")[0][0]) == 0:
            assert time.monotonic() < deadline, "retention never deleted a segment"
            time.sleep(0.5)
        kept = _consume(bs, "short")
        assert [o for o, _, _ in kept] == list(range(start, 300))
        assert any(n.endswith(f"/log/{start:020d}.log") for n in
                   _segment_files(cluster.data_dir(1)))  # it starts a segment: whole ones went

        # kill -9 one node (whoever leads), write on, bring it back; then kill -9 them all.
        cluster.kill(cluster.wait_leader())
        after = _produce(bs, "plain", [(b"p", b"after-%03d" % i) for i in range(100)])
        assert sorted(after) == list(range(300, 400))
        plain.update(after)
        for i in cluster.ids:
            if not cluster.alive(i):
                cluster.start_node(i)
        for i in cluster.ids:
            cluster.kill(i)
        for i in cluster.ids:
            cluster.start_node(i)
        cluster.wait_leader(30)
        assert {o: (k, v) for o, k, v in _consume(bs, "plain")} == plain
        assert [(o, k, v) for o, k, v in _consume(bs, "latest")] == seen
        # Every replica, the one that came back behind included, holds the same segment
        # bytes: appends, rolls and the cleaner are deterministic.
        deadline = time.monotonic() + 30
        while len({str(_segment_files(cluster.data_dir(i))) for i in cluster.ids}) > 1:
            assert time.monotonic() < deadline, "the replicas' segments differ"
            time.sleep(0.2)
        files = _segment_files(cluster.data_dir(1))
        assert len([n for n in files if n.endswith(".log")]) >= 4  # several segments each


def _segment_files(data_dir: Path) -> dict[str, bytes]:
    return {str(p.relative_to(data_dir)): p.read_bytes()
            for p in sorted(data_dir.glob("groups/*/log/*"))
            if p.suffix in (".log", ".index", ".timeindex")}  # (not a checkpoint, a .tmp)
