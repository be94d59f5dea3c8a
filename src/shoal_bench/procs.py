"""The load generator in several processes, and where the CPU went.

`run_load_procs` splits the clients over N spawned processes, each running its share on its
own event loop (uvloop when installed). The processes connect (and one fills the keys a get
needs), report ready, and are then given one start instant on the system-wide monotonic clock,
so they start and stop together. Each sends back its raw per-operation latencies, so the
percentiles are over every operation of every process, not an average of percentiles.

Around the measured window the parent reads utime+stime from /proc/PID/stat of every server
process and of every generator process: server CPU per operation says where the time went,
and the generator's own CPU says whether the generator was the limit."""

from __future__ import annotations

import asyncio
import math
import multiprocessing as mp
import os
import time
import traceback
from array import array
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from .loadgen import Driver, LoadResult, closed_loop, fill_keys, put_share_of

# The start instant is this far after the last process said ready: time to pass it to all.
_START_LEAD_S = 0.05


@dataclass(frozen=True)
class DriverSpec:
    """How a generator process builds its driver (a driver itself cannot cross processes).
    kind "shoal": Shoal's own client over `endpoints`; "etcd": aetcd to `endpoints[0]`, etcd's
    gRPC API (etcd's, or Shoal's with --grpc); "rpc-*" and "shop-*":
    shoal_bench.rpc's."""

    system: str
    kind: str
    endpoints: tuple[str, ...]
    txn: str = ""  # a transfer span (txn.py): each "put" is a bank transfer of that span

    def make(self) -> Driver:
        if self.txn:
            from .txn import TxnDriver

            return TxnDriver(self.system, self.kind, list(self.endpoints), self.txn,
                             seed=os.getpid())
        if self.kind == "shoal":
            from .shoal_driver import ShoalDriver

            return ShoalDriver(list(self.endpoints))
        if self.kind.startswith(("rpc-", "shop-")):  # shoal_bench.rpc's
            from .rpc import make_driver

            return make_driver(self.kind, list(self.endpoints))  # type: ignore[no-any-return]
        from .etcd import EtcdDriver

        return EtcdDriver(self.endpoints[0])


