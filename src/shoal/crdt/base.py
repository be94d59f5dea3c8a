"""The common face of every CRDT in this package, and the errors they raise.

A CRDT here is a mutable holder of a join-semilattice state. Every type offers:

- local operations (`add`, `increment`, `write`, ...) that change the state and return the
  *delta*: a small state of the same type whose join into any replica has the operation's
  effect (Almeida, Shoker, Baquero: delta-state CRDTs). Ship the delta instead of the state;
- `merge(other)`: the join with a delta or a whole state of the same type, in place; it returns
  whether the state changed, which anti-entropy uses to tell news from duplicates;
- `value()`: what the state means to the application;
- `==`: equality of states (not of values: two states can mean the same value and differ);
- `to_wire()` / `from_wire()`: msgpack-able plain data and back, the latter validating every
  field and raising WireError naming where the data is wrong.

Every concrete type names itself with a TYPE tag that its wire form carries, and registers
under it, so `from_wire(data)` here rebuilds whatever CRDT a message holds."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar, Self, TypeVar

from . import wire
from .errors import CRDTError, MergeError, WireError

__all__ = ["CRDT", "CRDTError", "MergeError", "WireError", "from_wire", "joined", "type_named"]

_REGISTRY: dict[str, type[CRDT]] = {}


class CRDT(ABC):
    """A state-based CRDT whose local operations return deltas."""

    __slots__ = ()
    TYPE: ClassVar[str]  # the tag of the wire form, unique per concrete type

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        tag = cls.__dict__.get("TYPE")
        if tag is not None:
            assert tag not in _REGISTRY, f"two CRDT types tagged {tag!r}"
            _REGISTRY[tag] = cls

    @abstractmethod
    def merge(self, other: Self) -> bool:
        """Join `other` (a delta or a state of the same type) into this state; True if it
        changed. Raises MergeError, changing nothing, if the two cannot be joined."""

    @abstractmethod
    def value(self) -> Any:
        """The state as the application sees it."""

    @abstractmethod
    def copy(self) -> Self:
        """An independent state equal to this one."""

    @abstractmethod
    def to_wire(self) -> dict[str, Any]:
        """Plain data (msgpack-able), canonical: equal states give equal data."""

    @classmethod
    @abstractmethod
    def from_wire(cls, raw: Any) -> Self:
        """The state `raw` describes; WireError naming what is wrong if it is malformed."""

    @abstractmethod
    def __eq__(self, other: object) -> bool: ...

    __hash__ = None  # type: ignore[assignment]  # mutable: states are not dict keys

    def check_mergeable(self, other: CRDT) -> None:
        """Raise MergeError unless `other` is of this state's type (and shape, for maps)."""
        if type(other) is not type(self):
            what = other.TYPE if isinstance(other, CRDT) else type(other).__name__
            raise MergeError(f"cannot merge a {what} into a {self.TYPE}")

    @classmethod
    def _fields(cls, raw: Any, *names: str) -> dict[str, Any]:
        """`raw` as a map with exactly the fields "type" (this type's tag) and `names`."""
        f = wire.fields(raw, cls.TYPE, ("type", *names))
        if f["type"] != cls.TYPE:
            wire.fail(f"{cls.TYPE}.type", f"expected {cls.TYPE!r}, got {f['type']!r:.40}")
        return f


def type_named(tag: str) -> type[CRDT] | None:
    """The registered CRDT type whose wire form is tagged `tag`."""
    return _REGISTRY.get(tag)


def from_wire(raw: Any) -> CRDT:
    """Any CRDT of this package from its wire form, by the type tag it carries."""
    if not isinstance(raw, dict):
        wire.fail("crdt", f"expected a map, got {wire.kind(raw)}")
    tag = raw.get("type")
    cls = _REGISTRY.get(tag) if isinstance(tag, str) else None
    if cls is None:
        wire.fail("crdt.type", f"unknown CRDT type {tag!r:.40} (known: {', '.join(sorted(_REGISTRY))})")
    return cls.from_wire(raw)


C = TypeVar("C", bound=CRDT)


def joined(a: C, b: C) -> C:
    """A new state, the join of `a` and `b`; neither is changed."""
    out = a.copy()
    out.merge(b)
    return out
