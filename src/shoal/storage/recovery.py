"""Rebuilding durable state from the files: replay the WAL, then pick the newest snapshot
the WAL is anchored to.

Rules (docs/storage.md gives the reasons):
- a bad record at the very end of the last segment is a write the crash interrupted: it was
  never synced, so nothing acknowledged is in it; cut it off and go on (warning);
- any other bad record is damage: refuse (CorruptWAL, naming file and offset), or, with
  repair, cut the log there and say what was dropped. The node may have acknowledged what
  was cut, so repair also bumps the hard state's epoch and marks it recovering, durably,
  before anything acts on the log: the core then votes for no one and counts for no quorum
  until its leader has brought it back (consensus/raft.py, `_maybe_recovered`)."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..consensus.messages import Durable, Entry, HardState, Snapshot
from .errors import CorruptSnapshot, CorruptWAL, StorageError, io_error
from .files import pack_blob, sync_dir, sync_fd, truncate_file, unpack_blob, write_all, write_atomic
from .snapshot import SnapshotFiles
from .wal import Head, Mark, Segment, encode_hard_state, parse_segment_name, scan

log = logging.getLogger("shoal.storage")

# The last epoch a repair gave out, kept outside the WAL because a later cut may take the
# record that carried it there, and an epoch given twice would hide the second loss.
EPOCH = "shoal.epoch"
EPOCH_MAGIC = b"SHEP"


@dataclass(slots=True)
class WALLog:
    """The log and hard state as the WAL tells them: entries[k] has index start + k. base_term
    is the term at start - 1 when known (after an overwrite that reaches below the released
    segments it is not)."""

    start: int = 1
    base_term: int | None = 0
    entries: list[Entry] = field(default_factory=list)
    hard_state: HardState = HardState()
    floor: int = 1  # lowest index an entry may be (re)written at: the rest is in a snapshot
    marks: set[tuple[int, int]] = field(default_factory=set)  # (index, term) snapshot points

    def last_index(self) -> int:
        return self.start + len(self.entries) - 1

    def term_at(self, index: int) -> int | None:
        if index == self.start - 1:
            return self.base_term
        if self.start <= index <= self.last_index():
            return self.entries[index - self.start].term
        return None

    def covers(self, index: int, term: int) -> bool:
        """Does the log continue right after (index, term), so a snapshot there anchors it?"""
        known = self.term_at(index)
        if known is None:
            return (index, term) in self.marks and index == self.start - 1
        return known == term

    def head(self, h: Head, first: bool) -> str | None:
        if first:  # predecessors released (or none): this is where our log starts
            self.start, self.base_term = h.index + 1, h.term
            return None
        if h.index != self.last_index() or self.term_at(h.index) != h.term:
            return f"segment head ({h.index}, {h.term}) does not continue the log"
        return None

    def append(self, entries: list[Entry]) -> str | None:
        first = entries[0].index
        if first < self.floor:
            return f"entries at {first} rewrite the snapshot below {self.floor}"
        if first > self.last_index() + 1:
            return f"entries at {first} leave a gap after {self.last_index()}"
        if first < self.start:  # rewrites what released segments held: history before is gone
            self.start, self.base_term, self.entries = first, None, []
        del self.entries[first - self.start :]
        self.entries.extend(entries)
        return None

    def mark(self, m: Mark) -> str | None:
        if m.reset:  # installed from a leader: the snapshot replaces the log
            self.start, self.base_term, self.entries = m.index + 1, m.term, []
        else:
            known = self.term_at(m.index)
            if known is not None and known != m.term:
                return f"snapshot ({m.index}, {m.term}) but the log has term {known} there"
        self.floor = max(self.floor, m.index + 1)
        self.marks.add((m.index, m.term))
        return None


@dataclass(slots=True)
class Replayed:
    log: WALLog
    segments: list[Segment]  # what is left on disk, in order (empty if nothing usable)
    next_seq: int  # seq for a segment to create if `segments` is empty
    dropped: list[str]  # what repair removed, for humans


def list_segments(dir: Path) -> list[Segment]:
    segs = []
    for p in dir.iterdir():
        if parsed := parse_segment_name(p.name):
            segs.append(Segment(parsed[0], parsed[1], p, p.stat().st_size))
    return sorted(segs, key=lambda s: s.seq)


Problem = tuple[int, str, bool]  # offset, reason, looks torn


def replay(dir: Path, repair: bool) -> Replayed:
    segs = list_segments(dir)
    wlog = WALLog()
    next_seq = segs[0].seq if segs else 0
    given = _last_epoch(dir)
    for k, seg in enumerate(segs):
        bad: Problem | None = None
        if k > 0 and seg.seq != segs[k - 1].seq + 1:
            bad = (0, f"segment {segs[k - 1].seq + 1:016x} is missing before it", False)
        else:
            bad = _replay_segment(seg, k == 0, wlog)
        if bad is None:
            continue
        offset, reason, torn = bad
        if torn and k == len(segs) - 1:
            log.warning("WAL %s: cutting a torn write at offset %d (%s)", seg.path, offset, reason)
            dropped: list[str] = []
        elif repair:
            dropped = [f"{seg.path} from offset {offset}: {reason}"]
            # Given out before the cut: a crash between the two still marks the node below.
            given = max(wlog.hard_state.epoch, given) + 1
            write_atomic(dir / EPOCH, pack_blob(EPOCH_MAGIC, b"%d" % given))
        else:
            raise CorruptWAL(seg.path, offset, reason)
        next_seq = seg.seq
        _cut(segs, k, offset, dropped)
        _mark(wlog, segs, given)
        sync_dir(dir)
        for line in dropped:
            log.warning("repair dropped %s", line)
        return Replayed(wlog, segs, next_seq, dropped)
    _mark(wlog, segs, given)
    return Replayed(wlog, segs, next_seq, [])


def _last_epoch(dir: Path) -> int:
    path = dir / EPOCH
    try:
        return int(unpack_blob(EPOCH_MAGIC, path.read_bytes()))
    except FileNotFoundError:
        return 0
    except OSError as e:
        raise io_error(e, "reading", path) from e
    except ValueError as e:
        raise StorageError(f"unreadable {path}: {e}") from e


def _mark(wlog: WALLog, segs: list[Segment], epoch: int) -> None:
    """A repair gave out `epoch` and the WAL's hard state does not carry it yet (this repair,
    one that crashed before its record was durable, or a later cut that took that record):
    the hard state becomes recovering in that epoch, durably, before anything acts on it."""
    h = wlog.hard_state
    if epoch <= h.epoch:
        return
    wlog.hard_state = replace(h, epoch=epoch, recovering=True)
    if not segs:
        return  # the writer starts a fresh segment, with this hard state in it
    seg = segs[-1]
    try:
        fd = os.open(seg.path, os.O_WRONLY | os.O_APPEND)
    except OSError as e:
        raise io_error(e, "opening", seg.path) from e
    try:
        write_all(fd, encode_hard_state(wlog.hard_state), seg.path)
        sync_fd(fd, seg.path)
    finally:
        os.close(fd)
    seg.size = seg.path.stat().st_size


def _replay_segment(seg: Segment, first: bool, wlog: WALLog) -> Problem | None:
    try:
        data = seg.path.read_bytes()
    except OSError as e:
        raise io_error(e, "reading", seg.path) from e
    result = scan(data)
    for i, rec in enumerate(result.records):
        v = rec.value
        problem = None
        if isinstance(v, Head):
            if i > 0:
                problem = "head record inside a segment"
            elif (v.seq, v.index + 1) != (seg.seq, seg.index):
                problem = f"head says seq {v.seq} index {v.index + 1}, the name disagrees"
            else:
                problem = wlog.head(v, first)
        elif i == 0:
            problem = "segment does not start with a head record"
        elif isinstance(v, Mark):
            problem = wlog.mark(v)
        elif isinstance(v, HardState):
            wlog.hard_state = v
        else:
            problem = wlog.append(v)
        if problem:
            return rec.offset, problem, False
    if result.problem:
        return result.end, result.problem, result.torn
    if not result.records:  # created by a roll that crashed before its head was durable
        return 0, "empty segment", True
    return None


def _cut(segs: list[Segment], k: int, offset: int, dropped: list[str]) -> None:
    """Drop segment k from `offset` on, and every later segment. A segment cut to nothing
    is deleted: it has no head, and the writer makes a fresh one."""
    for seg in segs[k + 1 :]:
        dropped.append(f"{seg.path}: the whole segment ({seg.size} bytes)")
        seg.path.unlink()
    del segs[k + 1 :]
    seg = segs[k]
    if offset == 0:
        seg.path.unlink()
        segs.pop()
    else:
        truncate_file(seg.path, offset)
        seg.size = offset


def choose_snapshot(wlog: WALLog, snaps: SnapshotFiles) -> Snapshot | None:
    """The newest intact snapshot the WAL continues from. A newer one the WAL does not cover
    belongs to an install whose WAL marker never became durable: it was never acknowledged."""
    skipped: list[str] = []
    for f in snaps.list():
        if not wlog.covers(f.index, f.term):
            skipped.append(f"{f.path.name}: the WAL does not continue from it")
            continue
        try:
            snap = snaps.load(f)
        except CorruptSnapshot as e:
            skipped.append(str(e))
            continue
        if skipped:
            log.warning("using snapshot %s; skipped %s", f.path.name, "; ".join(skipped))
        return snap
    if wlog.covers(0, 0):
        if skipped:
            log.warning("using no snapshot; skipped %s", "; ".join(skipped))
        return None
    raise StorageError(
        f"no usable snapshot in {snaps.dir}: the WAL starts after index {wlog.start - 1}, and "
        + ("; ".join(skipped) if skipped else "there are no snapshot files")
    )


def durable(wlog: WALLog, snap: Snapshot | None) -> Durable:
    base = snap.meta.index if snap else 0
    assert wlog.start - 1 <= base, "a chosen snapshot is covered by the log"
    return Durable(wlog.hard_state, snap, tuple(wlog.entries[base + 1 - wlog.start :]))
