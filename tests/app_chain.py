"""A chain of three components for the RPC proofs: A calls B calls C. Each `probe` reports the
remaining deadline it sees; `hold` blocks in C until cancelled and says so in the store."""

from __future__ import annotations

import asyncio
import time
from typing import Protocol

from shoal.app import Application, Component, idempotent
from shoal.rpc.deadline import current as current_deadline


def _left() -> float:
    d = current_deadline.get()
    return -1.0 if d is None else d - time.monotonic()


class C(Protocol):
    async def probe(self, sleep_ms: int) -> list[float]: ...
    async def hold(self, key: str) -> None: ...

    @idempotent
    async def ping(self) -> int: ...

    async def bump(self) -> int: ...


class B(Protocol):
    async def probe(self, sleep_ms: int) -> list[float]: ...
    async def hold(self, key: str) -> None: ...


class A(Protocol):
    async def probe(self, sleep_ms: int) -> list[float]: ...
    async def hold(self, key: str) -> None: ...


class CImpl(Component, C):
    pings = 0  # calls this replica served, for the strategy tests

    async def ping(self) -> int:
        self.pings += 1
        return self.pings

    async def bump(self) -> int:
        return await self.ping()

    async def probe(self, sleep_ms: int) -> list[float]:
        left = _left()
        await asyncio.sleep(sleep_ms / 1000)
        return [left]

    async def hold(self, key: str) -> None:
        client = self.ctx.client
        await client.put(f"/chain/started/{key}".encode(), b"")
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            await asyncio.shield(client.put(f"/chain/cancelled/{key}".encode(), b""))
            raise


class BImpl(Component, B):
    async def probe(self, sleep_ms: int) -> list[float]:
        left = _left()
        await asyncio.sleep(0.05)  # a hop that spends time: the next one sees less
        return [left, *await self.get(C).probe(sleep_ms)]

    async def hold(self, key: str) -> None:
        await self.get(C).hold(key)


class AImpl(Component, A):
    async def probe(self, sleep_ms: int) -> list[float]:
        left = _left()
        await asyncio.sleep(0.05)
        return [left, *await self.get(B).probe(sleep_ms)]

    async def hold(self, key: str) -> None:
        await self.get(B).hold(key)


App = Application("chain", AImpl, BImpl, CImpl)
