"""shoal.kv watches: live events, replay from a past revision, prev_kv, filters, compaction,
bounded queues with catch-up from history, progress notifications."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shoal.kv import (
    ALL_KEYS,
    CompactionRequest,
    DeleteRangeRequest,
    ErrCompacted,
    ErrWatchExists,
    ErrWatchNotFound,
    EventType,
    KVStore,
    PutRequest,
    TxnRequest,
    WatchFilter,
    WatchHub,
    prefix_end,
)


class Node:
    """A store and its hub, advanced after every apply as the runtime will."""

    def __init__(self, store: KVStore | None = None, **hub) -> None:
        self.store = store or KVStore()
        self.hub = WatchHub(self.store.mvcc, **hub)
        self.index = self.store.applied_index

    def __call__(self, request):
        self.index += 1
        response = self.store.apply(request, self.index)
        self.hub.advance()
        return response


def summary(response):
    return [(e.type.name, e.kv.key, e.kv.value, e.kv.mod_revision) for e in response.events]


def test_live_events_for_a_key_and_a_prefix():
    n = Node()
    one = n.hub.create(b"a").watch_id
    prefix = n.hub.create(b"a", prefix_end(b"a")).watch_id
    n(PutRequest(b"a", b"1"))
    n(PutRequest(b"ab", b"2"))
    n(PutRequest(b"b", b"3"))
    n(DeleteRangeRequest(b"a", ALL_KEYS))
    assert summary(n.hub.poll(one)) == [("PUT", b"a", b"1", 2), ("DELETE", b"a", b"", 5)]
    got = n.hub.poll(prefix)
    assert [(k, r) for _, k, _, r in summary(got)] == [
        (b"a", 2), (b"ab", 3), (b"a", 5), (b"ab", 5),
    ]  # fmt: skip
    assert got.revision == 5
    assert n.hub.poll(one) is None


def test_watch_from_a_past_revision_replays_history():
    n = Node()
    for i in range(5):
        n(PutRequest(b"k", b"%d" % i))  # revisions 2..6
    w = n.hub.create(b"k", start_revision=4, prev_kv=True).watch_id
    n(PutRequest(b"k", b"5"))
    got = n.hub.poll(w)
    assert [e.kv.value for e in got.events] == [b"2", b"3", b"4", b"5"]
    assert [e.prev_kv.value for e in got.events] == [b"1", b"2", b"3", b"4"]
    assert got.revision == 7


def test_prev_kv_only_when_asked_and_filters():
    n = Node()
    plain = n.hub.create(b"k").watch_id
    no_put = n.hub.create(b"k", filters=(WatchFilter.NOPUT,), prev_kv=True).watch_id
    no_delete = n.hub.create(b"k", filters=(WatchFilter.NODELETE,)).watch_id
    n(PutRequest(b"k", b"1"))
    n(DeleteRangeRequest(b"k"))
    assert all(e.prev_kv is None for e in n.hub.poll(plain).events)
    deletes = n.hub.poll(no_put).events
    assert [e.type for e in deletes] == [EventType.DELETE] and deletes[0].prev_kv.value == b"1"
    assert [e.type for e in n.hub.poll(no_delete).events] == [EventType.PUT]


def test_a_txn_arrives_as_one_revision():
    n = Node()
    w = n.hub.create(b"\0", ALL_KEYS).watch_id
    n(TxnRequest(success=(PutRequest(b"x"), PutRequest(b"y"), DeleteRangeRequest(b"z"))))
    assert [(k, r) for _, k, _, r in summary(n.hub.poll(w))] == [(b"x", 2), (b"y", 2)]


def test_compacted_start_revision_errors_with_the_compact_revision():
    n = Node()
    for i in range(4):
        n(PutRequest(b"k", b"%d" % i))
    n(CompactionRequest(4))
    with pytest.raises(ErrCompacted) as e:
        n.hub.create(b"k", start_revision=3)
    assert e.value.compact_revision == 4
    w = n.hub.create(b"k", start_revision=4).watch_id  # the compact revision itself is kept
    assert [e.kv.mod_revision for e in n.hub.poll(w).events] == [4, 5]


def test_a_slow_watcher_goes_unsynced_and_catches_up_without_loss():
    n = Node(max_pending=3, catchup_revisions=4)
    w = n.hub.create(b"k").watch_id
    for i in range(10):
        n(PutRequest(b"k", b"%d" % i))
    seen = []
    for _ in range(10):
        got = n.hub.poll(w)
        if got is None:
            break
        assert len(got.events) <= 3
        seen += [e.kv.value for e in got.events]
    assert seen == [b"%d" % i for i in range(10)]
    n(PutRequest(b"k", b"live"))  # synced again: delivered by advance()
    assert [e.kv.value for e in n.hub.poll(w).events] == [b"live"]


def test_compaction_past_an_unsynced_watcher_cancels_it():
    n = Node(max_pending=2)
    w = n.hub.create(b"k").watch_id
    for i in range(6):
        n(PutRequest(b"k", b"%d" % i))
    n(CompactionRequest(6))
    got = n.hub.poll(w)
    assert got.canceled and got.compact_revision == 6
    with pytest.raises(ErrWatchNotFound):
        n.hub.poll(w)


def test_progress_cancel_and_ids():
    n = Node()
    w = n.hub.create(b"k", progress_notify=True).watch_id
    quiet = n.hub.create(b"q").watch_id
    with pytest.raises(ErrWatchExists):
        n.hub.create(b"x", watch_id=w)
    n(PutRequest(b"other"))
    assert [(p.watch_id, p.revision, p.events) for p in n.hub.progress()] == [(w, 2, ())]
    n(PutRequest(b"k"))
    assert n.hub.progress() == []  # not while events are pending
    n.hub.poll(w)
    assert n.hub.cancel(w).canceled and len(n.hub) == 1
    assert n.hub.poll(quiet) is None


def test_history_after_restore_matches_history_before():
    n = Node()
    for i in range(6):
        n(PutRequest(b"k%d" % (i % 3), b"%d" % i))
        if i % 2:
            n(DeleteRangeRequest(b"k0"))
    n(CompactionRequest(5))
    restored = Node(KVStore.restore(n.store.snapshot()))
    a = n.hub.create(b"\0", ALL_KEYS, start_revision=5, prev_kv=True).watch_id
    b = restored.hub.create(b"\0", ALL_KEYS, start_revision=5, prev_kv=True).watch_id
    assert n.hub.poll(a).events == restored.hub.poll(b).events


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.tuples(st.sampled_from([b"a", b"b", b"c"]), st.booleans()), max_size=30),
    st.integers(1, 4),
    st.integers(0, 10),
)
def test_every_watcher_sees_exactly_the_history(program, bound, start):
    """Whatever the queue bound and start revision, the events a watcher drains are the
    store's events from its start revision on, in order."""
    n = Node(max_pending=bound, catchup_revisions=2)
    ids = [n.hub.create(b"\0", ALL_KEYS, start_revision=start).watch_id,
           n.hub.create(b"b").watch_id]  # fmt: skip
    drained: dict[int, list] = {i: [] for i in ids}
    for key, delete in program:
        n(DeleteRangeRequest(key) if delete else PutRequest(key, b"v"))
        for r in n.hub.poll_all():
            drained[r.watch_id] += r.events
    for _ in range(40):
        for r in n.hub.poll_all():
            drained[r.watch_id] += r.events
    history = [e for rev in range(2, n.store.revision + 1) for e in n.store.mvcc.events(rev)]
    strip = [e.__class__(e.type, e.kv) for e in history]
    assert drained[ids[0]] == [e for e in strip if e.kv.mod_revision >= start]
    assert drained[ids[1]] == [e for e in strip if e.kv.key == b"b"]


