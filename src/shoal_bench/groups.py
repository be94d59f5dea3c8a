"""`shoal bench --groups N`: what idle consensus groups cost. A local 3-process cluster hosts N
groups of 3 replicas each; once every group has elected and taken a write, the CPU each
process uses while nothing happens is read from /proc over a window, beside the same cluster
with no groups but the meta group, in the same run. Repeated; medians quoted."""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import time
from dataclasses import asdict, dataclass

from rich.console import Console
from rich.table import Table

from shoal.client import Client
from shoal.local.cluster import LocalProcessCluster

console = Console()


@dataclass
class IdleRun:
    groups: int
    cpu_percent: dict[int, float]  # node -> % of one core while idle
    create_s: float  # wall time to create the groups
    first_write_s: float  # wall time to elect every group and write once to each


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _populate(endpoints: list[str], groups: int) -> tuple[float, float]:
    async with Client(endpoints, timeout=60) as cl:
        t = time.perf_counter()
        for i in range(1, groups + 1, 20):
            await asyncio.gather(*(cl.create_group(g) for g in range(i, min(i + 20, groups + 1))))
        created = time.perf_counter() - t
        t = time.perf_counter()
        for i in range(1, groups + 1, 20):
            await asyncio.gather(*(cl.group(g).put(b"k", b"v")
                                   for g in range(i, min(i + 20, groups + 1))))
        return created, time.perf_counter() - t


def idle_run(groups: int, window_s: float, settle_s: float = 3.0) -> IdleRun:
    with LocalProcessCluster(3) as c:
        c.start()
        created, written = asyncio.run(_populate(c.endpoints, groups)) if groups else (0.0, 0.0)
        time.sleep(settle_s)  # past the election timeout: idle groups are quiescent by now
        pids = {i: c.pid(i) for i in c.ids}
        before = {i: _cpu_seconds(p) for i, p in pids.items() if p}
        t = time.perf_counter()
        time.sleep(window_s)
        dt = time.perf_counter() - t
        cpu = {i: (_cpu_seconds(p) - before[i]) / dt * 100 for i, p in pids.items() if p}
    return IdleRun(groups, cpu, created, written)


def run_groups_bench(groups: int, window_s: float, repeat: int, as_json: bool) -> None:
    runs: list[IdleRun] = []
    with console.status("measuring idle clusters...") as status:
        for r in range(repeat):
            for n in (0, groups):  # interleaved, so both see the same machine
                status.update(f"run {r + 1}/{repeat}: {n} groups, {window_s:.0f} s idle window")
                runs.append(idle_run(n, window_s))
    def med(n: int) -> float:
        return statistics.median(statistics.median(x.cpu_percent.values()) for x in runs if x.groups == n)
    summary = {"groups": groups, "repeat": repeat, "window_s": window_s,
               "idle_cpu_percent_per_process": {"meta only": med(0), f"{groups} groups": med(groups)},
               "create_s": statistics.median(x.create_s for x in runs if x.groups),
               "first_write_s": statistics.median(x.first_write_s for x in runs if x.groups),
               "runs": [asdict(x) for x in runs]}
    if as_json:
        print(json.dumps(summary, indent=2))
        return
    t = Table(title=f"idle cost of {groups} groups of 3 replicas on 3 processes (medians of {repeat})")
    for col in ("cluster", "CPU per process, % of one core", "create", "elect + first write"):
        t.add_column(col)
    t.add_row("meta group only", f"{med(0):.1f}", "", "")
    t.add_row(f"{groups} groups", f"{med(groups):.1f}", f"{summary['create_s']:.1f} s",
              f"{summary['first_write_s']:.1f} s")
    console.print(t)


@dataclass
class SpreadRun:
    groups: int  # writes spread over this many groups (1: the meta group alone)
    puts_per_s: float
    fsyncs_per_put: float  # all processes together


async def _writers(endpoints: list[str], groups: list[int], clients: int, seconds: float) -> int:
    done = 0
    async with Client(endpoints, timeout=30) as cl:
        views = [cl.group(g) if g else cl for g in groups]
        end = time.perf_counter() + seconds

        async def writer(i: int) -> None:
            nonlocal done
            view = views[i % len(views)]
            while time.perf_counter() < end:
                await view.put(b"w%d" % i, b"x" * 256)
                done += 1

        await asyncio.gather(*(writer(i) for i in range(clients)))
    return done


def _fsyncs(c: LocalProcessCluster) -> float:
    return sum(st["fsyncs"] for i in c.ids if (st := c.status(i)) and "fsyncs" in st)


def spread_run(groups: int, clients: int, seconds: float) -> SpreadRun:
    """Puts from `clients` writers, spread round-robin over `groups` groups (each its own WAL
    directory, so each its own fsync per batch)."""
    with LocalProcessCluster(3) as c:
        c.start()
        ids = [0] if groups == 1 else list(range(1, groups + 1))
        if groups > 1:
            asyncio.run(_populate(c.endpoints, groups))
        before = _fsyncs(c)
        t = time.perf_counter()
        n = asyncio.run(_writers(c.endpoints, ids, clients, seconds))
        dt = time.perf_counter() - t
        return SpreadRun(groups, n / dt, (_fsyncs(c) - before) / max(n, 1))


def run_spread_bench(groups: int, clients: int, seconds: float, repeat: int, as_json: bool) -> None:
    runs: list[SpreadRun] = []
    with console.status("measuring writes...") as status:
        for r in range(repeat):
            for n in (1, groups):
                status.update(f"run {r + 1}/{repeat}: {clients} writers over {n} group(s)")
                runs.append(spread_run(n, clients, seconds))
    rows = {n: (statistics.median(x.puts_per_s for x in runs if x.groups == n),
                statistics.median(x.fsyncs_per_put for x in runs if x.groups == n)) for n in (1, groups)}
    if as_json:
        print(json.dumps({"clients": clients, "repeat": repeat, "rows": rows,
                          "runs": [asdict(x) for x in runs]}, indent=2))
        return
    t = Table(title=f"{clients} writers, 256-byte puts, fsync on (medians of {repeat})")
    for col in ("spread over", "puts/s", "fsyncs per put (3 processes)"):
        t.add_column(col)
    for n, (rate, fs) in rows.items():
        t.add_row(f"{n} group(s)", f"{rate:,.0f}", f"{fs:.2f}")
    console.print(t)
