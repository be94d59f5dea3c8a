"""A shop of three components, the sample application of docs/components.md:

    Frontend.checkout -> Orders.place -> Inventory.reserve

State lives in Shoal's replicated store, so any replica of a component can serve any call:
stock under /shop/stock/<sku>, orders under /shop/orders/<id>. Reads are `@idempotent` (safe
to retry on another replica); placing an order and reserving stock are not, so a failure that
may have happened after they ran is reported, never retried. Each run of `Orders.place` also
bumps /shop/runs/<id> (its version counts the runs), which is how the tests prove that no
order ever ran twice.

    shoal app run examples.shop:App                             # one process
    shoal app deploy examples.shop:App --config examples/shop.toml   # 3 groups x 2 replicas
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import msgspec

from shoal.app import Application, Component, deadline, idempotent
from shoal.client import txn


@dataclass
class Item:
    sku: str
    count: int


@dataclass
class Order:
    id: str
    items: list[Item]
    status: str


class OutOfStock(Exception):
    """Not enough of an item: nothing was reserved."""


class Inventory(Protocol):
    @idempotent
    async def stock(self, sku: str) -> int: ...

    @idempotent
    async def set_stock(self, sku: str, count: int) -> None: ...

    async def reserve(self, items: list[Item]) -> None: ...


class Orders(Protocol):
    async def place(self, order_id: str, items: list[Item]) -> Order: ...

    @idempotent
    async def find(self, order_id: str) -> Order | None: ...

    @idempotent
    async def runs(self, order_id: str) -> int: ...


class Frontend(Protocol):
    @deadline(5000)
    async def checkout(self, order_id: str, items: list[Item]) -> Order: ...

    @idempotent
    async def order(self, order_id: str) -> Order | None: ...

    @idempotent
    async def stock(self, sku: str) -> int: ...


def _stock_key(sku: str) -> bytes:
    return f"/shop/stock/{sku}".encode()


class InventoryImpl(Component, Inventory):
    async def stock(self, sku: str) -> int:
        value = await self.ctx.client.get_value(_stock_key(sku))
        return int(value) if value is not None else 0

    async def set_stock(self, sku: str, count: int) -> None:
        if count < 0:
            raise ValueError(f"stock of {sku} cannot be negative ({count})")
        await self.ctx.client.put(_stock_key(sku), str(count).encode())

    async def reserve(self, items: list[Item]) -> None:
        """All the items or none: one transaction that checks nothing moved since it read."""
        client = self.ctx.client
        for _ in range(100):  # bounded: contention on one sku resolves within a few rounds
            keys = [_stock_key(i.sku) for i in items]
            reads = [await client.get(k) for k in keys]
            compares, puts = [], []
            for item, key, resp in zip(items, keys, reads, strict=True):
                have = int(resp.kvs[0].value) if resp.kvs else 0
                if have < item.count:
                    raise OutOfStock(f"{item.sku}: {have} in stock, {item.count} wanted")
                rev = resp.kvs[0].mod_revision if resp.kvs else 0
                compares.append(txn.mod_revision_equals(key, rev))
                puts.append(txn.put(key, str(have - item.count).encode()))
            if (await client.txn(compares, puts)).succeeded:
                return
        raise RuntimeError("reserve: the stock kept changing under 100 attempts")


class OrdersImpl(Component, Orders):
    async def place(self, order_id: str, items: list[Item]) -> Order:
        client = self.ctx.client
        await client.put(f"/shop/runs/{order_id}".encode(), b"")  # its version counts the runs
        await self.get(Inventory).reserve(items)
        order = Order(order_id, items, "placed")
        await client.put(f"/shop/orders/{order_id}".encode(), msgspec.json.encode(order))
        return order

    async def find(self, order_id: str) -> Order | None:
        value = await self.ctx.client.get_value(f"/shop/orders/{order_id}".encode())
        return msgspec.json.decode(value, type=Order) if value is not None else None

    async def runs(self, order_id: str) -> int:
        resp = await self.ctx.client.get(f"/shop/runs/{order_id}".encode())
        return resp.kvs[0].version if resp.kvs else 0


class FrontendImpl(Component, Frontend):
    async def checkout(self, order_id: str, items: list[Item]) -> Order:
        if not items:
            raise ValueError("an order needs at least one item")
        return await self.get(Orders).place(order_id, items)

    async def order(self, order_id: str) -> Order | None:
        return await self.get(Orders).find(order_id)

    async def stock(self, sku: str) -> int:
        return await self.get(Inventory).stock(sku)


App = Application("shop", FrontendImpl, OrdersImpl, InventoryImpl, errors=(OutOfStock,))
