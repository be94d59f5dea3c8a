"""shoal.storage on real files: round trips, roll-over and release, torn tails, corruption,
repair, identity, disk full, and random crash sequences against a model."""

from __future__ import annotations

import errno
import os
import random
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shoal.consensus.messages import (
    ConfState,
    Durable,
    Entry,
    EntryKind,
    HardState,
    Ready,
    Snapshot,
    SnapshotMeta,
)
from shoal.storage import CorruptWAL, Storage, StorageError, WrongIdentity
from shoal.storage.wal import scan

CONF = ConfState(frozenset({1, 2, 3}))


def ents(first: int, n: int, term: int = 1, size: int = 16) -> list[Entry]:
    return [Entry(term, i, EntryKind.NORMAL, bytes([i % 256]) * size) for i in range(first, first + n)]


def snap(index: int, term: int, data: bytes = b"state") -> Snapshot:
    return Snapshot(SnapshotMeta(index, term, CONF), data)


def open_(d: Path, **kw) -> tuple[Storage, Durable]:
    return Storage.open(d, cluster_id=7, node_id=2, **kw)


def reopen(d: Path, **kw) -> Durable:
    s, durable = open_(d, **kw)
    s.close()
    return durable


def segments(d: Path) -> list[Path]:
    return sorted(d.glob("*.wal"))


def test_round_trip_entries_hard_state_and_snapshots(tmp_path: Path) -> None:
    s, durable = open_(tmp_path)
    assert durable == Durable(HardState(), None, ())
    s.save(Ready(hard_state=HardState(1, 1, 0), entries=ents(1, 5), must_sync=True))
    s.save(Ready(hard_state=HardState(1, 1, 5), must_sync=False))
    s.save_snapshot(snap(3, 1))
    s.close()
    d = reopen(tmp_path)
    assert d.hard_state == HardState(1, 1, 5)
    assert d.snapshot == snap(3, 1)
    assert d.entries == tuple(ents(4, 2))
    # A snapshot installed from a leader replaces the log, even the entries after its index.
    s, _ = open_(tmp_path)
    s.save(Ready(snapshot=snap(4, 2, b"leader's"), hard_state=HardState(2, 0, 4), must_sync=True))
    s.save(Ready(entries=ents(5, 1, term=2), must_sync=True))
    s.close()
    d = reopen(tmp_path)
    assert d == Durable(HardState(2, 0, 4), snap(4, 2, b"leader's"), tuple(ents(5, 1, term=2)))


def test_overwrite_of_a_suffix_across_segments(tmp_path: Path) -> None:
    s, _ = open_(tmp_path, segment_bytes=300)
    for i in range(1, 41, 4):
        s.save(Ready(entries=ents(i, 4), must_sync=True))
    assert len(segments(tmp_path)) > 2
    s.save(Ready(entries=ents(12, 3, term=2), hard_state=HardState(2, 3, 10), must_sync=True))
    s.close()
    d = reopen(tmp_path)
    assert d.entries == tuple(ents(1, 11) + ents(12, 3, term=2))
    assert d.hard_state == HardState(2, 3, 10)


@pytest.mark.parametrize("keep", [1, 2])
def test_roll_over_and_release_after_snapshot(tmp_path: Path, keep: int) -> None:
    s, _ = open_(tmp_path, segment_bytes=400, keep_snapshots=keep)
    for i in range(1, 101, 5):
        s.save(Ready(hard_state=HardState(1, 1, i + 4), entries=ents(i, 5), must_sync=True))
    before = segments(tmp_path)
    assert len(before) >= 5
    assert [p.name for p in before][:2] == [
        "0000000000000000-0000000000000001.wal", "0000000000000001-" + before[1].name[17:]]
    size = s.size_bytes()
    s.save_snapshot(snap(60, 1))
    s.save_snapshot(snap(90, 1))
    after = segments(tmp_path)
    oldest_kept = 90 if keep == 1 else 60
    # Every released segment held only entries the oldest kept snapshot covers.
    for p in before[: len(before) - len(after)]:
        assert int(before[before.index(p) + 1].name[17:33], 16) - 1 <= oldest_kept
    assert 0 < len(after) < len(before) and s.size_bytes() < size
    assert len(list(tmp_path.glob("*.snap"))) == keep
    s.close()
    d = reopen(tmp_path)
    assert d.snapshot == snap(90, 1) and d.entries == tuple(ents(91, 10))
    assert d.hard_state == HardState(1, 1, 100)


def _prefix_states(before: Durable, last: Ready) -> list[Durable]:
    """What a reopen may return when the last Ready's records were cut anywhere."""
    hs = before.hard_state
    with_entries = Durable(hs, before.snapshot, before.entries + tuple(last.entries))
    assert last.hard_state is not None
    return [before, with_entries, Durable(last.hard_state, before.snapshot, with_entries.entries)]


