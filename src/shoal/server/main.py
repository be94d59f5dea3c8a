"""Running a node as a process: start everything, stop gracefully on SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import gc
import logging
import signal

from aiohttp import web

from ..etcdapi.server import EtcdServer, TLSFiles
from ..net import install_event_loop
from .client_api import ClientServer
from .config import NodeConfig, check_port_free
from .http import make_app
from .kafka import KafkaServer
from .node import Node

log = logging.getLogger("shoal.node")
GC_GEN0_THRESHOLD = 20_000  # allocations between young collections (CPython: 700)


class Server:
    """A node with its client and HTTP ports: what `shoal node` runs, and what tests start."""

    def __init__(self, cfg: NodeConfig):
        self.cfg = cfg
        self.node = Node(cfg)
        self.clients = ClientServer(self.node, cfg.me.client)
        self.etcd: EtcdServer | None = None
        if cfg.me.etcd is not None:  # etcd's v3 API on one port, for etcdctl and etcd clients
            scheme = "https" if cfg.tls_cert else "http"
            tls = TLSFiles(cfg.tls_cert, cfg.tls_key, cfg.tls_ca) if cfg.tls_cert and cfg.tls_key else None
            self.etcd = EtcdServer(
                self.node, f"{cfg.me.etcd[0]}:{cfg.me.etcd[1]}", tls=tls, gateway_addr=cfg.etcd_gateway,
                client_urls=lambda m: [f"{scheme}://{m.etcd[0]}:{m.etcd[1]}"] if m.etcd else [])
        self.kafka: KafkaServer | None = None
        if cfg.me.kafka is not None:  # Kafka's protocol: the event log (server/kafka.py)
            self.kafka = KafkaServer(self.node, *cfg.me.kafka)
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        await self.node.start()
        await self.clients.start()
        if self.etcd is not None:
            await self.etcd.start()
        if self.kafka is not None:
            await self.kafka.start()
        self._runner = web.AppRunner(make_app(self.node), access_log=None)
        await self._runner.setup()
        files = self.cfg.tls()  # with TLS on, the HTTP port speaks it too (HTTPS)
        await web.TCPSite(self._runner, *self.cfg.http, ssl_context=files.server_context(
            require_client_cert=False) if files else None).start()

    async def stop(self) -> None:
        if self.kafka is not None:
            await self.kafka.stop()
        if self.etcd is not None:
            await self.etcd.stop()
        await self.clients.stop()
        await self.node.stop()
        if self._runner is not None:
            await self._runner.cleanup()


def run(cfg: NodeConfig) -> None:
    for addr, what in ((cfg.me.peer, "peer"), (cfg.me.client, "client"), (cfg.http, "http"),
                       (cfg.me.etcd, "etcd"), (cfg.etcd_gateway, "etcd gateway"),
                       (cfg.me.kafka, "kafka")):
        if addr is not None:
            check_port_free(addr, what)
    install_event_loop()
    # A node allocates containers fast (messages, entries, futures for every request): with
    # CPython's 700 the young generation is collected many times per Ready, for little.
    gc.set_threshold(GC_GEN0_THRESHOLD, 20, 20)
    asyncio.run(_serve(cfg))


async def _serve(cfg: NodeConfig) -> None:
    server = Server(cfg)
    await server.start()
    log.info("node %d serving clients on %s:%d, peers on %s:%d, http on %s:%d", cfg.id,
             *cfg.me.client, *cfg.me.peer, *cfg.http)
    if server.etcd is not None and cfg.me.etcd is not None:
        log.info("node %d serving etcd's API on %s:%d: gRPC, the JSON gateway, /version, /health, "
                 "/metrics", cfg.id, cfg.me.etcd[0], server.etcd.port)
    if server.kafka is not None:
        log.info("node %d serving Kafka's protocol on %s:%d", cfg.id, server.kafka.host,
                 server.kafka.port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    died = asyncio.create_task(server.node.dead.wait())
    await asyncio.wait([asyncio.create_task(stop.wait()), died], return_when=asyncio.FIRST_COMPLETED)
    log.info("node %d stopping", cfg.id)
    await server.stop()
    if died.done():
        raise SystemExit(70)  # EX_SOFTWARE: a supervisor should restart us and look at the log
