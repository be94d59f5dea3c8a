"""The observed-remove set, add-wins (the delta-CRDT paper's AWSet; Shapiro et al.'s OR-Set).

The state is a DotMap element -> DotSet with a causal context. Adding an element takes a fresh
dot and, in the delta's context, the dots the element had, so the add replaces them: an
element carries one dot per replica that added it concurrently, usually just one. Removing an
element is a delta with no store and the element's dots in its context: it removes exactly
the adds it observed. An add concurrent with a remove has a dot the remove never saw, so it
survives: add wins. No tombstone per removed element is kept; what remembers the removal is
the causal context, and it compacts to a version vector (one entry per replica) as soon as a
replica has received every dot up to some point, which anti-entropy ensures.

Elements are keys (wire.Key): str, bytes, int, bool, None or tuples of those."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from . import wire
from .causal import Causal, CausalContext, DotMap, DotSet, DotStore


class ORSet(Causal):
    """An add-wins observed-remove set."""

    TYPE = "orset"
    __slots__ = ()
    _store: DotMap

    def _empty_store(self) -> DotMap:
        return DotMap()

    def _read_store(self, raw: Any, where: str) -> DotStore:
        return DotMap.from_wire(raw, where, DotSet.from_wire)

    def add(self, replica: str, element: wire.Key) -> ORSet:
        wire.replica_id(replica)
        element = wire.key(element, "element")
        dot = self._ctx.next_dot(replica)
        old = self._store.get(element)
        seen = [dot, *(old.dots() if old is not None else ())]
        delta = self._with(DotMap({element: DotSet([dot])}), CausalContext.of(seen))
        self._apply(delta)
        assert element in self
        return delta

    def remove(self, element: wire.Key) -> ORSet:
        """Remove the adds of `element` this replica has seen (a no-op delta if none)."""
        element = wire.key(element, "element")
        old = self._store.get(element)
        delta = self._with(DotMap(), CausalContext.of(old.dots() if old is not None else ()))
        self._apply(delta)
        assert element not in self
        return delta

    def value(self) -> frozenset[wire.Key]:
        return frozenset(self._store.keys())

    def __contains__(self, element: object) -> bool:
        return element in self._store  # type: ignore[operator]

    def __iter__(self) -> Iterator[wire.Key]:
        return self._store.keys()

    def __len__(self) -> int:
        return len(self._store)