def test_torn_tail_is_cut_at_every_offset(tmp_path: Path) -> None:
    d0 = tmp_path / "orig"
    s, _ = open_(d0)
    s.save(Ready(hard_state=HardState(1, 1, 0), entries=ents(1, 3), must_sync=True))
    s.save(Ready(hard_state=HardState(1, 1, 3), entries=ents(4, 2), must_sync=True))
    before = Durable(HardState(1, 1, 3), None, tuple(ents(1, 5)))
    seg = segments(d0)[-1]
    start = seg.stat().st_size
    last = Ready(hard_state=HardState(1, 1, 6), entries=ents(6, 2), must_sync=True)
    s.save(last)
    s.close()
    end = seg.stat().st_size
    allowed = _prefix_states(before, last)
    seen = set()
    for cut in range(start, end):
        d = tmp_path / f"cut{cut}"
        shutil.copytree(d0, d)
        os.truncate(d / seg.name, cut)
        got = reopen(d)
        assert got in allowed, f"cut at {cut}: {got}"
        seen.add(allowed.index(got))
        # Recovery cut the file back to a record boundary: the next open needs no cutting.
        assert reopen(d) == got
        shutil.rmtree(d)
    assert seen == {0, 1}  # the whole Ready never survives a cut before its end


def test_zero_filled_tail_is_torn(tmp_path: Path) -> None:
    s, _ = open_(tmp_path)
    s.save(Ready(entries=ents(1, 3), must_sync=True))
    s.close()
    with open(segments(tmp_path)[-1], "ab") as f:
        f.write(bytes(4096))
    assert reopen(tmp_path).entries == tuple(ents(1, 3))


def _record_offsets(path: Path) -> list[int]:
    return [r.offset for r in scan(path.read_bytes()).records]


def test_corruption_in_the_middle_is_refused_with_file_and_offset(tmp_path: Path) -> None:
    s, _ = open_(tmp_path)
    for i in range(1, 10, 3):
        s.save(Ready(entries=ents(i, 3), hard_state=HardState(1, 1, i), must_sync=True))
    s.close()
    seg = segments(tmp_path)[-1]
    offsets = _record_offsets(seg)
    bad = offsets[3]  # an entries record with more records after it
    data = bytearray(seg.read_bytes())
    data[bad + 12] ^= 0xFF
    seg.write_bytes(bytes(data))
    with pytest.raises(CorruptWAL) as e:
        reopen(tmp_path)
    assert str(seg) in str(e.value) and f"offset {bad}" in str(e.value)
    assert e.value.offset == bad and "CRC mismatch" in str(e.value)


def test_torn_record_in_a_segment_that_is_not_the_last_is_corruption(tmp_path: Path) -> None:
    s, _ = open_(tmp_path, segment_bytes=200)
    for i in range(1, 30, 3):
        s.save(Ready(entries=ents(i, 3), must_sync=True))
    s.close()
    first = segments(tmp_path)[0]
    size = first.stat().st_size
    os.truncate(first, size - 3)
    with pytest.raises(CorruptWAL, match=first.name):
        reopen(tmp_path)


def test_repair_drops_from_the_first_corrupt_record(tmp_path: Path) -> None:
    s, _ = open_(tmp_path, segment_bytes=250)
    for i in range(1, 31, 3):
        s.save(Ready(entries=ents(i, 3), hard_state=HardState(1, 1, i), must_sync=True))
    s.close()
    segs = segments(tmp_path)
    assert len(segs) >= 3
    victim = segs[1]
    bad = _record_offsets(victim)[2]
    data = bytearray(victim.read_bytes())
    data[bad + 4] ^= 0x01  # the CRC field itself
    victim.write_bytes(bytes(data))
    with pytest.raises(CorruptWAL):
        reopen(tmp_path)
    s, d = open_(tmp_path, repair=True)
    assert any(victim.name in line and f"offset {bad}" in line for line in s.dropped)
    assert any(segs[2].name in line for line in s.dropped)
    s.close()
    assert d.entries == tuple(ents(1, len(d.entries))) and 0 < len(d.entries) < 30
    # The repaired dir opens cleanly and takes new writes.
    s, d2 = open_(tmp_path)
    assert d2 == d and s.dropped == []
    s.save(Ready(entries=ents(len(d.entries) + 1, 1), must_sync=True))
    s.close()
    assert reopen(tmp_path).entries[-1].index == len(d.entries) + 1


