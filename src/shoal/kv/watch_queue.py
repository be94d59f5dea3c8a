"""WatchQueue: the bounded outgoing queue of one watch connection or stream.

The node hands every watch response to a sink the moment the hub has it, whatever the pace of
the consumer behind that sink; the sink must not block. Whatever the consumer has not taken
yet waits here: in the client port's connection, in the etcd Watch stream, and in the Shoal
client in front of a watch iterator. Without a bound, one watcher that cannot keep up grows
memory until the process dies.

Each item belongs to a watch (its events, progress and cancel responses) or to the stream
itself (created answers, progress-for-all, the stream's end: `watch_id=None`). The queue is
one FIFO, so items leave in the order they came, and it keeps per-watch counts beside it:

- A watch whose queued events or bytes would pass `max_events` or `max_bytes` overflows.
- So does, when the whole queue passes `max_total_bytes`, the watch holding the most bytes.

An overflowed watch's items are taken out at once (its memory is released, not left to drain)
and `push` returns an `Overflow` naming it, what was pending and the revision to re-create it
from; the caller cancels it upstream and queues the cancel response with `push_final`. The
others are untouched. Like the hub, a watch with nothing queued always takes one item, so a
single response larger than the bound (one huge revision) still gets through whole: the bound
is therefore the limit plus one response.

Stream items (`watch_id=None`) are never dropped; `control` counts them, and the caller applies
back-pressure on whoever produces them (the request reader) rather than dropping answers.

Pure: no I/O and no clock; callers wrap it with their own wake-ups."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Generic, TypeVar

from .keyvalue import Event

DEFAULT_WATCH_QUEUE_EVENTS = 10_000  # events pending per watch before it is canceled
DEFAULT_WATCH_QUEUE_BYTES = 8 * 1024 * 1024  # bytes pending per watch before it is canceled
DEFAULT_WATCH_STREAM_BYTES = 64 * 1024 * 1024  # all watches of one connection or stream

SLOW_WATCHER = "watcher could not keep up"  # how every such cancel_reason starts

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Overflow:
    """A watch that could not keep up: what it had pending when it was dropped, and the first
    revision it had not been given, from which a new watch loses nothing."""

    watch_id: int
    events: int
    bytes: int
    resume_revision: int

    @property
    def reason(self) -> str:
        return slow_watcher_reason(self.events, self.bytes, self.resume_revision)


def slow_watcher_reason(events: int, nbytes: int, resume_revision: int) -> str:
    return (f"{SLOW_WATCHER}: {events} events ({nbytes / (1024 * 1024):.1f} MiB) pending; "
            f"re-create it from revision {resume_revision}")


def first_revision(events: tuple[Event, ...], revision: int) -> int:
    """The first revision a response carries: its first event's, or for a response without
    events (progress) the one after the revision it says everything was delivered up to."""
    return events[0].kv.mod_revision if events else revision + 1


@dataclass(slots=True)
class _Item(Generic[T]):
    watch_id: int | None
    value: T
    events: int
    bytes: int
    first_revision: int


@dataclass(slots=True)
class _Count:
    items: int = 0
    events: int = 0
    bytes: int = 0


class WatchQueue(Generic[T]):
    def __init__(self, max_events: int = DEFAULT_WATCH_QUEUE_EVENTS,
                 max_bytes: int = DEFAULT_WATCH_QUEUE_BYTES,
                 max_total_bytes: int = DEFAULT_WATCH_STREAM_BYTES) -> None:
        assert max_events > 0 and max_bytes > 0 and max_total_bytes >= max_bytes
        self.max_events, self.max_bytes, self.max_total_bytes = max_events, max_bytes, max_total_bytes
        self._items: deque[_Item[T]] = deque()
        self._per_watch: dict[int, _Count] = {}
        self.bytes = 0  # every queued item's bytes, stream items too
        self.events = 0  # every queued item's events
        self.control = 0  # stream items queued
        self.peak_bytes = 0  # the most `bytes` and `events` ever were: what the bounds are
        self.peak_events = 0  # tested against
        self.overflows = 0

    def __len__(self) -> int:
        return len(self._items)

    def holds(self, watch_id: int) -> bool:
        """Whether anything of the watch is queued."""
        return watch_id in self._per_watch

    def pending(self, watch_id: int) -> tuple[int, int]:
        """(events, bytes) queued for a watch."""
        c = self._per_watch.get(watch_id)
        return (c.events, c.bytes) if c else (0, 0)

    def push(self, watch_id: int | None, value: T, *, events: int = 0, nbytes: int = 0,
             first_revision: int = 0) -> Overflow | None:
        """Queue a watch's response (or a stream item, `watch_id=None`). Returns the watch that
        overflowed, if one did: this one (its new item is not queued either), or under the total
        bound the largest. Its items are gone; the caller cancels it upstream, so that nothing
        more of it is pushed, and tells its consumer with `push_final`."""
        assert events >= 0 and nbytes >= 0
        if watch_id is None:
            self._append(_Item(None, value, 0, nbytes, 0))
            return None
        c = self._per_watch.get(watch_id)
        if c is not None and (c.events + events > self.max_events or c.bytes + nbytes > self.max_bytes):
            return self._drop(watch_id, c)
        if c is None:
            c = self._per_watch[watch_id] = _Count()
        c.items += 1
        c.events += events
        c.bytes += nbytes
        self._append(_Item(watch_id, value, events, nbytes, first_revision))
        if self.bytes > self.max_total_bytes:
            largest = max(self._per_watch, key=lambda w: self._per_watch[w].bytes)
            return self._drop(largest, self._per_watch[largest])
        return None

    def push_final(self, watch_id: int, value: T, nbytes: int = 0) -> None:
        """Queue a watch's last item (its cancel response) after what it has queued, past its
        bounds: a cancel is always told. The caller pushes nothing of the watch after it."""
        assert watch_id is not None
        self._append(_Item(None, value, 0, nbytes, 0))

    def pop(self) -> T:
        item = self._items.popleft()
        self.bytes -= item.bytes
        self.events -= item.events
        if item.watch_id is None:
            self.control -= 1
        else:
            c = self._per_watch[item.watch_id]
            c.items -= 1
            c.events -= item.events
            c.bytes -= item.bytes
            if c.items == 0:
                del self._per_watch[item.watch_id]
        assert self.bytes >= 0 and self.events >= 0 and self.control >= 0
        return item.value

    def forget(self, watch_id: int) -> None:
        """Drop a watch's queued items (it was canceled: nothing more of it is wanted)."""
        if self._per_watch.pop(watch_id, None) is None:
            return
        gone = [i for i in self._items if i.watch_id == watch_id]
        self._items = deque(i for i in self._items if i.watch_id != watch_id)
        self.bytes -= sum(i.bytes for i in gone)
        self.events -= sum(i.events for i in gone)
        assert self.bytes >= 0 and self.events >= 0

    def clear(self) -> None:
        self._items.clear()
        self._per_watch.clear()
        self.bytes = self.events = self.control = 0

    # --- internals ---

    def _append(self, item: _Item[T]) -> None:
        self._items.append(item)
        self.bytes += item.bytes
        self.events += item.events
        if item.watch_id is None:
            self.control += 1
        self.peak_bytes = max(self.peak_bytes, self.bytes)
        self.peak_events = max(self.peak_events, self.events)

    def _drop(self, watch_id: int, c: _Count) -> Overflow:
        oldest = next(i for i in self._items if i.watch_id == watch_id)
        overflow = Overflow(watch_id, c.events, c.bytes, oldest.first_revision)
        self.forget(watch_id)
        self.overflows += 1
        assert watch_id not in self._per_watch
        return overflow
