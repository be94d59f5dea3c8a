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
from operator import attrgetter
from typing import Any, cast

import msgpack

from ..wire import bounded
from ..wire.bounded import TooComplex
from .errors import ErrTooManyOps, MalformedRequest, UnknownRequest

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


def _slow_to_wire(value: Any, hint: Any) -> Any:
    union = _union(hint)
    if union is not None:
        members, _ = union
        if value is None:
            return None
        if len(members) > 1 and all(is_dataclass(m) for m in members):
            return [type(value).__name__, *_fields_to_wire(value)]
        return _slow_to_wire(value, type(value) if len(members) > 1 else members[0])
    if typing.get_origin(hint) is tuple:
        item = typing.get_args(hint)[0]
        return [_slow_to_wire(v, item) for v in value]
    if is_dataclass(hint):
        return _fields_to_wire(value)
    if isinstance(value, IntEnum):
        return int(value)
    return value


def _fields_to_wire(obj: Any) -> list[Any]:
    cls: Any = type(obj)
    return [_slow_to_wire(getattr(obj, name), hint) for name, hint in _fields(cls)]


def _slow_from_wire(raw: Any, hint: Any, path: str, depth: int = 0) -> Any:
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
            return _slow_from_wire(raw, members[0], path, depth)
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
        return tuple(_slow_from_wire(x, item, f"{path}[{i}]", depth + 1) for i, x in enumerate(raw))
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
        name: _slow_from_wire(r, hint, f"{path}.{name}", depth + 1)
        for (name, hint), r in zip(spec, raw, strict=True)
    }
    return cls(**values)


# --- the fast path ----------------------------------------------------------------------
# Encoders and decoders compiled once per type hint. The decoder is at least as strict as the
# reflective one above; when it refuses anything, the reflective one runs to either produce
# the precise error with its path, or (if it accepts) the value — so both agree exactly.


class _Bad(Exception):
    """The fast decoder refused; the reflective decoder explains why."""


def to_wire(value: Any, hint: Any) -> Any:
    return _encoder(hint)(value)


def from_wire(raw: Any, hint: Any, path: str, depth: int = 0) -> Any:
    try:
        return _decoder(hint)(raw, depth)
    except (_Bad, TypeError, ValueError, RecursionError):
        return _slow_from_wire(raw, hint, path, depth)


@cache
def _encoder(hint: Any) -> Any:
    union = _union(hint)
    if union is not None:
        members, _ = union
        if len(members) == 1:
            inner = _encoder(members[0])
            return lambda v: None if v is None else inner(v)
        if all(is_dataclass(m) for m in members):
            return lambda v: None if v is None else [type(v).__name__, *_fields_encoder(cast(Any, type(v)))(v)]
        return lambda v: None if v is None else (int(v) if isinstance(v, IntEnum) else v)
    if typing.get_origin(hint) is tuple:
        item = _encoder(typing.get_args(hint)[0])
        return lambda v: list(map(item, v))
    if is_dataclass(hint):
        return _fields_encoder(cast(Any, hint))
    return lambda v: int(v) if isinstance(v, IntEnum) else v


@cache
def _fields_encoder(cls: Any) -> Any:
    spec: list[tuple[str, Any]] = []
    names = [name for name, _ in _fields(cls)]
    if len(names) > 1 and all(hint in (bytes, int, bool, str) for _, hint in _fields(cls)):
        # Only plain scalars (a KeyValue): one C call per object, as a 100k-key range has
        # 100k of them to encode. A tuple, which msgpack packs as the array a list would be.
        return attrgetter(*names)

    def enc(obj: Any) -> list[Any]:
        if not spec:  # resolved on first use: dataclasses may refer to themselves (txn ops)
            spec.extend((name, _encoder(hint)) for name, hint in _fields(cls))
        return [e(getattr(obj, name)) for name, e in spec]

    return enc


