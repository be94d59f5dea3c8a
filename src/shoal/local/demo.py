"""`shoal demo`: a real 3-node cluster (three OS processes) under a client workload; the leader
is killed with SIGKILL mid-run. Then we show how long failover took, look for every
acknowledged write in the store's history, and check the recorded history for linearizability.

Writes carry unique values and each acknowledgement names the store revision the write got,
so "is this acknowledged write in the store" has a yes/no answer: read the key at that
revision (the store keeps every version until compacted)."""

from __future__ import annotations

import asyncio
import contextlib
import random
import statistics
import tempfile
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table

from ..check import Event, check_history, dump_history
from ..client import Client, ClientError
from ..kv.errors import KVError
from .cluster import LocalProcessCluster

KEYS = ("demo/x", "demo/y", "demo/z")
CLIENTS = 6
BEFORE_KILL_S = 4.0
AFTER_FAILOVER_S = 4.0
CLIENT_TIMEOUT_S = 5.0  # long enough for a write to ride out the election


@dataclass
class Recorder:
    """The history in the checker's format, plus what the live view and summary need."""

    t0: int = field(default_factory=time.monotonic_ns)
    events: list[Event] = field(default_factory=list)
    acked: list[tuple[str, str, int]] = field(default_factory=list)  # key, value, revision
    counts: dict[str, int] = field(default_factory=lambda: {"ok": 0, "fail": 0, "info": 0})
    recent: deque[tuple[float, float]] = field(default_factory=lambda: deque(maxlen=20_000))
    killed_at: float | None = None  # when the leader was killed
    # when the first write sent after the kill was acknowledged: a write sent before it may be
    # answered after it (its answer was in flight), which says nothing of the new leader
    recovered_at: float | None = None

    def record(self, process: int, type: str, f: str, key: str, value: Any) -> None:
        self.events.append(Event(process, type, f, key, value, time.monotonic_ns() - self.t0))

    def done(self, type: str, started: float) -> None:
        now = time.monotonic()
        self.counts[type] += 1
        if type == "ok":
            self.recent.append((now, now - started))

    def window(self, seconds: float = 2.0) -> tuple[float, float, float]:
        """ops/s, p50 and p99 latency (ms) of the operations completed in the last seconds."""
        cutoff = time.monotonic() - seconds
        lat = sorted(d for t, d in self.recent if t >= cutoff)
        if not lat:
            return 0.0, 0.0, 0.0
        return len(lat) / seconds, 1000 * statistics.median(lat), 1000 * lat[int(0.99 * (len(lat) - 1))]


async def worker(w: int, client: Client, rec: Recorder, stop: asyncio.Event) -> None:
    """Half reads, half writes of unique values. A write with an unknown outcome stays open in
    the history forever, so the worker goes on under a fresh process id (the checker's rule)."""
    rng = random.Random(w)
    process, seq = w, 0
    while not stop.is_set():
        key = rng.choice(KEYS)
        started = time.monotonic()
        if rng.random() < 0.5:
            seq += 1
            value = f"{w}.{seq}"
            rec.record(process, "invoke", "write", key, value)
            try:
                resp = await client.put(key.encode(), value.encode())
            except (ClientError, KVError):
                rec.record(process, "info", "write", key, value)
                rec.done("info", started)
                process += CLIENTS
                continue
            rec.record(process, "ok", "write", key, value)
            rec.acked.append((key, value, resp.header.revision))
            if rec.killed_at is not None and rec.recovered_at is None and started > rec.killed_at:
                rec.recovered_at = time.monotonic()
            rec.done("ok", started)
        else:
            rec.record(process, "invoke", "read", key, None)
            try:
                got = await client.get_value(key.encode())
            except (ClientError, KVError):
                rec.record(process, "fail", "read", key, None)  # a read changes nothing
                rec.done("fail", started)
                continue
            rec.record(process, "ok", "read", key, got.decode() if got is not None else None)
            rec.done("ok", started)