def test_the_pending_queue_is_bounded_by_bytes_too_and_catches_up_without_loss():
    """Few events but big ones: the byte bound unsyncs the watcher, and history still gives
    it every event, at most max_pending_bytes per poll (or one whole revision, if larger)."""
    from shoal.kv.watch import event_bytes

    n = Node(max_pending=1_000, max_pending_bytes=3_000)
    w = n.hub.create(b"k").watch_id
    for i in range(10):
        n(PutRequest(b"k", bytes([i]) * 1_000))
    assert not n.hub._watchers[w].synced  # it overflowed by bytes, not by count
    n(PutRequest(b"k", b"x" * 5_000))  # one revision larger than the bound
    seen = []
    for _ in range(20):
        got = n.hub.poll(w)
        if got is None:
            break
        size = sum(map(event_bytes, got.events))
        assert size <= 3_000 or len(got.events) == 1
        seen += [e.kv.value for e in got.events]
    assert seen == [bytes([i]) * 1_000 for i in range(10)] + [b"x" * 5_000]
    n(PutRequest(b"k", b"live"))  # synced again
    assert [e.kv.value for e in n.hub.poll(w).events] == [b"live"]


def test_a_gate_with_no_room_holds_the_watcher_back_bounded_and_pull_loses_nothing():
    """A consumer's WatchGate: while it has no room the hub hands the watcher nothing (its
    events wait in the bounded pending queue, then in history); pull() delivers them all, in
    order, once it has room. Compaction still cancels a held-back watcher."""
    from shoal.kv.watch import WatchGate

    room = [False]
    n = Node(max_pending=3, catchup_revisions=2)
    gate = WatchGate(lambda: room[0])
    w = n.hub.create(b"k", gate=gate).watch_id
    assert gate.watch_id == w
    for i in range(10):
        n(PutRequest(b"k", b"%d" % i))
        assert n.hub.poll(w) is None and n.hub.poll_all() == []  # held back
        assert len(n.hub._watchers[w].pending) <= 3  # bounded; past it, history keeps them
    assert not n.hub._watchers[w].synced
    room[0] = True
    seen = []
    while (got := gate.pull()) is not None:
        seen += [e.kv.value for e in got.events]
    assert seen == [b"%d" % i for i in range(10)]
    n(PutRequest(b"k", b"live"))
    assert [e.kv.value for e in n.hub.poll(w).events] == [b"live"]

    room[0] = False
    for i in range(6):  # past the pending bound: it goes unsynced at the 4th
        n(PutRequest(b"k", b"later%d" % i))
    n(CompactionRequest(n.store.revision))  # past where it stands in history
    got = n.hub.poll(w)  # a cancel is told even with no room
    assert got.canceled and got.compact_revision == n.store.revision
    assert gate.pull() is None  # the watcher is gone
