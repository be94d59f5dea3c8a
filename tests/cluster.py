"""Helpers to run real Shoal nodes inside a test's event loop (in-process) or as processes."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

from shoal.server.config import Member, NodeConfig
from shoal.server.main import Server


def free_ports(n: int) -> list[int]:
    socks, ports = [], []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


def members(n: int) -> tuple[tuple[Member, ...], list[int]]:
    ports = free_ports(3 * n)
    ms = tuple(Member(i + 1, ("127.0.0.1", ports[3 * i]), ("127.0.0.1", ports[3 * i + 1]))
               for i in range(n))
    return ms, [ports[3 * i + 2] for i in range(n)]


def config(ms: tuple[Member, ...], http: list[int], i: int, root: Path, **kw: object) -> NodeConfig:
    return NodeConfig(id=i, data_dir=root / f"n{i}", members=ms, http=("127.0.0.1", http[i - 1]),
                      tick_ms=20, **kw).validate()  # type: ignore[arg-type]


class LocalCluster:
    def __init__(self, root: Path, n: int = 3, **kw: object):
        self.ms, self.http = members(n)
        self.root, self.kw = root, kw
        self.servers: dict[int, Server] = {}

    @property
    def endpoints(self) -> list[str]:
        return [f"{m.client[0]}:{m.client[1]}" for m in self.ms]

    async def start(self, i: int) -> Server:
        s = Server(config(self.ms, self.http, i, self.root, **self.kw))
        await s.start()
        self.servers[i] = s
        return s

    async def __aenter__(self) -> LocalCluster:
        for m in self.ms:
            await self.start(m.id)
        return self

    async def __aexit__(self, *exc: object) -> None:
        for s in list(self.servers.values()):
            await s.stop()

    async def stop(self, i: int, transfer: bool = False) -> None:
        s = self.servers.pop(i)
        await s.clients.stop()
        await s.node.stop(transfer=transfer)
        if s._runner is not None:
            await s._runner.cleanup()

    async def leader(self, timeout: float = 10.0) -> int:
        end = asyncio.get_running_loop().time() + timeout
        while asyncio.get_running_loop().time() < end:
            leaders = [i for i, s in self.servers.items() if s.node.role == "leader"]
            if len(leaders) == 1:
                return leaders[0]
            await asyncio.sleep(0.02)
        raise TimeoutError("no single leader")


def run(coro, timeout: float = 55):
    return asyncio.run(asyncio.wait_for(coro, timeout))


async def eventually(pred, timeout: float = 10.0, what: str = "condition"):
    """Poll `pred` (sync or async) until it returns something truthy, or fail."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while True:
        value = pred()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if loop.time() > end:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


def ep(c: LocalCluster, i: int) -> str:
    m = next(m for m in c.ms if m.id == i)
    return f"{m.client[0]}:{m.client[1]}"


def drop_client_connections(cl, endpoint: str) -> None:
    """What a crashed server process does to its clients' TCP connections."""
    conn = cl._conns.get(endpoint)
    if conn is not None:
        conn.writer.transport.abort()


async def holds_for(pred, seconds: float, what: str) -> None:
    """Assert `pred` (sync or async) stays true for `seconds` (checked every 50 ms)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    while loop.time() < end:
        value = pred()
        if asyncio.iscoroutine(value):
            value = await value
        assert value, f"{what} stopped holding"
        await asyncio.sleep(0.05)
