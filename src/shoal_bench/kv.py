"""`shoal bench`: a 3-node Shoal cluster and (with --compare-etcd) a 3-member etcd on the same
machine, driven in the same run by the same load generator, runs interleaved so both see the
same noise; medians of repeats, printed as one table with ratios. Also the failover time: kill
-9 of the leader to the first acknowledged write."""

from __future__ import annotations

import asyncio
import signal
import time
from contextlib import ExitStack
from dataclasses import dataclass, field

from rich.console import Console
from rich.table import Table

from shoal.local.cluster import LocalProcessCluster, free_ports
from shoal.server.config import Member

from .etcd import EtcdCluster, EtcdDriver
from .loadgen import Driver, LoadResult, median_result, run_load
from .shoal_driver import ShoalDriver

console = Console()


@dataclass
class BenchPlan:
    clients: list[int]
    value_size: int
    mixes: list[str]
    seconds: float
    repeat: int
    compare_etcd: bool
    failover: bool
    engines: list[str] = field(default_factory=lambda: ["raft"])
    grpc: bool = False  # drive Shoal through its etcd gRPC API with the same client as etcd
    soak_minutes: float = 0.0  # > 0: a long mixed load, sampling each node's memory


def run_kv_bench(plan: BenchPlan, endpoints: list[str] | None = None) -> None:
    with ExitStack() as stack:
        systems: dict[str, list[str]] = {}
        clusters: dict[str, LocalProcessCluster] = {}
        if endpoints:
            systems["shoal"] = endpoints
        else:
            for engine in plan.engines:
                name = "shoal" if plan.engines == ["raft"] else f"shoal-{engine}"
                clusters[name] = stack.enter_context(
                    LocalProcessCluster(3, node_args=["--engine", engine]))
                with console.status(f"starting a 3-node Shoal cluster ({engine})..."):
                    clusters[name].start()
                systems[name] = (_etcd_leader(clusters[name]) if plan.grpc
                                 else clusters[name].endpoints)
        etcd: EtcdCluster | None = None
        if plan.compare_etcd:
            ports = free_ports(6)
            etcd = EtcdCluster(tuple(Member(i + 1, ("127.0.0.1", ports[2 * i]), ("127.0.0.1", ports[2 * i + 1]))
                                     for i in range(3)))
            stack.callback(etcd.stop)
            with console.status("starting a 3-member etcd cluster..."):
                etcd.start()
                systems["etcd"] = [asyncio.run(etcd.wait_leader())]
        if plan.soak_minutes > 0:
            for name, cluster in clusters.items():
                _soak(name, cluster, plan)
            return
        results = asyncio.run(_load_runs(plan, systems))
        _print_table(plan, list(systems), results)
        for name, cluster in clusters.items() if plan.failover else ():
            with console.status(f"measuring failover of {name}: kill -9 of the leader..."):
                times = sorted(_shoal_failover(cluster) for _ in range(plan.repeat))
            console.print(f"{name} failover, kill -9 of the leader to the first acknowledged "
                          f"write: median {times[len(times) // 2]:.2f} s (runs: "
                          + ", ".join(f"{t:.2f}" for t in times) + ")")


async def _load_runs(plan: BenchPlan, systems: dict[str, list[str]]) -> dict[tuple[str, str, int], LoadResult]:
    out: dict[tuple[str, str, int], LoadResult] = {}
    total = len(plan.mixes) * len(plan.clients) * plan.repeat * len(systems)
    done = 0
    for mix in plan.mixes:
        for clients in plan.clients:
            runs: dict[str, list[LoadResult]] = {name: [] for name in systems}
            for _ in range(plan.repeat):
                for name, eps in systems.items():  # interleaved: both see the same noise
                    done += 1
                    console.print(f"[dim]run {done}/{total}: {name} {mix} x{clients}[/]")
                    grpc = name == "etcd" or (plan.grpc and name.startswith("shoal"))
                    driver: Driver = EtcdDriver(eps[0]) if grpc else ShoalDriver(eps)
                    try:
                        runs[name].append(await run_load(driver, clients=clients, seconds=plan.seconds,
                                                         value_size=plan.value_size, mix=mix))
                    finally:
                        await driver.close()
            for name, rs in runs.items():
                out[(name, mix, clients)] = median_result(rs)
    return out