def test_corrupt_newest_snapshot_falls_back_only_when_the_wal_covers(tmp_path: Path) -> None:
    s, _ = open_(tmp_path, segment_bytes=300)
    for i in range(1, 61, 5):
        s.save(Ready(entries=ents(i, 5), hard_state=HardState(1, 1, i + 4), must_sync=True))
    s.save_snapshot(snap(20, 1, b"at 20"))
    s.save_snapshot(snap(40, 1, b"at 40"))
    s.close()
    newest = tmp_path / "snap-0000000000000001-0000000000000028.snap"
    newest.write_bytes(newest.read_bytes()[:-1] + b"!")
    d = reopen(tmp_path)
    assert d.snapshot == snap(20, 1, b"at 20") and d.entries == tuple(ents(21, 40))
    # With one snapshot kept, the WAL before the newest is released: nothing to fall back to.
    other = tmp_path / "one"
    s, _ = open_(other, segment_bytes=300, keep_snapshots=1)
    for i in range(1, 61, 5):
        s.save(Ready(entries=ents(i, 5), must_sync=True))
    s.save_snapshot(snap(50, 1))
    s.close()
    only = next(other.glob("*.snap"))
    only.write_bytes(b"garbage")
    with pytest.raises(StorageError, match="no usable snapshot.*corrupt snapshot"):
        reopen(other)


def test_wrong_cluster_or_node_is_refused(tmp_path: Path) -> None:
    reopen(tmp_path)
    for kw, named in [({"cluster_id": 8, "node_id": 2}, "not cluster 8 node 2"),
                      ({"cluster_id": 7, "node_id": 3}, "not cluster 7 node 3")]:
        with pytest.raises(WrongIdentity, match=f"belongs to cluster 7 node 2, {named}"):
            Storage.open(tmp_path, **kw)
    s, _ = Storage.open(tmp_path)  # no ids given: whatever the dir says
    s.close()
    with pytest.raises(StorageError, match="needs a cluster id and a node id"):
        Storage.open(tmp_path / "new")


def test_one_storage_per_dir(tmp_path: Path) -> None:
    s, _ = open_(tmp_path)
    with pytest.raises(StorageError, match="in use"):
        open_(tmp_path)
    s.close()
    reopen(tmp_path)


class DiskFull:
    """os.write that lets `budget` more bytes through (the last write short), then ENOSPC."""

    def __init__(self, budget: int):
        self.budget = budget
        self.real = os.write

    def __call__(self, fd: int, data: bytes) -> int:
        if self.budget <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        n = self.real(fd, memoryview(data)[: self.budget])
        self.budget -= n
        return n


@pytest.mark.parametrize("budget", [0, 4, 9, 40, 700])
@pytest.mark.parametrize("truncate_works", [True, False])
def test_disk_full_loses_nothing_synced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                        budget: int, truncate_works: bool) -> None:
    s, _ = open_(tmp_path, segment_bytes=1000)
    for i in range(1, 20, 3):
        s.save(Ready(entries=ents(i, 3), hard_state=HardState(1, 1, i), must_sync=True))
    acked = Durable(HardState(1, 1, 19), None, tuple(ents(1, 21)))
    with monkeypatch.context() as m:
        m.setattr(os, "write", DiskFull(budget))
        if not truncate_works:
            m.setattr(os, "ftruncate", DiskFull(0))
        with pytest.raises(StorageError, match=r"disk full while writing .*\.(wal|tmp)"):
            s.save(Ready(entries=ents(22, 10, size=100), hard_state=HardState(2, 1, 21),
                         must_sync=True))
        with pytest.raises(StorageError, match="disk full"):  # still full: refused again
            s.save(Ready(hard_state=HardState(2, 1, 21), must_sync=True))
    s.close()
    assert reopen(tmp_path) == acked


def test_disk_full_while_writing_a_snapshot(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    s, _ = open_(tmp_path)
    s.save(Ready(entries=ents(1, 5), must_sync=True))
    with monkeypatch.context() as m:
        m.setattr(os, "write", DiskFull(10))
        with pytest.raises(StorageError, match=r"disk full while writing .*\.snap\.tmp"):
            s.save_snapshot(snap(3, 1, b"x" * 1000))
    s.close()
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob("*.snap"))
    assert reopen(tmp_path) == Durable(HardState(), None, tuple(ents(1, 5)))


