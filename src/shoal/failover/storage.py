"""A member's durable state: its operation log and its latest snapshot, in one directory.

    DIR/log       records appended in index order: u32 length, u32 crc32, msgpack
                  [index, token, op]; fsynced by `sync()` (one fsync for a whole batch)
    DIR/snapshot  u32 crc32 then msgpack [index, token, data]: the state machine after entry
                  `index`, written to a temporary file, fsynced and renamed over the old one

Entry `index` was written by the primary whose fencing token is `token`; (index, token) names
an entry uniquely, as (index, term) does in Raft, so two logs that hold the same pair agree up
to it. On open, the log is read up to its first torn or corrupt record (a crash in the middle
of an append) and cut there; a snapshot that fails its checksum is an error, not a silent
reset, because the entries it covered are no longer in the log.

The log is bounded: after `snapshot_every` entries past the latest snapshot the member takes a
new one (`save_snapshot`) and the log keeps only the `retain` entries before it (so a backup a
little behind still catches up from the log) and those after it. A backup further behind than
that, new or wiped, is sent the snapshot and then the log's suffix."""

from __future__ import annotations

import os
import struct
import zlib
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import msgpack

_RECORD = struct.Struct(">II")  # length, crc32 of the payload
MAX_RECORD = 16 * 1024 * 1024  # a record larger than this on disk is corruption


class StorageError(Exception):
    """The directory holds something this member cannot use (the message says what and where)."""


@dataclass(frozen=True, slots=True)
class Entry:
    index: int
    token: int  # the fencing token of the primary that wrote it
    op: bytes  # the user's operation, msgpack-packed


@dataclass(frozen=True, slots=True)
class Snapshot:
    index: int  # the last entry it includes (0: the empty state)
    token: int  # that entry's token
    data: bytes  # what the state machine's snapshot() returned


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _record(e: Entry) -> bytes:
    payload = msgpack.packb([e.index, e.token, e.op], use_bin_type=True)
    return _RECORD.pack(len(payload), zlib.crc32(payload)) + payload


