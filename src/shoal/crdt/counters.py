"""Counters: G-Counter, PN-Counter, and the causal counter that an OR-Map can hold.

G-Counter (Shapiro et al. 2011): one non-negative count per replica, each incremented only by
its replica; the join is the pointwise maximum and the value the sum. An increment's delta is
the one entry it changed. Metadata: one entry per replica that ever incremented.

PN-Counter: two G-Counters, increments and decrements; value = P - N.

CausalCounter (the delta-CRDT paper's causal counter): a DotFun in which each replica keeps
one dot whose value is its running contribution; an increment replaces the replica's dot with
a fresh one carrying the new total. Being a dot store, it can live inside an OR-Map and be
removed there: a remove drops the contributions it observed. A replica incrementing
concurrently with the remove re-states its whole contribution under the new dot, so its
earlier increments come back with it (the remove is then undone for that replica's share):
the price of one dot per replica instead of one per increment."""

from __future__ import annotations

from typing import Any, Self

from . import wire
from .base import CRDT
from .causal import Causal, CausalContext, DotFun, DotStore


def _check_amount(n: int, lo: int) -> None:
    if type(n) is not int or not lo <= n <= wire.MAX_INT:
        raise ValueError(f"amount must be an int from {lo} to {wire.MAX_INT}, not {n!r}")


class GCounter(CRDT):
    """A grow-only counter."""

    TYPE = "gcounter"
    __slots__ = ("_counts",)

    def __init__(self) -> None:
        self._counts: dict[str, int] = {}  # replica -> its increments; owned, never shared

    def increment(self, replica: str, n: int = 1) -> GCounter:
        wire.replica_id(replica)
        _check_amount(n, 0)
        total = self._counts.get(replica, 0) + n
        if total > wire.MAX_INT:
            raise ValueError(f"counter of {replica!r} would pass {wire.MAX_INT}")
        delta = GCounter()
        if total:  # a zero count is no entry: keeps the wire form canonical
            delta._counts[replica] = total
        self.merge(delta)
        assert self._counts.get(replica, 0) == total
        return delta

    def value(self) -> int:
        return sum(self._counts.values())

    @property
    def counts(self) -> dict[str, int]:
        return dict(self._counts)

    def merge(self, other: Self) -> bool:
        self.check_mergeable(other)
        changed = False
        for r, n in other._counts.items():
            if n > self._counts.get(r, 0):
                self._counts[r], changed = n, True
        return changed

    def copy(self) -> Self:
        out = type(self)()
        out._counts = dict(self._counts)
        return out

    def __eq__(self, other: object) -> bool:
        return isinstance(other, GCounter) and self._counts == other._counts

    def __repr__(self) -> str:
        return f"GCounter({dict(sorted(self._counts.items()))})"

    def to_wire(self) -> dict[str, Any]:
        return {"type": self.TYPE, "counts": _counts_wire(self._counts)}

    @classmethod
    def from_wire(cls, raw: Any) -> Self:
        f = cls._fields(raw, "counts")
        out = cls()
        out._counts = _counts_from_wire(f["counts"], f"{cls.TYPE}.counts")
        return out


def _counts_wire(counts: dict[str, int]) -> dict[str, int]:
    return dict(sorted(counts.items()))


def _counts_from_wire(raw: Any, where: str) -> dict[str, int]:
    if not isinstance(raw, dict):
        wire.fail(where, f"expected a map, got {wire.kind(raw)}")
    # Zero entries are left out on the way out; refusing them keeps the wire form canonical.
    return {wire.replica_id(r, where): wire.integer(n, f"{where}[{r!r}]", 1)
            for r, n in raw.items()}


class PNCounter(CRDT):
    """A counter that goes up and down: increments and decrements kept apart."""

    TYPE = "pncounter"
    __slots__ = ("_p", "_n")

    def __init__(self) -> None:
        self._p, self._n = GCounter(), GCounter()

    def increment(self, replica: str, n: int = 1) -> PNCounter:
        """Add `n` (negative: subtract)."""
        if type(n) is not int:
            raise ValueError(f"amount must be an int, not {n!r}")
        delta = PNCounter()
        if n >= 0:
            delta._p = self._p.increment(replica, n)
        else:
            delta._n = self._n.increment(replica, -n)
        return delta

    def decrement(self, replica: str, n: int = 1) -> PNCounter:
        _check_amount(n, 0)
        delta = PNCounter()
        delta._n = self._n.increment(replica, n)
        return delta

    def value(self) -> int:
        return self._p.value() - self._n.value()

    def merge(self, other: Self) -> bool:
        self.check_mergeable(other)
        up = self._p.merge(other._p)
        down = self._n.merge(other._n)
        return up or down

    def copy(self) -> Self:
        out = type(self)()
        out._p, out._n = self._p.copy(), self._n.copy()
        return out

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PNCounter) and self._p == other._p and self._n == other._n

    def __repr__(self) -> str:
        return f"PNCounter(p={self._p.counts}, n={self._n.counts})"

    def to_wire(self) -> dict[str, Any]:
        return {"type": self.TYPE, "p": _counts_wire(self._p._counts),
                "n": _counts_wire(self._n._counts)}

    @classmethod
    def from_wire(cls, raw: Any) -> Self:
        f = cls._fields(raw, "p", "n")
        out = cls()
        out._p._counts = _counts_from_wire(f["p"], f"{cls.TYPE}.p")
        out._n._counts = _counts_from_wire(f["n"], f"{cls.TYPE}.n")
        return out


class CausalCounter(Causal):
    """A counter made of dots, one per replica, so that an OR-Map can hold and remove it."""

    TYPE = "ccounter"
    __slots__ = ()
    _store: DotFun

    def _empty_store(self) -> DotFun:
        return DotFun()

    def _read_store(self, raw: Any, where: str) -> DotStore:
        return DotFun.from_wire(raw, where, wire.integer)

    def increment(self, replica: str, n: int = 1) -> CausalCounter:
        """Add `n` (negative: subtract)."""
        wire.replica_id(replica)
        _check_amount(n, wire.MIN_INT)
        own = [(d, v) for d, v in self._store.items() if d[0] == replica]
        total = sum(v for _, v in own) + n
        if not wire.MIN_INT <= total <= wire.MAX_INT:
            raise ValueError(f"contribution of {replica!r} would leave the 64-bit range")
        dot = self._ctx.next_dot(replica)
        before = self.value()
        delta = self._with(DotFun({dot: total}), CausalContext.of([dot, *(d for d, _ in own)]))
        self._apply(delta)
        assert self.value() == before + n
        return delta

    def decrement(self, replica: str, n: int = 1) -> CausalCounter:
        _check_amount(n, 0)
        return self.increment(replica, -n)

    def value(self) -> int:
        return sum(v for _, v in self._store.items())
