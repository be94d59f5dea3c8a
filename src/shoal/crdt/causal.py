"""Dots, causal contexts and dot stores: the machinery every causal CRDT here is built from.

A *dot* (replica, n) names the n-th event a replica created; a replica's dots are numbered
1, 2, 3, ... without gaps. A *causal context* is the set of dots a state has seen. A *dot
store* holds the dots still alive: a DotSet (just dots), a DotFun (dot -> value) or a DotMap
(key -> dot store). A causal CRDT is a pair (store, context), and its join is the one of the
delta-CRDT paper (Almeida, Shoker, Baquero 2018, section 6): a dot survives the join if both
sides hold it, or if one side holds it and the other has never seen it. A dot one side has
seen but no longer holds was removed there, and the removal wins over the stale copy. So a
remove needs no per-element tombstone: it is a delta with an empty store and, in its context,
the dots it removes.

The context is kept compact: a version vector (replica -> n: every dot up to n was seen) plus
a "cloud" of dots seen out of order. Dots move from the cloud into the vector as soon as the
gap before them fills, which for a replica that has received everything is at once; the
compact form is canonical, so two contexts holding the same dots are equal as values.

Everything here is immutable: a join builds a new store and a new context and leaves both
inputs as they were. That lets a delta share structure with the state it came from, and lets
a map hand out a view of one of its values without copying the map's context."""

from __future__ import annotations

import copy as _copy
from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from typing import Any, ClassVar, Self

from . import wire
from .base import CRDT
from .errors import MergeError

Dot = tuple[str, int]


def dot_wire(dot: Dot) -> list[Any]:
    return [dot[0], dot[1]]


def dot_from_wire(raw: Any, where: str) -> Dot:
    replica, n = wire.items(raw, where, 2)
    return (wire.replica_id(replica, f"{where}[0]"), wire.integer(n, f"{where}[1]", 1))


class CausalContext:
    """The dots a state has seen: a version vector plus the dots seen beyond it."""

    __slots__ = ("_vv", "_cloud")
    EMPTY: ClassVar[CausalContext]

    def __init__(self, vv: Mapping[str, int] | None = None, cloud: Iterable[Dot] = ()) -> None:
        full = {r: n for r, n in (vv or {}).items() if n > 0}
        rest: list[Dot] = []
        for dot in sorted(set(cloud)):  # per replica, ascending: a filled gap lets the next in
            r, n = dot
            top = full.get(r, 0)
            if n == top + 1:
                full[r] = n
            elif n > top:
                rest.append(dot)
        self._vv: dict[str, int] = dict(sorted(full.items()))
        self._cloud: frozenset[Dot] = frozenset(rest)
        assert all((r, self._vv.get(r, 0) + 1) not in self._cloud for r, _ in self._cloud)

    @classmethod
    def of(cls, dots: Iterable[Dot]) -> CausalContext:
        return cls(None, dots)

    def __contains__(self, dot: Dot) -> bool:
        return dot[1] <= self._vv.get(dot[0], 0) or dot in self._cloud

    def top(self, replica: str) -> int:
        """The highest counter seen from `replica` (0 if none)."""
        top = self._vv.get(replica, 0)
        for r, n in self._cloud:
            if r == replica and n > top:
                top = n
        return top

    def next_dot(self, replica: str) -> Dot:
        """A dot `replica` has never used, for its next event. The caller must be `replica`
        itself: only the replica that owns a counter may advance it."""
        dot = (replica, self.top(replica) + 1)
        assert dot not in self
        return dot

    def union(self, other: CausalContext) -> CausalContext:
        if other is self or not other:
            return self
        if not self:
            return other
        vv = dict(self._vv)
        for r, n in other._vv.items():
            if n > vv.get(r, 0):
                vv[r] = n
        out = CausalContext(vv, self._cloud | other._cloud)
        assert out.size() <= self.size() + other.size()
        return out

    def dots(self) -> Iterator[Dot]:
        for r, top in self._vv.items():
            for n in range(1, top + 1):
                yield (r, n)
        yield from sorted(self._cloud)

    def count(self) -> int:
        """How many dots the context holds (what walking `dots()` costs)."""
        return sum(self._vv.values()) + len(self._cloud)

    def size(self) -> int:
        """Metadata entries kept: one per replica in the vector, one per dot in the cloud."""
        return len(self._vv) + len(self._cloud)

    @property
    def vector(self) -> dict[str, int]:
        return dict(self._vv)

    @property
    def cloud(self) -> frozenset[Dot]:
        return self._cloud

    def __bool__(self) -> bool:
        return bool(self._vv) or bool(self._cloud)

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, CausalContext) and self._vv == other._vv
                and self._cloud == other._cloud)

    def __hash__(self) -> int:
        return hash((tuple(self._vv.items()), self._cloud))

    def __repr__(self) -> str:
        return f"CausalContext({self._vv}, {sorted(self._cloud)})"

    def to_wire(self) -> dict[str, Any]:
        return {"vv": dict(self._vv), "cloud": [dot_wire(d) for d in sorted(self._cloud)]}

    @classmethod
    def from_wire(cls, raw: Any, where: str = "ctx") -> CausalContext:
        f = wire.fields(raw, where, ("vv", "cloud"))
        if not isinstance(f["vv"], dict):
            wire.fail(f"{where}.vv", f"expected a map, got {wire.kind(f['vv'])}")
        vv = {wire.replica_id(r, f"{where}.vv"): wire.integer(n, f"{where}.vv[{r!r}]", 1)
              for r, n in f["vv"].items()}
        return cls(vv, wire.entries(f["cloud"], f"{where}.cloud", dot_from_wire))


