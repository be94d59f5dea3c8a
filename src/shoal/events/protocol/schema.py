"""Declarative message schemas, and the one encoder/decoder that interprets them.

Kafka defines its messages as data (clients/src/main/resources/common/message/*.json) and
generates a class per message from it; Shoal does the same thing without a generation step.
Each message and each of its nested structs is a dataclass whose fields carry their Kafka
declaration in `f(...)`: the wire type, the versions the field exists in, the versions in
which it may be null, and for flexible versions whether it travels as a tagged field and under
which tag. The per-API modules (metadata.py, produce.py, ...) are that transcription, field
for field and in the JSON's order, and nothing else; this module is the only code that reads
or writes a message body, so a fix here is a fix for every API at every version.

What the declaration means on the wire, version by version, is Kafka's rule:

- A field is written only in its `versions`. Writing a version that lacks a field whose value
  differs from its default is refused (`LocalProtocolError`), unless the field is
  `ignorable`, as Kafka's generated code does; decoding such a version leaves the default.
- In a message's flexible versions strings, bytes and arrays use their compact encodings and
  every struct ends with a tagged-field section: a count, then (tag, size, payload) in
  ascending tag order. A tagged field is written only when it differs from its default, and
  an unknown tag is skipped by its size (it is a newer peer's field). A field may opt out of
  compact encoding (`flexible="none"`, the request header's client id does).
- `nullable` versions admit None (a -1 length, or 0 in compact form); elsewhere None is
  refused on writing and a null on the wire is a malformed message.

Decoding is bounded by the input: `Reader` refuses a count whose elements could not fit in
the bytes left at their smallest encoding, which `min_size` computes per struct and version,
and charges each element to a per-message budget. Plans (which fields a struct has at a
version) are computed once per (struct, version, flexible) and cached, so the interpreter's
per-message work is a loop over prepared tuples.

Values are typed: each field's Python annotation says what it holds (int, bool, float, str,
bytes, uuid.UUID, a nested struct, or a list of them, `| None` where some version is
nullable), and dataclass equality makes round-trips checkable.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

from .exceptions import LocalProtocolError
from .primitives import ZERO_UUID, Reader, Writer

MAX_VERSION = 0x7FFF
_KAFKA = "kafka"  # the dataclass field metadata key holding a FieldSpec's arguments


@dataclass(frozen=True, slots=True)
class Versions:
    """An inclusive range of versions; `lo > hi` is the empty range ("none")."""

    lo: int
    hi: int

    def __contains__(self, version: object) -> bool:
        return isinstance(version, int) and self.lo <= version <= self.hi

    @property
    def empty(self) -> bool:
        return self.lo > self.hi

    @classmethod
    def parse(cls, text: str) -> Versions:
        """Kafka's notation: "none", "3", "3+", "0-5"."""
        text = text.strip()
        if text == "none":
            return NONE
        if text.endswith("+"):
            return cls(int(text[:-1]), MAX_VERSION)
        if "-" in text:
            lo, hi = text.split("-")
            return cls(int(lo), int(hi))
        return cls(int(text), int(text))

    def __str__(self) -> str:
        if self.empty:
            return "none"
        if self.hi == MAX_VERSION:
            return f"{self.lo}+"
        return f"{self.lo}" if self.lo == self.hi else f"{self.lo}-{self.hi}"


NONE = Versions(0, -1)
ALL = Versions(0, MAX_VERSION)


def _versions(v: str | Versions | None) -> Versions:
    if v is None:
        return NONE
    return v if isinstance(v, Versions) else Versions.parse(v)


# -- wire types -------------------------------------------------------------------------------


