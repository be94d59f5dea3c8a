"""shoal.app.grpc_bridge: the .proto written from hints, compiled by protoc as a client in
another language would, and a served component called through the stubs grpcio generates."""

from __future__ import annotations

import asyncio
import contextlib
import enum
import importlib
import json
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Protocol

import grpc
import msgspec
import pytest
from google.protobuf import descriptor_pb2

from shoal.app.grpc_bridge import proto_for, proto_schema, serve
from shoal.app.interface import deadline, idempotent, interface_spec
from shoal.app.observe import Observer

Stubs = tuple[ModuleType, ModuleType]  # inventory_pb2, inventory_pb2_grpc


class Color(enum.Enum):
    RED = "red"
    GREEN = "green"


@dataclass(frozen=True)
class Item:
    sku: str
    qty: int
    color: Color
    note: str | None = None


class Address(msgspec.Struct, frozen=True):
    city: str
    lines: list[str]


class Tag(msgspec.Struct, rename="camel", omit_defaults=True):
    tag_name: str
    weight: int = 5  # omitted from msgspec's builtins when 5: must still reach the client


class Pt(msgspec.Struct, array_like=True):
    x: int
    y: int


@dataclass(frozen=True)
class Order:
    id: int
    items: list[Item]
    ship_to: Address | None
    tags: dict[str, int]
    grid: list[list[int]]


class Inventory(Protocol):
    @idempotent
    async def stock(self, sku: str) -> int: ...

    async def place(self, order: Order, rush: bool = False) -> dict[str, Item]: ...

    async def weigh(self, grams: list[float], pair: tuple[int, str]) -> tuple[float, str]: ...

    async def blob(self, data: bytes, maybe: int | None) -> bytes | None: ...

    async def forget(self, sku: str) -> None: ...

    @deadline(50)
    async def stall(self) -> int: ...

    async def relabel(self, tag: Tag, at: Pt) -> Tag: ...


class InventoryImpl:
    def __init__(self) -> None:
        self.forgotten: list[str] = []
        self.never = asyncio.Event()

    async def stock(self, sku: str) -> int:
        if sku == "boom":
            raise LookupError(f"no such sku {sku}")
        return len(sku) * 10

    async def place(self, order: Order, rush: bool = False) -> dict[str, Item]:
        assert isinstance(order, Order) and all(isinstance(i, Item) for i in order.items)
        assert order.ship_to is None or isinstance(order.ship_to, Address)
        return {f"{i.sku}{'!' if rush else ''}": i for i in order.items}

    async def weigh(self, grams: list[float], pair: tuple[int, str]) -> tuple[float, str]:
        return sum(grams) * pair[0], pair[1].upper()

    async def blob(self, data: bytes, maybe: int | None) -> bytes | None:
        return None if maybe is None else data * maybe

    async def forget(self, sku: str) -> None:
        self.forgotten.append(sku)

    async def relabel(self, tag: Tag, at: Pt) -> Tag:
        assert isinstance(tag, Tag) and isinstance(at, Pt)
        return Tag(f"{tag.tag_name}@{at.x},{at.y}") if tag.weight == 5 else tag

    async def stall(self) -> int:
        await self.never.wait()  # never set: only the method's deadline ends this
        return 0


@pytest.fixture(scope="module")
def stubs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stubs]:
    """protoc's Python output for the written .proto, as any grpcio client would make it."""
    out = tmp_path_factory.mktemp("stubs")
    (out / "inventory.proto").write_text(proto_for(interface_spec(Inventory)))
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", f"-I{out}", f"--python_out={out}",
         f"--grpc_python_out={out}", f"--descriptor_set_out={out / 'set.pb'}",
         str(out / "inventory.proto")],
        check=True, capture_output=True)
    sys.path.insert(0, str(out))
    try:
        yield importlib.import_module("inventory_pb2"), importlib.import_module("inventory_pb2_grpc")
    finally:
        sys.path.remove(str(out))


def test_descriptor_built_at_run_time_is_what_protoc_makes(stubs: Stubs) -> None:
    pb2, _ = stubs
    schema = proto_schema(interface_spec(Inventory))
    protoc = descriptor_pb2.FileDescriptorSet.FromString(
        (Path(pb2.__file__).parent / "set.pb").read_bytes())
    (theirs,) = protoc.file
    theirs.name = schema.file_name  # protoc names it after the file it was given
    assert schema.descriptor() == theirs


def test_proto_text_maps_each_kind_of_hint() -> None:
    text = proto_for(interface_spec(Inventory))
    for line in [
        "package shoal.app.inventory;",
        "rpc Stock(StockRequest) returns (StockResponse);",
        "message PlaceRequest {\n  Order order = 1;\n  bool rush = 2;\n}",
        "message PlaceResponse {\n  map<string, Item> value = 1;\n}",
        "  repeated Item items = 2;\n  optional Address ship_to = 3;\n"
        "  map<string, int64> tags = 4;\n  repeated Int64List grid = 5;",
        "enum Color {\n  COLOR_UNSPECIFIED = 0;\n  COLOR_RED = 1;\n  COLOR_GREEN = 2;\n}",
        "  optional string note = 4;",
        "message Int64StringTuple {\n  int64 item_0 = 1;\n  string item_1 = 2;\n}",
        "message ForgetResponse {\n}",
        "message BlobResponse {\n  optional bytes value = 1;\n}",
    ]:
        assert line in text


