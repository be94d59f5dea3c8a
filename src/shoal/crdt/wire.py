"""Reading plain data off the wire, with errors that say where and what.

Every CRDT serializes to msgpack-able plain data (maps with str keys, lists, str, bytes, int,
float, bool, None) and reads it back through these helpers. Each reader takes the data and
`where`, a path such as "orset.store[2][1][0]" naming the spot in the message, so malformed
data fails with WireError("orset.store[2][1][0]: ...") instead of a KeyError deep in a merge.
The same checks guard local operations' arguments (an element, a value), so nothing enters a
state that could not go onto the wire and come back equal.

Two kinds of user data exist. A *value* (a register's content, a sequence item) is any plain
data; tuples are refused because msgpack would hand them back as lists, unequal to the
original. A *key* (a set element, a map key) must be hashable: str, bytes, int, bool, None or
a tuple of keys; a tuple goes on the wire as a list and comes back as a tuple. Floats are not
keys (NaN is not equal to itself)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NoReturn, TypeAlias, TypeVar

from .errors import WireError

MAX_INT = 2**63 - 1  # counters, dot counters and clocks stay in msgpack's signed range
MIN_INT = -(2**63)
MAX_ID = 256  # characters of a replica id or an object name
MAX_DEPTH = 32  # nesting of a value or a key

Key: TypeAlias = "str | bytes | int | bool | None | tuple[Key, ...]"


def fail(where: str, what: str) -> NoReturn:
    raise WireError(f"{where}: {what}")


def kind(raw: Any) -> str:
    """A short name for the type of `raw`, for error messages."""
    return {dict: "a map", list: "a list", tuple: "a list", str: "a str", bytes: "bytes",
            bool: "a bool", int: "an int", float: "a float", type(None): "nil"}.get(
                type(raw), type(raw).__name__)


def fields(raw: Any, where: str, names: tuple[str, ...]) -> dict[str, Any]:
    """`raw` as a map holding exactly the fields `names`."""
    if not isinstance(raw, dict):
        fail(where, f"expected a map, got {kind(raw)}")
    for name in names:
        if name not in raw:
            fail(where, f"missing field {name!r}")
    for name in raw:
        if name not in names:
            fail(where, f"unexpected field {name!r:.40}")
    return raw


def items(raw: Any, where: str, size: int | None = None) -> list[Any]:
    """`raw` as a list (of exactly `size` items, if given)."""
    if not isinstance(raw, list | tuple):
        fail(where, f"expected a list, got {kind(raw)}")
    if size is not None and len(raw) != size:
        fail(where, f"expected a list of {size}, got {len(raw)} items")
    return list(raw)


def integer(raw: Any, where: str, lo: int = MIN_INT, hi: int = MAX_INT) -> int:
    if type(raw) is not int:  # bool is an int subclass and is refused here
        fail(where, f"expected an int, got {kind(raw)}")
    if not lo <= raw <= hi:
        fail(where, f"expected an int from {lo} to {hi}, got {raw}")
    return raw


def text(raw: Any, where: str, max_len: int = MAX_ID) -> str:
    """A non-empty str of at most `max_len` characters (replica ids, object names)."""
    if not isinstance(raw, str):
        fail(where, f"expected a str, got {kind(raw)}")
    if not 0 < len(raw) <= max_len:
        fail(where, f"expected 1 to {max_len} characters, got {len(raw)}")
    return raw


def replica_id(raw: Any, where: str = "replica") -> str:
    return text(raw, where)


def value(raw: Any, where: str = "value", depth: int = 0) -> Any:
    """A copy of `raw` if it is plain data that survives msgpack unchanged. A copy, so that the
    caller changing its list afterwards does not change a state behind the join's back."""
    if depth > MAX_DEPTH:
        fail(where, f"nested deeper than {MAX_DEPTH}")
    t = type(raw)
    if raw is None or t in (bool, str, bytes):
        return raw
    if t is float:
        if raw != raw:
            fail(where, "NaN is not equal to itself: a state holding it would not equal itself")
        return raw
    if t is int:
        return integer(raw, where)
    if t is list:
        return [value(item, f"{where}[{i}]", depth + 1) for i, item in enumerate(raw)]
    if t is dict:
        out = {}
        for k, item in raw.items():
            if not isinstance(k, str):
                fail(where, f"map keys in a value must be str, got {kind(k)}")
            out[k] = value(item, f"{where}[{k!r:.40}]", depth + 1)
        return out
    if t is tuple:
        fail(where, "a tuple is not plain data (msgpack returns it as a list): use a list")
    fail(where, f"{kind(raw)} is not plain data")


def key(raw: Any, where: str = "key", depth: int = 0) -> Key:
    """`raw` as a key: lists (the wire form of tuples) become tuples."""
    if depth > MAX_DEPTH:
        fail(where, f"nested deeper than {MAX_DEPTH}")
    t = type(raw)
    if raw is None or t in (bool, str, bytes):
        return raw  # type: ignore[no-any-return]
    if t is int:
        return integer(raw, where)
    if t in (list, tuple):
        return tuple(key(k, f"{where}[{i}]", depth + 1) for i, k in enumerate(raw))
    fail(where, f"{kind(raw)} cannot be a key (keys are str, bytes, int, bool, nil or tuples)")


def key_wire(k: Key) -> Any:
    return [key_wire(x) for x in k] if isinstance(k, tuple) else k


_RANK = {type(None): 0, bool: 1, int: 2, str: 3, bytes: 4, tuple: 5}


def key_order(k: Key) -> tuple[Any, ...]:
    """A total order over keys of mixed types, so wire forms are canonical."""
    if isinstance(k, tuple):
        return (5, tuple(key_order(x) for x in k))
    return (_RANK[type(k)], k if k is not None else 0)


T = TypeVar("T")


def entries(raw: Any, where: str, read: Callable[[Any, str], T]) -> list[T]:
    """Each item of the list `raw` read with `read`, each told its own path."""
    return [read(item, f"{where}[{i}]") for i, item in enumerate(items(raw, where))]
