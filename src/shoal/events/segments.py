"""A partition's log as segment files, laid out as Kafka lays them out:

    <base offset, 20 digits>.log        record batches end to end, as appended
    <base offset, 20 digits>.index      sparse offset index: (offset - base, position) as two
                                        big-endian u32, one entry per INDEX_INTERVAL bytes
    <base offset, 20 digits>.timeindex  (largest timestamp so far i64, offset - base u32) at
                                        the same points

The last segment is the active one, appended to; the others are closed. A segment is rolled
when the next batch would take it past `segment.bytes`, or when the batch's timestamp is
`segment.ms` past the segment's first batch (both deterministic: every replica rolls at the
same batch). A fetch finds its segment by base offset and its position by a binary search of
the index, then reads whole batches up to a byte budget: it never scans the log.

Recovery (`SegmentLog.open`) walks each `.log`, checking every batch's CRC: a last batch cut
short or failing its CRC is a torn write and is cut off; a bad batch with more data after it
is corruption in the middle and refused (CorruptSegment, naming the file); an index that is
missing, of the wrong size or disagreeing with the log is rebuilt from the log.

A snapshot names the segments instead of copying them (`manifest`: per segment its base, next
offset, size and a digest of its batch headers, whose CRCs cover the records; for the active
one also its fill and first timestamp); `carry` reads the named bytes back for a follower that installs the snapshot, and
`restore` makes the files what a snapshot says. A trim or compaction that deletes or rewrites
a segment first records its entry's index (`REWRITE_CHECKPOINT`), so a restore knows when the
files may differ from an older snapshot. How this composes with the consensus log is
kv/partition.py's business.

Pure: the files come through a `Directory` (storage/segment_files.py gives real files, a
`MemoryDirectory` keeps them in memory for the simulator and the tests)."""

from __future__ import annotations

import bisect
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Protocol

from .protocol.records import (
    HEADER_SIZE,
    BatchHeader,
    CorruptRecord,
    crc32c,
    iter_batches,
    read_header,
    restamp,
)

INDEX_INTERVAL = 4096  # Kafka's index.interval.bytes
SCAN_BYTES = 64 * 1024  # read at a time when walking batch headers from an index entry
# The index of the last entry that deleted or rewrote a segment (Kafka keeps its log start and
# cleaner progress in checkpoint files beside the segments too).
REWRITE_CHECKPOINT = "rewrite-checkpoint"
_INDEX = struct.Struct(">II")
_TIME = struct.Struct(">qI")


class CorruptSegment(Exception):
    """A segment file that recovery cannot repair; the message names the file."""


class Directory(Protocol):
    """The files of one partition's log. Writes become durable at `sync`."""

    def names(self) -> list[str]: ...
    def size(self, name: str) -> int: ...
    def read(self, name: str, offset: int = 0, size: int = -1) -> bytes: ...
    def append(self, name: str, *data: bytes | memoryview) -> None: ...  # the pieces, joined
    def truncate(self, name: str, size: int) -> None: ...
    def write(self, name: str, data: bytes) -> None: ...  # the whole file, replaced
    def delete(self, name: str) -> None: ...
    def sync(self) -> None: ...
    def close(self) -> None: ...  # (what it holds open; it may be used again after)


class MemoryDirectory:
    """A Directory in memory (the simulator's, the tests')."""

    def __init__(self) -> None:
        self.files: dict[str, bytearray] = {}

    def names(self) -> list[str]:
        return sorted(self.files)

    def size(self, name: str) -> int:
        return len(self.files.get(name, b""))

    def read(self, name: str, offset: int = 0, size: int = -1) -> bytes:
        data = self.files.get(name, bytearray())
        return bytes(data[offset:] if size < 0 else data[offset:offset + size])

    def append(self, name: str, *data: bytes | memoryview) -> None:
        f = self.files.setdefault(name, bytearray())
        for piece in data:
            f += piece

    def truncate(self, name: str, size: int) -> None:
        del self.files.setdefault(name, bytearray())[size:]

    def write(self, name: str, data: bytes) -> None:
        self.files[name] = bytearray(data)

    def delete(self, name: str) -> None:
        self.files.pop(name, None)

    def sync(self) -> None:
        pass

    def close(self) -> None:
        pass


