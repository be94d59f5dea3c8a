"""A component served over gRPC, with a .proto written from its interface's type hints, so that a
client in any language can call it with the stubs its own protoc generates.

    proto_for(interface_spec(Inventory))        # the .proto text, for non-Python clients
    serve(server, interface_spec(Inventory), impl)   # on a grpc.aio.Server, before start()

One model, two renderings. `proto_schema(spec)` turns the hints into a small model of the
file (messages, enums, a service); `ProtoSchema.text()` writes it as proto3 source and
`ProtoSchema.descriptor()` as the FileDescriptorProto that protoc would make of that source, from
which the server builds its message classes at run time (protobuf's message_factory), with no
protoc and no generated Python. The test compiles the text with protoc and checks that the two
agree, and calls the server with stubs generated from it.

The mapping, in package `shoal.app.<interface in snake case>`:

    service Inventory { rpc Reserve(ReserveRequest) returns (ReserveResponse); }
    message ReserveRequest  { <one field per parameter, in order, numbered from 1> }
    message ReserveResponse { <the result as field `value`; no field for None> }

    int -> int64, float -> double, str -> string, bytes -> bytes, bool -> bool
    list[T], tuple[T, ...] -> repeated T        dict[str, T] -> map<string, T>
    T | None -> optional T                      tuple[A, B] -> a message with item_0, item_1
    dataclass, msgspec.Struct -> a message of the same name, a field per attribute
    ProtoEnum -> enum NAME { NAME_UNSPECIFIED = 0; NAME_<MEMBER> = 1; ... } in definition order
    a parameter hinted None -> no field

protobuf cannot nest containers (a repeated repeated, a map of lists, an optional list), so such
a type is wrapped in a message with one field `value`, named after what it holds
(`Int64List`, `ItemMap`, `OptionalString`).

A request arrives as a protobuf message and becomes Python values through the same hints, then
the interface's own codec validates them (`MethodCodec.decode_args`), so a gRPC caller is held
to exactly the rules a Shoal caller is. What protobuf cannot say is checked on the way in: a
message-typed parameter or field that is not optional but is absent, and an enum left at
UNSPECIFIED or set to a number it does not have. Each refusal is INVALID_ARGUMENT with a message
naming the method and the field's path (`Shop.place: order.items[0].color: ...`). An
exception from the implementation is UNKNOWN with its type and message; a method's default
deadline bounds the call beside the client's own."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import enum
import re
import types
import typing
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Union

import grpc
import msgspec
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from .interface import CallTypeError, InterfaceSpec, MethodSpec, type_name
from .observe import Observer

_SCALARS = {int: "int64", float: "double", str: "string", bytes: "bytes", bool: "bool"}
_F = descriptor_pb2.FieldDescriptorProto
_SCALAR_TYPES = {
    "int64": _F.TYPE_INT64, "double": _F.TYPE_DOUBLE, "string": _F.TYPE_STRING,
    "bytes": _F.TYPE_BYTES, "bool": _F.TYPE_BOOL,
}  # fmt: skip
_ENCODER = msgspec.msgpack.Encoder()


class BadRequest(ValueError):
    """A gRPC request that the interface's hints refuse; the message names the field."""


# -- the model: one shape per hint ----------------------------------------------------------


@dataclass(eq=False)
class Scalar:
    proto: str  # int64, double, string, bytes, bool


@dataclass(eq=False)
class ProtoEnum:
    name: str
    values: tuple[Any, ...]  # the Python members' values, in order; proto numbers from 1
    proto_names: tuple[str, ...]

    def number(self, member: enum.Enum) -> int:
        return self.values.index(member.value) + 1


@dataclass(eq=False)
class ProtoMessage:
    """A dataclass, a Struct or a fixed tuple: Python values as dicts (or lists, for tuples and
    array-like Structs), keyed as msgspec's builtins are."""

    name: str
    fields: list[tuple[str, Any, Shape]] = field(default_factory=list)  # (proto name, key, shape)
    as_list: bool = False


