"""Active health checks: TCP connect or HTTP GET, on an interval, with thresholds.

`HealthState` is the pure part: `unhealthy_threshold` consecutive failures mark a healthy
backend unhealthy, `healthy_threshold` consecutive passes bring it back, so one lost packet
does not flap a backend out and one lucky answer does not flap it in. A new backend's first
result decides at once (Envoy's rule), so a fresh instance serves after one passing check.
`HealthChecker` runs the probes, one task per backend."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass

from .instance import parse_address


@dataclass(frozen=True, slots=True)
class HealthConfig:
    kind: str = "tcp"  # "tcp": connect succeeds; "http": GET path answers expect_status
    interval_s: float = 5.0
    timeout_s: float = 1.0
    healthy_threshold: int = 2
    unhealthy_threshold: int = 3
    path: str = "/health"
    expect_status: int = 200

    def __post_init__(self) -> None:
        if self.kind not in ("tcp", "http"):
            raise ValueError(f"health check kind {self.kind!r}: use 'tcp' or 'http'")
        if self.interval_s <= 0 or self.timeout_s <= 0:
            raise ValueError("health check interval and timeout must be > 0")
        if self.healthy_threshold < 1 or self.unhealthy_threshold < 1:
            raise ValueError("health check thresholds must be >= 1")
        if not self.path.startswith("/"):
            raise ValueError(f"health check path {self.path!r} must start with '/'")


class HealthState:
    """Pure threshold logic for one backend."""

    def __init__(self, config: HealthConfig):
        self.config = config
        self.healthy: bool | None = None  # None: not checked yet
        self._run = 0  # consecutive results that disagree with `healthy`

    def observe(self, passed: bool) -> bool:
        """Record one check result; True if `healthy` changed."""
        if self.healthy is None:
            self.healthy = passed
            return True
        if passed == self.healthy:
            self._run = 0
            return False
        self._run += 1
        need = self.config.healthy_threshold if passed else self.config.unhealthy_threshold
        if self._run < need:
            return False
        self.healthy, self._run = passed, 0
        return True


async def check_tcp(address: str, timeout: float) -> bool:
    host, port = parse_address(address)
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    except (OSError, TimeoutError):
        return False
    writer.close()
    return True


async def check_http(address: str, path: str, expect_status: int, timeout: float) -> bool:
    """GET path; passes on exactly expect_status. Reads only the status line."""
    host, port = parse_address(address)
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(host, port)
            try:
                writer.write(f"GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n"
                             f"User-Agent: shoal-health\r\n\r\n".encode())
                line = await reader.readline()
            finally:
                writer.close()
    except (OSError, TimeoutError, ValueError):
        return False
    parts = line.split(None, 2)
    return len(parts) >= 2 and parts[0].startswith(b"HTTP/1.") and parts[1] == str(expect_status).encode()


class HealthChecker:
    """Checks every backend it is given; calls `on_change(backend_id, healthy)` on changes."""

    def __init__(self, config: HealthConfig, on_change: Callable[[str, bool], None]):
        self.config, self.on_change = config, on_change
        self.states: dict[str, HealthState] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def update(self, targets: dict[str, str]) -> None:
        """The backends to check now: id → address. Removed ones stop being checked."""
        for bid in list(self._tasks):
            if bid not in targets:
                self._tasks.pop(bid).cancel()
                self.states.pop(bid, None)
        for bid, address in targets.items():
            if bid not in self._tasks:
                self.states[bid] = HealthState(self.config)
                self._tasks[bid] = asyncio.create_task(self._loop(bid, address))

    def healthy(self, backend_id: str) -> bool:
        """Unchecked backends count as healthy until their first result."""
        state = self.states.get(backend_id)
        return state is None or state.healthy is not False

    async def _check(self, address: str) -> bool:
        c = self.config
        if c.kind == "tcp":
            return await check_tcp(address, c.timeout_s)
        return await check_http(address, c.path, c.expect_status, c.timeout_s)

    async def _loop(self, bid: str, address: str) -> None:
        while True:
            passed = await self._check(address)
            state = self.states.get(bid)
            if state is None:
                return
            if state.observe(passed):
                self.on_change(bid, bool(state.healthy))
            await asyncio.sleep(self.config.interval_s)

    async def stop(self) -> None:
        tasks = list(self._tasks.values())
        self._tasks.clear()
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