@contextlib.asynccontextmanager
async def _served(
    stubs: Stubs, observer: Observer | None = None,
) -> AsyncIterator[tuple[Any, InventoryImpl, Observer, ModuleType, grpc.aio.Channel]]:
    """The component on a grpc.aio server on a free port, and a grpcio stub connected to it."""
    pb2, pb2_grpc = stubs
    impl = InventoryImpl()
    observer = observer or Observer("grpc-test", exporter="none")

    def authorize(metadata: Any) -> None:
        if metadata.get("authorization") == "Bearer wrong":
            raise PermissionError("bad token")

    server = grpc.aio.server()
    serve(server, interface_spec(Inventory), impl, observer=observer, authorize=authorize)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield pb2_grpc.InventoryStub(channel), impl, observer, pb2, channel
    finally:
        await channel.close()
        await server.stop(None)


def _against_server(stubs: Stubs, body: Any, observer: Observer | None = None) -> None:
    async def main() -> None:
        async with _served(stubs, observer) as served:
            await asyncio.wait_for(body(*served), 30)

    asyncio.run(main())


def test_a_grpcio_client_calls_the_component(stubs: Stubs) -> None:
    async def body(stub: Any, impl: InventoryImpl, observer: Observer, pb2: Any, channel: Any) -> None:
        assert (await stub.Stock(pb2.StockRequest(sku="abc"))).value == 30
        order = pb2.Order(
            id=7,
            items=[pb2.Item(sku="a", qty=2, color=pb2.COLOR_GREEN),
                   pb2.Item(sku="b", qty=1, color=pb2.COLOR_RED, note="fragile")],
            ship_to=pb2.Address(city="Oslo", lines=["1 Main St"]),
            tags={"gift": 1},
            grid=[pb2.Int64List(value=[1, 2]), pb2.Int64List(value=[])],
        )
        placed = await stub.Place(pb2.PlaceRequest(order=order, rush=True))
        assert set(placed.value) == {"a!", "b!"}
        assert placed.value["a!"].color == pb2.COLOR_GREEN and not placed.value["a!"].HasField("note")
        assert placed.value["b!"].note == "fragile"
        weighed = await stub.Weigh(pb2.WeighRequest(
            grams=[1.5, 2.5], pair=pb2.Int64StringTuple(item_0=2, item_1="kg")))
        assert (weighed.value.item_0, weighed.value.item_1) == (8.0, "KG")
        assert not (await stub.Blob(pb2.BlobRequest(data=b"ab"))).HasField("value")
        assert (await stub.Blob(pb2.BlobRequest(data=b"ab", maybe=2))).value == b"abab"
        relabeled = await stub.Relabel(pb2.RelabelRequest(
            tag=pb2.Tag(tag_name="t", weight=5), at=pb2.Pt(x=1, y=2)))
        assert (relabeled.value.tag_name, relabeled.value.weight) == ("t@1,2", 5)
        kept = await stub.Relabel(pb2.RelabelRequest(tag=pb2.Tag(tag_name="t", weight=0),
                                                     at=pb2.Pt()))
        assert (kept.value.tag_name, kept.value.weight) == ("t", 0)
        await stub.Forget(pb2.ForgetRequest(sku="x"))
        assert impl.forgotten == ["x"]
        metrics = observer.metrics_text().decode()
        assert 'shoal_rpc_server_requests_total{component="Inventory",method="blob"' in metrics

    _against_server(stubs, body)


def test_a_missing_required_message_is_invalid_argument_naming_the_field(stubs: Stubs) -> None:
    async def body(stub: Any, impl: InventoryImpl, observer: Observer, pb2: Any, channel: Any) -> None:
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await stub.Place(pb2.PlaceRequest(rush=True))
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert e.value.details() == "Inventory.place: order: required, not set"

    _against_server(stubs, body)


def test_an_unset_enum_deep_inside_is_invalid_argument_naming_its_path(stubs: Stubs) -> None:
    async def body(stub: Any, impl: InventoryImpl, observer: Observer, pb2: Any, channel: Any) -> None:
        order = pb2.Order(id=1, items=[pb2.Item(sku="a", qty=1, color=pb2.COLOR_RED),
                                       pb2.Item(sku="b", qty=1)])
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await stub.Place(pb2.PlaceRequest(order=order))
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert e.value.details() == "Inventory.place: order.items[1].color: Color has no value 0 (UNSPECIFIED)"

    _against_server(stubs, body)


