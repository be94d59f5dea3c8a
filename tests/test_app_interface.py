"""shoal.app.interface: specs read from hints, round-trips of every supported type, refusals
on the caller's side that name the method, the parameter and the expected type."""

from __future__ import annotations

import abc
import enum
from dataclasses import dataclass
from typing import Any, Optional, Protocol

import msgspec
import pytest

from shoal.app.interface import (
    CallTypeError,
    MethodCodec,
    deadline,
    idempotent,
    interface_spec,
    type_name,
)


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


@dataclass(frozen=True)
class Item:
    sku: str
    qty: int


class Point(msgspec.Struct, frozen=True):
    x: float
    y: float
    label: str | None = None


@dataclass(frozen=True)
class Order:
    id: int
    items: list[Item]
    where: Point
    tags: dict[str, str]


class Everything(Protocol):
    async def echo_int(self, v: int) -> int: ...
    async def echo_float(self, v: float) -> float: ...
    async def echo_str(self, v: str) -> str: ...
    async def echo_bytes(self, v: bytes) -> bytes: ...
    async def echo_bool(self, v: bool) -> bool: ...
    async def echo_none(self, v: None) -> None: ...
    async def echo_list(self, v: list[int]) -> list[int]: ...
    async def echo_dict(self, v: dict[str, float]) -> dict[str, float]: ...
    async def echo_tuple(self, v: tuple[int, str]) -> tuple[int, str]: ...
    async def echo_vartuple(self, v: tuple[int, ...]) -> tuple[int, ...]: ...
    async def echo_optional(self, v: Optional[int]) -> int | None: ...  # noqa: UP045
    async def echo_dataclass(self, v: Item) -> Item: ...
    async def echo_struct(self, v: Point) -> Point: ...
    async def echo_enum(self, v: Color) -> Color: ...
    async def echo_intenum(self, v: Level) -> Level: ...
    async def echo_nested(self, v: Order) -> Order: ...


ROUND_TRIPS = {
    "echo_int": -(2**40),
    "echo_float": 2.5,
    "echo_str": "héllo",
    "echo_bytes": b"\x00\xff",
    "echo_bool": True,
    "echo_none": None,
    "echo_list": [1, 2, 3],
    "echo_dict": {"a": 1.5},
    "echo_tuple": (7, "x"),
    "echo_vartuple": (1, 2, 3),
    "echo_optional": None,
    "echo_dataclass": Item("sku-1", 3),
    "echo_struct": Point(1.0, 2.0, "p"),
    "echo_enum": Color.BLUE,
    "echo_intenum": Level.HIGH,
    "echo_nested": Order(9, [Item("a", 1)], Point(0.0, 1.0), {"k": "v"}),
}


@pytest.mark.parametrize("method", sorted(ROUND_TRIPS))
def test_every_supported_type_round_trips(method: str) -> None:
    codec = interface_spec(Everything).methods[method].codec
    value = ROUND_TRIPS[method]
    args, kwargs = codec.decode_args(codec.encode_args((value,), {}))
    assert (args, kwargs) == ((value,), {})
    assert type(args[0]) is type(value)
    assert codec.decode_result(codec.encode_result(value)) == value


def test_all_supported_methods_are_in_the_spec() -> None:
    assert set(interface_spec(Everything).methods) == set(ROUND_TRIPS)


class Shop(Protocol):
    @idempotent
    @deadline(250)
    async def stock(self, sku: str) -> int: ...

    @deadline(1000)
    async def place(self, order: Order, note: str | None = None, rush: bool = False) -> int: ...

    async def cancel(self, order_id: int) -> None: ...


def test_spec_reads_params_marks_and_order() -> None:
    spec = interface_spec(Shop)
    assert spec.name == "Shop" and spec.cls is Shop
    assert list(spec.methods) == ["stock", "place", "cancel"]
    stock, place, cancel = spec.methods.values()
    assert stock.params == (("sku", str),) and stock.result is int
    assert stock.idempotent and stock.deadline_ms == 250 and stock.is_async
    assert not place.idempotent and place.deadline_ms == 1000
    assert place.params == (("order", Order), ("note", str | None), ("rush", bool))
    assert place.defaults == {"note": None, "rush": False}
    assert cancel.deadline_ms is None and cancel.result is type(None)
    assert stock.qualname == "Shop.stock"