@dataclass
class View:
    """What the live display shows; updated by the workload and the status poller."""

    phase: str = "starting"
    statuses: dict[int, dict[str, Any] | None] = field(default_factory=dict)
    killed: int | None = None

    def render(self, rec: Recorder) -> Group:
        ops, p50, p99 = rec.window()
        head = (f"[bold]{self.phase}[/]\n{ops:,.0f} ops/s   latency p50 {p50:.1f} ms, "
                f"p99 {p99:.1f} ms   ok {rec.counts['ok']}, failed reads {rec.counts['fail']}, "
                f"unknown writes {rec.counts['info']}")
        table = Table(title_justify="left")
        for col in ("node", "state", "role", "term", "commit", "applied"):
            table.add_column(col, justify="left" if col in ("state", "role") else "right")
        for i, st in sorted(self.statuses.items()):
            if st is None:
                state = "[red]killed (-9)[/]" if i == self.killed else "[yellow]no answer[/]"
                table.add_row(str(i), state, "-", "-", "-", "-")
            else:
                role = f"[bold green]{st['role']}[/]" if st["role"] == "leader" else st["role"]
                table.add_row(str(i), "up", role, str(st["term"]), str(st["commit"]),
                              str(st["applied"]))
        return Group(Panel(head, title="workload"), table)


async def poll_statuses(cluster: LocalProcessCluster, view: View) -> None:
    while True:
        view.statuses = await asyncio.to_thread(cluster.statuses, 0.5)
        await asyncio.sleep(0.3)


async def run_workload(cluster: LocalProcessCluster, console: Console, rec: Recorder) -> bool:
    """Run clients, kill the leader, watch failover, stop. False if failover did not happen."""
    view = View(statuses={i: None for i in cluster.ids})
    stop = asyncio.Event()
    clients = [Client(cluster.endpoints, timeout=CLIENT_TIMEOUT_S) for _ in range(CLIENTS)]
    poller = asyncio.create_task(poll_statuses(cluster, view))
    workers = [asyncio.create_task(worker(w, c, rec, stop)) for w, c in enumerate(clients)]
    ok = True
    try:
        with Live(view.render(rec), console=console, refresh_per_second=4,
                  get_renderable=lambda: view.render(rec)):
            view.phase = f"{CLIENTS} clients reading and writing {', '.join(KEYS)}"
            await asyncio.sleep(BEFORE_KILL_S)
            victim = await asyncio.to_thread(cluster.leader)
            if victim is None:
                console.print("[red]no leader to kill[/]")
                return False
            console.print(f"[bold red]kill -9[/] node {victim}, the leader (pid {cluster.pid(victim)})")
            rec.killed_at = time.monotonic()
            await asyncio.to_thread(cluster.kill, victim)
            view.killed, view.phase = victim, f"node {victim} killed: electing a new leader"
            ok = await _report_failover(cluster, console, rec, victim, rec.killed_at)
            view.phase = "running on two nodes"
            await asyncio.sleep(AFTER_FAILOVER_S)
            view.phase = "stopping the clients (waiting for operations in flight)"
            stop.set()
            await asyncio.gather(*workers)
            view.phase = "workload stopped"
        console.print()  # a non-terminal Live leaves its last frame without a newline
    finally:
        stop.set()
        poller.cancel()
        for c in clients:
            await c.close()
    return ok


async def _report_failover(cluster: LocalProcessCluster, console: Console, rec: Recorder,
                           victim: int, killed_at: float) -> bool:
    try:
        leader = await asyncio.to_thread(cluster.wait_leader, 10.0, victim)
    except TimeoutError:
        console.print("[red]no new leader within 10 s[/]")
        return False
    elected = time.monotonic() - killed_at
    deadline = time.monotonic() + 10.0
    while rec.recovered_at is None and time.monotonic() < deadline:
        await asyncio.sleep(0.005)
    if rec.recovered_at is None:
        console.print(f"new leader: node {leader}, but no write succeeded within 10 s of the kill")
        return False
    console.print(f"new leader: [bold green]node {leader}[/] after {elected:.2f} s; "
                  f"[bold]failover took {rec.recovered_at - killed_at:.2f} s[/] "
                  "(from the kill to the first acknowledged write sent after it)")
    return True


