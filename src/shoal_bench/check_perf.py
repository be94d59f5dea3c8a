"""etcd's own load check, `etcdctl check perf --load=L`, against Shoal's etcd API and against a
3-member etcd, one after the other in one run: `shoal bench --check-perf m`.

The tool asks for a fixed write rate from many clients for 60 s and passes when throughput
reaches 95% of it, the slowest request is under 0.5 s and the spread of latencies is small
(etcdctl's ctlv3/command/check.go). Its verdict and figures are parsed from its output. Beside
them: the servers' CPU per write (utime+stime of every member over the tool's run, over the
writes it reports), which says more than the verdict on a machine shared with other work."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

from rich.console import Console
from rich.table import Table

from shoal.local.cluster import LocalProcessCluster, free_ports
from shoal.server.config import Member

from .debian import ensure
from .etcd import EtcdCluster
from .procs import cpu_seconds

LOADS = ("s", "m", "l", "xl")
DURATION_S = 60  # every load runs this long (check.go's checkPerfCfgMap)
console = Console(stderr=True)


@dataclass
class CheckPerf:
    system: str
    passed: bool
    writes_per_s: float | None
    slowest_s: float | None
    stddev_s: float | None
    lines: list[str] = field(default_factory=list)  # the tool's verdict lines, as it printed them
    server_cpu_s: float | None = None  # all members, over the tool's whole run

    @property
    def server_us_per_write(self) -> float | None:
        if not self.server_cpu_s or not self.writes_per_s:
            return None
        return self.server_cpu_s / (self.writes_per_s * DURATION_S) * 1e6


def parse(system: str, output: str) -> CheckPerf:
    """The verdict and figures in `etcdctl check perf` output."""
    def number(pattern: str) -> float | None:
        m = re.search(pattern, output)
        return float(m.group(1)) if m else None

    verdicts = [ln.strip() for ln in output.splitlines()
                if re.match(r"\s*(PASS|FAIL|Throughput|Slowest|Stddev)", ln)]
    return CheckPerf(system, bool(verdicts) and verdicts[-1] == "PASS",
                     number(r"Throughput (?:is|too low:) (\d+(?:\.\d+)?) writes/s"),
                     number(r"Slowest request took(?: too long:)? (\d+(?:\.\d+)?)s"),
                     number(r"Stddev (?:is|too high:) (\d+(?:\.\d+)?)s"), verdicts)


def _run(etcdctl: str, system: str, endpoints: list[str], load: str,
         pids: Sequence[int]) -> CheckPerf:
    console.print(f"etcdctl check perf --load={load} against {system} (about a minute)...")
    cpu0 = cpu_seconds(pids)
    out = subprocess.run([etcdctl, f"--endpoints={','.join(endpoints)}", "check", "perf",
                          f"--load={load}"], capture_output=True, text=True, timeout=600,
                         env={**os.environ, "ETCDCTL_API": "3"})
    result = parse(system, out.stdout + out.stderr)
    result.server_cpu_s = cpu_seconds(pids) - cpu0  # (its setup and cleanup writes included)
    return result


def run_check_perf(load: str, as_json: bool) -> None:
    if load not in LOADS:
        raise ValueError(f"--check-perf takes one of {', '.join(LOADS)}, not {load!r}")
    etcdctl = ensure({"etcdctl": "etcd-client"})["etcdctl"]
    results = []
    with LocalProcessCluster(3) as shoal:
        shoal.start()
        results.append(_run(etcdctl, "shoal", shoal.etcd_endpoints, load,
                            [p for i in shoal.ids if (p := shoal.pid(i)) is not None]))
    ports = free_ports(6)
    etcd = EtcdCluster(tuple(Member(i + 1, ("127.0.0.1", ports[2 * i]), ("127.0.0.1", ports[2 * i + 1]))
                             for i in range(3)))
    try:
        etcd.start()
        asyncio.run(etcd.wait_leader())
        results.append(_run(etcdctl, "etcd", etcd.endpoints, load, etcd.pids()))
    finally:
        etcd.stop()
    if as_json:
        print(json.dumps({"load": load, "results": [
            {**asdict(r), "server_us_per_write": r.server_us_per_write} for r in results]}, indent=2))
        return
    table = Table(title=f"etcdctl check perf --load={load}")
    for col in ("system", "verdict", "writes/s", "slowest s", "stddev s", "server us/write"):
        table.add_column(col, justify="right")
    for r in results:
        us = r.server_us_per_write
        table.add_row(r.system, "[green]PASS[/]" if r.passed else "[red]FAIL[/]",
                      *(f"{v:g}" if v is not None else "-"
                        for v in (r.writes_per_s, r.slowest_s, r.stddev_s)),
                      f"{us:,.0f}" if us is not None else "-")
    out = Console(soft_wrap=True)
    out.print(table)
    for r in results:
        out.print(f"{r.system}: " + "; ".join(r.lines))