@dataclass(eq=False)
class Wrapper:
    """A message with one field `value`: how protobuf nests containers."""

    name: str
    inner: Shape


@dataclass(eq=False)
class Repeated:
    elem: Shape  # Scalar, ProtoEnum, ProtoMessage or Wrapper


@dataclass(eq=False)
class MapOf:
    value: Shape  # Scalar, ProtoEnum, ProtoMessage or Wrapper


@dataclass(eq=False)
class Maybe:
    inner: Shape  # Scalar, ProtoEnum, ProtoMessage or Wrapper


@dataclass(eq=False)
class Nothing:
    """A parameter hinted None: always None, no field."""


Shape = Union[Scalar, ProtoEnum, ProtoMessage, Wrapper, Repeated, MapOf, Maybe, Nothing]  # noqa: UP007


@dataclass
class ProtoMethod:
    name: str  # the Python method
    rpc: str  # CamelCase, as gRPC services name them
    request: ProtoMessage
    response: ProtoMessage


@dataclass
class ProtoSchema:
    package: str
    service: str
    methods: list[ProtoMethod]
    types: dict[str, ProtoMessage | ProtoEnum | Wrapper]  # every named type, requests and responses too

    @property
    def file_name(self) -> str:
        return self.package.replace(".", "/") + ".proto"

    def text(self) -> str:
        """The proto3 source."""
        out = [
            f"// Written by Shoal from the type hints of {self.service}; do not edit.",
            'syntax = "proto3";',
            "",
            f"package {self.package};",
            "",
            f"service {self.service} {{",
        ]
        out += [f"  rpc {m.rpc}({m.request.name}) returns ({m.response.name});" for m in self.methods]
        out.append("}")
        for t in self.types.values():
            out.append("")
            if isinstance(t, ProtoEnum):
                out.append(f"enum {t.name} {{")
                out += [f"  {name} = {i};" for i, name in enumerate(t.proto_names)]
            else:
                out.append(f"message {t.name} {{")
                for number, (name, shape) in enumerate(_message_fields(t), start=1):
                    out.append(f"  {_declaration(shape)} {name} = {number};")
            out.append("}")
        return "\n".join(out) + "\n"

    def descriptor(self) -> descriptor_pb2.FileDescriptorProto:
        """What protoc makes of `text()`."""
        fdp = descriptor_pb2.FileDescriptorProto(
            name=self.file_name, package=self.package, syntax="proto3")
        service = fdp.service.add(name=self.service)
        for m in self.methods:
            service.method.add(name=m.rpc, input_type=self._ref(m.request.name),
                               output_type=self._ref(m.response.name))
        for t in self.types.values():
            if isinstance(t, ProtoEnum):
                e = fdp.enum_type.add(name=t.name)
                for i, name in enumerate(t.proto_names):
                    e.value.add(name=name, number=i)
                continue
            msg = fdp.message_type.add(name=t.name)
            for number, (name, shape) in enumerate(_message_fields(t), start=1):
                self._field(msg, t.name, name, number, shape)
        return fdp

    def _ref(self, name: str) -> str:
        return f".{self.package}.{name}"

    def _field(self, msg: descriptor_pb2.DescriptorProto, owner: str, name: str, number: int,
               shape: Shape) -> None:
        f = msg.field.add(name=name, number=number, json_name=_json_name(name),
                          label=_F.LABEL_OPTIONAL)
        if isinstance(shape, Repeated):
            f.label = _F.LABEL_REPEATED
            shape = shape.elem
        elif isinstance(shape, MapOf):
            entry = msg.nested_type.add(name=_map_entry(name))
            entry.options.map_entry = True
            entry.field.add(name="key", number=1, json_name="key", label=_F.LABEL_OPTIONAL,
                            type=_F.TYPE_STRING)
            value = entry.field.add(name="value", number=2, json_name="value",
                                    label=_F.LABEL_OPTIONAL)
            self._type(value, shape.value)
            f.label, f.type, f.type_name = (
                _F.LABEL_REPEATED, _F.TYPE_MESSAGE, f"{self._ref(owner)}.{entry.name}")
            return
        elif isinstance(shape, Maybe):
            # proto3 `optional`: a synthetic oneof of its own, as protoc declares it.
            f.proto3_optional = True
            f.oneof_index = len(msg.oneof_decl)
            msg.oneof_decl.add(name=f"_{name}")
            shape = shape.inner
        self._type(f, shape)

    def _type(self, f: descriptor_pb2.FieldDescriptorProto, shape: Shape) -> None:
        if isinstance(shape, Scalar):
            f.type = _SCALAR_TYPES[shape.proto]
        elif isinstance(shape, ProtoEnum):
            f.type, f.type_name = _F.TYPE_ENUM, self._ref(shape.name)
        else:
            assert isinstance(shape, ProtoMessage | Wrapper), shape
            f.type, f.type_name = _F.TYPE_MESSAGE, self._ref(shape.name)