CausalContext.EMPTY = CausalContext()


class DotStore(ABC):
    """The live part of a causal CRDT: some structure of dots."""

    __slots__ = ()

    @abstractmethod
    def dots(self) -> Iterator[Dot]: ...

    @abstractmethod
    def is_bottom(self) -> bool: ...

    @abstractmethod
    def empty(self) -> Self:
        """The bottom store of this kind."""

    @abstractmethod
    def join(self, ctx: CausalContext, other: Self, other_ctx: CausalContext) -> Self:
        """The store of the join of (self, ctx) and (other, other_ctx): `self` itself when
        that equals `self`, else a new store, which then differs (merge reads "changed" so)."""

    @abstractmethod
    def to_wire(self) -> list[Any]: ...

    @abstractmethod
    def __eq__(self, other: object) -> bool: ...

    __hash__ = None  # type: ignore[assignment]


def _changes(mine: Collection[Dot], ctx: CausalContext, theirs: Collection[Dot],
             other_ctx: CausalContext) -> tuple[set[Dot], list[Dot]]:
    """The one rule every dot store's join applies, as changes to `mine`: (the dots of mine
    the other side removed: seen there, not held there; the dots of theirs this side has
    never seen). A dot held by both, or by one side and unseen by the other, survives.

    Only a dot in `other_ctx` can be removed, so when that context is the smaller (a delta's,
    as a rule) it is walked instead of `mine`: merging a delta costs the delta's size."""
    if other_ctx.count() <= len(mine):
        drop = {d for d in other_ctx.dots() if d in mine and d not in theirs}
    else:
        drop = {d for d in mine if d not in theirs and d in other_ctx}
    add = [d for d in theirs if d not in mine and d not in ctx]
    return drop, add


class DotSet(DotStore):
    __slots__ = ("_dots",)

    def __init__(self, dots: Iterable[Dot] = ()) -> None:
        self._dots = frozenset(dots)

    def dots(self) -> Iterator[Dot]:
        return iter(self._dots)

    def is_bottom(self) -> bool:
        return not self._dots

    def empty(self) -> DotSet:
        return _EMPTY_SET

    def join(self, ctx: CausalContext, other: DotSet, other_ctx: CausalContext) -> DotSet:
        drop, add = _changes(self._dots, ctx, other._dots, other_ctx)
        if not drop and not add:
            return self  # the join returns a new store only when it differs (Causal.merge)
        return DotSet((self._dots - drop).union(add))

    def __len__(self) -> int:
        return len(self._dots)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, DotSet) and self._dots == other._dots

    def __repr__(self) -> str:
        return f"DotSet({sorted(self._dots)})"

    def to_wire(self) -> list[Any]:
        return [dot_wire(d) for d in sorted(self._dots)]

    @classmethod
    def from_wire(cls, raw: Any, where: str) -> DotSet:
        dots = wire.entries(raw, where, dot_from_wire)
        if len(set(dots)) != len(dots):
            wire.fail(where, "a dot appears twice")
        return cls(dots)


_EMPTY_SET = DotSet()