def _print_table(plan: BenchPlan, names: list[str],
                 results: dict[tuple[str, str, int], LoadResult]) -> None:
    """One row per (mix, clients); per system ops/s, p50, p99; each system's throughput and p99
    as a ratio to the reference (etcd when present, else the first system)."""
    ref = "etcd" if "etcd" in names else names[0]
    t = Table(title=f"{plan.value_size}-byte values, {plan.seconds:.0f}s runs, median of "
                    f"{plan.repeat}, fsync on, 3 nodes on one machine; ratios against {ref}")
    t.add_column("mix")
    t.add_column("clients", justify="right")
    for name in names:
        for col in ("ops/s", "p50 ms", "p99 ms"):
            t.add_column(f"{name} {col}", justify="right")
    others = [n for n in names if n != ref]
    for name in others:
        t.add_column(f"{name}/{ref} ops", justify="right")
        t.add_column(f"{name}/{ref} p99", justify="right")
    for mix in plan.mixes:
        for clients in plan.clients:
            row = [mix, str(clients)]
            for name in names:
                r = results[(name, mix, clients)]
                row += [f"{r.throughput:,.0f}", f"{r.p50_ms:.1f}", f"{r.p99_ms:.1f}"]
            base = results[(ref, mix, clients)]
            for name in others:
                r = results[(name, mix, clients)]
                row += [f"{r.throughput / base.throughput:.2f}x" if base.throughput else "-",
                        f"{r.p99_ms / base.p99_ms:.2f}x" if base.p99_ms else "-"]
            t.add_row(*row)
    console.print(t)


def _rss_mib(pid: int | None) -> float:
    if pid is None:
        return float("nan")
    try:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def _soak(name: str, cluster: LocalProcessCluster, plan: BenchPlan) -> None:
    """A mixed 50:50 load for `soak_minutes`, printing each node's resident memory every
    tenth of the run: flat memory means no leak in the log, the store or the connections."""
    step = plan.soak_minutes * 60 / 10
    t = Table(title=f"{name}: resident memory (MiB) under a 50:50 load of "
                    f"{plan.clients[0]} clients, {plan.value_size}-byte values")
    t.add_column("minute", justify="right")
    for i in cluster.ids:
        t.add_column(f"node {i}", justify="right")
    t.add_column("ops/s", justify="right")

    async def run() -> None:
        driver = ShoalDriver(cluster.endpoints)
        try:
            for k in range(11):
                rss = [f"{_rss_mib(cluster.pid(i)):.1f}" for i in cluster.ids]
                if k == 10:
                    t.add_row(f"{k * step / 60:.1f}", *rss, "-")
                    break
                r = await run_load(driver, clients=plan.clients[0], seconds=step, warmup=0.0,
                                   value_size=plan.value_size, mix="50:50", keys=100_000, seed=k)
                t.add_row(f"{k * step / 60:.1f}", *rss, f"{r.throughput:,.0f}")
                console.print(f"[dim]{name} soak {k + 1}/10: {r.throughput:,.0f} ops/s[/]")
        finally:
            await driver.close()

    asyncio.run(run())
    console.print(t)


def _etcd_leader(cluster: LocalProcessCluster) -> list[str]:
    """The leader's etcd API endpoint: aetcd talks to one endpoint, as it does for etcd."""
    leader = cluster.wait_leader()
    etcd = cluster.member(leader).etcd
    assert etcd is not None
    return [f"{etcd[0]}:{etcd[1]}"]


def _shoal_failover(cluster: LocalProcessCluster) -> float:
    """Seconds from SIGKILL of the leader to the first acknowledged write afterwards."""
    leader = cluster.wait_leader()

    async def measure() -> float:
        driver = ShoalDriver([e for i, e in zip(cluster.ids, cluster.endpoints, strict=True) if i != leader])
        try:
            await driver.put(b"failover", b"before")
            cluster.kill(leader, signal.SIGKILL)
            killed = time.monotonic()
            while True:
                try:
                    await asyncio.wait_for(driver.put(b"failover", b"after"), 5)
                    return time.monotonic() - killed
                except Exception:  # noqa: BLE001 - keep trying until a write lands
                    await asyncio.sleep(0.01)
        finally:
            await driver.close()

    took = asyncio.run(measure())
    cluster.start_node(leader)
    cluster.wait_leader()
    return took
