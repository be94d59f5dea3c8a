"""A small HTTP backend for the gateway's tests and benchmarks, optionally self-registering.

    python tests/http_backend.py --port 8001 --id b1 [--register api --endpoints ...]

GET / answers "hello from ID"; /health 200; /big?n=N streams N bytes chunked; /slow?s=S
waits first; POST /echo streams the request body back. With --register it holds a leased
registration, so killing the process makes its entry expire."""

from __future__ import annotations

import argparse
import asyncio

from aiohttp import web

from shoal.client import Client
from shoal.net import install_event_loop
from shoal.registry import Instance, Registration


def make_app(ident: str) -> web.Application:
    hello = f"hello from {ident}\n".encode()

    async def root(request: web.Request) -> web.Response:
        return web.Response(body=hello, headers={"X-Backend": ident,
                            "X-Seen-For": request.headers.get("X-Forwarded-For", "")})

    async def health(request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def big(request: web.Request) -> web.StreamResponse:
        n = int(request.query.get("n", "1048576"))
        resp = web.StreamResponse(headers={"X-Backend": ident})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        block = b"x" * 65536
        while n > 0:
            await resp.write(block[:n])
            n -= len(block)
        await resp.write_eof()
        return resp

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(float(request.query.get("s", "1")))
        return web.Response(body=hello, headers={"X-Backend": ident})

    async def echo(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"X-Backend": ident})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        async for data in request.content.iter_any():
            await resp.write(data)
        await resp.write_eof()
        return resp

    app = web.Application(client_max_size=1 << 30)
    app.router.add_get("/", root)
    app.router.add_get("/health", health)
    app.router.add_get("/big", big)
    app.router.add_get("/slow", slow)
    app.router.add_post("/echo", echo)
    return app


async def serve(port: int, ident: str, service: str | None, endpoints: list[str], ttl: int) -> None:
    runner = web.AppRunner(make_app(ident), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    print(f"serving {ident} on 127.0.0.1:{port}", flush=True)
    if service is None:
        await asyncio.Event().wait()
        return
    async with Client(endpoints) as client, Registration(
            client, Instance(service, ident, f"127.0.0.1:{port}"), ttl):
        print(f"registered {ident} in {service}", flush=True)
        await asyncio.Event().wait()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--id", required=True)
    p.add_argument("--register", metavar="SERVICE")
    p.add_argument("--endpoints", default="127.0.0.1:2379")
    p.add_argument("--ttl", type=int, default=3)
    args = p.parse_args()
    install_event_loop()
    asyncio.run(serve(args.port, args.id, args.register, args.endpoints.split(","), args.ttl))


if __name__ == "__main__":
    main()
