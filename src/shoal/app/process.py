"""One process of a deployment: a process group's components, served and registered.

    python -m shoal.app.process --app examples.shop:App --config deploy.toml --group back \
        --replica 0 --endpoints 127.0.0.1:23791,... --root DIR

What it does, in order: connect to the store; watch every component it does not run
(shoal.app.deployed); make its own components and start them; serve them over Shoal's RPC
(and over gRPC for those the deploy file marks `grpc = true`, through shoal.app.grpc_bridge);
serve /health and /metrics over HTTP; then register each component in the registry under a
lease (`<app>.<Component>`, instance `<group>-<replica>`, the RPC address, the HTTP and gRPC
addresses as tags), and print one JSON line with its addresses on stdout, which is how
`shoal app deploy` knows it is up. Calls between components of the same process are plain
method calls. SIGTERM undoes it in reverse: deregister (callers stop picking it), drain the
RPC server (new calls are refused as UNAVAILABLE, so callers retry them elsewhere), stop."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

from .component import load_app
from .config import load_deploy


async def serve(app_path: str, config_path: str, group: str, replica: int,
                endpoints: list[str], root: Path, ttl: int = 5,
                host: str = "127.0.0.1") -> None:
    from aiohttp import web

    from ..client import Client
    from ..registry import Instance, Registration
    from ..rpc import RpcServer
    from .deployed import Deployed
    from .observe import Observer, TraceIdFilter
    from .runtime import handlers, start_components

    app, config = load_app(app_path), load_deploy(config_path)
    if group not in config.groups:
        raise SystemExit(f"error: group {group!r} is not in {config_path}")
    names = list(config.groups[group].components)
    process = f"{app.name}-{group}-{replica}"
    exporter: Any = os.environ.get("SHOAL_TRACES", "file")
    observer = Observer(process, exporter, root / "traces" / f"{process}.jsonl")
    import logging

    for h in logging.getLogger().handlers:
        h.addFilter(TraceIdFilter())
    client = Client(endpoints)
    deployed = Deployed(app, client, config, local=names, observer=observer)
    await deployed.start()
    impls = await start_components(deployed.runtime, names, client, observer.registry)
    table: dict[str, Any] = {}
    for d, impl in zip(app.select(names), impls, strict=True):
        table.update(handlers(d.spec, impl, observer))
    rpc = RpcServer(table)
    rpc_address = await rpc.start(host, 0)

    grpc_server, grpc_address = None, ""
    grpc_names = [n for n in names if config.component(n).grpc]
    if grpc_names:
        import grpc

        from . import grpc_bridge

        grpc_server = grpc.aio.server()
        for d, impl in zip(app.select(names), impls, strict=True):
            if d.name in grpc_names:
                grpc_bridge.serve(grpc_server, d.spec, impl, observer=observer)
        port = grpc_server.add_insecure_port(f"{host}:0")
        await grpc_server.start()
        grpc_address = f"{host}:{port}"

    async def health(_: web.Request) -> web.Response:
        return web.json_response({"status": "draining" if rpc.draining else "ok",
                                  "components": names, "group": group, "replica": replica,
                                  "running_calls": rpc.running()},
                                 status=503 if rpc.draining else 200)

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(body=observer.metrics_text(),
                            content_type="text/plain", charset="utf-8")

    web_app = web.Application()
    web_app.router.add_get("/health", health)
    web_app.router.add_get("/metrics", metrics)
    runner = web.AppRunner(web_app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, 0)
    await site.start()
    http_port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    http_address = f"{host}:{http_port}"

    tags = [f"http={http_address}", f"group={group}", f"pid={os.getpid()}"]
    if grpc_address:
        tags.append(f"grpc={grpc_address}")
    regs = [Registration(client, Instance(app.service(n), f"{group}-{replica}", rpc_address,
                                          tags=tuple(tags)), ttl=ttl) for n in names]
    for r in regs:
        await r.start()
    print(json.dumps({"group": group, "replica": replica, "pid": os.getpid(),
                      "rpc": rpc_address, "http": http_address, "grpc": grpc_address,
                      "components": names}), flush=True)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    for r in regs:
        await r.stop()
    await rpc.stop(grace_s=2.0)
    if grpc_server is not None:
        await grpc_server.stop(1.0)
    for impl in reversed(impls):
        with contextlib.suppress(Exception):
            await impl.stop()
    await deployed.stop()
    await runner.cleanup()
    await client.close()
    observer.close()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m shoal.app.process")
    ap.add_argument("--app", required=True)
    ap.add_argument("--config", required=True)
    ap.add_argument("--group", required=True)
    ap.add_argument("--replica", type=int, default=0)
    ap.add_argument("--endpoints", required=True)
    ap.add_argument("--root", type=Path, required=True)
    ap.add_argument("--ttl", type=int, default=5)
    args = ap.parse_args(argv)
    import logging

    from ..net.loop import install_event_loop
    from .observe import LOG_FORMAT

    logging.basicConfig(level=logging.WARNING, format=LOG_FORMAT, stream=sys.stderr)
    install_event_loop()
    asyncio.run(serve(args.app, args.config, args.group, args.replica,
                      [e for e in args.endpoints.split(",") if e], args.root, args.ttl))


if __name__ == "__main__":
    main()