class DotFun(DotStore):
    """dot -> value. A dot's value never changes: it was written once, by the dot's event."""

    __slots__ = ("_map",)

    def __init__(self, entries: Mapping[Dot, Any] | None = None) -> None:
        self._map: dict[Dot, Any] = dict(entries or {})

    def dots(self) -> Iterator[Dot]:
        return iter(self._map)

    def items(self) -> Iterator[tuple[Dot, Any]]:
        return iter(self._map.items())

    def get(self, dot: Dot, default: Any = None) -> Any:
        return self._map.get(dot, default)

    def __contains__(self, dot: Dot) -> bool:
        return dot in self._map

    def __len__(self) -> int:
        return len(self._map)

    def is_bottom(self) -> bool:
        return not self._map

    def empty(self) -> DotFun:
        return _EMPTY_FUN

    def join(self, ctx: CausalContext, other: DotFun, other_ctx: CausalContext) -> DotFun:
        mine, theirs = self._map, other._map
        small, large = (mine, theirs) if len(mine) <= len(theirs) else (theirs, mine)
        for d in small:
            if d in large and mine[d] != theirs[d]:
                raise MergeError(f"dot {d} carries two values: {mine[d]!r:.60} and "
                                 f"{theirs[d]!r:.60}")
        drop, add = _changes(mine.keys(), ctx, theirs.keys(), other_ctx)
        if not drop and not add:
            return self
        out = dict(mine)
        for d in drop:
            del out[d]
        for d in add:
            out[d] = theirs[d]
        return DotFun(out)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, DotFun) and self._map == other._map

    def __repr__(self) -> str:
        return f"DotFun({dict(sorted(self._map.items()))})"

    def to_wire(self) -> list[Any]:
        return [[dot_wire(d), v] for d, v in sorted(self._map.items(), key=lambda e: e[0])]

    @classmethod
    def from_wire(cls, raw: Any, where: str,
                  read: Callable[[Any, str], Any] = wire.value) -> DotFun:
        out: dict[Dot, Any] = {}
        for i, entry in enumerate(wire.items(raw, where)):
            d, v = wire.items(entry, f"{where}[{i}]", 2)
            dot = dot_from_wire(d, f"{where}[{i}][0]")
            if dot in out:
                wire.fail(f"{where}[{i}][0]", f"dot {dot} appears twice")
            out[dot] = read(v, f"{where}[{i}][1]")
        return cls(out)


_EMPTY_FUN = DotFun()


class DotMap(DotStore):
    """key -> dot store (all of one kind), with no bottom entries: a key whose store lost
    its last dot is gone. An index dot -> key finds the entries a delta's context reaches, so
    a join touches only the keys it changes (and copies the two dicts, in C)."""

    __slots__ = ("_map", "_index")

    def __init__(self, entries: Mapping[wire.Key, DotStore] | None = None,
                 index: dict[Dot, wire.Key] | None = None) -> None:
        self._map: dict[wire.Key, DotStore] = dict(entries or {})
        if index is None:  # built from entries; a join builds from a checked map and index
            assert not any(s.is_bottom() for s in self._map.values()), "bottom entry"
            index = {d: k for k, s in self._map.items() for d in s.dots()}
        self._index = index  # every dot of every entry -> its key
        assert len(index) >= len(self._map)

    def dots(self) -> Iterator[Dot]:
        return iter(self._index)

    def get(self, key: wire.Key) -> DotStore | None:
        return self._map.get(key)

    def keys(self) -> Iterator[wire.Key]:
        return iter(self._map)

    def items(self) -> Iterator[tuple[wire.Key, DotStore]]:
        return iter(self._map.items())

    def __contains__(self, key: wire.Key) -> bool:
        return key in self._map

    def __len__(self) -> int:
        return len(self._map)

    def is_bottom(self) -> bool:
        return not self._map

    def empty(self) -> DotMap:
        return _EMPTY_MAP

    def join(self, ctx: CausalContext, other: DotMap, other_ctx: CausalContext) -> DotMap:
        index = self._index
        # Keys that can change: those the other side holds, and those holding a dot the
        # other side has seen (and so may have removed); every other entry stays as it is.
        if other_ctx.count() <= len(index):
            reached = {index[d] for d in other_ctx.dots() if d in index}
        else:
            reached = {k for d, k in index.items() if d in other_ctx}
        reached.update(other._map)
        changed: dict[wire.Key, DotStore | None] = {}
        for k in reached:
            mine, theirs = self._map.get(k), other._map.get(k)
            if mine is None:
                assert theirs is not None
                j = theirs.empty().join(ctx, theirs, other_ctx)
                if not j.is_bottom():
                    changed[k] = j
            else:
                j = mine.join(ctx, theirs if theirs is not None else mine.empty(), other_ctx)
                if j is not mine:
                    changed[k] = None if j.is_bottom() else j
        if not changed:
            return self
        out, out_index = dict(self._map), dict(index)
        for k, new in changed.items():
            old = out.pop(k, None)
            if old is not None:
                for d in old.dots():
                    del out_index[d]
            if new is not None:
                out[k] = new
                for d in new.dots():
                    out_index[d] = k
        return DotMap(out, out_index)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, DotMap) and self._map == other._map

    def __repr__(self) -> str:
        return f"DotMap({self._map})"

    def to_wire(self) -> list[Any]:
        return [[wire.key_wire(k), s.to_wire()]
                for k, s in sorted(self._map.items(), key=lambda e: wire.key_order(e[0]))]

    @classmethod
    def from_wire(cls, raw: Any, where: str, read: Callable[[Any, str], DotStore]) -> DotMap:
        out: dict[wire.Key, DotStore] = {}
        index: dict[Dot, wire.Key] = {}
        for i, entry in enumerate(wire.items(raw, where)):
            k, s = wire.items(entry, f"{where}[{i}]", 2)
            key = wire.key(k, f"{where}[{i}][0]")
            if key in out:
                wire.fail(f"{where}[{i}][0]", f"key {key!r:.40} appears twice")
            store = read(s, f"{where}[{i}][1]")
            if store.is_bottom():
                wire.fail(f"{where}[{i}][1]", f"key {key!r:.40} holds no dots (a removed key "
                          "is left out)")
            for d in store.dots():
                if d in index:
                    wire.fail(f"{where}[{i}][1]", f"dot {d} appears twice")
                index[d] = key
            out[key] = store
        return cls(out, index)


