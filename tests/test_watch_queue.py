"""WatchQueue, the bounded queue in front of every watch consumer (client port connection,
etcd Watch stream, client watch iterator): per-watch bounds by events and bytes, a total bound
per stream, the overflowing watch dropped alone with the revision to resume from."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shoal.kv.watch_queue import WatchQueue, slow_watcher_reason


def test_a_watch_past_its_event_bound_is_dropped_alone_with_its_resume_revision():
    q: WatchQueue[str] = WatchQueue(max_events=10, max_bytes=1_000, max_total_bytes=10_000)
    assert q.push(None, "created-1") is None
    assert q.push(2, "b@5", events=1, nbytes=10, first_revision=5) is None
    for rev in range(7, 10):  # watch 1: three responses of 3 events, revisions 7, 8, 9
        assert q.push(1, f"a@{rev}", events=3, nbytes=30, first_revision=rev) is None
    assert q.pending(1) == (9, 90)
    overflow = q.push(1, "a@10", events=3, nbytes=30, first_revision=10)
    assert overflow is not None and overflow.watch_id == 1
    assert (overflow.events, overflow.bytes, overflow.resume_revision) == (9, 90, 7)
    assert overflow.reason == ("watcher could not keep up: 9 events (0.0 MiB) pending; "
                               "re-create it from revision 7")
    assert q.pending(1) == (0, 0) and q.bytes == 10  # released, the other watch untouched
    q.push_final(1, "a canceled")
    assert [q.pop() for _ in range(len(q))] == ["created-1", "b@5", "a canceled"]
    assert q.bytes == 0 and q.control == 0


def test_a_final_item_goes_after_what_the_watch_has_queued():
    q: WatchQueue[str] = WatchQueue(max_events=10, max_bytes=100, max_total_bytes=100)
    q.push(1, "e5", events=1, nbytes=10, first_revision=5)
    q.push_final(1, "canceled: compacted", nbytes=10)
    assert [q.pop() for _ in range(len(q))] == ["e5", "canceled: compacted"]
    assert q.bytes == 0 and q.events == 0 and q.pending(1) == (0, 0)


def test_the_byte_bound_and_one_oversized_response_when_nothing_is_queued():
    q: WatchQueue[str] = WatchQueue(max_events=1_000, max_bytes=100, max_total_bytes=1_000)
    assert q.push(1, "huge", events=1, nbytes=500, first_revision=3) is None  # alone: taken whole
    overflow = q.push(1, "more", events=1, nbytes=1, first_revision=4)
    assert overflow is not None and overflow.resume_revision == 3 and overflow.bytes == 500
    assert len(q) == 0
    assert q.push(1, "a", events=1, nbytes=60, first_revision=5) is None
    overflow = q.push(1, "b", events=1, nbytes=60, first_revision=6)
    assert overflow is not None and (overflow.events, overflow.bytes) == (1, 60)


def test_popping_what_was_sent_moves_the_resume_revision_on():
    q: WatchQueue[str] = WatchQueue(max_events=2, max_bytes=1_000, max_total_bytes=1_000)
    q.push(1, "r3", events=1, nbytes=1, first_revision=3)
    q.push(1, "r4", events=1, nbytes=1, first_revision=4)
    assert q.pop() == "r3"  # sent: the consumer has it
    q.push(1, "r5", events=1, nbytes=1, first_revision=5)
    overflow = q.push(1, "r6", events=1, nbytes=1, first_revision=6)
    assert overflow is not None and overflow.resume_revision == 4  # the first one not sent


def test_the_total_bound_drops_the_largest_watch():
    q: WatchQueue[str] = WatchQueue(max_events=100, max_bytes=600, max_total_bytes=1_000)
    q.push(1, "small", events=1, nbytes=200, first_revision=2)
    q.push(2, "big", events=1, nbytes=500, first_revision=3)
    overflow = q.push(3, "medium", events=1, nbytes=400, first_revision=4)  # total 1,100
    assert overflow is not None and overflow.watch_id == 2 and overflow.resume_revision == 3
    assert q.bytes == 600 and q.pending(1) == (1, 200) and q.pending(3) == (1, 400)


def test_forget_releases_a_canceled_watch_and_stream_items_are_never_dropped():
    q: WatchQueue[str] = WatchQueue(max_events=5, max_bytes=100, max_total_bytes=100)
    for i in range(3):
        q.push(None, f"control-{i}", nbytes=10)
        q.push(7, f"e{i}", events=1, nbytes=10, first_revision=i + 2)
    q.forget(7)
    assert q.control == 3 and q.bytes == 30
    assert [q.pop() for _ in range(len(q))] == ["control-0", "control-1", "control-2"]


def test_the_reason_reads_like_etcd_with_mebibytes():
    assert slow_watcher_reason(10_000, int(8.1 * 1024 * 1024), 42) == (
        "watcher could not keep up: 10000 events (8.1 MiB) pending; re-create it from revision 42")


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 4), st.integers(0, 300),
                          st.booleans()), max_size=80),
       st.integers(1, 8), st.integers(1, 400))
def test_bounds_hold_and_what_comes_out_is_in_order_without_gaps(ops, max_events, max_bytes):
    """Whatever is pushed and popped: no watch ever holds more than its bounds (plus the one
    item a watch with nothing queued always takes), the total stays under its bound plus one
    item, and each watch's items come out in order, each watch's stream a prefix of what was
    pushed up to its overflow."""
    total = max(max_bytes, 500)
    q: WatchQueue[tuple[int, int]] = WatchQueue(max_events, max_bytes, total)
    pushed: dict[int, list[int]] = {}
    popped: dict[int, list[int]] = {}
    dropped: set[int] = set()
    seq = 0
    for watch, events, nbytes, pop in ops:
        if pop and len(q):
            w, s = q.pop()
            popped.setdefault(w, []).append(s)
            continue
        if watch in dropped:
            continue
        seq += 1
        overflow = q.push(watch, (watch, seq), events=events, nbytes=nbytes, first_revision=seq)
        if overflow is None or overflow.watch_id != watch:
            pushed.setdefault(watch, []).append(seq)
        if overflow is not None:
            dropped.add(overflow.watch_id)
            unsent = [s for s in pushed.get(overflow.watch_id, []) if s not in popped.get(overflow.watch_id, [])]
            if unsent:
                assert overflow.resume_revision == unsent[0]
        for w in range(4):
            ev, b = q.pending(w)
            assert ev <= max(max_events, 4) and b <= max(max_bytes, 300)
        assert q.bytes <= total + 300
    for w, got in popped.items():
        assert got == pushed[w][:len(got)]


@pytest.mark.parametrize("bad", [dict(max_events=0), dict(max_bytes=0),
                                 dict(max_bytes=10, max_total_bytes=5)])
def test_bounds_must_make_sense(bad):
    with pytest.raises(AssertionError):
        WatchQueue(**bad)