class Storage:
    """The log (in memory and on disk) and the latest snapshot of one member."""

    def __init__(self, directory: Path):
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self._log_path = self.dir / "log"
        self._snap_path = self.dir / "snapshot"
        self.snapshot = self._load_snapshot()
        self.entries: deque[Entry] = deque()
        self._load_log()
        self._file = open(self._log_path, "ab")  # noqa: SIM115 - kept open for appends
        self._dirty = False

    # ------------------------------------------------------------------ reading
    @property
    def first_index(self) -> int:
        """The oldest entry still in the log (snapshot.index + 1 when none is kept before it)."""
        return self.entries[0].index if self.entries else self.snapshot.index + 1

    @property
    def last_index(self) -> int:
        return self.entries[-1].index if self.entries else self.snapshot.index

    @property
    def last_token(self) -> int:
        return self.entries[-1].token if self.entries else self.snapshot.token

    def token_at(self, index: int) -> int | None:
        """The token of entry `index` if this member can tell it (in the log, or the snapshot's
        own last entry), else None."""
        if index == self.snapshot.index:
            return self.snapshot.token
        if self.entries and self.entries[0].index <= index <= self.entries[-1].index:
            return self.entries[index - self.entries[0].index].token
        if index == 0:
            return 0
        return None

    def read(self, start: int, max_entries: int, max_bytes: int) -> list[Entry]:
        """Entries from `start` on, at most `max_entries` and about `max_bytes` (at least one)."""
        if not self.entries or start > self.last_index:
            return []
        if start < self.entries[0].index:
            raise StorageError(f"entry {start} is no longer in the log (it starts at "
                               f"{self.entries[0].index}): send the snapshot")
        out: list[Entry] = []
        size = 0
        pos = start - self.entries[0].index
        while pos < len(self.entries) and len(out) < max_entries:
            e = self.entries[pos]
            if out and size + len(e.op) > max_bytes:
                break
            out.append(e)
            size += len(e.op)
            pos += 1
        return out

    def since(self, index: int) -> list[Entry]:
        """Every entry after `index` (for replaying the log over a snapshot)."""
        return [e for e in self.entries if e.index > index]

    # ------------------------------------------------------------------ writing
    def append(self, entries: list[Entry]) -> None:
        """Append contiguous entries (written, not yet durable: call sync())."""
        for e in entries:
            if e.index != self.last_index + 1:
                raise StorageError(f"append of entry {e.index} after {self.last_index}")
            self.entries.append(e)
        self._file.write(b"".join(_record(e) for e in entries))
        self._dirty = True

    def sync(self) -> None:
        """Make everything appended so far durable (one fsync however many appends)."""
        if self._dirty:
            self._dirty = False
            self._file.flush()
            os.fsync(self._file.fileno())

    def save_snapshot(self, snap: Snapshot, retain: int) -> None:
        """Make `snap` the latest snapshot (durably) and cut the log to the `retain` entries
        before it and everything after it."""
        self.sync()
        self._write_snapshot(snap)
        keep_from = snap.index - retain + 1
        while self.entries and self.entries[0].index < keep_from:
            self.entries.popleft()
        self._rewrite_log()

    def install_snapshot(self, snap: Snapshot) -> None:
        """Replace everything with `snap` (a backup catching up): the log starts empty after it."""
        self._write_snapshot(snap)
        self.entries.clear()
        self._rewrite_log()

    def close(self) -> None:
        try:
            self.sync()
        finally:
            self._file.close()

    # ------------------------------------------------------------------ files
    def _write_snapshot(self, snap: Snapshot) -> None:
        payload = msgpack.packb([snap.index, snap.token, snap.data], use_bin_type=True)
        tmp = self._snap_path.with_suffix(".tmp")
        with open(tmp, "wb") as f:
            f.write(zlib.crc32(payload).to_bytes(4, "big") + payload)
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(self._snap_path)
        _fsync_dir(self.dir)
        self.snapshot = snap

    def _rewrite_log(self) -> None:
        """Write the kept entries to a new log file and rename it over the old one."""
        self._file.close()
        tmp = self._log_path.with_suffix(".tmp")
        with open(tmp, "wb") as f:
            f.write(b"".join(_record(e) for e in self.entries))
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(self._log_path)
        _fsync_dir(self.dir)
        self._file = open(self._log_path, "ab")  # noqa: SIM115
        self._dirty = False

    def _load_snapshot(self) -> Snapshot:
        try:
            raw = self._snap_path.read_bytes()
        except FileNotFoundError:
            return Snapshot(0, 0, b"")
        if len(raw) < 4 or zlib.crc32(raw[4:]) != int.from_bytes(raw[:4], "big"):
            raise StorageError(f"{self._snap_path}: checksum mismatch (the snapshot is corrupt; "
                               "wipe the directory to have this member catch up from the primary)")
        try:
            index, token, data = msgpack.unpackb(raw[4:], raw=False)
        except (ValueError, TypeError, msgpack.UnpackException) as exc:
            raise StorageError(f"{self._snap_path}: unreadable snapshot: {exc}") from None
        if type(index) is not int or type(token) is not int or type(data) is not bytes:
            raise StorageError(f"{self._snap_path}: not a snapshot [index, token, data]")
        return Snapshot(index, token, data)

    def _load_log(self) -> None:
        try:
            raw = self._log_path.read_bytes()
        except FileNotFoundError:
            return
        pos = 0
        while pos + _RECORD.size <= len(raw):
            n, crc = _RECORD.unpack_from(raw, pos)
            body = raw[pos + _RECORD.size: pos + _RECORD.size + n]
            if n > MAX_RECORD or len(body) < n or zlib.crc32(body) != crc:
                break  # a torn append: the rest was never acknowledged durable
            try:
                index, token, op = msgpack.unpackb(body, raw=False)
            except (ValueError, TypeError, msgpack.UnpackException):
                break
            if type(index) is not int or type(token) is not int or type(op) is not bytes or (
                    self.entries and index != self.entries[-1].index + 1):
                break
            self.entries.append(Entry(index, token, op))
            pos += _RECORD.size + n
        snap = self.snapshot
        # The log must reach the snapshot and agree with it; else it is what was left of an
        # older log when a crash came between writing a snapshot and rewriting the log.
        first = self.entries[0].index if self.entries else 0
        if self.entries and (not first <= snap.index + 1 <= self.last_index + 1 or (
                snap.index >= first and self.entries[snap.index - first].token != snap.token)):
            self.entries.clear()
            pos = 0
        if pos < len(raw):  # cut the torn tail so the next append starts on a record
            with open(self._log_path, "r+b") as f:
                f.truncate(pos)
                f.flush()
                os.fsync(f.fileno())