def segment_name(base: int, suffix: str) -> str:
    return f"{base:020d}.{suffix}"


@dataclass(slots=True)
class Segment:
    base: int
    size: int = 0
    next_offset: int = -1  # after its last batch (its base while empty)
    first_ts: int = -1  # its first batch's max timestamp (segment.ms)
    max_ts: int = -1
    digest: int = 0  # CRC-32C of its batch headers, chained (each header's CRC covers its records)
    # The bytes appended to it, what segment.bytes is measured against: its size, except for a
    # compacted segment that a restore makes the active one again (`restore`).
    fill: int = 0
    index: list[tuple[int, int]] = field(default_factory=list)  # (offset, position)
    times: list[tuple[int, int]] = field(default_factory=list)  # (max timestamp, offset)

    def __post_init__(self) -> None:
        if self.next_offset < 0:
            self.next_offset = self.base

    @property
    def log(self) -> str:
        return segment_name(self.base, "log")

    @property
    def offset_index(self) -> str:
        return segment_name(self.base, "index")

    @property
    def time_index(self) -> str:
        return segment_name(self.base, "timeindex")

    def note(self, pos: int, h: BatchHeader, raw: bytes | memoryview) -> tuple[bytes, bytes]:
        """Account for batch `raw` (header `h`, as written) at `pos`; the index entries it adds
        (as bytes, maybe empty)."""
        base_offset, max_ts = h.base_offset, h.max_timestamp
        idx = tim = b""
        if not self.index or pos - self.index[-1][1] >= INDEX_INTERVAL:
            self.index.append((base_offset, pos))
            idx = _INDEX.pack(base_offset - self.base, pos)
            if max_ts > self.max_ts or not self.times:
                self.times.append((max(max_ts, self.max_ts), base_offset))
                tim = _TIME.pack(max(max_ts, self.max_ts), base_offset - self.base)
        if self.fill == 0:
            self.first_ts = max_ts
        self.max_ts = max(self.max_ts, max_ts)
        self.size, self.next_offset = pos + h.size, h.next_offset
        self.fill += h.size
        self.digest = _digest(raw, self.digest)
        return idx, tim


