"""A hybrid logical clock (Kulkarni, Demirbas et al., "Logical Physical Clocks", 2014).

A timestamp is (wall, logical, replica): `wall` is the largest physical time (milliseconds)
the clock has heard of, from its own physical clock or from a message; `logical` counts events
within one `wall` value, so timestamps keep increasing while the physical clock stands still
or steps back; `replica` breaks the last tie, which makes the order total. Timestamps order as
tuples, and an event that has seen another (a local event after it, or a message carrying it)
always gets a larger timestamp: the order extends causality while staying within the clock
offset of physical time, which is what a last-writer-wins register wants.

The clock never reads time itself: the caller hands the physical time in, so a simulation
drives it with a fake clock. A remote timestamp more than `max_offset_ms` ahead of the local
physical clock is refused (ClockDriftError) rather than adopted: one replica with a clock set
to next year would otherwise drag every clock it talks to along with it."""

from __future__ import annotations

from typing import Any, NamedTuple

from . import wire
from .errors import ClockDriftError

MAX_LOGICAL = 2**32 - 1  # far above what the events of one offset window can count


class Timestamp(NamedTuple):
    wall: int  # milliseconds
    logical: int
    replica: str

    def to_wire(self) -> list[Any]:
        return [self.wall, self.logical, self.replica]

    @classmethod
    def from_wire(cls, raw: Any, where: str = "timestamp") -> Timestamp:
        wall, logical, replica = wire.items(raw, where, 3)
        return cls(wire.integer(wall, f"{where}[0]", 0), wire.integer(logical, f"{where}[1]", 0,
                   MAX_LOGICAL), wire.replica_id(replica, f"{where}[2]"))


class HLC:
    """One replica's hybrid logical clock."""

    __slots__ = ("replica", "max_offset_ms", "_wall", "_logical")

    def __init__(self, replica: str, *, max_offset_ms: int = 500) -> None:
        wire.replica_id(replica)
        if max_offset_ms < 0:
            raise ValueError(f"max_offset_ms must be >= 0, not {max_offset_ms}")
        self.replica, self.max_offset_ms = replica, max_offset_ms
        self._wall, self._logical = 0, 0

    @property
    def last(self) -> Timestamp:
        """The latest timestamp this clock issued (or adopted)."""
        return Timestamp(self._wall, self._logical, self.replica)

    def now(self, physical_ms: int) -> Timestamp:
        """A timestamp for a local event (or a message about to be sent)."""
        _check_physical(physical_ms)
        before = self.last
        if physical_ms > self._wall:
            self._wall, self._logical = physical_ms, 0
        else:
            self._tick_logical(self._logical)
        out = self.last
        assert out > before and out.wall >= physical_ms
        return out

    def update(self, received: Timestamp, physical_ms: int) -> Timestamp:
        """Adopt a timestamp received from another replica; the result is a timestamp for the
        receive event, larger than both `received` and anything this clock issued before.
        Raises ClockDriftError, leaving the clock as it was, if `received` is more than
        max_offset_ms ahead of `physical_ms`."""
        _check_physical(physical_ms)
        if received.wall > physical_ms + self.max_offset_ms:
            raise ClockDriftError(
                f"timestamp from {received.replica!r} is {received.wall - physical_ms} ms ahead "
                f"of this clock (physical {physical_ms} ms, wall {received.wall} ms), more than "
                f"the {self.max_offset_ms} ms allowed: is that replica's clock wrong?")
        if received.logical >= MAX_LOGICAL:
            raise ClockDriftError(f"timestamp from {received.replica!r} has logical counter "
                                  f"{received.logical}, at the limit {MAX_LOGICAL}")
        before = self.last
        wall = max(self._wall, received.wall, physical_ms)
        if wall == self._wall == received.wall:
            self._tick_logical(max(self._logical, received.logical))
        elif wall == self._wall:
            self._tick_logical(self._logical)
        elif wall == received.wall:
            self._wall = wall
            self._tick_logical(received.logical)
        else:
            self._wall, self._logical = wall, 0
        out = self.last
        assert out > before and (out.wall, out.logical) > (received.wall, received.logical)
        return out

    def _tick_logical(self, base: int) -> None:
        # Only a physical clock stuck for ~4 billion events gets here; refuse, don't wrap.
        if base >= MAX_LOGICAL:
            raise ClockDriftError(f"logical counter of {self.replica!r} would pass {MAX_LOGICAL}")
        self._logical = base + 1


def _check_physical(physical_ms: int) -> None:
    if type(physical_ms) is not int or physical_ms < 0:
        raise ValueError(f"physical time must be an int >= 0 (milliseconds), not {physical_ms!r}")