class KafkaType:
    """A wire type. `compact` is whether the message version is flexible (for this field)."""

    name: str = "?"

    def min_size(self, version: int, compact: bool) -> int:
        raise NotImplementedError

    def read(self, r: Reader, version: int, compact: bool, nullable: bool) -> Any:
        raise NotImplementedError

    def write(self, w: Writer, value: Any, version: int, compact: bool, nullable: bool) -> None:
        raise NotImplementedError

    def default(self) -> Any:
        """The value of a field of this type whose declaration names no default."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return self.name


class _Fixed(KafkaType):
    def __init__(self, name: str, size: int, default: Any,
                 read: Callable[[Reader], Any], write: Callable[[Writer, Any], None]) -> None:
        self.name, self._size, self._default = name, size, default
        self._read, self._write = read, write

    def min_size(self, version: int, compact: bool) -> int:
        return self._size

    def read(self, r: Reader, version: int, compact: bool, nullable: bool) -> Any:
        return self._read(r)

    def write(self, w: Writer, value: Any, version: int, compact: bool, nullable: bool) -> None:
        self._write(w, value)

    def default(self) -> Any:
        return self._default


INT8 = _Fixed("int8", 1, 0, Reader.int8, Writer.int8)
INT16 = _Fixed("int16", 2, 0, Reader.int16, Writer.int16)
UINT16 = _Fixed("uint16", 2, 0, Reader.uint16, Writer.uint16)
INT32 = _Fixed("int32", 4, 0, Reader.int32, Writer.int32)
UINT32 = _Fixed("uint32", 4, 0, Reader.uint32, Writer.uint32)
INT64 = _Fixed("int64", 8, 0, Reader.int64, Writer.int64)
FLOAT64 = _Fixed("float64", 8, 0.0, Reader.float64, Writer.float64)
BOOL = _Fixed("bool", 1, False, Reader.boolean, Writer.boolean)
UUID = _Fixed("uuid", 16, ZERO_UUID, Reader.uuid_, Writer.uuid_)


class _String(KafkaType):
    name = "string"

    def min_size(self, version: int, compact: bool) -> int:
        return 1 if compact else 2

    def read(self, r: Reader, version: int, compact: bool, nullable: bool) -> Any:
        return r.string(compact, nullable)

    def write(self, w: Writer, value: Any, version: int, compact: bool, nullable: bool) -> None:
        w.string(value, compact, nullable)

    def default(self) -> Any:
        return ""


class _Bytes(KafkaType):
    def __init__(self, name: str) -> None:
        self.name = name

    def min_size(self, version: int, compact: bool) -> int:
        return 1 if compact else 4

    def read(self, r: Reader, version: int, compact: bool, nullable: bool) -> Any:
        return r.blob(compact, nullable)

    def write(self, w: Writer, value: Any, version: int, compact: bool, nullable: bool) -> None:
        w.blob(value, compact, nullable)

    def default(self) -> Any:
        return None if self.name == "records" else b""  # Kafka's records default to null


STRING = _String()
BYTES = _Bytes("bytes")
RECORDS = _Bytes("records")  # raw record batches; decoded by the records module on demand


class StructType(KafkaType):
    """A nested struct (a Struct dataclass), in or out of an array."""

    def __init__(self, cls: type[Struct]) -> None:
        self.cls = cls
        self.name = cls.__name__

    def min_size(self, version: int, compact: bool) -> int:
        return _plan(self.cls, version, compact).min_size

    def read(self, r: Reader, version: int, compact: bool, nullable: bool) -> Any:
        return read_struct(self.cls, r, version, compact)

    def write(self, w: Writer, value: Any, version: int, compact: bool, nullable: bool) -> None:
        if not isinstance(value, self.cls):
            raise LocalProtocolError(f"{type(value).__name__} given for {self.name}")
        write_struct(value, w, version, compact)

    def default(self) -> Any:
        return self.cls()


class Array(KafkaType):
    """An array of `elem` (a wire type or a Struct class)."""

    def __init__(self, elem: KafkaType | type[Struct]) -> None:
        self.elem = elem if isinstance(elem, KafkaType) else StructType(elem)
        self.name = f"[]{self.elem.name}"

    def min_size(self, version: int, compact: bool) -> int:
        return 1 if compact else 4

    def read(self, r: Reader, version: int, compact: bool, nullable: bool) -> Any:
        n = r.array_length(compact, nullable, self.elem.min_size(version, compact))
        if n is None:
            return None
        read = self.elem.read
        return [read(r, version, compact, False) for _ in range(n)]

    def write(self, w: Writer, value: Any, version: int, compact: bool, nullable: bool) -> None:
        if value is not None and not isinstance(value, (list, tuple)):
            raise LocalProtocolError(f"{type(value).__name__} given for {self.name}")
        w.array_length(None if value is None else len(value), compact, nullable)
        if value:
            write = self.elem.write
            for item in value:
                write(w, item, version, compact, False)

    def default(self) -> Any:
        return []


def _as_type(t: KafkaType | type[Struct]) -> KafkaType:
    return t if isinstance(t, KafkaType) else StructType(t)


# -- declarations -----------------------------------------------------------------------------

_MISSING: Any = object()


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """One field's Kafka declaration, as `f(...)` recorded it on a dataclass field."""

    attr: str
    type: KafkaType
    versions: Versions
    nullable: Versions
    tagged: Versions
    tag: int | None
    ignorable: bool
    flexible: Versions | None  # None: compact exactly when the message version is flexible
    default: Any

    def is_default(self, value: Any) -> bool:
        return bool(value == self.default)


