"""Durable Raft state in a data directory: the driver's side of the Ready loop's first step.

    storage, durable = Storage.open(dir, cluster_id=1, node_id=3)
    raft = Raft(3, conf, rng, durable=durable)
    ... storage.save(rd)                  # per Ready: one write, one fsync if rd.must_sync
    ... storage.save_snapshot(raft.compact(applied, data))

Layout of the directory, record format and recovery rules: docs/storage.md."""

from __future__ import annotations

import fcntl
import logging
import os
from pathlib import Path

import msgpack

from ..consensus.messages import Durable, Ready, Snapshot
from .errors import StorageError, WrongIdentity, io_error
from .files import pack_blob, unpack_blob, write_atomic
from .recovery import choose_snapshot, durable, replay
from .snapshot import DEFAULT_KEEP, SnapshotFiles
from .wal import (
    DEFAULT_SEGMENT_BYTES,
    Head,
    Mark,
    WALWriter,
    encode_entries,
    encode_hard_state,
    encode_mark,
    parse_segment_name,
)

log = logging.getLogger("shoal.storage")

META = "shoal.meta"
META_MAGIC = b"SHMD"
LOCK = "shoal.lock"
FORMAT_VERSION = 1


class Storage:
    def __init__(self, dir: Path, lock_fd: int, wal: WALWriter, snaps: SnapshotFiles,
                 state: Durable, dropped: list[str]):
        self.dir = dir
        self.dropped = dropped  # what `repair` removed, one line per cut, for the operator
        self._lock_fd = lock_fd
        self._wal = wal
        self._snaps = snaps
        self._hard_state = state.hard_state
        snap = state.snapshot.meta if state.snapshot else None
        self._snap_index = snap.index if snap else 0
        last = state.entries[-1] if state.entries else None
        self._last = (last.index, last.term) if last else (snap.index, snap.term) if snap else (0, 0)
        self._closed = False

    # ------------------------------------------------------------------ open
    @classmethod
    def open(cls, dir: str | Path, *, cluster_id: int | None = None, node_id: int | None = None,
             repair: bool = False, segment_bytes: int = DEFAULT_SEGMENT_BYTES,
             keep_snapshots: int = DEFAULT_KEEP) -> tuple[Storage, Durable]:
        """Open (or create) a data dir and return what was persisted. Creating needs both ids;
        opening checks any id given against the ones the dir was created with."""
        dir = Path(dir)
        try:
            dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise io_error(e, "creating", dir) from e
        lock_fd = _lock(dir)
        try:
            _check_identity(dir, cluster_id, node_id)
            for tmp in dir.glob("*.tmp"):  # an atomic write that never got to its rename
                tmp.unlink()
            snaps = SnapshotFiles(dir, keep_snapshots)
            replayed = replay(dir, repair)
            snap = choose_snapshot(replayed.log, snaps)
            state = durable(replayed.log, snap)
            if replayed.segments:
                wal = WALWriter(dir, replayed.segments, segment_bytes)
            else:
                last = state.entries[-1] if state.entries else snap.meta if snap else None
                head = Head(replayed.next_seq, last.index if last else 0, last.term if last else 0)
                wal = WALWriter.create(dir, head, state.hard_state, segment_bytes)
        except BaseException:
            os.close(lock_fd)
            raise
        return cls(dir, lock_fd, wal, snaps, state, replayed.dropped), state

    # ------------------------------------------------------------------ write
    def save(self, rd: Ready) -> None:
        """Persist a Ready's snapshot, entries and hard state with one write, and one fsync if
        `rd.must_sync`. On StorageError (a full disk, an I/O error) nothing of this Ready
        counts, the log is as it was before, and the same Ready may be saved again: a node
        retries until the disk takes it."""
        self._usable()
        if self._wal.full():
            self._wal.roll(*self._last, self._hard_state)
        mark = self._wal.last.size
        snap_index, last, hard_state = self._snap_index, self._last, self._hard_state
        try:
            buf = bytearray()
            if rd.snapshot is not None:
                m = rd.snapshot.meta
                assert m.index > snap_index, f"snapshot {m.index} is not newer"
                self._snaps.write(rd.snapshot)  # durable before the marker that points at it
                buf += encode_mark(Mark(m.index, m.term, reset=True))
                snap_index, last = m.index, (m.index, m.term)
            if rd.entries:
                first = rd.entries[0].index
                assert snap_index < first <= last[0] + 1, f"entries at {first} leave a gap"
                buf += encode_entries(rd.entries)
                last = (rd.entries[-1].index, rd.entries[-1].term)
            if rd.hard_state is not None:
                buf += encode_hard_state(rd.hard_state)
                hard_state = rd.hard_state
            if buf:
                self._wal.append(buf)
            if rd.must_sync or rd.snapshot is not None:
                self._wal.sync()
        except StorageError:
            self._wal.rollback(mark)
            if rd.snapshot is not None:
                self._snaps.discard(rd.snapshot.meta.index, rd.snapshot.meta.term)
            raise
        self._snap_index, self._last, self._hard_state = snap_index, last, hard_state
        if rd.snapshot is not None:
            self._release()

    def save_snapshot(self, snap: Snapshot) -> None:
        """Record a snapshot the driver took of its own state machine (Raft.compact), then
        release the log it makes redundant. Everything is synced when this returns. On
        StorageError nothing changed (the log still covers everything) and it may be retried."""
        self._usable()
        m = snap.meta
        assert self._snap_index < m.index <= self._last[0], f"compact at {m.index} outside the log"
        mark = self._wal.last.size
        try:
            self._snaps.write(snap)
            self._wal.append(encode_mark(Mark(m.index, m.term, reset=False)))
            self._wal.sync()
        except StorageError:
            self._wal.rollback(mark)
            self._snaps.discard(m.index, m.term)
            raise
        self._snap_index = m.index
        self._release()

    @property
    def snapshot_index(self) -> int:
        """The index of the newest durable snapshot (0: none)."""
        return self._snap_index

    def _release(self) -> None:
        """Keep the newest snapshots and the log from the oldest kept one on, so a damaged
        newest snapshot still has a fallback the WAL reaches. Housekeeping: what it fails to
        delete now, the next snapshot's release deletes."""
        try:
            oldest = self._snaps.prune(self._snap_index)
            for path in self._wal.release(oldest):
                log.info("released WAL segment %s (covered by the snapshot at %d)", path.name, oldest)
        except StorageError as e:
            log.warning("could not release files covered by the snapshot at %d: %s",
                        self._snap_index, e)

    # ------------------------------------------------------------------ misc
    def size_bytes(self) -> int:
        """Bytes on disk in the WAL and snapshot files (for metrics)."""
        return self._wal.size_bytes() + self._snaps.size_bytes()

    def close(self) -> None:
        """Release the files. Does not sync: what was not synced may be lost, as in a crash."""
        self._wal.close()
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1
        self._closed = True

    def __enter__(self) -> Storage:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _usable(self) -> None:
        if self._closed:
            raise StorageError(f"storage in {self.dir} is closed")


