"""`shoal bench`: a 3-node Shoal cluster and (with --compare-etcd) a 3-member etcd on the same
machine, driven in the same run by the same load generator, runs interleaved so both see the
same noise; medians of repeats, printed as one table with ratios. Also the failover time: kill
-9 of the leader to the first acknowledged write."""

from __future__ import annotations

import asyncio
import json
import math
import os
import signal
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from functools import partial

from rich.console import Console
from rich.measure import Measurement
from rich.table import Table

from shoal.local.cluster import LocalProcessCluster, free_ports
from shoal.server.config import Member

from .etcd import EtcdCluster
from .loadgen import LoadResult, median_result, run_load
from .procs import DriverSpec, run_load_procs
from .shoal_driver import ShoalDriver

console = Console()  # the figures
progress = Console(stderr=True)  # what is running, kept off stdout so --json stays parseable


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
    procs: int = 2  # load-generator processes: on 2 cores one process can be the limit
    json: bool = False  # the figures as JSON on stdout (progress still on stderr)


@dataclass
class _System:
    spec: DriverSpec
    pids: Callable[[], list[int]]  # its server processes now (none for --endpoints)


def run_kv_bench(plan: BenchPlan, endpoints: list[str] | None = None) -> None:
    with ExitStack() as stack:
        systems: dict[str, _System] = {}
        clusters: dict[str, LocalProcessCluster] = {}
        if endpoints:
            systems["shoal"] = _System(DriverSpec("shoal", "etcd" if plan.grpc else "shoal",
                                                  tuple(endpoints)), list)
        else:
            for engine in plan.engines:
                name = "shoal" if plan.engines == ["raft"] else f"shoal-{engine}"
                c = clusters[name] = stack.enter_context(
                    LocalProcessCluster(3, node_args=["--engine", engine]))
                with progress.status(f"starting a 3-node Shoal cluster ({engine})..."):
                    c.start()
                spec = (DriverSpec(name, "etcd", tuple(_etcd_leader(c))) if plan.grpc
                        else DriverSpec(name, "shoal", tuple(c.endpoints)))
                systems[name] = _System(spec, partial(_cluster_pids, c))
        if plan.compare_etcd:
            ports = free_ports(6)
            etcd = EtcdCluster(tuple(Member(i + 1, ("127.0.0.1", ports[2 * i]), ("127.0.0.1", ports[2 * i + 1]))
                                     for i in range(3)))
            stack.callback(etcd.stop)
            with progress.status("starting a 3-member etcd cluster..."):
                etcd.start()
                leader = asyncio.run(etcd.wait_leader())
            systems["etcd"] = _System(DriverSpec("etcd", "etcd", (leader,)), etcd.pids)
        if plan.soak_minutes > 0:
            soaks = {name: _soak(name, cluster, plan) for name, cluster in clusters.items()}
            if plan.json:
                print(json.dumps({"plan": asdict(plan), "soak": soaks}, indent=2))
            return
        results, runs = _load_runs(plan, systems)
        failovers: dict[str, list[float]] = {}
        for name, cluster in clusters.items() if plan.failover else ():
            with progress.status(f"measuring failover of {name}: kill -9 of the leader..."):
                times = failovers[name] = sorted(_shoal_failover(cluster) for _ in range(plan.repeat))
            if not plan.json:
                console.print(f"{name} failover, kill -9 of the leader to the first acknowledged "
                              f"write: median {times[len(times) // 2]:.2f} s (runs: "
                              + ", ".join(f"{t:.2f}" for t in times) + ")")
        if plan.json:
            print(json.dumps({
                "plan": asdict(plan),
                "medians": [r.as_dict() for r in results.values()],
                "runs": [r.as_dict() for r in runs],
                "failover_s": {n: {"median": t[len(t) // 2], "runs": t} for n, t in failovers.items()},
            }, indent=2))
        else:
            _print_table(plan, list(systems), results)


def _cluster_pids(cluster: LocalProcessCluster) -> list[int]:
    return [p for i in cluster.ids if (p := cluster.pid(i)) is not None]


def _load_runs(plan: BenchPlan, systems: dict[str, _System]
               ) -> tuple[dict[tuple[str, str, int], LoadResult], list[LoadResult]]:
    """The median run of each (system, mix, clients), and every run."""
    out: dict[tuple[str, str, int], LoadResult] = {}
    every: list[LoadResult] = []
    total = len(plan.mixes) * len(plan.clients) * plan.repeat * len(systems)
    done = 0
    for mix in plan.mixes:
        for clients in plan.clients:
            runs: dict[str, list[LoadResult]] = {name: [] for name in systems}
            for _ in range(plan.repeat):
                for name, system in systems.items():  # interleaved: both see the same noise
                    done += 1
                    progress.print(f"[dim]run {done}/{total}: {name} {mix} x{clients}[/]")
                    r = run_load_procs(system.spec, clients=clients, seconds=plan.seconds,
                                       value_size=plan.value_size, mix=mix, procs=plan.procs,
                                       server_pids=system.pids())
                    runs[name].append(r)
                    every.append(r)
            for name, rs in runs.items():
                out[(name, mix, clients)] = median_result(rs)
    return out, every


def _print_table(plan: BenchPlan, names: list[str],
                 results: dict[tuple[str, str, int], LoadResult]) -> None:
    """One row per (mix, clients, system): ops/s, p50, p99, errors, the servers' CPU over the
    window and per operation, the load generator's CPU; and throughput, p99 and CPU per op as
    a ratio to the reference (etcd when present, else the first system)."""
    ref = "etcd" if "etcd" in names else names[0]
    procs = max(r.procs for r in results.values())
    t = Table(title=f"{plan.value_size}-byte values, {plan.seconds:.0f}s runs, median of "
                    f"{plan.repeat}, fsync on, 3 nodes on one machine ({os.cpu_count()} cores), "
                    f"load generator in {procs} process(es); ratios against {ref}")
    for col in ("mix", "clients", "system", "ops/s", "p50 ms", "p99 ms", "errors", "server CPU-s",
                "server us/op", "loadgen cores", "x ops", "x p99", "x us/op"):
        t.add_column(col, justify="left" if col in ("mix", "system") else "right")
    for mix in plan.mixes:
        for clients in plan.clients:
            base = results[(ref, mix, clients)]
            for name in names:
                r = results[(name, mix, clients)]
                t.add_row(mix, str(clients), name, f"{r.throughput:,.0f}", f"{r.p50_ms:.1f}",
                          f"{r.p99_ms:.1f}", str(r.errors), _num(r.server_cpu_s, "{:.2f}"),
                          _num(r.server_us_per_op, "{:,.0f}"), _num(r.generator_cores, "{:.2f}"),
                          *(("", "", "") if name == ref else
                            (_ratio(r.throughput, base.throughput), _ratio(r.p99_ms, base.p99_ms),
                             _ratio(r.server_us_per_op, base.server_us_per_op))))
            t.add_section()
    # As wide as the table needs: squeezed into 80 columns (a pipe's default) every cell is cut.
    wide = Measurement.get(console, console.options.update(max_width=1000), t).maximum
    Console(width=max(console.width, wide)).print(t)


def _num(x: float, fmt: str) -> str:
    return "-" if math.isnan(x) else fmt.format(x)


def _ratio(a: float, b: float) -> str:
    return "-" if not b or math.isnan(a) or math.isnan(b) else f"{a / b:.2f}x"


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


@dataclass
class _SoakRow:
    minute: float
    rss_mib: dict[int, float]  # per node
    ops_per_s: float | None  # over the tenth that starts here (none after the last)


def _soak(name: str, cluster: LocalProcessCluster, plan: BenchPlan) -> list[dict[str, object]]:
    """A mixed 50:50 load for `soak_minutes`, sampling each node's resident memory every
    tenth of the run: flat memory means no leak in the log, the store or the connections.
    Prints the table (unless --json) and returns its rows."""
    step = plan.soak_minutes * 60 / 10
    rows: list[_SoakRow] = []

    async def run() -> None:
        driver = ShoalDriver(cluster.endpoints)
        try:
            for k in range(11):
                rss = {i: _rss_mib(cluster.pid(i)) for i in cluster.ids}
                if k == 10:
                    rows.append(_SoakRow(k * step / 60, rss, None))
                    break
                r = await run_load(driver, clients=plan.clients[0], seconds=step, warmup=0.0,
                                   value_size=plan.value_size, mix="50:50", keys=100_000, seed=k)
                rows.append(_SoakRow(k * step / 60, rss, r.throughput))
                progress.print(f"[dim]{name} soak {k + 1}/10: {r.throughput:,.0f} ops/s[/]")
        finally:
            await driver.close()

    asyncio.run(run())
    if not plan.json:
        t = Table(title=f"{name}: resident memory (MiB) under a 50:50 load of "
                        f"{plan.clients[0]} clients, {plan.value_size}-byte values")
        t.add_column("minute", justify="right")
        for i in cluster.ids:
            t.add_column(f"node {i}", justify="right")
        t.add_column("ops/s", justify="right")
        for row in rows:
            t.add_row(f"{row.minute:.1f}", *(f"{m:.1f}" for m in row.rss_mib.values()),
                      "-" if row.ops_per_s is None else f"{row.ops_per_s:,.0f}")
        console.print(t)
    return [asdict(row) for row in rows]


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
    cluster.wait_caught_up(leader)  # the next run kills a leader of a whole cluster
    return took