def test_bytes_that_are_not_the_request_are_invalid_argument(stubs: Stubs) -> None:
    async def body(stub: Any, impl: InventoryImpl, observer: Observer, pb2: Any, channel: Any) -> None:
        raw = channel.unary_unary("/shoal.app.inventory.Inventory/Stock")
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await raw(b"\xff\xff\xff")
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "Inventory.stock: cannot parse StockRequest" in e.value.details()

    _against_server(stubs, body)


def test_implementation_errors_deadlines_and_auth(stubs: Stubs) -> None:
    async def body(stub: Any, impl: InventoryImpl, observer: Observer, pb2: Any, channel: Any) -> None:
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await stub.Stock(pb2.StockRequest(sku="boom"))
        assert e.value.code() == grpc.StatusCode.UNKNOWN
        assert e.value.details() == "Inventory.stock: LookupError: no such sku boom"
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await stub.Stall(pb2.StallRequest())
        assert e.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert "its deadline of 50 ms passed" in e.value.details()
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await stub.Stock(pb2.StockRequest(sku="a"), metadata=(("authorization", "Bearer wrong"),))
        assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
        metrics = observer.metrics_text().decode()
        assert 'shoal_rpc_server_errors_total{component="Inventory",method="stall",' \
               'process="grpc-test"} 1.0' in metrics

    _against_server(stubs, body)


def test_a_grpc_callers_traceparent_is_the_server_spans_parent(stubs: Stubs,
                                                                 tmp_path: Path) -> None:
    observer = Observer("grpc-traced", path=tmp_path / "spans.jsonl")
    caller = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

    async def body(stub: Any, impl: InventoryImpl, observer: Observer, pb2: Any,
                   channel: Any) -> None:
        await stub.Stock(pb2.StockRequest(sku="a"), metadata=(("traceparent", caller),))

    _against_server(stubs, body, observer)
    observer.flush()
    observer.close()
    (span,) = [json.loads(line) for line in (tmp_path / "spans.jsonl").read_text().splitlines()]
    assert (span["name"], span["kind"]) == ("Inventory/stock", "SERVER")
    assert span["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert span["parent_id"] == "00f067aa0ba902b7"


def test_a_tuple_without_item_types_has_no_protobuf_type() -> None:
    class Loose(Protocol):
        async def put(self, t: tuple) -> None: ...

    with pytest.raises(TypeError, match=r"Loose: tuple has no protobuf type"):
        proto_for(interface_spec(Loose))


def test_two_types_with_one_name_are_refused() -> None:
    class Widget(msgspec.Struct):  # the same name as a request message
        pass

    Widget.__name__ = "PutRequest"

    class Clash(Protocol):
        async def put(self, w: Widget) -> None: ...

    Clash.put.__annotations__["w"] = Widget
    with pytest.raises(TypeError, match=r"would both be the protobuf message 'PutRequest'"):
        proto_for(interface_spec(Clash))


def test_shoal_app_proto_prints_the_proto(tmp_path: Path) -> None:
    import typer
    from typer.testing import CliRunner

    from shoal.cli.app_export import register

    app = typer.Typer()
    app.callback()(lambda: None)  # a group, as `shoal app` is
    register(app)

    (tmp_path / "protomod.py").write_text(
        "from typing import Protocol\n"
        "class Greeter(Protocol):\n"
        "    async def hello(self, name: str) -> str: ...\n")
    sys.path.insert(0, str(tmp_path))
    try:
        result = CliRunner().invoke(app, ["proto", "protomod:Greeter"])
        bad = CliRunner().invoke(app, ["proto", "protomod:Nope"])
    finally:
        sys.path.remove(str(tmp_path))
    assert result.exit_code == 0, result.output
    assert "service Greeter {\n  rpc Hello(HelloRequest) returns (HelloResponse);\n}" in result.stdout
    assert bad.exit_code != 0 and "protomod has no attribute 'Nope'" in bad.output


def test_the_deployed_runner_guards_its_grpc_port_with_the_token(tmp_path: Path) -> None:
    # The runner hands the bridge the same bearer check its RPC and /metrics ports use.
    from shoal.app.component import load_app
    from shoal.app.config import load_deploy
    from shoal.app.process import GroupProcess

    root = Path(__file__).resolve().parents[1]
    sys.path.insert(0, str(root))
    try:
        app = load_app("examples.shop:App")
    finally:
        sys.path.remove(str(root))
    config = load_deploy(root / "examples" / "shop.toml")
    group = next(iter(config.groups))
    guarded = GroupProcess(app, config, group, 0, None, tmp_path, exporter="none", token="s3")
    guarded._authorize_grpc({"authorization": "Bearer s3"})
    for metadata in ({}, {"authorization": "Bearer wrong"}):
        with pytest.raises(PermissionError, match="token"):
            guarded._authorize_grpc(metadata)
    open_process = GroupProcess(app, config, group, 0, None, tmp_path, exporter="none")
    open_process._authorize_grpc({})  # no token configured: nothing to check
