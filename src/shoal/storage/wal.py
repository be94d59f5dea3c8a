"""The write-ahead log: typed, checksummed records appended to segment files.

A record is a 9-byte header — payload length (u32), CRC (u32), type (u8) — and a msgpack
payload. The CRC is zlib.crc32 over the type byte and the payload: it is in the standard
library and runs in C, and CRC32C would need a dependency for no gain in detection here.

Segments are named `<seq>-<index>.wal` (16 hex digits each, etcd's scheme): seq counts
segments, index is the first log index the segment was opened for. Every segment starts
with a HEAD record (seq, and the last index/term at the roll) followed by the hard state, so
a segment whose predecessors were released still says where its log starts and what the
hard state was."""

from __future__ import annotations

import logging
import os
import re
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path
from typing import Any

import msgpack

from ..consensus.messages import Entry, EntryKind, HardState
from .errors import StorageError, io_error
from .files import sync_dir, sync_fd, write_all

log = logging.getLogger("shoal.storage")

HEADER = struct.Struct("<IIB")  # payload length, crc32(type byte + payload), record type
MAX_RECORD = 256 << 20  # bound: a longer length field is garbage, not a record
DEFAULT_SEGMENT_BYTES = 64 << 20
_NAME = re.compile(r"^([0-9a-f]{16})-([0-9a-f]{16})\.wal$")


class RecordType(IntEnum):
    HEAD = 1  # [seq, index, term]: first record of a segment; the log holds (index, term)
    ENTRIES = 2  # [first_index, [[term, kind, data], ...]]: supersedes stored entries >= first
    HARD_STATE = 3  # [term, vote, commit], or with [..., epoch, recovering] once repaired
    SNAPSHOT = 4  # [index, term, reset]: a snapshot was saved; reset = it replaced the log


@dataclass(frozen=True, slots=True)
class Head:
    seq: int
    index: int
    term: int


@dataclass(frozen=True, slots=True)
class Mark:
    index: int
    term: int
    reset: bool  # installed from the leader (the log is replaced) vs compaction (suffix kept)


Payload = Head | Mark | HardState | list[Entry]


@dataclass(frozen=True, slots=True)
class Record:
    offset: int
    value: Payload


@dataclass(frozen=True, slots=True)
class Scan:
    records: list[Record]
    end: int  # offset just past the last good record
    problem: str | None  # why reading stopped before the end of the data
    torn: bool  # the problem looks like a write interrupted at the end of the file


def segment_name(seq: int, index: int) -> str:
    return f"{seq:016x}-{index:016x}.wal"


def parse_segment_name(name: str) -> tuple[int, int] | None:
    m = _NAME.match(name)
    return (int(m[1], 16), int(m[2], 16)) if m else None


def _record(rtype: RecordType, payload: object) -> bytes:
    body = msgpack.packb(payload, use_bin_type=True)
    if len(body) > MAX_RECORD:
        raise StorageError(f"WAL record of {len(body)} bytes exceeds the {MAX_RECORD}-byte bound")
    crc = zlib.crc32(body, zlib.crc32(bytes((rtype,))))
    return HEADER.pack(len(body), crc, rtype) + body


def encode_head(head: Head) -> bytes:
    return _record(RecordType.HEAD, [head.seq, head.index, head.term])


def encode_entries(entries: Sequence[Entry]) -> bytes:
    first = entries[0].index
    assert all(e.index == first + k for k, e in enumerate(entries)), "entries not contiguous"
    return _record(RecordType.ENTRIES, [first, [(e.term, int(e.kind), e.data) for e in entries]])


def encode_hard_state(hs: HardState) -> bytes:
    fields = [hs.term, hs.vote, hs.commit]
    if hs.epoch or hs.recovering:  # a log never repaired keeps the original three fields
        fields += [hs.epoch, int(hs.recovering)]
    return _record(RecordType.HARD_STATE, fields)


def encode_mark(mark: Mark) -> bytes:
    return _record(RecordType.SNAPSHOT, [mark.index, mark.term, mark.reset])


def _uints(obj: Any, n: int) -> list[int]:
    if not (isinstance(obj, list) and len(obj) == n):
        raise ValueError(f"expected a list of {n} fields, got {obj!r:.80}")
    if not all(type(x) is int and x >= 0 for x in obj):
        raise ValueError(f"expected unsigned integers, got {obj!r:.80}")
    return obj