# ---------------------------------------------------------------- crash sequences vs a model
class SyncTracker:
    """Watches every fsync so a crash can keep exactly what was synced plus a random prefix of
    what was not: files keep their synced size (by inode: renames carry data along), and only
    names a directory fsync saw survive for sure."""

    def __init__(self, m: pytest.MonkeyPatch, dir: Path):
        self.dir = dir
        self.synced: dict[int, int] = {}
        self.listed: set[str] = set()
        for name in ("fsync", "fdatasync"):
            real = getattr(os, name)
            m.setattr(os, name, self._wrap(real))

    def _wrap(self, real):
        def sync(fd: int) -> None:
            real(fd)
            if os.path.samefile(f"/proc/self/fd/{fd}", self.dir):
                self.listed = set(os.listdir(self.dir))
            else:
                st = os.fstat(fd)
                self.synced[st.st_ino] = st.st_size
        return sync

    def crash(self, rng: random.Random) -> None:
        for p in self.dir.iterdir():
            if p.name not in self.listed and rng.random() < 0.5:
                p.unlink()
                continue
            st = p.stat()
            keep = self.synced.get(st.st_ino, 0)
            os.truncate(p, rng.randint(min(keep, st.st_size), st.st_size))


def _model_save(state: Durable, rd: Ready) -> list[Durable]:
    """States after each record of a Ready, in write order."""
    out = []
    if rd.snapshot is not None:
        state = Durable(state.hard_state, rd.snapshot, ())
        out.append(state)
    if rd.entries:
        first = rd.entries[0].index
        base = state.snapshot.meta.index if state.snapshot else 0
        state = Durable(state.hard_state, state.snapshot,
                        state.entries[: first - base - 1] + tuple(rd.entries))
        out.append(state)
    if rd.hard_state is not None:
        state = Durable(rd.hard_state, state.snapshot, state.entries)
        out.append(state)
    return out


def _last(state: Durable) -> tuple[int, int]:
    if state.entries:
        return state.entries[-1].index, state.entries[-1].term
    m = state.snapshot.meta if state.snapshot else None
    return (m.index, m.term) if m else (0, 0)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_random_crashes_keep_every_synced_state(data: st.DataObject) -> None:
    crash_run(data.draw)


def crash_run(draw) -> None:
    """Random saves, snapshots and crashes; after each crash the recovered state must be the
    last synced one or a later one (unsynced records that happened to reach the disk)."""
    rng = random.Random(draw(st.integers(0, 2**32)))
    with tempfile.TemporaryDirectory() as tmp, pytest.MonkeyPatch.context() as m:
        d = Path(tmp)
        tracker = SyncTracker(m, d)
        seg_bytes = draw(st.sampled_from([150, 400, 4096]))
        s, state = Storage.open(d, cluster_id=1, node_id=1, segment_bytes=seg_bytes)
        states, synced = [state], 0  # every state the disk may hold; the last synced one
        for _ in range(draw(st.integers(1, 25))):
            op = draw(st.sampled_from(["append", "append", "commit", "compact", "install",
                                            "crash"]))
            last, term = _last(states[-1])
            hs = states[-1].hard_state
            base = states[-1].snapshot.meta.index if states[-1].snapshot else 0
            if op == "crash":
                s.close()
                tracker.crash(rng)
                s, got = Storage.open(d, segment_bytes=seg_bytes)
                assert got in states[synced:], f"recovered {got}"
                states, synced = [got], 0
                continue
            if op == "compact":
                if last <= base:
                    continue
                index = draw(st.integers(base + 1, last))
                e = states[-1].entries[index - base - 1]
                s.save_snapshot(Snapshot(SnapshotMeta(index, e.term, CONF), b"c%d" % index))
                states.append(Durable(hs, Snapshot(SnapshotMeta(index, e.term, CONF),
                                                   b"c%d" % index), states[-1].entries[index - base:]))
                synced = len(states) - 1
                continue
            if op == "install":
                t = max(term, hs.term) + 1
                index = last + draw(st.integers(0, 3))
                index = max(index, base + 1)
                rd = Ready(snapshot=Snapshot(SnapshotMeta(index, t, CONF), b"i%d" % index),
                           hard_state=HardState(t, 0, index), must_sync=True)
            elif op == "commit":
                rd = Ready(hard_state=HardState(hs.term, hs.vote, hs.commit + 1),
                           must_sync=draw(st.booleans()))
            else:
                back = draw(st.integers(0, 3))
                first = max(base + 1, last + 1 - back)
                t = max(term, hs.term) + (1 if back else 0)
                n = draw(st.integers(1, 5))
                rd = Ready(hard_state=HardState(t, 1, hs.commit) if t != hs.term else None,
                           entries=ents(first, n, term=t, size=draw(st.integers(0, 60))),
                           must_sync=draw(st.booleans()))
            s.save(rd)
            states += _model_save(states[-1], rd)
            if rd.must_sync or rd.snapshot:
                synced = len(states) - 1
        s.close()
        tracker.crash(rng)
        got = reopen_any(d)
        assert got in states[synced:], f"recovered {got}"


def reopen_any(d: Path) -> Durable:
    s, got = Storage.open(d)
    s.close()
    return got
