"""A closed-loop load generator: N concurrent clients, each issuing its next request when the
last one returns, for a fixed time after a warm-up. The same loop drives every system under
test; only the `Driver` (how one put or get is sent) differs."""

from __future__ import annotations

import asyncio
import math
import os
import random
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Protocol


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
    # utime+stime over the measured window, all the system's server processes together (NaN:
    # not measured, e.g. a cluster given by --endpoints), and all load-generator processes.
    server_cpu_s: float = math.nan
    generator_cpu_s: float = math.nan
    procs: int = 1

    @classmethod
    def of(cls, system: str, mix: str, clients: int, latencies: list[float], errors: int,
           seconds: float, **cpu: Any) -> LoadResult:
        """From every measured operation's latency (seconds), sorted."""
        return cls(system, mix, clients, len(latencies), errors, seconds,
                   _pct(latencies, 50), _pct(latencies, 99), **cpu)

    @property
    def throughput(self) -> float:
        return self.ops / self.seconds if self.seconds else 0.0

    @property
    def server_us_per_op(self) -> float:
        return self.server_cpu_s / self.ops * 1e6 if self.ops else math.nan

    @property
    def generator_cores(self) -> float:
        """The generator's CPU as cores busy: near the machine's cores, it was the limit."""
        return self.generator_cpu_s / self.seconds if self.seconds else math.nan

    def as_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {**asdict(self), "ops_per_s": self.throughput,
                             "server_us_per_op": self.server_us_per_op,
                             "generator_cores": self.generator_cores}
        return {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in d.items()}


def put_share_of(mix: str) -> float:
    """`mix` is "put", "get" or "P:G" (e.g. "50:50", the share of puts to gets)."""
    share = {"put": 1.0, "get": 0.0}.get(mix)
    if share is None:
        p, _, g = mix.partition(":")
        if not (p.isdigit() and g.isdigit()) or int(p) + int(g) == 0:
            raise ValueError(f"mix must be put, get or P:G like 50:50, not {mix!r}")
        share = int(p) / (int(p) + int(g))
    return share


async def fill_keys(driver: Driver, keys: int, value: bytes, at_once: int = 64) -> None:
    """Write every key `at_once` at a time: all 1,000 together outlasted a 5 s request timeout
    on a loaded machine, and one failed put ends the whole benchmark."""
    for first in range(0, keys, at_once):
        await asyncio.gather(*(driver.put(_key(k), value)
                               for k in range(first, min(keys, first + at_once))))


async def closed_loop(driver: Driver, *, clients: int, put_share: float, keys: int, value: bytes,
                      measure_from: float, stop_at: float, seed: int) -> tuple[list[float], int]:
    """`clients` concurrent clients until `stop_at` (time.monotonic(), the same clock in every
    process): the latencies (seconds) of operations begun from `measure_from`, and the errors."""
    rng = random.Random(seed)
    latencies: list[float] = []
    errors = 0

    async def client() -> None:
        nonlocal errors
        while (now := time.monotonic()) < stop_at:
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
    return latencies, errors


async def run_load(driver: Driver, *, clients: int, seconds: float, value_size: int, mix: str,
                   keys: int = 10_000, warmup: float = 1.0, seed: int = 1) -> LoadResult:
    """In this process, on this loop (the soak and quick checks; `procs.run_load_procs` is the
    benchmark's generator)."""
    put_share = put_share_of(mix)
    value = os.urandom(value_size)
    if put_share < 1.0:  # gets need keys that exist
        keys = min(keys, 1000)
        await fill_keys(driver, keys, value)
    measure_from = time.monotonic() + warmup
    latencies, errors = await closed_loop(driver, clients=clients, put_share=put_share, keys=keys,
                                          value=value, measure_from=measure_from,
                                          stop_at=measure_from + seconds, seed=seed)
    latencies.sort()
    return LoadResult.of(driver.name, mix, clients, latencies, errors, seconds)


def _key(i: int) -> bytes:
    return b"bench/%08d" % i


def _pct(xs: Sequence[float], p: int) -> float:
    if not xs:
        return float("nan")
    return xs[min(len(xs) - 1, int(len(xs) * p / 100))] * 1000


def median_result(results: list[LoadResult]) -> LoadResult:
    """The run with the median throughput (latencies come from that same run)."""
    ordered = sorted(results, key=lambda r: r.throughput)
    return ordered[len(ordered) // 2]