def _decode(rtype: RecordType, obj: Any) -> Payload:
    """Validate a payload's shape: a record with a good CRC can still be nonsense."""
    if rtype is RecordType.HEAD:
        return Head(*_uints(obj, 3))
    if rtype is RecordType.HARD_STATE:
        if isinstance(obj, list) and len(obj) == 5:
            term, vote, commit, epoch, recovering = _uints(obj, 5)
            if recovering > 1:
                raise ValueError(f"bad recovering flag in {obj!r:.80}")
            return HardState(term, vote, commit, epoch, bool(recovering))
        term, vote, commit = _uints(obj, 3)
        return HardState(term, vote, commit)
    if rtype is RecordType.SNAPSHOT:
        if not (isinstance(obj, list) and len(obj) == 3 and isinstance(obj[2], bool)):
            raise ValueError(f"bad snapshot marker {obj!r:.80}")
        index, term = _uints(obj[:2], 2)
        return Mark(index, term, obj[2])
    if not (isinstance(obj, list) and len(obj) == 2 and isinstance(obj[1], list) and obj[1]):
        raise ValueError(f"bad entries record {obj!r:.80}")
    first = _uints(obj[:1], 1)[0]
    if first == 0:
        raise ValueError("entry index 0")
    entries = []
    for k, item in enumerate(obj[1]):
        if not (isinstance(item, list) and len(item) == 3 and isinstance(item[2], bytes)):
            raise ValueError(f"bad entry {item!r:.80}")
        term, kind = _uints(item[:2], 2)
        entries.append(Entry(term, first + k, EntryKind(kind), item[2]))
    return entries


def scan(data: bytes) -> Scan:
    """Read records until the end of `data` or the first bad one."""
    records: list[Record] = []
    off = 0
    while off < len(data):
        problem, torn, end = _check(data, off)
        if problem is None:
            try:
                rtype = RecordType(HEADER.unpack_from(data, off)[2])
                value = _decode(rtype, msgpack.unpackb(
                    data[off + HEADER.size : end], raw=False, strict_map_key=True))
            except (ValueError, TypeError, msgpack.UnpackException) as e:
                return Scan(records, off, f"record decodes to nonsense: {e}", False)
            records.append(Record(off, value))
            off = end
            continue
        if not any(memoryview(data)[off:]):
            # The file grew but its pages never reached the disk: a torn write too.
            return Scan(records, off, "zero-filled tail", True)
        return Scan(records, off, problem, torn)
    return Scan(records, off, None, False)


def _check(data: bytes, off: int) -> tuple[str | None, bool, int]:
    """Is there an intact record at `off`? (problem, looks torn, end of the record)"""
    size = len(data)
    if size - off < HEADER.size:
        return "partial record header", True, size
    length, crc, rtype = HEADER.unpack_from(data, off)
    end = off + HEADER.size + length
    if length > MAX_RECORD or end > size:
        return f"record of {length} bytes runs past end of file", True, size
    if zlib.crc32(memoryview(data)[off + HEADER.size : end], zlib.crc32(bytes((rtype,)))) != crc:
        # Only the very last record can be a torn write; anything after it means damage.
        return "CRC mismatch", end == size, end
    return None, False, end


@dataclass(slots=True)
class Segment:
    seq: int
    index: int  # first index, from the name
    path: Path
    size: int


