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
from collections.abc import Iterable
from typing import Any, TypeVar

from ..caller import BreakerConfig
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