@cache
def _decoder(hint: Any) -> Any:
    union = _union(hint)
    if union is not None:
        members, optional = union
        if len(members) > 1 and all(is_dataclass(m) for m in members):
            table = {m.__name__: _fields_decoder(m) for m in members}

            def inner(raw: Any, depth: int) -> Any:
                if type(raw) is not list or not raw or type(raw[0]) is not str:
                    raise _Bad
                f = table.get(raw[0])
                if f is None:
                    raise _Bad
                return f(raw, 1, depth)
        elif len(members) == 1:
            inner = _decoder(members[0])
        else:
            def inner(raw: Any, depth: int) -> Any:
                if any(_scalar_fits(raw, m) for m in members):
                    return raw
                raise _Bad

        def dec(raw: Any, depth: int) -> Any:
            if raw is None:
                if optional:
                    return None
                raise _Bad
            return inner(raw, depth)

        return dec
    if typing.get_origin(hint) is tuple:
        item = _decoder(typing.get_args(hint)[0])

        def dec_tuple(raw: Any, depth: int) -> Any:
            if type(raw) is not list or depth >= MAX_DEPTH:
                raise _Bad
            return tuple([item(x, depth + 1) for x in raw])

        return dec_tuple
    if is_dataclass(hint):
        fields_dec = _fields_decoder(cast(Any, hint))

        def dec_obj(raw: Any, depth: int) -> Any:
            if type(raw) is not list:
                raise _Bad
            return fields_dec(raw, 0, depth)

        return dec_obj
    if isinstance(hint, type) and issubclass(hint, IntEnum):
        members_by_value = hint._value2member_map_

        def dec_enum(raw: Any, depth: int) -> Any:
            if type(raw) is not int or raw not in members_by_value:
                raise _Bad
            return members_by_value[raw]

        return dec_enum
    if hint is int:
        def dec_int(raw: Any, depth: int) -> Any:
            if type(raw) is not int or not INT64_MIN <= raw <= INT64_MAX:
                raise _Bad
            return raw

        return dec_int
    assert hint in (bytes, bool, str), f"unsupported type hint {hint!r}"

    def dec_scalar(raw: Any, depth: int) -> Any:
        if type(raw) is not hint:
            raise _Bad
        return raw

    return dec_scalar


@cache
def _fields_decoder(cls: Any) -> Any:
    n = len(fields(cls))
    compiled: list[Any] = []

    def dec(raw: list[Any], start: int, depth: int) -> Any:
        if not compiled:  # on first use: dataclasses may refer to themselves (txn ops)
            compiled.append(_compile_fields_decoder(cls))
        if len(raw) - start != n or depth >= MAX_DEPTH:
            raise _Bad
        return compiled[0](raw, start, depth)

    return dec


def _compile_fields_decoder(cls: Any) -> Any:
    """Straight-line code for one dataclass: a scalar field's check inline, any other field
    through its decoder; the same checks as _decoder's, without a call per scalar field."""
    env: dict[str, Any] = {"cls": cls, "_Bad": _Bad, "bytes": bytes, "int": int, "bool": bool,
                           "str": str, "LO": INT64_MIN, "HI": INT64_MAX}
    lines = ["def dec(raw, start, depth):", "    d = depth + 1"]
    args = []
    for i, (_, hint) in enumerate(_fields(cls)):
        v = f"v{i}"
        args.append(v)
        lines.append(f"    {v} = raw[start + {i}]")
        if hint is int:
            lines.append(f"    if type({v}) is not int or not LO <= {v} <= HI: raise _Bad")
        elif hint in (bytes, bool, str):
            lines.append(f"    if type({v}) is not {hint.__name__}: raise _Bad")
        else:
            env[f"d{i}"] = _decoder(hint)
            lines.append(f"    {v} = d{i}({v}, d)")
    lines.append(f"    return cls({', '.join(args)})")
    exec("\n".join(lines), env)  # noqa: S102 - our own code, from the class's type hints
    return env["dec"]


def pack(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def unpack(data: bytes, what: str, max_values: int | None = None,
           max_arrays: int | None = None) -> Any:
    """msgpack to Python values; any failure (truncation, trailing bytes, bad UTF-8, depth)
    becomes a MalformedRequest naming `what`. With `max_values` and `max_arrays` (bounds of
    a legal value, for untrusted input), decoding stops past them (wire/bounded.py)."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise MalformedRequest(f"{what}: expected bytes, got {type(data).__name__}")
    try:
        if max_values is None or max_arrays is None:
            return msgpack.unpackb(data, raw=False, strict_map_key=True)
        if 2 * len(data) <= max_values and len(data) <= max_arrays:
            # Too short to break the bounds (a value takes a byte at least, and bounded counts
            # each one at most twice): msgpack alone, with the same header bound.
            return msgpack.unpackb(data, max_array_len=max_values, max_map_len=max_values,
                                   raw=False, strict_map_key=True)
        return bounded.unpackb(data, max_values, max_arrays, max_len=max_values,
                               raw=False, strict_map_key=True)
    except TooComplex as e:  # only txn ops make a legal value large: say so as etcd would
        raise ErrTooManyOps(f"{what}: too complex ({e})") from None
    except ValueError as e:
        if max_values is not None and "exceeds max_" in str(e):  # as bounded.unpackb says it
            raise ErrTooManyOps(f"{what}: too complex ({e})") from None
        raise MalformedRequest(f"{what}: not valid msgpack ({type(e).__name__}: {e})") from None
    except Exception as e:  # msgpack raises many unrelated types for bad input
        raise MalformedRequest(f"{what}: not valid msgpack ({type(e).__name__}: {e})") from None
