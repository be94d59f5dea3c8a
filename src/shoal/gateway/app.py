"""The gateway: a service's registry entries → health checks and the caller → a proxy.

`ServiceWatcher` pushes every membership change into the caller (which rebuilds its picker),
the health checker and the connection pools. Health changes and outlier ejections only
change the caller's routable set. An admin HTTP server serves /metrics (Prometheus) and
/backends (the routing state as JSON)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest

from ..caller import BreakerConfig, BudgetConfig, CallPolicy, RetryBudget
from ..client import Client
from ..registry import (
    HealthChecker,
    HealthConfig,
    OutlierConfig,
    OutlierDetector,
    ServiceWatcher,
    Snapshot,
    parse_address,
)
from .calls import GatewayCaller
from .pool import Pools
from .proxy import HttpProxy, ProxyLimits
from .stats import GatewayCollector, GatewayStats
from .tcp import TcpProxy

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GatewayConfig:
    service: str
    endpoints: list[str]
    listen: str = "127.0.0.1:8080"
    admin: str | None = "127.0.0.1:9901"  # None: no admin server
    mode: str = "http"  # or "tcp"
    lb: str = "round-robin"
    lb_options: dict[str, Any] = field(default_factory=dict)
    hash_header: str | None = None  # hash pickers hash this header, else the client address
    health: HealthConfig | None = field(default_factory=HealthConfig)  # None: no active checks
    outlier: OutlierConfig = field(default_factory=OutlierConfig)
    breaker: BreakerConfig = field(default_factory=BreakerConfig)
    budget: BudgetConfig = field(default_factory=BudgetConfig)
    policy: CallPolicy = field(default_factory=CallPolicy)
    limits: ProxyLimits = field(default_factory=ProxyLimits)
    pool_max_conns: int = 256
    pool_max_idle: int = 64
    connect_timeout_s: float = 2.0

    def __post_init__(self) -> None:
        if self.mode not in ("http", "tcp"):
            raise ValueError(f"mode {self.mode!r}: use 'http' or 'tcp'")
        if not self.endpoints:
            raise ValueError("the gateway needs the store's endpoints")
        parse_address(self.listen, listen=True)
        if self.admin is not None:
            parse_address(self.admin, listen=True)


class Gateway:
    def __init__(self, config: GatewayConfig):
        self.config = c = config
        self.caller = GatewayCaller(c.lb, lb_options=c.lb_options, policy=c.policy, breaker=c.breaker,
                             budget=RetryBudget(c.budget), outlier=OutlierDetector(c.outlier))
        self.stats = GatewayStats()
        self.pools = Pools(max_conns=c.pool_max_conns, max_idle=c.pool_max_idle,
                           connect_timeout=c.connect_timeout_s)
        self.health = (HealthChecker(c.health, self.caller.set_healthy)
                       if c.health is not None else None)
        self.metrics = CollectorRegistry()
        self.metrics.register(GatewayCollector(c.service, self.stats, self.caller, self.pools))
        self.client: Client | None = None
        self.watcher: ServiceWatcher | None = None
        self.stale = False
        self._servers: list[asyncio.Server] = []
        self._admin: web.AppRunner | None = None

    @property
    def port(self) -> int:
        """The port the proxy listens on (useful with port 0)."""
        return int(self._servers[0].sockets[0].getsockname()[1])

    @property
    def admin_port(self) -> int | None:
        if self._admin is None:
            return None
        return int(self._admin.addresses[0][1])

    async def start(self) -> None:
        c = self.config
        self.client = Client(c.endpoints)
        self.watcher = ServiceWatcher(self.client, c.service)
        await self.watcher.start()
        self.watcher.listen(self._on_snapshot)
        self._on_snapshot(self.watcher.snapshot())
        host, port = parse_address(c.listen, listen=True)
        if c.mode == "http":
            proxy = HttpProxy(self.caller, self.pools, self.stats, c.limits, c.hash_header)
            server = await asyncio.get_running_loop().create_server(proxy.protocol, host, port,
                                                                    backlog=1024)
        else:
            server = await asyncio.start_server(
                TcpProxy(self.caller, self.stats, c.connect_timeout_s).handle, host, port,
                limit=64 * 1024, backlog=1024)
        self._servers.append(server)
        if c.admin is not None:
            await self._start_admin(*parse_address(c.admin, listen=True))

    def _on_snapshot(self, snap: Snapshot) -> None:
        if snap.stale != self.stale:
            self.stale = snap.stale
            log.warning("registry %s: %s", "stale, routing to the last known set" if snap.stale
                        else "reachable again", self.config.service)
        backends = [i.backend() for i in snap.instances]
        self.caller.update(backends)
        if self.health is not None:
            self.health.update({b.id: b.address for b in backends})
        self.pools.retain({b.address for b in backends})

    async def _start_admin(self, host: str, port: int) -> None:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/backends", self._backends)
        self._admin = web.AppRunner(app, access_log=None)
        await self._admin.setup()
        await web.TCPSite(self._admin, host, port).start()

    async def _metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(self.metrics),
                            content_type="text/plain", charset="utf-8")

    async def _backends(self, request: web.Request) -> web.Response:
        return web.json_response(self.state())

    def state(self) -> dict[str, Any]:
        """The routing state: every backend with its health, ejection and breaker."""
        c = self.caller
        now = c.clock()
        ejected = c.outlier.ejected()
        routable = {b.id for b in c.routable()}
        return {
            "service": self.config.service, "lb": self.config.lb, "stale": self.stale,
            "panic": c.panic,
            "backends": [{"id": b.id, "address": b.address, "weight": b.weight,
                          "healthy": b.id not in c.unhealthy, "ejected": b.id in ejected,
                          "breaker": c.breakers[b.id].state(now).value,
                          "routable": b.id in routable, "inflight": c.inflight(b.id)}
                         for b in c.backends.values()],
        }

    async def stop(self) -> None:
        for s in self._servers:
            s.close()
        if self.health is not None:
            await self.health.stop()
        if self.watcher is not None:
            await self.watcher.stop()
        if self._admin is not None:
            await self._admin.cleanup()
        self.pools.close()
        if self.caller.wheel is not None:
            self.caller.wheel.close()
        if self.client is not None:
            await self.client.close()
        for s in self._servers:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(s.wait_closed(), 1.0)

    async def __aenter__(self) -> Gateway:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