def cpu_seconds(pids: Sequence[int]) -> float:
    """utime+stime of `pids` together so far; NaN if one is gone (its CPU would be lost)."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()  # the name may hold spaces
        except OSError:
            return math.nan
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def split_clients(clients: int, procs: int) -> list[int]:
    """`clients` over at most `procs` processes, as evenly as possible, none empty."""
    n = max(1, min(procs, clients))
    return [clients // n + (1 if i < clients % n else 0) for i in range(n)]


def run_load_procs(spec: DriverSpec, *, clients: int, seconds: float, value_size: int, mix: str,
                   procs: int, server_pids: Sequence[int] = (), keys: int = 10_000,
                   warmup: float = 1.0, seed: int = 1) -> LoadResult:
    put_share = put_share_of(mix)  # a bad mix fails here, before any process starts
    jobs = [_Job(spec, share, put_share, value_size, keys, warmup, seconds, seed + i, fill=i == 0)
            for i, share in enumerate(split_clients(clients, procs))]
    parts, server_cpu_s, generator_cpu_s = run_generators(_worker, jobs, warmup=warmup,
                                                          seconds=seconds,
                                                          server_pids=server_pids)
    latencies = array("d")
    for p in parts:
        latencies.frombytes(p["latencies"])
    return LoadResult.of(spec.system, mix, clients, sorted(latencies), sum(p["errors"] for p in parts),
                         seconds, server_cpu_s=server_cpu_s if server_pids else math.nan,
                         generator_cpu_s=generator_cpu_s, procs=len(jobs))


def run_generators(target: Callable[[Any, Connection], None], jobs: Sequence[Any], *,
                   warmup: float, seconds: float, server_pids: Sequence[int] = (),
                   ) -> tuple[list[Any], float, float]:
    """One spawned process per job running `target(job, conn)`, which sends ("ready", None),
    receives the start instant, and ends with ("done", result) or ("error", traceback). All
    start at one instant; the CPU of the servers and of the generators is read around the
    window [start + warmup, + seconds]. Returns the results, server and generator CPU seconds."""
    ctx = mp.get_context("spawn")  # the parent runs threads (rich); fork would copy them mid-step
    conns: list[Connection] = []
    workers: list[Any] = []
    try:
        for i, job in enumerate(jobs):
            parent, child = ctx.Pipe()
            w = ctx.Process(target=target, args=(job, child), daemon=True, name=f"loadgen-{i}")
            w.start()
            child.close()  # ours closed, a dead worker is an EOFError here, not a hang
            conns.append(parent)
            workers.append(w)
        for c in conns:
            _recv(c, "ready", timeout=60)
        start = time.monotonic() + _START_LEAD_S
        for c in conns:
            c.send(start)
        measure_from = start + warmup
        gen_pids = [w.pid for w in workers]
        _sleep_until(measure_from)
        srv0, gen0 = cpu_seconds(server_pids), cpu_seconds(gen_pids)
        _sleep_until(measure_from + seconds)
        srv1, gen1 = cpu_seconds(server_pids), cpu_seconds(gen_pids)
        parts = [_recv(c, "done", timeout=90) for c in conns]
    finally:
        for c in conns:
            c.close()
        for w in workers:
            w.join(10)
            if w.is_alive():
                w.kill()
                w.join()
    return parts, srv1 - srv0, gen1 - gen0


@dataclass(frozen=True)
class _Job:
    spec: DriverSpec
    clients: int
    put_share: float
    value_size: int
    keys: int
    warmup: float
    seconds: float
    seed: int
    fill: bool  # this process writes the keys gets read, before saying ready


def _worker(job: _Job, conn: Connection) -> None:
    try:
        conn.send(("done", _run_loop(_work(job, conn))))
    except BaseException:  # noqa: BLE001 - the parent raises it with this traceback
        conn.send(("error", traceback.format_exc()))
    finally:
        conn.close()


def _run_loop(coro: Coroutine[Any, Any, dict[str, Any]]) -> dict[str, Any]:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


async def _work(job: _Job, conn: Connection) -> dict[str, Any]:
    driver = job.spec.make()
    try:
        value = os.urandom(job.value_size)
        keys = job.keys if job.put_share == 1.0 else min(job.keys, 1000)  # gets need keys that exist
        if job.fill and job.put_share < 1.0:
            await fill_keys(driver, keys, value)
        conn.send(("ready", None))
        loop = asyncio.get_running_loop()
        # In a thread: the client's own tasks (connections, sessions) keep running meanwhile.
        start = await loop.run_in_executor(None, conn.recv)
        await asyncio.sleep(max(0.0, start - time.monotonic()))
        measure_from = start + job.warmup
        lat, errors = await closed_loop(driver, clients=job.clients, put_share=job.put_share, keys=keys,
                                        value=value, measure_from=measure_from,
                                        stop_at=measure_from + job.seconds, seed=job.seed)
        return {"latencies": array("d", lat).tobytes(), "errors": errors}
    finally:
        await driver.close()


def _recv(conn: Connection, kind: str, timeout: float) -> Any:
    if not conn.poll(timeout):
        raise TimeoutError(f"a load-generator process sent no {kind!r} within {timeout:.0f} s")
    try:
        tag, body = conn.recv()
    except EOFError:
        raise RuntimeError(f"a load-generator process exited before sending {kind!r}") from None
    if tag == "error":
        raise RuntimeError(f"a load-generator process failed:\n{body}")
    if tag != kind:
        raise RuntimeError(f"a load-generator process sent {tag!r}, expected {kind!r}")
    return body


def _sleep_until(t: float) -> None:
    time.sleep(max(0.0, t - time.monotonic()))
