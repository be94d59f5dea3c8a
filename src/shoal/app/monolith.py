"""The monolith: every component in one process, calls are plain method calls.

    async with Monolith(App, client) as m:
        await m.get(Frontend).checkout(...)

No serialization, no stubs: `get` returns the implementation object itself (with
`check_args`, a proxy that validates arguments against the interface first, so the monolith
refuses what a deployment would). The store client is the caller's; `shoal app run` makes one
(and a local cluster when given no endpoints)."""

from __future__ import annotations

from typing import Any, TypeVar

from .component import Application, Component
from .runtime import LocalRuntime, start_components

T = TypeVar("T")


class Monolith:
    def __init__(self, app: Application, client: Any, *, check_args: bool = False,
                 metrics: Any = None):
        from prometheus_client import CollectorRegistry

        self.app, self.client = app, client
        self.runtime = LocalRuntime(app, check_args=check_args)
        self.metrics = metrics if metrics is not None else CollectorRegistry()
        self.components: list[Component] = []

    async def __aenter__(self) -> Monolith:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        self.components = await start_components(self.runtime, list(self.app.components),
                                                 self.client, self.metrics)

    async def stop(self) -> None:
        for c in reversed(self.components):
            await c.stop()
        self.components = []

    def get(self, iface: type[T], *, strategy: str | None = None) -> T:
        return self.runtime.get(iface, strategy=strategy)
