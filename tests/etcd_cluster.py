"""A real Shoal cluster serving the etcd API, run on its own event loop in a background thread,
so that synchronous tests can point etcdctl (a subprocess) or any client at it."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from cluster import free_ports
from shoal.etcdapi.server import EtcdServer, TLSFiles
from shoal.server.config import Member, NodeConfig
from shoal.server.main import Server


class BackgroundCluster:
    """`n` in-process Shoal nodes, each with an EtcdServer (and a JSON gateway) beside it."""

    def __init__(self, root: Path, n: int = 3, tls: TLSFiles | None = None, **node_kw: Any):
        ports = free_ports(6 * n)
        self.members = tuple(
            Member(i + 1, ("127.0.0.1", ports[6 * i]), ("127.0.0.1", ports[6 * i + 1]))
            for i in range(n))
        self.http = {i + 1: ports[6 * i + 2] for i in range(n)}
        self.etcd_ports = {i + 1: ports[6 * i + 3] for i in range(n)}
        self.gateway_ports = {i + 1: ports[6 * i + 4] for i in range(n)}
        self.root, self.tls, self.node_kw = root, tls, node_kw
        self.servers: dict[int, Server] = {}
        self.etcd: dict[int, EtcdServer] = {}
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True,
                                        name="shoal-etcd-cluster")

    @property
    def endpoints(self) -> list[str]:
        return [f"127.0.0.1:{self.etcd_ports[m.id]}" for m in self.members]

    def client_urls(self, m: Member) -> list[str]:
        port = self.etcd_ports.get(m.id)
        scheme = "https" if self.tls else "http"
        return [f"{scheme}://127.0.0.1:{port}"] if port else []

    def run(self, coro: Coroutine[Any, Any, Any], timeout: float = 30) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def start(self) -> BackgroundCluster:
        self._thread.start()
        self.run(self._start())
        return self

    async def _start(self) -> None:
        for m in self.members:
            cfg = NodeConfig(id=m.id, data_dir=self.root / f"n{m.id}", members=self.members,
                             http=("127.0.0.1", self.http[m.id]), tick_ms=20,
                             **self.node_kw).validate()
            server = Server(cfg)
            await server.start()
            self.servers[m.id] = server
            etcd = EtcdServer(server.node, f"127.0.0.1:{self.etcd_ports[m.id]}", tls=self.tls,
                              gateway_addr=("127.0.0.1", self.gateway_ports[m.id]),
                              client_urls=self.client_urls, progress_interval=1.0)
            await etcd.start()
            self.etcd[m.id] = etcd
        await self.wait_leader()

    async def wait_leader(self, timeout: float = 10) -> int:
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while loop.time() < end:
            leaders = [i for i, s in self.servers.items() if s.node.role == "leader"]
            if len(leaders) == 1 and all(s.node.leader == leaders[0] for s in self.servers.values()):
                return leaders[0]
            await asyncio.sleep(0.02)
        raise TimeoutError("no leader")

    def leader(self) -> int:
        return int(self.run(self.wait_leader()))

    def stop(self) -> None:
        async def _stop() -> None:
            for e in self.etcd.values():
                await e.stop()
            for s in self.servers.values():
                await s.stop()
        try:
            self.run(_stop(), timeout=30)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)