def _lock(dir: Path) -> int:
    """One process per data dir: two writers would interleave records."""
    path = dir / LOCK
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise io_error(e, "creating", path) from e
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        os.close(fd)
        raise StorageError(f"data dir {dir} is in use by another process or Storage") from e
    return fd


def _check_identity(dir: Path, cluster_id: int | None, node_id: int | None) -> None:
    path = dir / META
    if not path.exists():
        if any(parse_segment_name(p.name) for p in dir.iterdir()):
            raise StorageError(f"{dir} holds WAL segments but no {META}: refusing to guess its owner")
        if cluster_id is None or node_id is None:
            raise StorageError(f"creating data dir {dir} needs a cluster id and a node id")
        body = {"version": FORMAT_VERSION, "cluster_id": cluster_id, "node_id": node_id}
        write_atomic(path, pack_blob(META_MAGIC, msgpack.packb(body)))
        return
    try:
        meta = msgpack.unpackb(unpack_blob(META_MAGIC, path.read_bytes()))
        have = (meta["cluster_id"], meta["node_id"])
        version = meta["version"]
    except OSError as e:
        raise io_error(e, "reading", path) from e
    except (ValueError, KeyError, TypeError, msgpack.UnpackException) as e:
        raise StorageError(f"unreadable metadata {path}: {e}") from e
    if version != FORMAT_VERSION:
        raise StorageError(f"{path}: format version {version}, this build reads {FORMAT_VERSION}")
    want = (have[0] if cluster_id is None else cluster_id, have[1] if node_id is None else node_id)
    if want != have:
        raise WrongIdentity(
            f"data dir {dir} belongs to cluster {have[0]} node {have[1]}, "
            f"not cluster {want[0]} node {want[1]}"
        )
