"""The observed-remove map whose values are causal CRDTs (the delta-CRDT paper's ORMap).

The state is a DotMap key -> (the value's dot store), with ONE causal context for the map and
everything nested in it: a value is not a separate CRDT with its own context but a dot store
judged against the map's. That is what makes nesting compose: joining two maps joins each
key's stores against the two maps' contexts, which is exactly joining the two values.

- `update(key, op)` hands `op` a view of the value at `key` (empty if absent), lets it run
  one of the value's own operations, and wraps the delta that operation returns as the map's
  delta {key: delta's store} with the delta's context. Any embeddable type works: ORSet,
  MVRegister, CausalCounter, or another ORMap (a map of maps), to any depth.
- `remove(key)` is a delta with no store and, as context, every dot of the value: it removes
  the value's state as this replica observed it (observed-remove of the embedded state, as
  in the paper). An update concurrent with the remove carries dots the remove never saw, so
  the key survives holding just that update's effect: remove a key holding the set {a, b}
  while another replica adds c, and the key is left holding {c}. A key reappears after a
  remove as soon as anything updates it, starting from empty.
- A key whose value lost its last dot is gone from the map (there is no "present but empty").

The value type is given when the map is made, as a class or, for a map of maps, an empty
ORMap naming its own value type: `ORMap(ORSet)`, `ORMap(ORMap(CausalCounter))`. It is part
of the wire form ("value": "orset" or ["ormap", ...]) and of the state's shape: maps of
different value types do not merge. Metadata: what the values keep, plus the one context."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Generic, Self, TypeVar

from . import wire
from .base import type_named
from .causal import Causal, CausalContext, DotMap, DotStore

MAX_NESTING = 8  # maps within maps
V = TypeVar("V", bound=Causal)


class ORMap(Causal, Generic[V]):
    """An observed-remove map of causal CRDTs."""

    TYPE = "ormap"
    __slots__ = ("_value",)
    _store: DotMap

    def __init__(self, value: type[V] | V) -> None:
        template = value() if isinstance(value, type) else value
        if not isinstance(template, Causal) or not template.EMBEDDABLE:
            raise TypeError(f"an ORMap holds ORSet, MVRegister, CausalCounter or ORMap values, "
                            f"not {type(template).__name__}")
        if _depth(template) >= MAX_NESTING:
            raise TypeError(f"maps nest at most {MAX_NESTING} deep")
        # Only the type and shape of `value` matter; keep an empty one to make views from.
        self._value: V = template._with(template._empty_store(), CausalContext.EMPTY)
        super().__init__()

    def _empty_store(self) -> DotMap:
        return DotMap()

    def _read_store(self, raw: Any, where: str) -> DotStore:
        return DotMap.from_wire(raw, where, self._value._read_store)

    def spec(self) -> Any:
        return [self.TYPE, self._value.spec()]

    def get(self, key: wire.Key) -> V | None:
        """The value at `key`, or None. The view is detached: change the map with `update`."""
        store = self._store.get(wire.key(key))
        return None if store is None else self._value._with(store, self._ctx)

    def update(self, key: wire.Key, op: Callable[[V], V]) -> ORMap[V]:
        """Apply `op` to the value at `key`: `op` gets a view of the value (empty if absent),
        runs one of its operations on it and returns that operation's delta, e.g.
        `m.update("tags", lambda s: s.add("r1", "x"))`. Returns the map's delta."""
        key = wire.key(key)
        store = self._store.get(key)
        view = self._value._with(store if store is not None else self._value._empty_store(),
                                 self._ctx)
        inner = op(view)
        if not isinstance(inner, Causal):
            raise TypeError(f"op must return the delta of its operation, not {inner!r:.60}")
        self._value.check_mergeable(inner)
        delta = self._with(DotMap() if inner._store.is_bottom() else DotMap({key: inner._store}),
                           inner._ctx)
        return self._apply(delta)

    def remove(self, key: wire.Key) -> ORMap[V]:
        """Remove the value at `key` as this replica has observed it."""
        key = wire.key(key)
        store = self._store.get(key)
        delta = self._with(DotMap(), CausalContext.of(store.dots() if store is not None else ()))
        self._apply(delta)
        assert key not in self._store
        return delta

    def value(self) -> dict[wire.Key, Any]:
        return {k: self._value._with(s, self._ctx).value() for k, s in self._store.items()}

    def keys(self) -> Iterator[wire.Key]:
        return self._store.keys()

    def __contains__(self, key: object) -> bool:
        return key in self._store  # type: ignore[operator]

    def __len__(self) -> int:
        return len(self._store)

    def to_wire(self) -> dict[str, Any]:
        return {"type": self.TYPE, "value": self._value.spec(), **super().to_wire()}

    @classmethod
    def from_wire(cls, raw: Any) -> Self:
        f = cls._fields(raw, "value", "store", "ctx")
        template: Any = _template(f["value"], f"{cls.TYPE}.value", 0)  # V is known only now
        return cls(template)._load(f)


def _depth(value: Causal) -> int:
    return 1 + _depth(value._value) if isinstance(value, ORMap) else 0


def _template(spec: Any, where: str, depth: int) -> Causal:
    """An empty value of the type `spec` names."""
    if isinstance(spec, str):
        cls = type_named(spec)
        if cls is None or not issubclass(cls, Causal) or not cls.EMBEDDABLE or cls is ORMap:
            wire.fail(where, f"{spec!r:.40} is not a value type a map holds (orset, mvregister, "
                      "ccounter, or [\"ormap\", <value type>])")
        return cls()
    parts = wire.items(spec, where, 2)
    if parts[0] != ORMap.TYPE:
        wire.fail(f"{where}[0]", f"expected {ORMap.TYPE!r}, got {parts[0]!r:.40}")
    if depth + 1 >= MAX_NESTING:
        wire.fail(where, f"maps nest at most {MAX_NESTING} deep")
    return ORMap(_template(parts[1], f"{where}[1]", depth + 1))
