"""A component's interface, read from its type hints: what each method takes and returns, how a
call's arguments travel, and how a wrong one is refused before it leaves the caller.

An interface is a `typing.Protocol` (or an abstract class) whose public methods are `async def`
with a hint on every parameter and on the result:

    class Inventory(Protocol):
        @idempotent
        @deadline(200)
        async def stock(self, sku: str) -> int: ...
        async def reserve(self, sku: str, count: int, note: str | None = None) -> Reservation: ...

`interface_spec(Inventory)` reads it once (cached) into an `InterfaceSpec`: a `MethodSpec` per
method with its parameters, result, the idempotent mark and the default deadline. Whatever the
spec cannot carry is refused there, at start-up, with a `TypeError` naming the method: a missing
hint, a sync method, `*args`, a type outside the supported set

    int float str bytes bool None, list[T], dict[str, T], tuple[...], T | None,
    dataclasses, msgspec.Struct, enums

(checked through the fields of dataclasses and Structs too), since each of these also has to
become a protobuf type for the gRPC bridge and a msgspec type for the wire.

Each method gets a `MethodCodec` (`spec.codec`), built once: a msgspec array-like Struct of
its parameters, with a msgpack decoder compiled for it, so a call's arguments travel as one
positional msgpack array and the callee's decode is the validation. The caller validates the
same way it will be checked: it encodes the bound arguments and runs the callee's decoder on the
bytes before sending them. The caller therefore refuses exactly what the callee would, down to a
field deep inside a dataclass, for the price of one decode (a few hundred nanoseconds for small
arguments). A refusal is a `CallTypeError` that names `Interface.method`, the parameter and the
type it expects, raised in the caller's frame. The same check, without sending the bytes
anywhere, is `check_args`, which a monolith may run so that it accepts what a deployment would.

Validation is structural, as on the wire: a dict with a dataclass's fields passes for that
dataclass, an int passes for a float, and a bool never passes for an int."""

from __future__ import annotations

import dataclasses
import enum
import functools
import inspect
import re
import types
import typing
from abc import ABC, ABCMeta
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import msgspec

F = TypeVar("F", bound=Callable[..., Any])

_IDEMPOTENT = "__shoal_idempotent__"
_DEADLINE_MS = "__shoal_deadline_ms__"
_SCALARS = (int, float, str, bytes, bool, type(None))
# msgspec's error path: "... - at `$[2].items[0]`"; $[i] is the i-th parameter.
_PATH = re.compile(r"`\$\[(\d+)\]([^`]*)`")
_ENCODER = msgspec.msgpack.Encoder()


def idempotent(fn: F) -> F:
    """Mark a method safe to run more than once: only these are retried or hedged."""
    setattr(fn, _IDEMPOTENT, True)
    return fn


def deadline(ms: int) -> Callable[[F], F]:
    """Give a method a default deadline; a caller's own, shorter one still wins."""
    if isinstance(ms, bool) or not isinstance(ms, int) or ms <= 0:
        raise ValueError(f"deadline: expected a positive number of milliseconds, got {ms!r}")

    def mark(fn: F) -> F:
        setattr(fn, _DEADLINE_MS, ms)
        return fn

    return mark


class CallTypeError(TypeError):
    """A call's arguments (or a result) do not match the interface's hints."""


@dataclass(frozen=True)
class MethodSpec:
    name: str
    params: tuple[tuple[str, Any], ...]
    result: Any
    idempotent: bool
    deadline_ms: int | None
    is_async: bool
    interface: str = ""  # the interface's name, for messages
    # Defaults of the trailing parameters that have one (name -> value).
    defaults: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def qualname(self) -> str:
        return f"{self.interface}.{self.name}" if self.interface else self.name

    @functools.cached_property
    def codec(self) -> MethodCodec:
        return MethodCodec(self)


@dataclass(frozen=True)
class InterfaceSpec:
    name: str
    cls: type
    methods: dict[str, MethodSpec] = field(compare=False)


