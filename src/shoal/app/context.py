"""What a component gets from where it runs: `self.ctx`.

`client` is the replicated store's client (shoal.client.Client), shared by the process's
components; `lock(name)` and `election(name)` are the store's recipes under the application's
own prefix, so two applications on one cluster never share a lock by accident; `logger` is a
logger named after the component (trace ids on its records when the process has an Observer);
`metrics` is the process's Prometheus registry, where a component adds its own metrics beside
the per-method ones the RPC records. `runtime` answers `Component.get`."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from ..client import Client, Election, Lock

T = TypeVar("T")


class Runtime(Protocol):
    def get(self, iface: type[T], *, strategy: str | None = None) -> T: ...


@dataclass
class Context:
    app: str
    component: str
    runtime: Runtime
    client: Client
    metrics: CollectorRegistry
    logger: logging.Logger

    def lock(self, name: str, ttl: int = 10) -> Lock:
        from ..client import Lock

        return Lock(self.client, f"app/{self.app}/{name}", ttl)

    def election(self, name: str, ttl: int = 10) -> Election:
        from ..client import Election

        return Election(self.client, f"app/{self.app}/{name}", ttl)


def make_context(app: str, component: str, runtime: Runtime, client: Client,
                 metrics: Any) -> Context:
    return Context(app, component, runtime, client, metrics,
                   logging.getLogger(f"shoal.app.{app}.{component}"))
