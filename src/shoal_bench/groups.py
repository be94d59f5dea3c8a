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