class MethodCodec:
    """A method's arguments and result as msgpack, with the decoders compiled once."""

    __slots__ = ("spec", "_names", "_required", "_args_decode", "_result_decode")

    def __init__(self, spec: MethodSpec) -> None:
        self.spec = spec
        self._names = tuple(name for name, _ in spec.params)
        self._required = len(self._names) - len(spec.defaults)
        fields = [
            (name, hint, spec.defaults[name]) if name in spec.defaults else (name, hint)
            for name, hint in spec.params
        ]
        args_type = msgspec.defstruct(
            f"{spec.qualname}.args", fields, array_like=True, forbid_unknown_fields=True
        )
        self._args_decode = msgspec.msgpack.Decoder(args_type).decode
        self._result_decode = msgspec.msgpack.Decoder(spec.result).decode

    def encode_args(self, args: tuple, kwargs: dict) -> bytes:
        """The call's arguments as bytes; raises CallTypeError, here on the caller, if any
        argument would not pass the callee's decoder."""
        if kwargs or len(args) < self._required or len(args) > len(self._names):
            args = self._bind(args, kwargs)
        try:
            data = _ENCODER.encode(args)
        except (TypeError, OverflowError, msgspec.EncodeError) as e:
            raise self._unencodable(args, e) from None
        try:
            self._args_decode(data)
        except msgspec.ValidationError as e:
            raise self._refusal(e) from None
        return data

    def check_args(self, args: tuple, kwargs: dict) -> None:
        """Validate a call's arguments as `encode_args` does, keeping nothing."""
        self.encode_args(args, kwargs)

    def decode_args(self, data: bytes) -> tuple[tuple, dict]:
        """The callee's side: bytes -> (args, kwargs), validated against the hints."""
        try:
            decoded = self._args_decode(data)
        except msgspec.ValidationError as e:
            raise self._refusal(e) from None
        except msgspec.DecodeError as e:
            raise CallTypeError(f"{self.spec.qualname}: malformed arguments: {e}") from None
        return msgspec.structs.astuple(decoded), {}

    def encode_result(self, value: Any) -> bytes:
        try:
            return _ENCODER.encode(value)
        except (TypeError, OverflowError, msgspec.EncodeError) as e:
            raise CallTypeError(
                f"{self.spec.qualname}: the result cannot be sent "
                f"(expected {type_name(self.spec.result)}): {e}"
            ) from None

    def decode_result(self, data: bytes) -> Any:
        try:
            return self._result_decode(data)
        except (msgspec.ValidationError, msgspec.DecodeError) as e:
            raise CallTypeError(
                f"{self.spec.qualname}: the result does not match its hint "
                f"{type_name(self.spec.result)}: {e}"
            ) from None

    def _bind(self, args: tuple, kwargs: dict) -> tuple:
        """Keyword and missing arguments to one positional tuple, as Python would bind them."""
        qualname = self.spec.qualname
        if len(args) > len(self._names):
            raise CallTypeError(
                f"{qualname}() takes {len(self._names)} arguments, {len(args)} were given"
            )
        bound = list(args)
        for name in self._names[len(args):]:
            if name in kwargs:
                bound.append(kwargs[name])
            elif name in self.spec.defaults:
                bound.append(self.spec.defaults[name])
            else:
                raise CallTypeError(f"{qualname}(): missing argument {name!r}")
        for name in kwargs:
            if name not in self._names:
                raise CallTypeError(f"{qualname}(): unexpected argument {name!r}")
            if self._names.index(name) < len(args):
                raise CallTypeError(f"{qualname}(): argument {name!r} given twice")
        return tuple(bound)

    def _refusal(self, error: msgspec.ValidationError) -> CallTypeError:
        message = str(error)
        found = _PATH.search(message)
        if found is None:  # the array itself (a peer sent too few or too many)
            return CallTypeError(f"{self.spec.qualname}: bad arguments: {message}")
        name, hint = self.spec.params[int(found.group(1))]
        where = _PATH.sub(lambda m: f"`{self._names[int(m.group(1))]}{m.group(2)}`", message)
        return CallTypeError(
            f"{self.spec.qualname}: parameter {name!r} expects {type_name(hint)}: {where}"
        )

    def _unencodable(self, args: tuple, error: Exception) -> CallTypeError:
        for (name, hint), value in zip(self.spec.params, args, strict=True):
            try:
                _ENCODER.encode(value)
            except (TypeError, OverflowError, msgspec.EncodeError) as e:
                return CallTypeError(
                    f"{self.spec.qualname}: parameter {name!r} expects {type_name(hint)}, "
                    f"got {type(value).__name__}: {e}"
                )
        return CallTypeError(f"{self.spec.qualname}: arguments cannot be sent: {error}")


@functools.cache
def interface_spec(cls: type) -> InterfaceSpec:
    """Read an interface's methods from its hints, once; TypeError for what cannot travel."""
    if not isinstance(cls, type) or not isinstance(cls, ABCMeta):
        raise TypeError(f"{cls!r} is not an interface: expected a typing.Protocol or an ABC")
    methods: dict[str, MethodSpec] = {}
    for klass in reversed(_interface_classes(cls)):
        for name in klass.__dict__.get("__annotations__", {}):
            if not name.startswith("_"):
                raise TypeError(
                    f"{cls.__name__}.{name}: an interface carries only async methods, "
                    "found an attribute"
                )
        for name, member in vars(klass).items():
            if name.startswith("_"):
                continue
            if not inspect.isfunction(member):
                raise TypeError(
                    f"{cls.__name__}.{name}: an interface carries only async methods, "
                    f"found {type(member).__name__}"
                )
            methods[name] = _method_spec(cls.__name__, member)
    if not methods:
        raise TypeError(f"{cls.__name__}: an interface needs at least one public async method")
    return InterfaceSpec(cls.__name__, cls, methods)


