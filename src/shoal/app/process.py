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
method calls. With SHOAL_APP_TOKEN set (`shoal app deploy` sets a random one per deployment)
every RPC call and GET /metrics must carry it; /health stays open for probes. The store's own
credentials come from SHOAL_USER and SHOAL_CACERT/CERT/KEY, as for every `shoal` command.
SIGTERM, or the death of the supervisor, undoes it in reverse: deregister (callers stop
picking it), drain the RPC server (new calls are refused as UNAVAILABLE, so callers retry
them elsewhere), stop."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hmac
import json
import os
import signal
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .component import Application, load_app
from .config import DeployConfig, load_deploy


class GroupProcess:
    """A process group's replica, startable in any event loop (tests run several in one)."""

    def __init__(self, app: Application, config: DeployConfig, group: str, replica: int,
                 client: Any, root: Path, *, ttl: int = 5, host: str = "127.0.0.1",
                 exporter: str = "file", breaker: Any = None, token: str | None = None):
        if group not in config.groups:
            raise ValueError(f"group {group!r} is not in the deploy config "
                             f"(groups: {', '.join(config.groups)})")
        self.app, self.config, self.group, self.replica = app, config, group, replica
        self.client, self.root, self.ttl, self.host = client, root, ttl, host
        self.names = list(config.groups[group].components)
        self.process = f"{app.name}-{group}-{replica}"
        from .observe import Observer

        self.observer = Observer(self.process, exporter,  # type: ignore[arg-type]
                                 root / "traces" / f"{self.process}.jsonl")
        from ..rpc import RpcServer
        from .deployed import Deployed

        self.token = token  # when set: every RPC call and GET /metrics must carry it
        self.deployed = Deployed(app, client, config, local=self.names, observer=self.observer,
                                 breaker=breaker, token=token)
        self.rpc = RpcServer(token=token)
        self.impls: list[Any] = []
        self.addresses: dict[str, str] = {}
        self._grpc: Any = None
        self._web: Any = None
        self._regs: list[Any] = []

    async def start(self) -> dict[str, Any]:
        """Up and registered; returns the ready line's fields."""
        from ..registry import Instance, Registration
        from .runtime import handlers, start_components

        await self.deployed.start()
        self.impls = await start_components(self.deployed.runtime, self.names, self.client,
                                            self.observer.registry)
        defs = self.app.select(self.names)
        for d, impl in zip(defs, self.impls, strict=True):
            self.rpc.handlers.update(handlers(d.spec, impl, self.observer))
        self.addresses["rpc"] = await self.rpc.start(self.host, 0)
        grpc_defs = [(d, i) for d, i in zip(defs, self.impls, strict=True)
                     if self.config.component(d.name).grpc]
        if grpc_defs:
            import grpc

            from . import grpc_bridge

            self._grpc = grpc.aio.server()
            for d, impl in grpc_defs:
                grpc_bridge.serve(self._grpc, d.spec, impl, observer=self.observer,
                                  authorize=self._authorize_grpc if self.token else None)
            port = self._grpc.add_insecure_port(f"{self.host}:0")
            await self._grpc.start()
            self.addresses["grpc"] = f"{self.host}:{port}"
        self.addresses["http"] = await self._start_http()
        tags = [f"{k}={v}" for k, v in self.addresses.items() if k != "rpc"]
        tags += [f"group={self.group}", f"pid={os.getpid()}"]
        self._regs = [Registration(self.client, Instance(
            self.app.service(n), f"{self.group}-{self.replica}", self.addresses["rpc"],
            tags=tuple(tags)), ttl=self.ttl) for n in self.names]
        for r in self._regs:
            await r.start()
        return {"group": self.group, "replica": self.replica, "pid": os.getpid(),
                **self.addresses, "components": self.names}

    def _bearer_ok(self, header: str) -> bool:
        """Whether an Authorization header carries the deployment's token (always, when there
        is none)."""
        return self.token is None or hmac.compare_digest(header, f"Bearer {self.token}")

    def _authorize_grpc(self, metadata: Mapping[str, str]) -> None:
        # gRPC carries the same bearer token as HTTP, in its `authorization` metadata
        if not self._bearer_ok(metadata.get("authorization", "")):
            raise PermissionError("this component's gRPC port needs the deployment's token")

    async def _start_http(self) -> str:
        from aiohttp import web

        async def health(_: web.Request) -> web.Response:
            draining = self.rpc.draining
            return web.json_response({"status": "draining" if draining else "ok",
                                      "components": self.names, "group": self.group,
                                      "replica": self.replica,
                                      "running_calls": self.rpc.running()},
                                     status=503 if draining else 200)

        async def metrics(request: web.Request) -> web.Response:
            if not self._bearer_ok(request.headers.get("Authorization", "")):
                return web.Response(status=401, text="metrics need the deployment's token\n")
            return web.Response(body=self.observer.metrics_text(),
                                content_type="text/plain", charset="utf-8")

        web_app = web.Application()
        web_app.router.add_get("/health", health)
        web_app.router.add_get("/metrics", metrics)
        self._web = web.AppRunner(web_app, access_log=None)
        await self._web.setup()
        site = web.TCPSite(self._web, self.host, 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return f"{self.host}:{port}"

    async def stop(self) -> None:
        """Deregister (callers stop picking it), drain, stop the components."""
        for r in self._regs:
            await r.stop()
        await self.rpc.stop(grace_s=2.0)
        if self._grpc is not None:
            await self._grpc.stop(1.0)
        for impl in reversed(self.impls):
            with contextlib.suppress(Exception):
                await impl.stop()
        await self.deployed.stop()
        if self._web is not None:
            await self._web.cleanup()
        self.observer.close()


async def serve(app_path: str, config_path: str, group: str, replica: int,
                endpoints: list[str], root: Path, ttl: int = 5) -> None:
    """The process's life: up, the ready line on stdout, then until SIGTERM."""
    from ..cli.common import client_options
    from ..client import Client

    client = Client(endpoints, **client_options())
    proc = GroupProcess(load_app(app_path), load_deploy(config_path), group, replica, client,
                        root, ttl=ttl, exporter=os.environ.get("SHOAL_TRACES", "file"),
                        token=os.environ.get("SHOAL_APP_TOKEN") or None)
    print(json.dumps(await proc.start()), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    watch = asyncio.ensure_future(_until_orphaned(stop))
    await stop.wait()
    watch.cancel()
    await proc.stop()
    await client.close()


async def _until_orphaned(stop: asyncio.Event) -> None:
    """A replica whose supervisor died (kill -9, a crashed test) stops instead of lingering."""
    parent = os.getppid()
    while os.getppid() == parent:
        await asyncio.sleep(1.0)
    stop.set()


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
    from .observe import LOG_FORMAT, TraceIdFilter

    logging.basicConfig(level=logging.WARNING, format=LOG_FORMAT, stream=sys.stderr)
    for h in logging.getLogger().handlers:
        h.addFilter(TraceIdFilter())
    install_event_loop()
    asyncio.run(serve(args.app, args.config, args.group, args.replica,
                      [e for e in args.endpoints.split(",") if e], args.root, args.ttl))


if __name__ == "__main__":
    main()
