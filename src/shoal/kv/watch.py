"""WatchHub: etcd's watchable store, without goroutines or channels.

A watcher wants the events on [key, range_end) from `start_revision` on. It is either

- synced: `advance()`, called after each apply, pushes each new revision's matching events
  into its pending queue; or
- unsynced: its start revision is in the past, or its queue overflowed (`max_pending` events
  or `max_pending_bytes` bytes). It then holds only the next revision it needs, and `poll`
  catches it up from the store's history, a bounded number of revisions per call, until it
  reaches the present and becomes synced again.

We chose etcd's unsynced catch-up over cancelling slow watchers here: history already holds
every event until compaction, so a watcher the hub is not polled for costs no memory beyond its
bounded queue and loses nothing. Only if compaction passes a watcher's next revision is it
canceled, with the compact revision, like a watch created too far in the past.

The runtime polls every watcher on each apply (and keeps polling while catch-up has more) and
hands each response to a sink, whatever the consumer's pace. A consumer that passes a
`WatchGate` to `create` paces the hub instead: while the gate has no room, `poll` gives that
watcher nothing, so its events wait here, bounded, or in history, and the consumer `pull`s
when it has room again. A replay of history then runs at the consumer's speed instead of
filling its queue in one loop turn. The consumers' own queues (watch_queue.py) stay bounded
either way, and cancel a watcher that overflows them: the last resort, for a sink without a
gate and for the Shoal client's per-watch inbox, which cannot push back per watch.

Watchers are not replicated state: they live on the node serving the client and are rebuilt by
clients re-watching from their last revision."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import IntEnum

from .errors import ErrCompacted, ErrTooManyWatchers, ErrWatchExists, ErrWatchNotFound
from .keyvalue import Event, EventType, in_range
from .mvcc import MVCC

# The cancel_reason a node gives its watches when it replaces its store with a snapshot
# (the node runtime, server/group.py, spells it out too): the client re-creates such a watch
# from its next revision.
STORE_REPLACED = "store replaced by a snapshot"
EVENT_OVERHEAD_BYTES = 64  # per event and per kv: revisions, version, lease, type, framing
DEFAULT_MAX_PENDING_BYTES = 1024 * 1024  # per watcher, so one poll's response stays small


def event_bytes(event: Event) -> int:
    """What an event costs queued or on the wire, roughly: keys, values and a fixed overhead.
    The bounds that use it need an upper estimate that is cheap, not an exact encoding."""
    n = EVENT_OVERHEAD_BYTES + len(event.kv.key) + len(event.kv.value)
    if event.prev_kv is not None:
        n += EVENT_OVERHEAD_BYTES + len(event.prev_kv.key) + len(event.prev_kv.value)
    return n


class WatchFilter(IntEnum):
    NOPUT = 0
    NODELETE = 1


@dataclass(frozen=True, slots=True)
class WatchResponse:
    watch_id: int
    revision: int  # every event up to this revision has been delivered to this watcher
    events: tuple[Event, ...] = ()
    created: bool = False
    canceled: bool = False
    compact_revision: int = 0  # set when canceled because history was compacted
    cancel_reason: str = ""


class WatchGate:
    """A consumer's back-pressure on the hub for one watcher: `create(..., gate=gate)`.

    `has_room()` answers whether the consumer can take another response now; the hub asks
    before every hand-over. While it says no, a synced watcher's events wait in its pending
    queue (bounded: past it the watcher goes unsynced) and an unsynced one stays where it is in
    history, so a slow consumer costs bounded memory and loses nothing, until compaction
    passes it. When it has room again the consumer calls `pull()`, which polls the watcher:
    the runtime does not know it should."""

    def __init__(self, has_room: Callable[[], bool]):
        self.has_room = has_room
        self._hub: WatchHub | None = None
        self.watch_id: int | None = None

    def attach(self, hub: WatchHub, watch_id: int) -> None:
        assert self._hub is None, "a gate serves one watcher"
        self._hub, self.watch_id = hub, watch_id

    def pull(self) -> WatchResponse | None:
        """The watcher's next response (events, catch-up from history, or its cancel), or None
        if it has nothing now (its later events come through the runtime's polls) or is gone."""
        if self._hub is None or self.watch_id is None:
            return None
        try:
            return self._hub.poll(self.watch_id)
        except ErrWatchNotFound:
            self._hub = None
            return None

    def close(self) -> None:
        self._hub = None


@dataclass(slots=True)
class Watcher:
    id: int
    key: bytes
    range_end: bytes
    prev_kv: bool
    filters: frozenset[WatchFilter]
    progress_notify: bool
    next_rev: int  # the first revision not yet queued (for a synced one, at least that)
    synced: bool
    pending: list[Event] = field(default_factory=list)
    pending_bytes: int = 0  # event_bytes() of `pending`
    gate: WatchGate | None = None

    def has_room(self) -> bool:
        return self.gate is None or self.gate.has_room()

    def wants(self, event: Event) -> bool:
        if not in_range(event.kv.key, self.key, self.range_end):
            return False
        if event.type == EventType.PUT:
            return WatchFilter.NOPUT not in self.filters
        return WatchFilter.NODELETE not in self.filters

    def view(self, event: Event) -> Event:
        return event if self.prev_kv or event.prev_kv is None else Event(event.type, event.kv)


class WatchHub:
    def __init__(
        self,
        mvcc: MVCC,
        max_watchers: int = 10_000,
        max_pending: int = 1_000,
        catchup_revisions: int = 1_000,
        max_pending_bytes: int = DEFAULT_MAX_PENDING_BYTES,
    ) -> None:
        assert max_watchers > 0 and max_pending > 0 and catchup_revisions > 0
        assert max_pending_bytes > 0
        self.mvcc = mvcc
        self.max_watchers = max_watchers
        self.max_pending = max_pending  # events queued per watcher
        self.max_pending_bytes = max_pending_bytes  # their event_bytes(), per watcher
        self.catchup_revisions = catchup_revisions  # history scanned per watcher per poll
        self._watchers: dict[int, Watcher] = {}
        # Synced watchers, indexed for dispatch: single keys by key, ranges in a list. etcd
        # keeps ranges in an interval tree; a scan is fine for the few range watchers we expect.
        self._by_key: dict[bytes, dict[int, Watcher]] = {}
        self._ranges: dict[int, Watcher] = {}
        self._dispatched = mvcc.revision  # revisions up to this went to synced watchers
        self._next_id = 0

    def create(
        self,
        key: bytes,
        range_end: bytes = b"",
        start_revision: int = 0,
        prev_kv: bool = False,
        filters: tuple[WatchFilter, ...] = (),
        progress_notify: bool = False,
        watch_id: int | None = None,
        gate: WatchGate | None = None,
    ) -> WatchResponse:
        """Starts a watch; past events, if any, come through poll(). A start revision older
        than the compact revision raises ErrCompacted carrying it (etcd cancels the watch
        with compact_revision set; the API layer maps one to the other). With a gate, the
        consumer paces its watcher (WatchGate)."""
        if watch_id is None:
            while self._next_id in self._watchers:
                self._next_id += 1
            watch_id = self._next_id
        if watch_id in self._watchers:
            raise ErrWatchExists(watch_id)
        if len(self._watchers) >= self.max_watchers:
            raise ErrTooManyWatchers(f"{len(self._watchers)} watchers, limit {self.max_watchers}")
        if 0 < start_revision < self.mvcc.compact_revision:
            raise ErrCompacted(start_revision, self.mvcc.compact_revision)
        next_rev = start_revision if start_revision > 0 else self.mvcc.revision + 1
        next_rev = max(next_rev, self.mvcc.first_event_revision)  # revision 1 has no events
        w = Watcher(
            watch_id, key, range_end, prev_kv, frozenset(filters), progress_notify,
            next_rev, synced=False, gate=gate,
        )  # fmt: skip
        self._watchers[watch_id] = w
        if gate is not None:
            gate.attach(self, watch_id)
        if next_rev > self._dispatched:
            self._sync(w)
        return WatchResponse(watch_id, self._seen(w), created=True)

    def cancel(self, watch_id: int) -> WatchResponse:
        w = self._get(watch_id)
        self._remove(w)
        return WatchResponse(watch_id, self._seen(w), canceled=True)

    def advance(self) -> None:
        """Hand the revisions applied since the last call to the synced watchers."""
        for rev in range(self._dispatched + 1, self.mvcc.revision + 1):
            batches: dict[int, list[Event]] = {}
            for event in self.mvcc.events(rev):
                for w in self._matching(event.kv.key):
                    if w.next_rev <= rev and w.wants(event):
                        batches.setdefault(w.id, []).append(w.view(event))
            for watch_id, events in batches.items():
                w = self._watchers[watch_id]
                size = sum(map(event_bytes, events))
                if self._full(w, len(events), size):
                    # it will read from here on from history (a revision too big for the bounds
                    # even alone comes from there too, whole, one poll to itself)
                    self._unsync(w)
                    w.next_rev = rev
                else:
                    w.pending.extend(events)
                    w.pending_bytes += size
            self._dispatched = rev

    def poll(self, watch_id: int) -> WatchResponse | None:
        """Drain the watcher's events, catching up from history if it is unsynced. None if
        there is nothing to tell, or its gate has no room (a cancel is told regardless)."""
        w = self._get(watch_id)
        if not w.synced:
            if w.next_rev < self.mvcc.compact_revision:
                self._remove(w)
                return WatchResponse(
                    watch_id, w.next_rev - 1, canceled=True,
                    compact_revision=self.mvcc.compact_revision,
                    cancel_reason="required revision has been compacted",
                )  # fmt: skip
            if not w.has_room():
                return None  # it stays where it is in history: nothing read, nothing held
            self._catch_up(w)
        elif not w.has_room():
            return None  # its events wait in `pending`, bounded
        if not w.pending:
            return None
        events, w.pending, w.pending_bytes = tuple(w.pending), [], 0
        return WatchResponse(watch_id, self._seen(w), events)

    def poll_all(self) -> list[WatchResponse]:
        out = [self.poll(i) for i in sorted(self._watchers)]
        return [r for r in out if r is not None]

    def progress(self) -> list[WatchResponse]:
        """Progress notifications: for each synced watcher that asked for them and has nothing
        pending, a response with no events and the revision it has seen everything up to."""
        return [
            WatchResponse(w.id, self._seen(w))
            for _, w in sorted(self._watchers.items())
            if w.progress_notify and w.synced and not w.pending and w.has_room()
        ]

    def __len__(self) -> int:
        return len(self._watchers)

    # --- internals ---

    def _get(self, watch_id: int) -> Watcher:
        w = self._watchers.get(watch_id)
        if w is None:
            raise ErrWatchNotFound(watch_id)
        return w

    def _matching(self, key: bytes) -> list[Watcher]:
        exact = self._by_key.get(key)
        out = list(exact.values()) if exact else []
        out += [w for w in self._ranges.values() if in_range(key, w.key, w.range_end)]
        return out

    def _seen(self, w: Watcher) -> int:
        """The revision a watcher has everything up to. A synced watcher's `next_rev` is not
        moved on every dispatch (that would cost O(watchers) per revision): it is implied."""
        return (max(w.next_rev, self._dispatched + 1) if w.synced else w.next_rev) - 1

    def _full(self, w: Watcher, events: int, size: int) -> bool:
        """Whether `events` more events of `size` bytes would take the queue past a bound."""
        return (len(w.pending) + events > self.max_pending
                or w.pending_bytes + size > self.max_pending_bytes)

    def _catch_up(self, w: Watcher) -> None:
        """Read whole revisions from history into the queue: at most `catchup_revisions` of
        them, and no more once the queue is at a bound (but always one, so a revision larger
        than the bounds still gets through, whole)."""
        last = min(self._dispatched, w.next_rev + self.catchup_revisions - 1)
        while w.next_rev <= last and not (w.pending and self._full(w, 0, 0)):
            events = [w.view(e) for e in self.mvcc.events(w.next_rev) if w.wants(e)]
            size = sum(map(event_bytes, events))
            if w.pending and self._full(w, len(events), size):
                break
            w.pending.extend(events)
            w.pending_bytes += size
            w.next_rev += 1
        assert w.pending_bytes >= 0 and (w.pending or w.pending_bytes == 0)
        if w.next_rev > self._dispatched:
            self._sync(w)

    def _sync(self, w: Watcher) -> None:
        w.synced = True
        if w.range_end:
            self._ranges[w.id] = w
        else:
            self._by_key.setdefault(w.key, {})[w.id] = w

    def _unsync(self, w: Watcher) -> None:
        w.synced = False
        if w.range_end:
            del self._ranges[w.id]
        else:
            del self._by_key[w.key][w.id]
            if not self._by_key[w.key]:
                del self._by_key[w.key]

    def _remove(self, w: Watcher) -> None:
        if w.synced:
            self._unsync(w)
        if w.gate is not None:
            w.gate.close()
        del self._watchers[w.id]