def _interface_classes(cls: type) -> list[type]:
    """The classes whose methods make the interface: its protocols, or its abstract bases."""
    skip = (object, typing.Protocol, typing.Generic, ABC)  # type: ignore[comparison-overlap]
    if cls.__dict__.get("_is_protocol", False):
        return [k for k in cls.__mro__ if k.__dict__.get("_is_protocol", False) and k not in skip]
    return [k for k in cls.__mro__ if isinstance(k, ABCMeta) and k not in skip]


def _method_spec(interface: str, fn: Callable[..., Any]) -> MethodSpec:
    qualname = f"{interface}.{fn.__name__}"
    if not inspect.iscoroutinefunction(fn):
        raise TypeError(f"{qualname}: interface methods must be `async def`")
    try:
        hints = typing.get_type_hints(fn)
    except Exception as e:  # a forward reference that does not resolve
        raise TypeError(f"{qualname}: cannot resolve its type hints: {e}") from None
    params: list[tuple[str, Any]] = []
    defaults: dict[str, Any] = {}
    for i, p in enumerate(inspect.signature(fn).parameters.values()):
        if i == 0:
            continue  # self
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            raise TypeError(f"{qualname}: *args and **kwargs cannot travel; name each parameter")
        if p.name not in hints:
            raise TypeError(f"{qualname}: parameter {p.name!r} has no type hint")
        check_type(hints[p.name], f"{qualname}: parameter {p.name!r}")
        if p.default is not p.empty:
            defaults[p.name] = p.default
        elif defaults:
            raise TypeError(f"{qualname}: parameter {p.name!r} without a default follows one with")
        params.append((p.name, hints[p.name]))
    if "return" not in hints:
        raise TypeError(f"{qualname}: the result has no type hint (write `-> None` for none)")
    check_type(hints["return"], f"{qualname}: result")
    return MethodSpec(
        name=fn.__name__,
        params=tuple(params),
        result=hints["return"],
        idempotent=getattr(fn, _IDEMPOTENT, False),
        deadline_ms=getattr(fn, _DEADLINE_MS, None),
        is_async=True,
        interface=interface,
        defaults=defaults,
    )


def check_type(hint: Any, where: str, _seen: frozenset[type] = frozenset()) -> None:
    """Refuse a hint outside the supported set, naming where it was found."""
    if hint is None or hint in _SCALARS:
        return
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is list and len(args) == 1:
        check_type(args[0], where, _seen)
    elif origin is dict and len(args) == 2:
        if args[0] is not str:
            raise TypeError(f"{where}: {type_name(hint)}: dict keys must be str")
        check_type(args[1], where, _seen)
    elif hint is tuple or origin is tuple:
        for arg in args:
            if arg is not Ellipsis:
                check_type(arg, where, _seen)
    elif origin in (typing.Union, types.UnionType):
        rest = [a for a in args if a is not type(None)]
        if len(rest) != 1 or len(args) != 2:
            raise TypeError(f"{where}: {type_name(hint)}: only `T | None` unions are supported")
        check_type(rest[0], where, _seen)
    elif isinstance(hint, type) and issubclass(hint, enum.Enum):
        return
    elif isinstance(hint, type) and (
        dataclasses.is_dataclass(hint) or issubclass(hint, msgspec.Struct)
    ):
        if hint in _seen:
            return  # recursive types are fine; each is checked once
        for name, field_hint in typing.get_type_hints(hint).items():
            if name.startswith("_") or typing.get_origin(field_hint) is typing.ClassVar:
                continue
            check_type(field_hint, f"{where}: field {hint.__name__}.{name}", _seen | {hint})
    else:
        raise TypeError(
            f"{where}: unsupported type {type_name(hint)}; use int, float, str, bytes, bool, "
            "None, list[T], dict[str, T], tuple, T | None, a dataclass, a msgspec.Struct or an enum"
        )


def type_name(hint: Any) -> str:
    """A hint as one writes it: `list[int]`, `Item | None`."""
    if hint is None or hint is type(None):
        return "None"
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(type_name(a) for a in args)
    if origin is not None:
        inner = ", ".join("..." if a is Ellipsis else type_name(a) for a in args)
        return f"{getattr(origin, '__name__', str(origin))}[{inner}]"
    return getattr(hint, "__name__", repr(hint))
