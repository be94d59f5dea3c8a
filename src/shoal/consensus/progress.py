"""What the leader knows about each follower's log, and the flow control that bounds what it
sends: probing one message at a time until the match point is found, then pipelining with a
bounded window of in-flight appends, or streaming a snapshot in chunks."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from enum import Enum


class State(Enum):
    PROBE = "probe"  # searching for the match point; at most one append in flight
    REPLICATE = "replicate"  # optimistic: next = last sent + 1, window of in-flight appends
    SNAPSHOT = "snapshot"  # streaming a snapshot; appends paused


@dataclass(slots=True)
class Progress:
    match: int
    next: int
    max_inflight: int
    state: State = State.PROBE
    paused: bool = False  # probe sent and not yet answered
    recent_active: bool = False  # heard from since the last check-quorum round
    inflight: deque[int] = field(default_factory=deque)  # last index of each append in flight
    snap_index: int = 0  # snapshot being streamed
    snap_offset: int = 0  # bytes of it the follower has acknowledged
    is_learner: bool = False
    epoch: int = 0  # the follower's log epoch as its last response gave it
    recovering: bool = False  # it is catching up after its log lost entries
    recover_to: int = 0  # our last index when we learnt it recovers: it counts once it has that

    def regressed(self, epoch: int, recovering: bool, last: int) -> None:
        """The follower's log lost entries since we learnt `match`: forget it and probe again
        from our end (its rejections walk `next` back to where it really is)."""
        self.epoch, self.recovering, self.recover_to = epoch, recovering, last
        self.match, self.next = 0, last + 1
        self.state, self.paused, self.snap_index, self.snap_offset = State.PROBE, False, 0, 0
        self.inflight.clear()

    def become_probe(self) -> None:
        # After a snapshot, resume right after it; otherwise right after the match point.
        self.next = max(self.match, self.snap_index) + 1 if self.state is State.SNAPSHOT else self.match + 1
        self.state, self.paused, self.snap_index, self.snap_offset = State.PROBE, False, 0, 0
        self.inflight.clear()

    def become_replicate(self) -> None:
        self.state, self.paused = State.REPLICATE, False
        self.next = self.match + 1
        self.inflight.clear()

    def become_snapshot(self, index: int) -> None:
        self.state, self.paused = State.SNAPSHOT, False
        self.snap_index, self.snap_offset = index, 0
        self.inflight.clear()

    def is_paused(self) -> bool:
        if self.state is State.PROBE:
            return self.paused
        if self.state is State.REPLICATE:
            return len(self.inflight) >= self.max_inflight
        return True

    def sent(self, last: int) -> None:
        """An append carrying entries up to `last` left for this follower."""
        if self.state is State.REPLICATE:
            self.next = last + 1
            self.inflight.append(last)
            assert len(self.inflight) <= self.max_inflight
        elif self.state is State.PROBE:
            self.paused = True

    def maybe_update(self, index: int) -> bool:
        """The follower acknowledged up to `index`. True if that is news."""
        updated = index > self.match
        if updated:
            self.match = index
            self.paused = False
        self.next = max(self.next, index + 1)
        while self.inflight and self.inflight[0] <= index:
            self.inflight.popleft()
        return updated

    def maybe_decrease(self, rejected: int, hint: int) -> bool:
        """The follower refused the append after `rejected`; `hint` is where to retry."""
        if self.state is State.REPLICATE:
            if rejected <= self.match:
                return False  # stale rejection
            self.next = self.match + 1
            return True
        if self.next - 1 != rejected:
            return False  # stale rejection of an earlier probe
        self.next = max(min(rejected, hint + 1), self.match + 1, 1)
        self.paused = False
        return True
