"""msgpack for the package's frozen dataclasses, driven by their type hints.

A dataclass travels as an array of its fields in declaration order (compact: no field names on
the hot path); a slot typed as a union of dataclasses carries the class name first. Decoding is
strict and names the path of whatever is wrong, e.g. "TxnRequest.success[2].key: expected bytes,
got str". Nesting is bounded, so a hostile entry cannot exhaust the Python stack."""

from __future__ import annotations

import types
import typing
from dataclasses import fields, is_dataclass
from enum import IntEnum
from functools import cache
from typing import Any

import msgpack

from .errors import MalformedRequest, UnknownRequest

INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1
MAX_DEPTH = 64  # nested arrays; a txn nesting level costs three


@cache
def _fields(cls: Any) -> tuple[tuple[str, Any], ...]:
    hints = typing.get_type_hints(cls)
    return tuple((f.name, hints[f.name]) for f in fields(cls))


def _union(hint: Any) -> tuple[tuple[Any, ...], bool] | None:
    """(members other than None, whether None is allowed), or None if `hint` is no union."""
    if typing.get_origin(hint) not in (typing.Union, types.UnionType):
        return None
    members = typing.get_args(hint)
    rest = tuple(m for m in members if m is not types.NoneType)
    return rest, len(rest) < len(members)


def to_wire(value: Any, hint: Any) -> Any:
    union = _union(hint)
    if union is not None:
        members, _ = union
        if value is None:
            return None
        if len(members) > 1 and all(is_dataclass(m) for m in members):
            return [type(value).__name__, *_fields_to_wire(value)]
        return to_wire(value, type(value) if len(members) > 1 else members[0])
    if typing.get_origin(hint) is tuple:
        item = typing.get_args(hint)[0]
        return [to_wire(v, item) for v in value]
    if is_dataclass(hint):
        return _fields_to_wire(value)
    if isinstance(value, IntEnum):
        return int(value)
    return value


def _fields_to_wire(obj: Any) -> list[Any]:
    cls: Any = type(obj)
    return [to_wire(getattr(obj, name), hint) for name, hint in _fields(cls)]


def from_wire(raw: Any, hint: Any, path: str, depth: int = 0) -> Any:
    if depth > MAX_DEPTH:
        raise MalformedRequest(f"{path}: nested deeper than {MAX_DEPTH}")
    union = _union(hint)
    if union is not None:
        members, optional = union
        if raw is None:
            if optional:
                return None
            raise MalformedRequest(f"{path}: missing")
        if len(members) == 1:
            return from_wire(raw, members[0], path, depth)
        if all(is_dataclass(m) for m in members):
            return _tagged_from_wire(raw, members, path, depth)
        for m in members:  # a union of scalars: the first type that fits
            if _scalar_fits(raw, m):
                return raw
        names = " or ".join(m.__name__ for m in members)
        raise MalformedRequest(f"{path}: expected {names}, got {type(raw).__name__}")
    if typing.get_origin(hint) is tuple:
        item = typing.get_args(hint)[0]
        _expect_list(raw, path)
        return tuple(from_wire(x, item, f"{path}[{i}]", depth + 1) for i, x in enumerate(raw))
    if is_dataclass(hint):
        assert isinstance(hint, type)
        _expect_list(raw, path)
        return _fields_from_wire(hint, raw, path, depth)
    if isinstance(hint, type) and issubclass(hint, IntEnum):
        if type(raw) is not int or raw not in hint._value2member_map_:
            raise MalformedRequest(f"{path}: {raw!r} is not a {hint.__name__}")
        return hint(raw)
    if not _scalar_fits(raw, hint):
        raise MalformedRequest(f"{path}: expected {hint.__name__}, got {type(raw).__name__}")
    return raw


def _scalar_fits(raw: Any, hint: Any) -> bool:
    assert hint in (bytes, int, bool, str), f"unsupported type hint {hint!r}"
    if hint is int:  # bool is an int subclass; msgpack keeps them apart and so do we
        return type(raw) is int and INT64_MIN <= raw <= INT64_MAX
    return type(raw) is hint


def _expect_list(raw: Any, path: str) -> None:
    if not isinstance(raw, list):
        raise MalformedRequest(f"{path}: expected an array, got {type(raw).__name__}")


def _tagged_from_wire(raw: Any, members: tuple[Any, ...], path: str, depth: int) -> Any:
    _expect_list(raw, path)
    if not raw or not isinstance(raw[0], str):
        raise MalformedRequest(f"{path}: expected a type name first")
    for cls in members:
        if cls.__name__ == raw[0]:
            return _fields_from_wire(cls, raw[1:], f"{path}<{raw[0]}>", depth)
    raise UnknownRequest(f"{path}: unknown type {raw[0]!r}")


def _fields_from_wire(cls: type, raw: list[Any], path: str, depth: int) -> Any:
    spec = _fields(cls)
    if len(raw) != len(spec):
        raise MalformedRequest(f"{path}: {cls.__name__} has {len(spec)} fields, got {len(raw)}")
    values = {
        name: from_wire(r, hint, f"{path}.{name}", depth + 1)
        for (name, hint), r in zip(spec, raw, strict=True)
    }
    return cls(**values)


def pack(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def unpack(data: bytes, what: str) -> Any:
    """msgpack to Python values; any failure (truncation, trailing bytes, bad UTF-8, depth)
    becomes a MalformedRequest naming `what`."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise MalformedRequest(f"{what}: expected bytes, got {type(data).__name__}")
    try:
        return msgpack.unpackb(data, raw=False, strict_map_key=True)
    except Exception as e:  # msgpack raises many unrelated types for bad input
        raise MalformedRequest(f"{what}: not valid msgpack ({type(e).__name__}: {e})") from None
