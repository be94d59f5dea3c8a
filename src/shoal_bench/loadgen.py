"""A closed-loop load generator: N concurrent clients, each issuing its next request when the
last one returns, for a fixed time after a warm-up. The same loop drives every system under
test; only the `Driver` (how one put or get is sent) differs."""

from __future__ import annotations

import asyncio
import os
import random
import time
from dataclasses import dataclass
from typing import Protocol


class Driver(Protocol):
    name: str

    async def put(self, key: bytes, value: bytes) -> None: ...

    async def get(self, key: bytes) -> None: ...  # linearizable

    async def close(self) -> None: ...


@dataclass
class LoadResult:
    system: str
    mix: str
    clients: int
    ops: int
    errors: int
    seconds: float
    p50_ms: float
    p99_ms: float

    @property
    def throughput(self) -> float:
        return self.ops / self.seconds if self.seconds else 0.0


async def run_load(driver: Driver, *, clients: int, seconds: float, value_size: int, mix: str,
                   keys: int = 10_000, warmup: float = 1.0, seed: int = 1) -> LoadResult:
    """`mix` is "put", "get" or "P:G" (e.g. "50:50", the share of puts to gets)."""
    put_share = {"put": 1.0, "get": 0.0}.get(mix)
    if put_share is None:
        p, _, g = mix.partition(":")
        if not (p.isdigit() and g.isdigit()) or int(p) + int(g) == 0:
            raise ValueError(f"mix must be put, get or P:G like 50:50, not {mix!r}")
        put_share = int(p) / (int(p) + int(g))
    value = os.urandom(value_size)
    rng = random.Random(seed)
    if put_share < 1.0:  # gets need keys that exist
        await asyncio.gather(*(driver.put(_key(k), value) for k in range(min(keys, 1000))))
        keys = min(keys, 1000)
    latencies: list[float] = []
    errors = 0
    loop = asyncio.get_running_loop()
    start = loop.time()
    measure_from, stop_at = start + warmup, start + warmup + seconds

    async def client() -> None:
        nonlocal errors
        while (now := loop.time()) < stop_at:
            key = _key(rng.randrange(keys))
            t0 = time.perf_counter()
            try:
                if rng.random() < put_share:
                    await driver.put(key, value)
                else:
                    await driver.get(key)
            except Exception:  # noqa: BLE001 - counted, not fatal: the run goes on
                errors += 1
                continue
            if now >= measure_from:
                latencies.append(time.perf_counter() - t0)

    await asyncio.gather(*(client() for _ in range(clients)))
    latencies.sort()
    return LoadResult(driver.name, mix, clients, len(latencies), errors, seconds,
                      _pct(latencies, 50), _pct(latencies, 99))


def _key(i: int) -> bytes:
    return b"bench/%08d" % i


def _pct(xs: list[float], p: int) -> float:
    if not xs:
        return float("nan")
    return xs[min(len(xs) - 1, int(len(xs) * p / 100))] * 1000


def median_result(results: list[LoadResult]) -> LoadResult:
    """The run with the median throughput (latencies come from that same run)."""
    ordered = sorted(results, key=lambda r: r.throughput)
    return ordered[len(ordered) // 2]
