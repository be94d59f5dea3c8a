"""Snapshot files: `snap-<term>-<index>.snap` (16 hex digits each, so names sort like the
snapshots do), a checksummed blob each, written atomically. The newest `keep` are kept: an
older one is what we fall back to if the newest turns out damaged."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import msgpack

from ..consensus.messages import ConfState, Snapshot, SnapshotMeta
from .errors import CorruptSnapshot, io_error
from .files import pack_blob, sync_dir, unpack_blob, write_atomic

MAGIC = b"SHSN"
DEFAULT_KEEP = 2
_NAME = re.compile(r"^snap-([0-9a-f]{16})-([0-9a-f]{16})\.snap$")


@dataclass(frozen=True, slots=True)
class SnapFile:
    index: int
    term: int
    path: Path


def snap_name(index: int, term: int) -> str:
    return f"snap-{term:016x}-{index:016x}.snap"


def encode(snap: Snapshot) -> bytes:
    m = snap.meta
    conf = [sorted(m.conf.voters), sorted(m.conf.outgoing), sorted(m.conf.learners)]
    return pack_blob(MAGIC, msgpack.packb([m.index, m.term, conf, snap.data], use_bin_type=True))


def decode(data: bytes) -> Snapshot:
    """ValueError if the bytes are not a whole, intact snapshot."""
    body = unpack_blob(MAGIC, data)
    try:
        index, term, (voters, outgoing, learners), payload = msgpack.unpackb(body, raw=False)
        conf = ConfState(frozenset(voters), frozenset(outgoing), frozenset(learners))
    except (ValueError, TypeError, msgpack.UnpackException) as e:
        raise ValueError(f"undecodable body: {e}") from e
    if not isinstance(payload, bytes):
        raise ValueError("snapshot data is not bytes")
    return Snapshot(SnapshotMeta(index, term, conf), payload)


class SnapshotFiles:
    def __init__(self, dir: Path, keep: int = DEFAULT_KEEP):
        assert keep >= 1
        self.dir = dir
        self.keep = keep

    def list(self) -> list[SnapFile]:
        """Newest first."""
        found = []
        for p in self.dir.iterdir():
            if m := _NAME.match(p.name):
                found.append(SnapFile(int(m[2], 16), int(m[1], 16), p))
        return sorted(found, key=lambda s: (s.index, s.term), reverse=True)

    def write(self, snap: Snapshot) -> None:
        write_atomic(self.dir / snap_name(snap.meta.index, snap.meta.term), encode(snap))

    def discard(self, index: int, term: int) -> None:
        """Remove a snapshot whose WAL marker could not be written: never used, and on a full
        disk its bytes are the ones most wanted back. Best effort."""
        try:
            (self.dir / snap_name(index, term)).unlink(missing_ok=True)
        except OSError:
            pass

    def load(self, f: SnapFile) -> Snapshot:
        try:
            snap = decode(f.path.read_bytes())
        except OSError as e:
            raise io_error(e, "reading", f.path) from e
        except ValueError as e:
            raise CorruptSnapshot(f.path, str(e)) from e
        if (snap.meta.index, snap.meta.term) != (f.index, f.term):
            raise CorruptSnapshot(f.path, f"holds index {snap.meta.index} term {snap.meta.term}")
        return snap

    def prune(self, current: int) -> int:
        """Keep the newest `keep` snapshots up to `current` (the one just made durable) and
        return the oldest kept index. Any newer file is from an install whose WAL marker never
        became durable, or a damaged one we fell back from: neither will ever be used."""
        files = self.list()
        kept = [f for f in files if f.index <= current][: self.keep]
        assert kept and kept[0].index == current, "prune right after writing a snapshot"
        doomed = [f for f in files if f not in kept]
        for f in doomed:
            try:
                f.path.unlink()
            except OSError as e:
                raise io_error(e, "deleting", f.path) from e
        if doomed:
            sync_dir(self.dir)
        return kept[-1].index

    def size_bytes(self) -> int:
        total = 0
        for f in self.list():
            try:
                total += f.path.stat().st_size
            except FileNotFoundError:
                pass  # pruned by the disk thread meanwhile (this runs on the event loop)
        return total