class WALWriter:
    """Appends to the last segment; rolls to a new one past `segment_bytes`; releases old ones.

    A failed write or sync (a full disk, an I/O error) leaves the writer able to go on: it
    remembers the bytes appended since the last successful sync, and before its next write or
    sync it cuts the segment back to the synced length and writes those bytes again. After a
    failed fsync the kernel may have dropped the dirty pages it could not write, so a later
    fsync that succeeds proves nothing about them; rewriting them does. `rollback` takes back
    the bytes of a save that failed, so retrying that save never writes its records twice.
    Memory: the unsynced bytes, at most one segment (only with fsync off do they pile up)."""

    def __init__(self, dir: Path, segments: list[Segment], segment_bytes: int):
        assert segments, "the WAL always has a segment to append to"
        self.dir = dir
        self.segments = segments
        self.segment_bytes = segment_bytes
        self.fd = self._open(segments[-1].path, os.O_WRONLY | os.O_APPEND)
        self._synced = segments[-1].size  # the last segment is durable up to here
        self._unsynced = bytearray()  # appended after _synced, not yet known durable
        self._dirty = False  # the file may differ from _synced + _unsynced: rewrite first
        # After a process crash (not a power loss) recovery may have read records that are
        # only in the page cache. The node will act on them, so they must be durable first.
        self.sync()
        sync_dir(dir)

    @classmethod
    def create(cls, dir: Path, head: Head, hs: HardState, segment_bytes: int) -> WALWriter:
        seg = _new_segment(dir, head, hs)
        return cls(dir, [seg], segment_bytes)

    @property
    def last(self) -> Segment:
        return self.segments[-1]

    def full(self) -> bool:
        return self.last.size >= self.segment_bytes

    def append(self, data: bytes | bytearray) -> None:
        self._repair()
        try:
            write_all(self.fd, data, self.last.path)
        except StorageError:
            self._dirty = True  # part of it may be in the file
            raise
        self._unsynced += data
        self.last.size += len(data)

    def sync(self) -> None:
        self._repair()
        try:
            sync_fd(self.fd, self.last.path)
        except StorageError:
            self._dirty = True
            raise
        self._synced = self.last.size
        self._unsynced.clear()

    def rollback(self, size: int) -> None:
        """Forget what was appended to the last segment past `size` (a save that failed):
        the next write or sync cuts the file back first."""
        assert self._synced <= size <= self.last.size, (self._synced, size, self.last.size)
        del self._unsynced[size - self._synced:]
        self.last.size = size
        self._dirty = True

    def _repair(self) -> None:
        if not self._dirty:
            return
        seg = self.last
        try:
            os.ftruncate(self.fd, self._synced)
        except OSError as e:
            raise io_error(e, "truncating", seg.path) from e
        write_all(self.fd, self._unsynced, seg.path)  # O_APPEND: right after the synced part
        self._dirty = False

    def roll(self, index: int, term: int, hs: HardState) -> None:
        """Close the full segment (synced, so only the last segment can ever be torn). On
        failure the old segment stays the one appended to."""
        self.sync()
        seg = _new_segment(self.dir, Head(self.last.seq + 1, index, term), hs)
        try:
            fd = self._open(seg.path, os.O_WRONLY | os.O_APPEND)
        except StorageError:
            seg.path.unlink(missing_ok=True)
            raise
        os.close(self.fd)
        self.fd = fd
        self.segments.append(seg)
        self._synced = seg.size

    def release(self, index: int) -> list[Path]:
        """Delete the leading segments that hold nothing after `index`. Segment k holds only
        entries up to the index segment k+1 was opened at (later writes go to k+1), so k goes
        once the next segment's head is covered. The last segment always stays."""
        gone: list[Path] = []
        while len(self.segments) > 1 and self.segments[1].index - 1 <= index:
            seg = self.segments[0]
            try:
                seg.path.unlink()
            except OSError as e:
                raise io_error(e, "deleting", seg.path) from e
            self.segments.pop(0)
            gone.append(seg.path)
        if gone:
            sync_dir(self.dir)
        return gone

    def size_bytes(self) -> int:
        return sum(s.size for s in self.segments)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    @staticmethod
    def _open(path: Path, flags: int) -> int:
        try:
            return os.open(path, flags)
        except OSError as e:
            raise io_error(e, "opening", path) from e


def _new_segment(dir: Path, head: Head, hs: HardState) -> Segment:
    """Create a segment holding its HEAD and hard state, durable before any entry lands in it."""
    path = dir / segment_name(head.seq, head.index + 1)
    data = encode_head(head) + encode_hard_state(hs)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except OSError as e:
        raise io_error(e, "creating", path) from e
    try:
        try:
            write_all(fd, data, path)
            sync_fd(fd, path)
        finally:
            os.close(fd)
        sync_dir(dir)
    except StorageError:
        path.unlink(missing_ok=True)  # else the retry's O_EXCL create finds it
        raise
    return Segment(head.seq, head.index + 1, path, len(data))
