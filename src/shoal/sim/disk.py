"""A simulated disk: writes land in a page cache and become durable only when synced. A crash
keeps a random prefix of the unsynced writes (the OS may have flushed some) and loses the rest.
An event-log partition's segment files (events/segments.py) sit on it too, harsher still: a
crash loses every append, truncation and deletion since their last sync."""

from __future__ import annotations

import random

from ..consensus.messages import Durable, Entry, HardState, Ready, Snapshot
from ..events.segments import MemoryDirectory


class Disk:
    def __init__(self) -> None:
        self.hard_state = HardState()
        self.snapshot: Snapshot | None = None
        self.entries: list[Entry] = []  # durable, contiguous after the snapshot
        self.pending: list[tuple[str, object]] = []  # written, not yet synced, in write order
        self.segments = SegmentFiles()

    def write(self, rd: Ready) -> None:
        if rd.snapshot is not None:
            self.pending.append(("snapshot", rd.snapshot))
        if rd.entries:
            self.pending.append(("entries", list(rd.entries)))
        if rd.hard_state is not None:
            self.pending.append(("hard_state", rd.hard_state))

    def sync(self) -> None:
        for op in self.pending:
            self._apply(op)
        self.pending.clear()

    def crash(self, rng: random.Random) -> int:
        """Lose unsynced writes, keeping a random prefix. Returns how many were lost."""
        keep = rng.randint(0, len(self.pending))
        for op in self.pending[:keep]:
            self._apply(op)
        lost = len(self.pending) - keep
        self.pending.clear()
        self.segments.crash()
        return lost

    def save_snapshot(self, snap: Snapshot) -> None:
        """Snapshots are written atomically and synced (temp file, fsync, rename)."""
        self.sync()
        self._apply(("compact", snap))

    def durable(self) -> Durable:
        return Durable(self.hard_state, self.snapshot, tuple(self.entries))

    def offset(self) -> int:
        return self.snapshot.meta.index if self.snapshot else 0

    def last_index(self) -> int:
        return self.offset() + len(self.entries)

    def entry(self, index: int) -> Entry | None:
        k = index - self.offset() - 1
        return self.entries[k] if 0 <= k < len(self.entries) else None

    def _apply(self, op: tuple[str, object]) -> None:
        kind, value = op
        if kind == "hard_state":
            assert isinstance(value, HardState)
            self.hard_state = value
        elif kind == "entries":
            assert isinstance(value, list)
            first = value[0].index
            k = first - self.offset() - 1
            assert 0 <= k <= len(self.entries), f"disk write at {first} leaves a gap"
            del self.entries[k:]
            self.entries.extend(value)
        elif kind == "snapshot":  # installed from the leader: replaces the log
            assert isinstance(value, Snapshot)
            self.snapshot, self.entries = value, []
        else:  # compact: the snapshot covers a prefix of our own log
            assert isinstance(value, Snapshot)
            drop = value.meta.index - self.offset()
            self.snapshot = value
            del self.entries[:drop]


class SegmentFiles(MemoryDirectory):
    """Segment files whose appends, truncations and deletions are durable only once synced;
    a whole-file write is atomic and synced, as storage/segment_files.py makes it."""

    def __init__(self) -> None:
        super().__init__()
        self.synced: dict[str, bytes] = {}

    def write(self, name: str, data: bytes) -> None:
        super().write(name, data)
        self.synced[name] = bytes(data)

    def sync(self) -> None:
        self.synced = {n: bytes(d) for n, d in self.files.items()}

    def crash(self) -> None:
        self.files = {n: bytearray(d) for n, d in self.synced.items()}