def _message_fields(t: ProtoMessage | Wrapper) -> list[tuple[str, Shape]]:
    """A message's fields in order; a Nothing has no field (and takes no number)."""
    if isinstance(t, Wrapper):
        return [("value", t.inner)]
    return [(name, shape) for name, _, shape in t.fields if not isinstance(shape, Nothing)]


def _declaration(shape: Shape) -> str:
    if isinstance(shape, Repeated):
        return f"repeated {_type_ref(shape.elem)}"
    if isinstance(shape, MapOf):
        return f"map<string, {_type_ref(shape.value)}>"
    if isinstance(shape, Maybe):
        return f"optional {_type_ref(shape.inner)}"
    return _type_ref(shape)


def _type_ref(shape: Shape) -> str:
    if isinstance(shape, Scalar):
        return shape.proto
    assert isinstance(shape, ProtoEnum | ProtoMessage | Wrapper), shape
    return shape.name


def _json_name(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(p[:1].upper() + p[1:] for p in rest)


def _map_entry(name: str) -> str:
    return "".join(p[:1].upper() + p[1:] for p in name.split("_")) + "Entry"


def _camel(name: str) -> str:
    return "".join(p[:1].upper() + p[1:] for p in name.split("_") if p)


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


class _Builder:
    """Hints to shapes, naming every message and enum once."""

    def __init__(self, interface: str) -> None:
        self.interface = interface
        self.types: dict[str, ProtoMessage | ProtoEnum | Wrapper] = {}
        self._by_hint: dict[Any, ProtoMessage | ProtoEnum] = {}

    def method(self, spec: MethodSpec) -> ProtoMethod:
        rpc = _camel(spec.name)
        request = self._claim(ProtoMessage(f"{rpc}Request"), spec)
        request.fields = [(name, name, self.field(hint)) for name, hint in spec.params]
        response = self._claim(ProtoMessage(f"{rpc}Response"), spec)
        if spec.result is not type(None):
            response.fields = [("value", "value", self.field(spec.result))]
        return ProtoMethod(spec.name, rpc, request, response)

    def field(self, hint: Any) -> Shape:
        """The shape of a field of this type."""
        origin, args = typing.get_origin(hint), typing.get_args(hint)
        if hint is None or hint is type(None):
            return Nothing()
        if origin is list or (origin is tuple and len(args) == 2 and args[1] is Ellipsis):
            return Repeated(self._elem(self.field(args[0])))
        if origin is dict:
            return MapOf(self._elem(self.field(args[1])))
        if origin in (Union, types.UnionType):
            (inner,) = [a for a in args if a is not type(None)]
            return Maybe(self._elem(self.field(inner)))
        if hint in _SCALARS:
            return Scalar(_SCALARS[hint])
        if hint is tuple or origin is tuple:
            if not args or args == ((),):
                raise TypeError(
                    f"{self.interface}: {type_name(hint)} has no protobuf type; "
                    "give its item types, as tuple[int, str] or tuple[int, ...]")
            return self._tuple(hint, args)
        if isinstance(hint, type) and issubclass(hint, enum.Enum):
            return self._enum(hint)
        assert isinstance(hint, type), hint  # interface_spec admitted nothing else
        return self._record(hint)

    def _elem(self, shape: Shape) -> Shape:
        """A shape that can be an element, a map value or optional; containers get wrapped."""
        if isinstance(shape, Repeated | MapOf | Maybe):
            name = _label(shape)
            existing = self.types.get(name)
            if isinstance(existing, Wrapper):
                return existing
            return self._claim(Wrapper(name, shape), name)
        if isinstance(shape, Nothing):
            raise TypeError(f"{self.interface}: None cannot be an element of a container")
        return shape

    def _enum(self, cls: type[enum.Enum]) -> ProtoEnum:
        if cls in self._by_hint:
            return typing.cast(ProtoEnum, self._by_hint[cls])
        prefix = _snake(cls.__name__).upper()
        names = (f"{prefix}_UNSPECIFIED", *(f"{prefix}_{m.name.upper()}" for m in cls))
        shape = self._claim(ProtoEnum(cls.__name__, tuple(m.value for m in cls), names), cls)
        self._by_hint[cls] = shape
        return shape

    def _record(self, cls: type) -> ProtoMessage:
        if cls in self._by_hint:
            return typing.cast(ProtoMessage, self._by_hint[cls])
        shape = self._claim(ProtoMessage(cls.__name__), cls)
        self._by_hint[cls] = shape  # before the fields: a record may refer to itself
        hints = typing.get_type_hints(cls)
        if dataclasses.is_dataclass(cls):
            shape.fields = [(f.name, f.name, self.field(hints[f.name]))
                            for f in dataclasses.fields(cls)]
        else:
            config = cls.__struct_config__  # type: ignore[attr-defined]
            shape.as_list = config.array_like
            shape.fields = [(f.name, f.encode_name, self.field(hints[f.name]))
                            for f in msgspec.structs.fields(cls)]
        return shape

    def _tuple(self, hint: Any, args: tuple[Any, ...]) -> ProtoMessage:
        if hint in self._by_hint:
            return typing.cast(ProtoMessage, self._by_hint[hint])
        items = [self.field(a) for a in args]
        name = "".join(_label(s) for s in items) + "Tuple"
        shape = self._claim(ProtoMessage(name, as_list=True), hint)
        shape.fields = [(f"item_{i}", i, s) for i, s in enumerate(items)]
        self._by_hint[hint] = shape
        return shape

    def _claim(self, t: Any, owner: Any) -> Any:
        if t.name in self.types:
            raise TypeError(
                f"{self.interface}: two types would both be the protobuf message {t.name!r} "
                f"({owner!r}); rename one")
        self.types[t.name] = t
        return t


def _label(shape: Shape) -> str:
    """A readable name for a wrapper: Int64List, ItemMap, OptionalString."""
    if isinstance(shape, Scalar):
        return shape.proto.capitalize()
    if isinstance(shape, Repeated):
        return _label(shape.elem) + "List"
    if isinstance(shape, MapOf):
        return _label(shape.value) + "Map"
    if isinstance(shape, Maybe):
        return "Optional" + _label(shape.inner)
    if isinstance(shape, Wrapper):
        return _label(shape.inner)
    assert isinstance(shape, ProtoEnum | ProtoMessage), shape
    return shape.name


def proto_schema(spec: InterfaceSpec) -> ProtoSchema:
    builder = _Builder(spec.name)
    methods = [builder.method(m) for m in spec.methods.values()]
    rpcs = [m.rpc for m in methods]
    if len(set(rpcs)) != len(rpcs):
        raise TypeError(f"{spec.name}: two methods map to one gRPC method name ({rpcs})")
    # Requests and responses first, in method order, then the types they use.
    ordered = {t.name: t for m in methods for t in (m.request, m.response)}
    types = ordered | {k: v for k, v in builder.types.items() if k not in ordered}
    return ProtoSchema(f"shoal.app.{_snake(spec.name)}", spec.name, methods, types)


def proto_for(spec: InterfaceSpec) -> str:
    """The .proto source for an interface."""
    return proto_schema(spec).text()


# -- values, guided by the shapes: protobuf -> msgspec builtins (for the method's codec to
# decode, as it decodes Shoal's calls), Python objects -> protobuf --------------------------


def read_field(msg: Any, name: str, shape: Shape, path: str) -> Any:
    if isinstance(shape, Scalar):
        return getattr(msg, name)
    if isinstance(shape, Nothing):
        return None
    if isinstance(shape, Maybe):
        return read_field(msg, name, shape.inner, path) if msg.HasField(name) else None
    if isinstance(shape, Repeated):
        return [_read_value(v, shape.elem, f"{path}[{i}]")
                for i, v in enumerate(getattr(msg, name))]
    if isinstance(shape, MapOf):
        return {k: _read_value(v, shape.value, f"{path}[{k!r}]")
                for k, v in getattr(msg, name).items()}
    if isinstance(shape, ProtoMessage | Wrapper) and not msg.HasField(name):
        raise BadRequest(f"{path}: required, not set")
    return _read_value(getattr(msg, name), shape, path)


def _read_value(value: Any, shape: Shape, path: str) -> Any:
    if isinstance(shape, Scalar):
        return value
    if isinstance(shape, ProtoEnum):
        if not 0 < value <= len(shape.values):
            raise BadRequest(f"{path}: {shape.name} has no value {value}"
                             + (" (UNSPECIFIED)" if value == 0 else ""))
        return shape.values[value - 1]
    if isinstance(shape, Wrapper):
        return read_field(value, "value", shape.inner, path)
    assert isinstance(shape, ProtoMessage), shape
    items = [(key, read_field(value, name, s, f"{path}.{name}")) for name, key, s in shape.fields]
    return [v for _, v in items] if shape.as_list else dict(items)


def write_field(msg: Any, name: str, shape: Shape, value: Any) -> None:
    if isinstance(shape, Scalar):
        setattr(msg, name, value)
    elif isinstance(shape, ProtoEnum):
        setattr(msg, name, shape.number(value))
    elif isinstance(shape, Maybe):
        if value is not None:
            write_field(msg, name, shape.inner, value)
    elif isinstance(shape, Repeated):
        out = getattr(msg, name)
        for v in value:
            if isinstance(shape.elem, Scalar | ProtoEnum):
                out.append(_scalar(shape.elem, v))
            else:
                _write_message(out.add(), shape.elem, v)
    elif isinstance(shape, MapOf):
        out = getattr(msg, name)
        for k, v in value.items():
            if isinstance(shape.value, Scalar | ProtoEnum):
                out[k] = _scalar(shape.value, v)
            else:
                _write_message(out[k], shape.value, v)
    elif isinstance(shape, ProtoMessage | Wrapper):
        _write_message(getattr(msg, name), shape, value)


def _scalar(shape: Scalar | ProtoEnum, value: Any) -> Any:
    return shape.number(value) if isinstance(shape, ProtoEnum) else value


def _write_message(msg: Any, shape: Shape, value: Any) -> None:
    """From the Python object itself (a record's attributes, a tuple's items), so that a
    Struct's defaults, renames and array-likeness do not matter on the way out."""
    msg.SetInParent()  # present even when every field is at its default
    if isinstance(shape, Wrapper):
        write_field(msg, "value", shape.inner, value)
        return
    assert isinstance(shape, ProtoMessage), shape
    for name, key, s in shape.fields:
        write_field(msg, name, s, value[key] if isinstance(key, int) else getattr(value, name))


# -- serving ---------------------------------------------------------------------------------


class _Undecodable:
    def __init__(self, error: str) -> None:
        self.error = error


def message_classes(schema: ProtoSchema) -> dict[str, type]:
    """The schema's message classes, built from its descriptor in a pool of their own."""
    pool = descriptor_pool.DescriptorPool()
    pool.Add(schema.descriptor())
    return {
        name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{schema.package}.{name}"))
        for name, t in schema.types.items()
        if not isinstance(t, ProtoEnum)
    }


def serve(
    server: grpc.aio.Server,
    spec: InterfaceSpec,
    impl: Any,
    *,
    observer: Observer | None = None,
    authorize: Callable[[Mapping[str, str]], None] | None = None,
) -> ProtoSchema:
    """Serve `impl` as `spec`'s gRPC service on `server` (call before `server.start()`).

    `authorize(metadata)` runs first on every call when given, and a PermissionError it raises
    is UNAUTHENTICATED; the runner passes its check there when auth is on."""
    schema = proto_schema(spec)
    classes = message_classes(schema)
    handlers = {
        m.rpc: _handler(spec, spec.methods[m.name], m, classes, getattr(impl, m.name),
                        observer, authorize)
        for m in schema.methods
    }
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(f"{schema.package}.{schema.service}", handlers),))
    return schema


