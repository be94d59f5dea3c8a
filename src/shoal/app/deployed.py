"""An application's components as a process reaches them in a deployment.

`Deployed` keeps one `Remote` per component this process does not run, its membership fed by
the registry's watch (a `ServiceWatcher` on the component's service), over one connection
pool (one TCP connection per callee process). Component processes build one around their own
components (shoal.app.process); a plain client of a deployed application (a test, a
benchmark, a front door) builds one with none (and the deployment's token, when it has one):

    async with Deployed(App, client, config, token=dep.token) as d:
        await d.get(Frontend).checkout(...)"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ..caller import BreakerConfig
from ..caller.breaker import BreakerState
from ..registry import ServiceWatcher, Snapshot
from ..registry.outlier import OutlierConfig
from ..rpc import Pool
from .component import Application
from .config import DeployConfig
from .remote import Remote, app_errors
from .runtime import LocalRuntime

T = TypeVar("T")


class Deployed:
    def __init__(self, app: Application, client: Any, config: DeployConfig | None = None, *,
                 local: Iterable[str] = (), observer: Any = None,
                 breaker: BreakerConfig | None = None, outlier: OutlierConfig | None = None,
                 token: str | None = None):
        self.app, self.client = app, client
        self.config = config or DeployConfig()
        self.pool = Pool()
        errors = app_errors(app.errors)
        local = set(local)
        self.remotes = {name: Remote(name, self.config.component(name), self.pool,
                                     errors=errors, breaker=breaker, outlier=outlier,
                                     token=token)
                        for name in app.components if name not in local}
        self.runtime = LocalRuntime(app, remotes=self.remotes, config=self.config,
                                    observer=observer)
        if observer is not None:  # the callers' routing state beside the call counts
            observer.registry.register(_CallerState(observer.process, self.remotes))
        self.watchers: dict[str, ServiceWatcher] = {}

    async def __aenter__(self) -> Deployed:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        for name, remote in self.remotes.items():
            w = ServiceWatcher(self.client, self.app.service(name))
            await w.start()
            w.listen(functools.partial(_follow, remote))
            remote.update(w.snapshot().instances)
            self.watchers[name] = w

    async def stop(self) -> None:
        for w in self.watchers.values():
            await w.stop()
        for r in self.remotes.values():
            await r.close()
        with contextlib.suppress(Exception):
            await self.pool.close()

    def get(self, iface: type[T], *, strategy: str | None = None) -> T:
        return self.runtime.get(iface, strategy=strategy)

    def replicas(self, component: str) -> int:
        return len(self.watchers[component].snapshot().instances)


def _follow(remote: Remote, snapshot: Snapshot) -> None:
    remote.update(snapshot.instances)


class _CallerState(Collector):
    """What this process's callers of each remote component see, read at scrape time: the
    picker and strategy in use (an info gauge), each replica's breaker state and whether the
    outlier detector ejected it. The dashboard shows them beside the callee's figures."""

    def __init__(self, process: str, remotes: dict[str, Remote]) -> None:
        self.process, self.remotes = process, remotes

    def collect(self) -> Iterator[Metric]:
        info = GaugeMetricFamily("shoal_rpc_caller_info", "a caller's picker and strategy",
                                 labels=["process", "component", "picker", "strategy"])
        open_ = GaugeMetricFamily("shoal_rpc_caller_breaker_open",
                                  "1 while the caller's breaker for a replica is open",
                                  labels=["process", "component", "replica"])
        ejected = GaugeMetricFamily("shoal_rpc_caller_ejected",
                                    "1 while the caller's outlier detector ejects a replica",
                                    labels=["process", "component", "replica"])
        for name, remote in sorted(self.remotes.items()):
            caller, cfg = remote.caller, remote.config
            info.add_metric([self.process, name, cfg.picker, cfg.strategy], 1)
            now, out = caller.clock(), caller.outlier.ejected()
            for backend, breaker in sorted(caller.breakers.items()):
                labels = [self.process, name, backend]
                open_.add_metric(labels, int(breaker.state(now) is BreakerState.OPEN))
                ejected.add_metric(labels, int(backend in out))
        yield from (info, open_, ejected)