def f(
    type_: KafkaType | type[Struct],
    versions: str,
    *,
    nullable: str | None = None,
    tagged: str | None = None,
    tag: int | None = None,
    default: Any = _MISSING,
    ignorable: bool = False,
    flexible: str | None = None,
) -> Any:
    """Declare a Kafka field on a Struct dataclass (the JSON's keys, one for one).

    `default` is the JSON's default (None for "null"); absent, the type's own default
    (0, false, "", b"", [], the nested struct's defaults, the zero UUID, null records).
    """
    t = _as_type(type_)
    if default is _MISSING:
        default = t.default()
    meta = {_KAFKA: (t, versions, nullable, tagged, tag, ignorable, flexible, default)}
    assert (tag is None) == (tagged is None), "a tagged field needs both tag and tagged"
    if isinstance(default, (list, Struct)):
        proto = default
        return dataclasses.field(default_factory=lambda: _copy_default(proto), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def _copy_default(proto: Any) -> Any:
    return list(proto) if isinstance(proto, list) else type(proto)()


class Struct:
    """Base of every declared struct (a dataclass whose fields are all `f(...)`)."""

    __slots__ = ()


class Message(Struct):
    """A top-level message: a request or response body, or a header."""

    __slots__ = ()
    API_KEY: ClassVar[int] = -1
    VERSIONS: ClassVar[Versions] = NONE  # every version Kafka's JSON defines (schema range)
    FLEXIBLE: ClassVar[Versions] = NONE

    def encode(self, version: int) -> bytes:
        """This message's bytes at `version` (no size prefix, no header)."""
        cls = type(self)
        if version not in cls.VERSIONS:
            raise LocalProtocolError(f"{cls.__name__} has no version {version}")
        w = Writer()
        write_struct(self, w, version, version in cls.FLEXIBLE)
        return w.getvalue()

    @classmethod
    def decode(cls: type[_M], data: bytes | Reader, version: int) -> _M:
        """Parse a whole message at `version`; leftover bytes are malformed input."""
        if version not in cls.VERSIONS:
            raise LocalProtocolError(f"{cls.__name__} has no version {version}")
        r = data if isinstance(data, Reader) else Reader(data)
        value = read_struct(cls, r, version, version in cls.FLEXIBLE)
        r.expect_end(f"{cls.__name__} v{version}")
        return value


class Request(Message):
    __slots__ = ()


class Response(Message):
    __slots__ = ()


_M = TypeVar("_M", bound=Message)


def fields_of(cls: type[Struct]) -> tuple[FieldSpec, ...]:
    """The Kafka fields of a struct class, in declaration (wire) order."""
    cached = _FIELDS.get(cls)
    if cached is not None:
        return cached
    specs = []
    for fd in dataclasses.fields(cls):  # type: ignore[arg-type]
        if _KAFKA not in fd.metadata:
            raise TypeError(f"{cls.__name__}.{fd.name} is not declared with f()")
        t, versions, nullable, tagged, tag, ignorable, flexible, default = fd.metadata[_KAFKA]
        specs.append(FieldSpec(
            fd.name, t, _versions(versions), _versions(nullable), _versions(tagged), tag,
            ignorable, None if flexible is None else _versions(flexible), default,
        ))
    result = tuple(specs)
    _FIELDS[cls] = result
    return result


_FIELDS: dict[type, tuple[FieldSpec, ...]] = {}


# -- the interpreter --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Plan:
    regular: tuple[tuple[str, KafkaType, bool, bool], ...]  # attr, type, nullable, compact
    tagged: dict[int, tuple[str, KafkaType, bool]]          # tag -> attr, type, nullable
    tagged_order: tuple[FieldSpec, ...]                      # ascending tags, for writing
    absent: tuple[FieldSpec, ...]                            # fields this version lacks
    min_size: int


_PLANS: dict[tuple[type, int, bool], _Plan] = {}


def _plan(cls: type[Struct], version: int, flexible: bool) -> _Plan:
    key = (cls, version, flexible)
    plan = _PLANS.get(key)
    if plan is not None:
        return plan
    regular, tagged, absent = [], {}, []
    for spec in fields_of(cls):
        nullable = version in spec.nullable
        if flexible and version in spec.tagged:
            assert spec.tag is not None and spec.tag not in tagged, (cls, spec)
            tagged[spec.tag] = spec
        elif version in spec.versions:
            compact = flexible if spec.flexible is None else version in spec.flexible
            regular.append((spec.attr, spec.type, nullable, compact))
        else:
            absent.append(spec)
    min_size = sum(t.min_size(version, c) for _, t, _, c in regular) + (1 if flexible else 0)
    plan = _Plan(
        tuple(regular),
        {tag: (s.attr, s.type, version in s.nullable) for tag, s in tagged.items()},
        tuple(tagged[t] for t in sorted(tagged)),
        tuple(absent),
        min_size,
    )
    _PLANS[key] = plan
    return plan


_S = TypeVar("_S", bound=Struct)


def read_struct(cls: type[_S], r: Reader, version: int, flexible: bool) -> _S:
    plan = _plan(cls, version, flexible)
    kw: dict[str, Any] = {}
    for attr, t, nullable, compact in plan.regular:
        kw[attr] = t.read(r, version, compact, nullable)
    if flexible:
        count = r.uvarint()  # a plain count: tagged sections have no null
        if 2 * count > r.remaining:  # each needs a tag and a size byte at least
            raise r.fail(f"{count} tagged fields cannot fit in {r.remaining} bytes")
        r.spend(count)
        _read_tags(plan, r, version, kw, count)
    return cls(**kw)


def _read_tags(plan: _Plan, r: Reader, version: int, kw: dict[str, Any], count: int) -> None:
    for _ in range(count):
        tag = r.uvarint()
        size = r.uvarint()
        sub = r.sub(size, "tagged field")
        known = plan.tagged.get(tag)
        if known is None:
            continue  # a newer peer's field: skipped by its size, as Kafka does
        attr, t, nullable = known
        kw[attr] = t.read(sub, version, True, nullable)
        sub.expect_end(f"tagged field {tag}")


def write_struct(value: Struct, w: Writer, version: int, flexible: bool) -> None:
    cls = type(value)
    plan = _plan(cls, version, flexible)
    for spec in plan.absent:
        if not spec.ignorable and not spec.is_default(getattr(value, spec.attr)):
            raise LocalProtocolError(
                f"{cls.__name__}.{spec.attr} is set but version {version} does not carry it"
            )
    for attr, t, nullable, compact in plan.regular:
        t.write(w, getattr(value, attr), version, compact, nullable)
    if flexible:
        present = []
        for spec in plan.tagged_order:
            v = getattr(value, spec.attr)
            if not spec.is_default(v):
                sub = Writer()
                spec.type.write(sub, v, version, True, version in spec.nullable)
                assert spec.tag is not None
                present.append((spec.tag, sub.buf))
        w.uvarint(len(present))
        for tag, payload in present:
            w.uvarint(tag)
            w.uvarint(len(payload))
            w.raw(payload)