def _handler(
    spec: InterfaceSpec,
    method: MethodSpec,
    pm: ProtoMethod,
    classes: dict[str, type],
    fn: Callable[..., Awaitable[Any]],
    observer: Observer | None,
    authorize: Callable[[Mapping[str, str]], None] | None,
) -> grpc.RpcMethodHandler:
    request_cls, response_cls = classes[pm.request.name], classes[pm.response.name]
    codec = method.codec
    deadline_s = method.deadline_ms / 1000 if method.deadline_ms else None
    qualname = method.qualname

    def decode(data: bytes) -> Any:
        try:
            return request_cls.FromString(data)  # type: ignore[attr-defined]
        except Exception as e:  # noqa: BLE001 - DecodeError and friends
            return _Undecodable(str(e))

    async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
        metadata = {k: v for k, v in context.invocation_metadata() or ()
                    if isinstance(v, str)}
        if authorize is not None:
            try:
                authorize(metadata)
            except PermissionError as e:
                await context.abort(grpc.StatusCode.UNAUTHENTICATED, f"{qualname}: {e}")
        if isinstance(request, _Undecodable):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                f"{qualname}: cannot parse {pm.request.name}: {request.error}")
        try:
            values = [read_field(request, name, shape, name)
                      for name, _, shape in pm.request.fields]
            args, kwargs = codec.decode_args(_ENCODER.encode(values))
        except (BadRequest, CallTypeError) as e:
            text = str(e)
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                text if text.startswith(qualname) else f"{qualname}: {text}")
        observed = observer.server_call(spec.name, method.name, metadata) if observer else None
        with observed or contextlib.nullcontext():
            try:
                async with asyncio.timeout(deadline_s):
                    result = await fn(*args, **kwargs)
                response = response_cls()
                if pm.response.fields:
                    write_field(response, "value", pm.response.fields[0][2], result)
                return response
            except TimeoutError:
                code = grpc.StatusCode.DEADLINE_EXCEEDED
                text = f"{qualname}: its deadline of {method.deadline_ms} ms passed"
            except Exception as e:  # noqa: BLE001 - every failure reaches the client as a status
                code, text = grpc.StatusCode.UNKNOWN, f"{qualname}: {type(e).__name__}: {e}"
            if observed is not None:
                observed.fail(text)
            await context.abort(code, text)

    return grpc.unary_unary_rpc_method_handler(
        unary, request_deserializer=decode,
        response_serializer=lambda m: m.SerializeToString())