_EMPTY_MAP = DotMap()


class Causal(CRDT):
    """A causal CRDT: a dot store judged against the causal context that came with it.

    Subclasses say which store they keep (`_empty_store`, `_read_store`) and write their
    operations as deltas built with `_with`; join, equality, clearing and the wire form are
    here. An EMBEDDABLE type's whole state is its store, so an OR-Map can hold it as a value
    that shares the map's context."""

    __slots__ = ("_store", "_ctx")
    EMBEDDABLE: ClassVar[bool] = True

    def __init__(self) -> None:
        self._store: DotStore = self._empty_store()
        self._ctx: CausalContext = CausalContext.EMPTY

    @abstractmethod
    def _empty_store(self) -> DotStore: ...

    @abstractmethod
    def _read_store(self, raw: Any, where: str) -> DotStore: ...

    def spec(self) -> Any:
        """Plain data naming this type (and, for a map, its values' type)."""
        return self.TYPE

    def _with(self, store: DotStore, ctx: CausalContext) -> Self:
        """A state of this type and shape holding `store` and `ctx`: a delta, or a view."""
        out = _copy.copy(self)
        out._store, out._ctx = store, ctx
        return out

    def _apply(self, delta: Self) -> Self:
        self.merge(delta)
        return delta

    def copy(self) -> Self:
        return _copy.copy(self)  # the parts are immutable: sharing them is copying them

    @property
    def context(self) -> CausalContext:
        return self._ctx

    def check_mergeable(self, other: CRDT) -> None:
        super().check_mergeable(other)
        assert isinstance(other, Causal)
        if other.spec() != self.spec():
            raise MergeError(f"cannot merge a {other.spec()} into a {self.spec()}")

    def merge(self, other: Self) -> bool:
        self.check_mergeable(other)
        store = self._store.join(self._ctx, other._store, other._ctx)
        ctx = self._ctx.union(other._ctx)
        # A join returns its own store when nothing changed, and a new one only if it differs.
        changed = store is not self._store or ctx != self._ctx
        self._store, self._ctx = store, ctx
        assert self._store.is_bottom() or self._ctx, "live dots the context has not seen"
        return changed

    def clear(self) -> Self:
        """Remove everything this state has observed; concurrent additions survive."""
        return self._apply(self._with(self._store.empty(), CausalContext.of(self._store.dots())))

    def __eq__(self, other: object) -> bool:
        return (type(other) is type(self) and isinstance(other, Causal)
                and other.spec() == self.spec() and self._store == other._store
                and self._ctx == other._ctx)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.value()!r}, {self._ctx!r})"

    def to_wire(self) -> dict[str, Any]:
        return {"type": self.TYPE, "store": self._store.to_wire(), "ctx": self._ctx.to_wire()}

    @classmethod
    def from_wire(cls, raw: Any) -> Self:
        return cls()._load(cls._fields(raw, "store", "ctx"))

    def _load(self, f: dict[str, Any]) -> Self:
        """This shape holding the store and context of the fields `f`, checked."""
        where = self.TYPE
        store = self._read_store(f["store"], f"{where}.store")
        ctx = CausalContext.from_wire(f["ctx"], f"{where}.ctx")
        check_dots(store.dots(), ctx, f"{where}.store")
        return self._with(store, ctx)


def check_dots(dots: Iterable[Dot], ctx: CausalContext, where: str) -> None:
    """The well-formedness of a causal state from the wire: every live dot is in the context
    (a state holds only what it has seen) and lives in one place only (a dot is one event)."""
    seen: set[Dot] = set()
    for dot in dots:
        if dot not in ctx:
            wire.fail(where, f"dot {dot} is not in the causal context")
        if dot in seen:
            wire.fail(where, f"dot {dot} appears twice")
        seen.add(dot)
