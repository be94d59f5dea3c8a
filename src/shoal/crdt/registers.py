"""Registers: last-writer-wins by hybrid logical clock, and multi-value.

LWWRegister: the state is (timestamp, value) and the join keeps the larger timestamp. With
HLC timestamps (wall, logical, replica) the order is total, the replica id breaking ties, and
a write by a replica that had seen another write is always the later one, whatever the
physical clocks say (`write` advances the clock past the register's current timestamp before
taking its own). Concurrent writes: one wins and the others are lost, silently. Metadata: one
timestamp.

MVRegister (multi-value, as in Dynamo's and Riak's siblings, with dotted version vectors):
a DotFun dot -> value. A write takes a fresh dot and, in its delta's context, the dots of
every value it saw, so it replaces exactly those; a write that did not see another (a
concurrent one) leaves it standing, and the register then holds both until a later write,
having seen both, replaces them. `value()` lists the values in dot order, so every replica
lists them alike. Metadata: one dot per live value, plus the compact causal context (about
one entry per replica)."""

from __future__ import annotations

from typing import Any, Self

from . import wire
from .base import CRDT
from .causal import Causal, CausalContext, DotFun, DotStore
from .errors import MergeError
from .hlc import HLC, Timestamp


class LWWRegister(CRDT):
    """A register where the write with the largest HLC timestamp wins."""

    TYPE = "lww"
    __slots__ = ("_ts", "_value")

    def __init__(self) -> None:
        self._ts: Timestamp | None = None  # None: never written
        self._value: Any = None

    @property
    def timestamp(self) -> Timestamp | None:
        return self._ts

    def set(self, value: Any, ts: Timestamp) -> LWWRegister:
        """Write `value` at `ts`, which must be later than the current write (take it from an
        HLC that has seen the register's timestamp, as `write` does)."""
        value = wire.value(value)
        if not isinstance(ts, Timestamp):
            raise ValueError(f"ts must be a Timestamp, not {ts!r:.40}")
        if self._ts is not None and ts <= self._ts:
            raise ValueError(f"timestamp {ts} is not after the current write's {self._ts}: "
                             "update the clock with it first (HLC.update)")
        delta = LWWRegister()
        delta._ts, delta._value = ts, value
        self.merge(delta)
        assert self._ts == ts
        return delta

    def write(self, value: Any, clock: HLC, physical_ms: int) -> LWWRegister:
        """Write `value` at a timestamp from `clock`, taken after the register's current one
        (ClockDriftError if that one is too far ahead of `physical_ms`)."""
        ts = clock.update(self._ts, physical_ms) if self._ts is not None \
            else clock.now(physical_ms)
        return self.set(value, ts)

    def value(self) -> Any:
        return self._value

    def merge(self, other: Self) -> bool:
        self.check_mergeable(other)
        if other._ts is None or (self._ts is not None and other._ts < self._ts):
            return False
        if other._ts == self._ts:
            if other._value != self._value:
                raise MergeError(f"timestamp {self._ts} carries two values: {self._value!r:.60}"
                                 f" and {other._value!r:.60}")
            return False
        self._ts, self._value = other._ts, other._value
        return True

    def copy(self) -> Self:
        out = type(self)()
        out._ts, out._value = self._ts, self._value  # the value is never mutated in place
        return out

    def __eq__(self, other: object) -> bool:
        return isinstance(other, LWWRegister) and (self._ts, self._value) == (other._ts,
                                                                                other._value)

    def __repr__(self) -> str:
        return f"LWWRegister({self._value!r}, {self._ts})"

    def to_wire(self) -> dict[str, Any]:
        return {"type": self.TYPE, "ts": None if self._ts is None else self._ts.to_wire(),
                "value": self._value}

    @classmethod
    def from_wire(cls, raw: Any) -> Self:
        f = cls._fields(raw, "ts", "value")
        out = cls()
        if f["ts"] is None:
            if f["value"] is not None:
                wire.fail(f"{cls.TYPE}.value", "a register never written holds nil")
        else:
            out._ts = Timestamp.from_wire(f["ts"], f"{cls.TYPE}.ts")
            out._value = wire.value(f["value"], f"{cls.TYPE}.value")
        return out


class MVRegister(Causal):
    """A register that keeps every concurrent write until one write has seen them all."""

    TYPE = "mvregister"
    __slots__ = ()
    _store: DotFun

    def _empty_store(self) -> DotFun:
        return DotFun()

    def _read_store(self, raw: Any, where: str) -> DotStore:
        return DotFun.from_wire(raw, where, wire.value)

    def write(self, replica: str, value: Any) -> MVRegister:
        wire.replica_id(replica)
        value = wire.value(value)
        dot = self._ctx.next_dot(replica)
        delta = self._with(DotFun({dot: value}), CausalContext.of([dot, *self._store.dots()]))
        self._apply(delta)
        assert list(self._store.dots()) == [dot]  # it saw (and so replaces) every value here
        return delta

    def value(self) -> list[Any]:
        return [v for _, v in sorted(self._store.items(), key=lambda e: e[0])]
