"""`shoal bench --rpc`: Shoal's RPC beside grpcio's asyncio unary calls, the monolith's call
overhead beside a plain method call, and the shop as a monolith beside the shop deployed.

RPC: one server process per system (uvloop for both), a `bytes -> bytes` echo with a 64-byte
payload; the two systems' runs interleaved (shoal, grpc, shoal, ...), since on a shared
machine a burst of someone else's load would otherwise land on one side only. Shoal's side is what a component call costs: the typed stub (msgspec codec), the
caller's governance (picker, breaker, retry budget, outlier detector) and the multiplexed
connection, observability off. gRPC's side is a generic handler with identity serializers, so
no protobuf work at all: the most favourable setting for it. Closed-loop callers run in
separate processes (shoal_bench.procs), and the server's CPU per call is read from /proc.

Monolith: `await impl.echo(b)` against `await monolith.get(Echo).echo(b)` (the object itself:
the cost is the lookup) and with `check_args` (one validation per call), in one process.

Shop: Frontend.checkout (three components, three store writes) and Frontend.stock (two
components, one store read) as a monolith in each load-generator process, and deployed as
examples/shop.toml (three groups of two replicas), on one local 3-node store.

Every figure is the median of `repeat` runs."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from shoal.app import Application, Component

from .loadgen import LoadResult, median_result
from .procs import DriverSpec, run_load_procs

PAYLOAD_BYTES = 64


class Echo(Protocol):
    async def echo(self, data: bytes) -> bytes: ...


class EchoImpl(Component, Echo):
    async def echo(self, data: bytes) -> bytes:
        return data


BENCH_APP = Application("bench", EchoImpl)


# ---------------------------------------------------------------------------- drivers


class ShoalRpcDriver:
    name = "shoal-rpc"

    def __init__(self, address: str):
        from shoal.app.config import ComponentConfig
        from shoal.app.interface import interface_spec
        from shoal.app.remote import Remote
        from shoal.app.runtime import make_stub
        from shoal.registry import Instance
        from shoal.rpc import Pool

        self.remote = Remote("Echo", ComponentConfig(), Pool())
        self.remote.update([Instance("bench.Echo", "echo-0", address)])
        self.stub: Any = make_stub(interface_spec(Echo), self.remote, "failover", None)

    async def put(self, key: bytes, value: bytes) -> None:
        await self.stub.echo(value[:PAYLOAD_BYTES])

    async def get(self, key: bytes) -> None:
        await self.stub.echo(key)

    async def close(self) -> None:
        await self.remote.pool.close()


class GrpcDriver:
    name = "grpcio"

    def __init__(self, address: str):
        import grpc

        self.channel = grpc.aio.insecure_channel(address)
        self.echo = self.channel.unary_unary("/bench.Echo/Echo")

    async def put(self, key: bytes, value: bytes) -> None:
        await self.echo(value[:PAYLOAD_BYTES])

    async def get(self, key: bytes) -> None:
        await self.echo(key)

    async def close(self) -> None:
        await self.channel.close()


class ShopDriver:
    """Every operation is one `request`: a checkout of one item (unique order ids) or a stock
    read. (Both as loadgen's "put": its "get" mix would first fill keys with puts.)"""

    def __init__(self, endpoints: list[str], deployed: bool, request: str):
        self.name = f"shop-{'deployed' if deployed else 'monolith'}-{request}"
        self.endpoints, self.deployed, self.request = endpoints, deployed, request
        if os.getcwd() not in sys.path:
            sys.path.insert(0, os.getcwd())  # examples/ is not a package of the distribution
        self._ids = itertools.count()
        self._tag = f"{os.getpid()}-{time.monotonic_ns()}"
        self._shop: Any = None
        self._client: Any = None
        self._opening: asyncio.Future[Any] | None = None

    async def _open(self) -> Any:
        if self._opening is None:  # the first caller opens it; the others wait for that one
            self._opening = asyncio.ensure_future(self._start())
        return await asyncio.shield(self._opening)

    async def _start(self) -> Any:
        if self._shop is None:
            from examples.shop import App

            from shoal.app.config import load_deploy
            from shoal.app.deployed import Deployed
            from shoal.app.monolith import Monolith
            from shoal.client import Client

            self._client = Client(self.endpoints)
            shop = (Deployed(App, self._client, load_deploy(SHOP_CONFIG),
                             token=os.environ.get("SHOAL_APP_TOKEN")) if self.deployed
                    else Monolith(App, self._client))
            await shop.start()
            self._shop = shop
        return self._shop

    async def put(self, key: bytes, value: bytes) -> None:
        from examples.shop import Frontend, Item

        shop = await self._open()
        n = next(self._ids)  # skus in turn: no two callers fight over one stock key
        sku = f"{SHOP_SKU}-{n % SHOP_SKUS}"
        if self.request == "stock":
            await shop.get(Frontend).stock(sku)
        else:
            await shop.get(Frontend).checkout(f"b-{self._tag}-{n}", [Item(sku, 1)])

    async def get(self, key: bytes) -> None:
        await self.put(key, b"")

    async def close(self) -> None:
        if self._shop is not None:
            await self._shop.stop()
            await self._client.close()


SHOP_CONFIG = Path("examples/shop.toml")
SHOP_SKU = "bench-sku"
SHOP_SKUS = 256
SHOP_CALLERS = 8


def make_driver(kind: str, endpoints: list[str]) -> Any:
    """DriverSpec's kinds of this module: rpc-shoal, rpc-grpc, shop-MODE-REQUEST (MODE
    monolith or deployed, REQUEST checkout or stock)."""
    if kind == "rpc-shoal":
        return ShoalRpcDriver(endpoints[0])
    if kind == "rpc-grpc":
        return GrpcDriver(endpoints[0])
    _, mode, request = kind.split("-")
    return ShopDriver(endpoints, deployed=mode == "deployed", request=request)


# ---------------------------------------------------------------------------- servers


async def _serve_shoal() -> None:
    from shoal.app.interface import interface_spec
    from shoal.app.runtime import handlers
    from shoal.rpc import RpcServer

    server = RpcServer(handlers(interface_spec(Echo), EchoImpl(), None))
    address = await server.start("127.0.0.1", 0)
    print(address, flush=True)
    await asyncio.Event().wait()


async def _serve_grpc() -> None:
    import grpc

    async def echo(request: bytes, context: Any) -> bytes:
        return request

    server = grpc.aio.server()
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
        "bench.Echo", {"Echo": grpc.unary_unary_rpc_method_handler(echo)}),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    print(f"127.0.0.1:{port}", flush=True)
    await server.wait_for_termination()