class SegmentLog:
    def __init__(self, dir: Directory):
        self.dir = dir
        self.segments: list[Segment] = []
        self.rewritten = 0  # REWRITE_CHECKPOINT's index (0: none)

    # ---------------------------------------------------------------- opening
    @classmethod
    def open(cls, dir: Directory) -> SegmentLog:
        """The segments in `dir`, recovered (see the module docstring)."""
        log = cls(dir)
        names = set(dir.names())
        if REWRITE_CHECKPOINT in names:
            log.rewritten = int(dir.read(REWRITE_CHECKPOINT))
        bases = sorted(int(n[:-4]) for n in names if n.endswith(".log") and n[:-4].isdigit())
        for i, base in enumerate(bases):
            seg, torn = log._recover(base)
            if log.segments and seg.base < log.segments[-1].next_offset:
                raise CorruptSegment(f"{seg.log}: starts at offset {seg.base}, inside the "
                                     f"previous segment (which ends at "
                                     f"{log.segments[-1].next_offset})")
            log.segments.append(seg)
            if torn:  # what follows a torn write was written after it: it goes too
                for later in bases[i + 1:]:
                    log._drop(Segment(later))
                bases = bases[:i + 1]
                break
        for n in names:  # indexes whose log is gone
            stem, _, suffix = n.partition(".")
            if suffix in ("index", "timeindex") and stem.isdigit() and int(stem) not in bases:
                dir.delete(n)
        return log

    def _recover(self, base: int) -> tuple[Segment, bool]:
        """The segment at `base`, its torn tail cut off; and whether it had one."""
        seg = Segment(base)
        torn = False
        data = self.dir.read(seg.log)
        pos = 0
        indexes: list[tuple[bytes, bytes]] = []
        while pos < len(data):
            try:
                h, raw = next(iter_batches(data[pos:pos + _batch_size(data, pos)]))
            except (CorruptRecord, StopIteration, struct.error) as exc:
                if pos + _batch_size(data, pos) < len(data):
                    raise CorruptSegment(f"{seg.log}: corrupt record batch at position {pos} "
                                         f"with data after it ({exc}): refusing to start; "
                                         "restore this replica from a peer") from None
                # A torn write at the tail: what was cut short was never acknowledged by
                # this file alone (the consensus log still has it, kv/partition.py).
                self.dir.truncate(seg.log, pos)
                torn = True
                break
            indexes.append(seg.note(pos, h, raw))
            pos += len(raw)
        if not self._index_agrees(seg, indexes):
            self.dir.write(seg.offset_index, b"".join(i for i, _ in indexes))
            self.dir.write(seg.time_index, b"".join(t for _, t in indexes))
        return seg, torn

    def _index_agrees(self, seg: Segment, built: list[tuple[bytes, bytes]]) -> bool:
        return (self.dir.read(seg.offset_index) == b"".join(i for i, _ in built)
                and self.dir.read(seg.time_index) == b"".join(t for _, t in built))

    # ---------------------------------------------------------------- the log's extent
    @property
    def start_offset(self) -> int:
        return self.segments[0].base if self.segments else 0

    @property
    def next_offset(self) -> int:
        return self.segments[-1].next_offset if self.segments else 0

    @property
    def size(self) -> int:
        return sum(s.size for s in self.segments)

    @property
    def active(self) -> Segment | None:
        return self.segments[-1] if self.segments else None

    def closed(self) -> list[Segment]:
        return self.segments[:-1]

    # ---------------------------------------------------------------- writing
    def append(self, batch: bytes | memoryview, segment_bytes: int, segment_ms: int,
               base_offset: int | None = None) -> None:
        """One batch after everything held, given its offset already or `base_offset` now (as
        restamp gives it, without copying the batch: a new header goes before the rest)."""
        head = batch[:HEADER_SIZE] if base_offset is None else restamp(batch[:HEADER_SIZE],
                                                                        base_offset)
        h = read_header(head)
        seg = self.active
        if seg is None or (seg.fill and (seg.fill + len(batch) > segment_bytes or (
                segment_ms >= 0 and seg.first_ts >= 0
                and h.max_timestamp - seg.first_ts >= segment_ms))):
            seg = self.roll(h.base_offset)
        assert h.base_offset >= seg.next_offset, (h.base_offset, seg.next_offset)
        pos = seg.size
        idx, tim = seg.note(pos, h, head)
        self.dir.append(seg.log, head, memoryview(batch)[HEADER_SIZE:])
        if idx:
            self.dir.append(seg.offset_index, idx)
        if tim:
            self.dir.append(seg.time_index, tim)

    def roll(self, base: int) -> Segment:
        seg = Segment(base)
        for name in (seg.log, seg.offset_index, seg.time_index):
            self.dir.write(name, b"")
        self.segments.append(seg)
        return seg

    def delete_before(self, offset: int, index: int) -> int:
        """Delete the whole segments that end at or before `offset`, never the active one, for
        the entry at `index`. Returns the new start offset."""
        while len(self.segments) > 1 and self.segments[1].base <= offset:
            self._rewriting(index)
            self._drop(self.segments.pop(0))
        return self.start_offset

    def truncate(self, next_offset: int) -> None:
        """Drop every batch at or past `next_offset` (one the consensus log will apply again)."""
        while self.segments and self.segments[-1].base >= next_offset and (
                self.segments[-1].base > next_offset or self.segments[-1].size):
            self._drop(self.segments.pop())
        seg = self.active
        if seg is None or seg.next_offset <= next_offset:
            return
        pos = self._position(seg, next_offset)
        kept = self._rebuild(seg.base, self.dir.read(seg.log, 0, pos))
        self.segments[-1] = kept

    def replace(self, seg: Segment, batches: list[bytes], index: int) -> None:
        """Swap a closed segment's batches for `batches` (compaction: same offsets, fewer
        records), for the entry at `index`; a segment left with none is deleted."""
        self._rewriting(index)
        i = self.segments.index(seg)
        if not batches:
            self._drop(self.segments.pop(i))
            return
        self.segments[i] = self._rebuild(seg.base, b"".join(batches))
        self.segments[i].next_offset = max(self.segments[i].next_offset, seg.next_offset)

    def _rewriting(self, index: int) -> None:
        """Record, durably and before the files change, that the entry at `index` deletes or
        rewrites a segment: a snapshot before it no longer describes the files."""
        if index > self.rewritten:
            self.dir.write(REWRITE_CHECKPOINT, b"%d" % index)
            self.rewritten = index

    def _rebuild(self, base: int, data: bytes) -> Segment:
        seg = Segment(base)
        idx, tim = bytearray(), bytearray()
        for h, raw in iter_batches(data, verify=False):
            i, t = seg.note(seg.size, h, raw)
            idx += i
            tim += t
        self.dir.write(seg.log, data)
        self.dir.write(seg.offset_index, bytes(idx))
        self.dir.write(seg.time_index, bytes(tim))
        return seg

    def _drop(self, seg: Segment) -> None:
        for name in (seg.log, seg.offset_index, seg.time_index):
            self.dir.delete(name)

    # ---------------------------------------------------------------- reading
    def read(self, offset: int, max_bytes: int) -> bytes:
        """Whole batches from the one holding `offset` (or the first after it), at most
        `max_bytes` of them but at least one, from one segment (as Kafka reads)."""
        i = max(0, bisect.bisect_right([s.base for s in self.segments], offset) - 1)
        for seg in self.segments[i:]:
            pos = self._position(seg, offset)
            if pos < seg.size:
                return self._read_from(seg, pos, max_bytes)
        return b""

    def _position(self, seg: Segment, offset: int) -> int:
        """The position of the first batch of `seg` ending after `offset` (`seg.size` if
        none): the index narrows it to INDEX_INTERVAL bytes, headers do the rest."""
        k = bisect.bisect_right(seg.index, (offset, 1 << 62)) - 1
        start = seg.index[k][1] if k >= 0 else 0
        return next((pos for pos, h in self._headers(seg, start) if h.next_offset > offset),
                    seg.size)

    def _headers(self, seg: Segment, pos: int) -> Iterator[tuple[int, BatchHeader]]:
        """(position, header) of each batch of `seg` from `pos`, read SCAN_BYTES at a time."""
        while pos < seg.size:
            chunk = self.dir.read(seg.log, pos, SCAN_BYTES)
            at = 0
            while at + HEADER_SIZE <= len(chunk):
                h = read_header(chunk, at)
                yield pos + at, h
                at += h.size
            if at == 0:  # a batch longer than the chunk
                h = read_header(self.dir.read(seg.log, pos, HEADER_SIZE))
                yield pos, h
                at = h.size
            pos += at

    def _read_from(self, seg: Segment, pos: int, max_bytes: int) -> bytes:
        first = read_header(self.dir.read(seg.log, pos, HEADER_SIZE)).size
        data = self.dir.read(seg.log, pos, max(first, max_bytes))
        end = 0
        while end < len(data) and end + 12 <= len(data):
            size = _batch_size(data, end)
            if end + size > len(data):
                break
            end += size
        return data[:end]

    def batches(self, offset: int = 0) -> Iterator[bytes]:
        """Every batch ending after `offset`, in order (compaction, the simulator's checks)."""
        for seg in self.segments:
            if seg.next_offset <= offset:
                continue
            yield from self.segment_batches(seg)

    def segment_batches(self, seg: Segment) -> Iterator[bytes]:
        for _, raw in iter_batches(self.dir.read(seg.log), verify=False):
            yield raw

    def offset_for_time(self, timestamp: int) -> tuple[int, int] | None:
        """(offset, max timestamp) of the first batch whose max timestamp is at least
        `timestamp` (ListOffsets by time), found by the time indexes; None if none is."""
        for seg in self.segments:
            if seg.max_ts < timestamp:
                continue
            k = bisect.bisect_left(seg.times, (timestamp, -1)) - 1
            start = self._position(seg, seg.times[k][1] if k >= 0 else seg.base)
            for _, h in self._headers(seg, start):
                if h.max_timestamp >= timestamp:
                    return h.base_offset, h.max_timestamp
        return None

    # ---------------------------------------------------------------- snapshots
    def manifest(self) -> list[list[int]]:
        """What a snapshot records of the segments, after syncing them: per segment [base,
        next offset, size, digest], and for the active one also its first timestamp and fill
        (what its rolling depends on). The files are the state."""
        self.dir.sync()
        named = [[s.base, s.next_offset, s.size, s.digest] for s in self.segments]
        if self.segments:
            named[-1] += [self.segments[-1].first_ts, self.segments[-1].fill]
        return named

    def carry(self, manifest: list[list[int]]) -> list[list[object]] | None:
        """The bytes `manifest` names, read back for a follower to install: [[base, next
        offset, log bytes], ...] (the active one's first timestamp and fill after). None if
        the files no longer hold them (a trim or compaction since deleted or rewrote one)."""
        carried: list[list[object]] = []
        for base, next_offset, size, digest, *active in manifest:
            seg = next((s for s in self.segments if s.base == base), None)
            if seg is None or seg.size < size:
                return None
            data = self.dir.read(seg.log, 0, size)
            if _digest_of(data) != digest:
                return None
            carried.append([base, next_offset, data, *active])
        return carried

    def restore(self, segments: list[list[object]], next_offset: int, rewritten: bool) -> None:
        """Make the files what a snapshot says, its entries as `manifest` or `carry` gives
        them. First every batch at or past `next_offset` goes (the consensus log applies it
        again). A carried segment is written unless a file already holds it; a named one must
        be in the files as named (else CorruptSegment: acknowledged batches are missing),
        unless an entry after the snapshot deleted or rewrote segments (`rewritten`), which the
        consensus log applies again: then a file that differs is kept as it is. The
        snapshot's last segment, which that log appends to, takes the snapshot's fill and
        first timestamp, so it rolls where it did even if compacted since. Segments the
        snapshot does not have go."""
        self.truncate(next_offset)
        have = {s.base: s for s in self.segments}
        out: list[Segment] = []
        for k, entry in enumerate(segments):
            base, seg_next, data = entry[:3]
            assert isinstance(base, int) and isinstance(seg_next, int)
            seg = have.pop(base, None)
            if isinstance(data, bytes):  # carried (without first timestamp and fill: format 1)
                if seg is None or seg.size != len(data) or self.dir.read(seg.log) != data:
                    seg = self._rebuild(base, data)
            else:
                size, digest = data, entry[3]
                assert isinstance(size, int)
                if seg is None or seg.size != size or seg.digest != digest:
                    if not rewritten:
                        held = "no file" if seg is None else f"{seg.size} bytes"
                        raise CorruptSegment(
                            f"{segment_name(base, 'log')}: the snapshot names {size} bytes, "
                            f"the files hold {held}: acknowledged batches are missing; "
                            "restore this replica from a peer")
                    if seg is None and k < len(segments) - 1:
                        continue  # deleted after the snapshot: the log deletes it again
                seg = seg or self.roll(base)
            if k == len(segments) - 1 and len(entry) >= 5:  # (not in format 1's)
                first_ts, fill = entry[-2:]
                assert isinstance(first_ts, int) and isinstance(fill, int)
                seg.first_ts, seg.fill = first_ts, fill
            seg.next_offset = max(seg.next_offset, seg_next)
            out.append(seg)
        for stale in have.values():
            self._drop(stale)
        self.segments = out
        self.dir.sync()


def _digest(batch: bytes | memoryview, digest: int) -> int:
    return crc32c(batch[:HEADER_SIZE], digest)


def _digest_of(data: bytes) -> int:
    digest = 0
    for _, raw in iter_batches(data, verify=False):
        digest = _digest(raw, digest)
    return digest


def _batch_size(data: bytes, pos: int) -> int:
    """The size batchLength gives the batch at `pos` (at least a header's)."""
    if len(data) - pos < 12:
        return len(data) - pos
    return 12 + max(struct.unpack_from(">i", data, pos + 8)[0], 49)
