"""The Raft log held in memory by the core: a snapshot base, the entries after it, and the
commit / applied / stable marks. The driver persists what `Ready` tells it; the core keeps
this copy so it never reads the disk."""

from __future__ import annotations

from .messages import Entry, Snapshot


class RaftLog:
    def __init__(self, snapshot: Snapshot | None, entries: tuple[Entry, ...] | list[Entry]):
        self.snapshot = snapshot
        self.offset = snapshot.meta.index if snapshot else 0  # index of the entry before entries[0]
        self.offset_term = snapshot.meta.term if snapshot else 0
        self.entries: list[Entry] = list(entries)
        for k, e in enumerate(self.entries):
            assert e.index == self.offset + 1 + k, "log entries must be contiguous"
        self.committed = self.offset
        self.applied = self.offset
        self.stable = self.last_index()  # everything up to here is on the driver's disk

    # -- reading -------------------------------------------------------------------------
    def last_index(self) -> int:
        return self.offset + len(self.entries)

    def last_term(self) -> int:
        t = self.term(self.last_index())
        assert t is not None
        return t

    def term(self, index: int) -> int | None:
        """Term of the entry at `index`; None when compacted away or beyond the end."""
        if index == self.offset:
            return self.offset_term
        if index < self.offset or index > self.last_index():
            return None
        return self.entries[index - self.offset - 1].term

    def entry(self, index: int) -> Entry:
        assert self.offset < index <= self.last_index(), f"entry {index} not in log"
        return self.entries[index - self.offset - 1]

    def slice(self, lo: int, hi: int, max_bytes: int) -> list[Entry]:
        """Entries [lo, hi), at least one, then as many as fit in `max_bytes`."""
        assert self.offset < lo <= hi <= self.last_index() + 1
        out: list[Entry] = []
        size = 0
        for e in self.entries[lo - self.offset - 1 : hi - self.offset - 1]:
            size += e.size()
            if out and size > max_bytes:
                break
            out.append(e)
        return out

    def match_term(self, index: int, term: int) -> bool:
        return self.term(index) == term

    def is_up_to_date(self, last_index: int, last_term: int) -> bool:
        """§5.4.1: a candidate's log is at least as up to date as ours."""
        mine = self.last_term()
        return last_term > mine or (last_term == mine and last_index >= self.last_index())

    def find_conflict_by_term(self, index: int, term: int) -> tuple[int, int]:
        """The largest index <= `index` whose term is <= `term` (the fast back-off hint)."""
        while index > self.offset:
            t = self.term(index)
            assert t is not None
            if t <= term:
                return index, t
            index -= 1
        return self.offset, self.offset_term

    def unstable(self) -> list[Entry]:
        return self.entries[self.stable - self.offset :]

    def next_committed(self, max_bytes: int) -> list[Entry]:
        lo = max(self.applied, self.offset) + 1
        if lo > self.committed:
            return []
        return self.slice(lo, self.committed + 1, max_bytes)

    # -- changing ------------------------------------------------------------------------
    def append(self, entries: list[Entry]) -> None:
        """Append, replacing any conflicting suffix. Never touches committed entries."""
        if not entries:
            return
        first = entries[0].index
        assert first > self.committed, (
            f"committed entry {first} would be overwritten (commit {self.committed})"
        )
        assert first <= self.last_index() + 1, "append would leave a gap"
        del self.entries[first - self.offset - 1 :]
        self.entries.extend(entries)
        self.stable = min(self.stable, first - 1)

    def maybe_append(self, prev_index: int, prev_term: int, entries: tuple[Entry, ...]) -> int | None:
        """Follower side of AppendEntries: the last index now known to match the leader,
        or None when (prev_index, prev_term) does not match our log."""
        if not self.match_term(prev_index, prev_term):
            return None
        # Skip entries we already hold; truncate only from the first real conflict, so a stale
        # or reordered append never erases newer entries (Raft §5.3).
        for k, e in enumerate(entries):
            t = self.term(e.index)
            if t is None and e.index <= self.offset:
                continue  # already covered by our snapshot
            if t != e.term:
                self.append(list(entries[k:]))
                break
        return prev_index + len(entries)

    def commit_to(self, index: int) -> None:
        assert index <= self.last_index(), f"commit {index} beyond last index {self.last_index()}"
        if index > self.committed:
            self.committed = index

    def applied_to(self, index: int) -> None:
        assert self.applied <= index <= self.committed, f"applied {index} outside [{self.applied}, {self.committed}]"
        self.applied = index

    def stable_to(self, index: int) -> None:
        self.stable = max(self.stable, min(index, self.last_index()))

    def restore(self, snapshot: Snapshot) -> None:
        """Replace the whole log with a snapshot received from the leader."""
        meta = snapshot.meta
        assert meta.index > self.committed and not self.match_term(meta.index, meta.term)
        self.snapshot = snapshot
        self.entries = []
        self.offset, self.offset_term = meta.index, meta.term
        self.committed = self.applied = self.stable = meta.index

    def compact(self, snapshot: Snapshot) -> None:
        """The driver snapshotted the state machine at an applied index: drop entries up to it."""
        meta = snapshot.meta
        assert self.offset < meta.index <= self.applied, "compact only applied entries"
        assert self.term(meta.index) == meta.term
        del self.entries[: meta.index - self.offset]
        self.snapshot = snapshot
        self.offset, self.offset_term = meta.index, meta.term
        self.stable = max(self.stable, self.offset)