def _start_server(system: str) -> tuple[subprocess.Popen[bytes], str]:
    proc = subprocess.Popen([sys.executable, "-m", "shoal_bench.rpc", "serve", system],
                            stdout=subprocess.PIPE)
    assert proc.stdout is not None
    line = proc.stdout.readline().decode().strip()
    if not line:
        proc.kill()
        raise RuntimeError(f"the {system} server did not start")
    return proc, line


# ---------------------------------------------------------------------------- plans


@dataclass(frozen=True)
class RpcPlan:
    clients: tuple[int, ...] = (1, 64)
    seconds: float = 5.0
    repeat: int = 3
    procs: int = 2
    shop: bool = True
    json: bool = False


def run_rpc_bench(plan: RpcPlan) -> dict[str, Any]:
    out: dict[str, Any] = {"rpc": [], "monolith": monolith_overhead(plan.repeat), "shop": []}
    servers = {system: _start_server(system) for system in ("shoal", "grpc")}
    try:
        for clients in plan.clients:
            runs: dict[str, list[LoadResult]] = {"shoal": [], "grpc": []}
            for _ in range(plan.repeat):  # interleaved: a burst of load elsewhere hits both
                for system, (proc, address) in servers.items():
                    runs[system].append(run_load_procs(
                        DriverSpec(system, f"rpc-{system}", (address,)), clients=clients,
                        seconds=plan.seconds, value_size=PAYLOAD_BYTES, mix="put",
                        procs=min(plan.procs, clients), server_pids=[proc.pid]))
            pair = {system: median_result(r) for system, r in runs.items()}
            out["rpc"].append(pair)
            _print_pair(pair)
    finally:
        for proc, _ in servers.values():
            proc.kill()
            proc.wait()
    if plan.shop:
        out["shop"] = shop_bench(plan)
    if plan.json:
        print(json.dumps(_jsonable(out)))
    else:
        _print_monolith(out["monolith"])
    return out


def _print_pair(pair: dict[str, LoadResult]) -> None:
    s, g = pair["shoal"], pair["grpc"]
    print(f"{s.clients:>3} callers  shoal {s.throughput:8.0f}/s p50 {s.p50_ms:6.3f} ms "
          f"p99 {s.p99_ms:6.3f} ms server {s.server_us_per_op:5.1f} us/call | "
          f"grpcio {g.throughput:8.0f}/s p50 {g.p50_ms:6.3f} ms p99 {g.p99_ms:6.3f} ms "
          f"server {g.server_us_per_op:5.1f} us/call | {s.throughput / g.throughput:.2f}x",
          flush=True)