def test_spec_is_cached() -> None:
    assert interface_spec(Shop) is interface_spec(Shop)
    spec = interface_spec(Shop).methods["stock"]
    assert spec.codec is spec.codec


def test_wrong_type_fails_on_the_callers_side_naming_method_param_and_type() -> None:
    codec = interface_spec(Shop).methods["stock"].codec
    with pytest.raises(CallTypeError, match=r"Shop\.stock: parameter 'sku' expects str") as e:
        codec.encode_args((42,), {})
    assert "got `int`" in str(e.value)
    with pytest.raises(CallTypeError, match=r"Shop\.stock: parameter 'sku' expects str"):
        codec.check_args((b"x",), {})


def test_wrong_type_deep_in_a_dataclass_names_the_path() -> None:
    codec = interface_spec(Shop).methods["place"].codec
    bad = Order(1, [Item("a", "three")], Point(0.0, 0.0), {})  # type: ignore[arg-type]
    with pytest.raises(CallTypeError) as e:
        codec.encode_args((bad,), {})
    message = str(e.value)
    assert message.startswith("Shop.place: parameter 'order' expects Order")
    assert "order.items[0].qty" in message and "Expected `int`, got `str`" in message


def test_bool_is_not_an_int_and_int_is_a_float() -> None:
    ints = interface_spec(Everything).methods["echo_int"].codec
    with pytest.raises(CallTypeError, match="parameter 'v' expects int"):
        ints.encode_args((True,), {})
    floats = interface_spec(Everything).methods["echo_float"].codec
    assert floats.decode_args(floats.encode_args((3,), {}))[0] == (3.0,)


def test_unencodable_argument_is_named() -> None:
    codec = interface_spec(Shop).methods["stock"].codec
    with pytest.raises(CallTypeError, match=r"Shop\.stock: parameter 'sku' expects str, got object"):
        codec.encode_args((object(),), {})


def test_an_int_too_big_for_the_wire_is_named() -> None:
    codec = interface_spec(Shop).methods["cancel"].codec
    with pytest.raises(CallTypeError, match=r"Shop\.cancel: parameter 'order_id' expects int, "
                                            r"got int: can't serialize ints"):
        codec.encode_args((2**70,), {})


def test_keywords_and_defaults_bind_like_python() -> None:
    codec = interface_spec(Shop).methods["place"].codec
    order = Order(1, [], Point(0.0, 0.0), {})
    assert codec.decode_args(codec.encode_args((order,), {"rush": True})) == (
        (order, None, True),
        {},
    )
    assert codec.decode_args(codec.encode_args((), {"order": order, "note": "n"})) == (
        (order, "n", False),
        {},
    )
    for args, kwargs, error in [
        ((), {}, "missing argument 'order'"),
        ((order, None, False, 1), {}, "takes 3 arguments, 4 were given"),
        ((order,), {"urgent": True}, "unexpected argument 'urgent'"),
        ((order,), {"order": order}, "argument 'order' given twice"),
    ]:
        with pytest.raises(CallTypeError, match=error):
            codec.encode_args(args, kwargs)


def test_callee_refuses_bad_bytes_from_a_peer() -> None:
    codec = interface_spec(Shop).methods["stock"].codec
    with pytest.raises(CallTypeError, match=r"Shop\.stock: parameter 'sku' expects str"):
        codec.decode_args(msgspec.msgpack.encode([1]))
    with pytest.raises(CallTypeError, match=r"Shop\.stock: bad arguments"):
        codec.decode_args(msgspec.msgpack.encode(["a", "b"]))
    with pytest.raises(CallTypeError, match=r"Shop\.stock: malformed arguments"):
        codec.decode_args(b"\xc1")


def test_result_that_does_not_match_its_hint() -> None:
    codec = interface_spec(Shop).methods["stock"].codec
    with pytest.raises(CallTypeError, match=r"Shop\.stock: the result does not match its hint int"):
        codec.decode_result(codec.encode_result("many"))
    with pytest.raises(CallTypeError, match=r"Shop\.stock: the result cannot be sent"):
        codec.encode_result(object())


def test_abc_interfaces_work_too() -> None:
    class Clock(abc.ABC):
        @abc.abstractmethod
        async def now_ms(self) -> int: ...

    assert list(interface_spec(Clock).methods) == ["now_ms"]