async def find_acked_writes(endpoints: list[str], rec: Recorder) -> list[tuple[str, str, int]]:
    """The acknowledged writes the store does not hold at the revision it acknowledged."""
    async with Client(endpoints, timeout=CLIENT_TIMEOUT_S) as client:
        limit = asyncio.Semaphore(16)  # a bounded number of reads in flight
        for ep in endpoints:  # connect first: concurrent first calls would each open one
            with contextlib.suppress(ClientError):
                await client.status(ep)

        async def present(key: str, value: str, revision: int) -> bool:
            async with limit:
                resp = await client.get(key.encode(), revision=revision)
            return bool(resp.kvs) and resp.kvs[0].value == value.encode()

        found = await asyncio.gather(*(present(*w) for w in rec.acked))
    return [w for w, ok in zip(rec.acked, found, strict=True) if not ok]


def run_demo(history: Path | None = None) -> int:
    console = Console()
    console.print(Panel.fit(
        "Three Shoal nodes run as separate processes on this machine and replicate a key-value "
        "store with Raft. Six clients read and write while we kill the leader with SIGKILL. "
        "Then: how long did failover take, is every acknowledged write still there, and is the "
        "recorded history linearizable?", title="shoal demo", width=min(console.width, 100)))
    history = history or Path(tempfile.gettempdir()) / "shoal-demo-history.jsonl"
    with LocalProcessCluster(3) as cluster:
        started = time.monotonic()
        leader = cluster.start()
        console.print(f"3 nodes up in {time.monotonic() - started:.1f} s "
                      f"(data and logs in {cluster.root}); node {leader} leads")
        console.print(_endpoints_table(cluster))
        rec = Recorder()
        t = time.monotonic()
        failover_ok = asyncio.run(run_workload(cluster, console, rec))
        ops = rec.counts["ok"] + rec.counts["fail"] + rec.counts["info"]
        console.print(f"{ops} operations in {time.monotonic() - t:.1f} s: "
                      f"{len(rec.acked)} writes acknowledged, {rec.counts['info']} writes with an "
                      f"unknown outcome, {rec.counts['fail']} reads failed (safe to retry)")
        missing = asyncio.run(find_acked_writes(cluster.endpoints, rec))
        kept = _report_writes(console, rec, missing)
        dump_history(rec.events, history)
        linear = _report_check(console, rec, history)
        codes = cluster.stop()
        console.print("cluster stopped: " + ", ".join(
            f"node {i} " + ("killed earlier" if c == -9 else f"exited {c}") for i, c in codes.items()))
    return 0 if failover_ok and kept and linear else 1


def _endpoints_table(cluster: LocalProcessCluster) -> Table:
    table = Table(title_justify="left")
    for col in ("node", "pid", "client", "peer", "http"):
        table.add_column(col)
    for i, c, p, h in zip(cluster.ids, cluster.endpoints, cluster.peer_endpoints,
                          cluster.http_endpoints, strict=True):
        table.add_row(str(i), str(cluster.pid(i)), c, p, h)
    return table


def _report_writes(console: Console, rec: Recorder, missing: list[tuple[str, str, int]]) -> bool:
    if missing:
        console.print(f"[bold red]LOST[/] {len(missing)} of {len(rec.acked)} acknowledged writes, "
                      f"e.g. {missing[:3]}")
        return False
    console.print(f"[bold green]no acknowledged write lost[/]: all {len(rec.acked)} read back at "
                  "the revision their acknowledgement named")
    return True


def _report_check(console: Console, rec: Recorder, history: Path) -> bool:
    result = check_history(rec.events, time_limit=20.0)
    colour = {True: "green", False: "red", None: "yellow"}[result.ok]
    console.print(f"linearizability: [bold {colour}]{result.verdict.upper()}[/] "
                  f"({result.ops_checked} operations checked). {result.explanation}",
                  highlight=False)
    console.print(f"history written to {history}; check it again with: shoal check {history}",
                  highlight=False)
    return bool(result.ok)