def monolith_overhead(repeat: int, n: int = 200_000) -> dict[str, float]:
    """Nanoseconds per call: a plain call, through the monolith, and with check_args."""
    from shoal.app.monolith import Monolith

    async def measure() -> dict[str, float]:
        plain = EchoImpl()
        mono = Monolith(BENCH_APP, client=None)
        checked = Monolith(BENCH_APP, client=None, check_args=True)
        await mono.start()
        await checked.start()
        data = b"x" * PAYLOAD_BYTES

        async def loop_plain() -> float:
            t = time.perf_counter_ns()
            for _ in range(n):
                await plain.echo(data)
            return (time.perf_counter_ns() - t) / n

        async def loop_mono(m: Monolith) -> float:
            t = time.perf_counter_ns()
            for _ in range(n):
                await m.get(Echo).echo(data)  # type: ignore[type-abstract]
            return (time.perf_counter_ns() - t) / n

        rows: dict[str, list[float]] = {"plain_ns": [], "monolith_ns": [], "checked_ns": []}
        for _ in range(repeat):
            rows["plain_ns"].append(await loop_plain())
            rows["monolith_ns"].append(await loop_mono(mono))
            rows["checked_ns"].append(await loop_mono(checked))
        return {k: statistics.median(v) for k, v in rows.items()}

    from shoal.net.loop import install_event_loop

    install_event_loop()
    return asyncio.run(measure())


def _print_monolith(m: dict[str, float]) -> None:
    print(f"in-process: plain call {m['plain_ns']:.0f} ns, monolith {m['monolith_ns']:.0f} ns "
          f"(+{m['monolith_ns'] - m['plain_ns']:.0f} ns), with check_args "
          f"{m['checked_ns']:.0f} ns (+{m['checked_ns'] - m['plain_ns']:.0f} ns)")


def shop_bench(plan: RpcPlan) -> list[dict[str, Any]]:
    from shoal.app.deploy import Deployment
    from shoal.local.cluster import LocalProcessCluster

    rows = []
    with LocalProcessCluster(3, node_args=["--tick-ms", "20"]) as cluster:
        cluster.start()
        eps = tuple(cluster.endpoints)
        asyncio.run(_set_stock(list(eps)))
        with Deployment(None, SHOP_CONFIG, endpoints=list(eps),
                        env={"SHOAL_TRACES": "none"}) as dep:
            dep.start()
            os.environ["SHOAL_APP_TOKEN"] = dep.token  # for the generator processes' callers
            pids = [p.pid for p in dep.procs.values()]
            for request in ("checkout", "stock"):
                runs: dict[str, list[LoadResult]] = {"monolith": [], "deployed": []}
                for _ in range(plan.repeat):  # interleaved, as the RPC's runs
                    for mode in runs:
                        kind = f"shop-{mode}-{request}"
                        runs[mode].append(run_load_procs(
                            DriverSpec(kind, kind, eps), clients=SHOP_CALLERS,
                            seconds=plan.seconds, value_size=8, mix="put",
                            procs=min(plan.procs, SHOP_CALLERS),
                            server_pids=pids if mode == "deployed" else ()))
                for mode, results in runs.items():
                    r = median_result(results)
                    rows.append({"request": request, "mode": mode, **r.as_dict()})
                    print(f"shop {request:8} {mode:9} {r.throughput:7.0f}/s p50 "
                          f"{r.p50_ms:7.2f} ms p99 {r.p99_ms:7.2f} ms ({r.clients} callers, "
                          f"{r.errors} errors)", flush=True)
    return rows


async def _set_stock(endpoints: list[str]) -> None:
    from shoal.client import Client

    async with Client(endpoints) as client:
        for i in range(SHOP_SKUS):
            await client.put(f"/shop/stock/{SHOP_SKU}-{i}".encode(), str(10**9).encode())


def _jsonable(out: dict[str, Any]) -> dict[str, Any]:
    return {"rpc": [{k: v.as_dict() for k, v in pair.items()} for pair in out["rpc"]],
            "monolith": out["monolith"], "shop": out["shop"]}


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if len(args) == 2 and args[0] == "serve":
        from shoal.net.loop import install_event_loop

        install_event_loop()
        asyncio.run(_serve_shoal() if args[1] == "shoal" else _serve_grpc())
        return
    raise SystemExit("usage: python -m shoal_bench.rpc serve shoal|grpc "
                     "(the benchmark itself is `shoal bench --rpc`)")


if __name__ == "__main__":
    main()