def test_inherited_protocol_methods_are_part_of_the_interface() -> None:
    class Reader(Protocol):
        async def get(self, key: str) -> bytes | None: ...

    class Store(Reader, Protocol):
        async def put(self, key: str, value: bytes) -> None: ...

    assert list(interface_spec(Store).methods) == ["get", "put"]


def _refusal(body: str) -> str:
    namespace = dict(globals())
    exec(
        "from __future__ import annotations\nfrom typing import Protocol, Any\n"
        f"import datetime\nclass Bad(Protocol):\n{body}",
        namespace,
    )
    with pytest.raises(TypeError) as e:
        interface_spec(namespace["Bad"])
    return str(e.value)


def test_method_without_hints_is_refused_at_spec_time() -> None:
    assert _refusal("    async def put(self, key) -> None: ...") == (
        "Bad.put: parameter 'key' has no type hint"
    )
    assert "Bad.put: the result has no type hint" in _refusal(
        "    async def put(self, key: str): ..."
    )


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("    def put(self, key: str) -> None: ...", "Bad.put: interface methods must be `async def`"),
        ("    async def put(self, *keys: str) -> None: ...", "Bad.put: *args and **kwargs"),
        ("    async def put(self, key: Any) -> None: ...", "parameter 'key': unsupported type Any"),
        ("    async def put(self, key: set[int]) -> None: ...", "unsupported type set[int]"),
        ("    async def put(self, key: dict[int, str]) -> None: ...", "dict keys must be str"),
        ("    async def put(self, key: int | str) -> None: ...", "only `T | None` unions"),
        ("    async def put(self) -> datetime.datetime: ...", "result: unsupported type datetime"),
        ("    async def put(self, key: Nope) -> None: ...", "cannot resolve its type hints"),
        ("    async def put(self, a: int = 1, *, b: int) -> None: ...", "'b' without a default"),
        ("    size: int", "an interface carries only async methods"),
    ],
)
def test_unsupported_signatures_are_refused(body: str, message: str) -> None:
    assert message in _refusal(body)


def test_unsupported_field_inside_a_dataclass_is_refused() -> None:
    @dataclass
    class Holder:
        blob: frozenset[int]

    class Bad(Protocol):
        async def put(self, h: Holder) -> None: ...

    Bad.put.__annotations__["h"] = Holder  # a local class: give the resolved hint
    with pytest.raises(TypeError, match=r"Bad\.put: parameter 'h': field Holder\.blob"):
        interface_spec(Bad)


def test_a_plain_class_is_not_an_interface() -> None:
    class Plain:
        async def get(self) -> int: ...

    with pytest.raises(TypeError, match="not an interface"):
        interface_spec(Plain)


def test_deadline_wants_positive_milliseconds() -> None:
    for bad in (0, -5, 1.5, True):
        with pytest.raises(ValueError, match="positive number of milliseconds"):
            deadline(bad)  # type: ignore[arg-type]


def test_type_names_read_as_written() -> None:
    assert type_name(list[Item]) == "list[Item]"
    assert type_name(dict[str, int | None]) == "dict[str, int | None]"
    assert type_name(tuple[int, ...]) == "tuple[int, ...]"
    assert type_name(None) == "None"


def test_the_codec_costs_little_per_call() -> None:
    """The hot path: encode_args (with the caller-side check) and decode_args of a small call.
    Printed for the docs (pytest -s); the bound is loose because the machine is shared."""
    import time

    codec = interface_spec(Shop).methods["stock"].codec
    data = codec.encode_args(("sku-1",), {})

    def per_call_us(fn: Any, n: int = 20_000) -> float:
        start = time.perf_counter()
        for _ in range(n):
            fn()
        return (time.perf_counter() - start) / n * 1e6

    encode_us = min(per_call_us(lambda: codec.encode_args(("sku-1",), {})) for _ in range(3))
    decode_us = min(per_call_us(lambda: codec.decode_args(data)) for _ in range(3))
    spec = interface_spec(Shop).methods["stock"]
    compile_us = per_call_us(lambda: MethodCodec(spec), 200)
    print(f"codec per call: encode_args {encode_us:.2f} us, decode_args {decode_us:.2f} us "
          f"(compiling a codec: {compile_us:.0f} us)")
    # Against the machine's own speed of the moment: a call costs a small part of what
    # compiling its codec does (so nothing is compiled per call), and a few microseconds.
    assert encode_us * 10 < compile_us and decode_us * 10 < compile_us
    assert encode_us < 50 and decode_us < 50
