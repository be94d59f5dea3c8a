"""The driver for Shoal itself: the project's own asyncio client, writes with sessions
(exactly-once) and linearizable reads, as an application would use it."""

from __future__ import annotations

from shoal.client import Client


class ShoalDriver:
    name = "shoal"

    def __init__(self, endpoints: list[str]):
        self._c = Client(endpoints)

    async def put(self, key: bytes, value: bytes) -> None:
        await self._c.put(key, value)

    async def get(self, key: bytes) -> None:
        await self._c.get(key)

    async def close(self) -> None:
        await self._c.close()
