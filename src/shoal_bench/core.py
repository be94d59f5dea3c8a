"""`shoal bench`: the figures `make bench` reports. Each is repeated and quoted as a median,
because the machines we run on are shared and noisy."""

from __future__ import annotations

import statistics
import time
from functools import partial

from rich.console import Console
from rich.table import Table

from shoal.kv.requests import Command, PutRequest, RangeRequest
from shoal.sim import SimConfig, World
from shoal.sim.host import Ask
from shoal_bench.checker import bench_checker

console = Console()


def sim_throughput(engine: str, seeds: int = 5, steps: int = 20_000) -> tuple[float, float]:
    """Committed entries per wall-second, and wall-seconds per 1,000 simulated events, for a
    5-node cluster under the default faults (one process, so runs are comparable)."""
    rates, per_k = [], []
    for seed in range(seeds):
        w = World(seed, SimConfig(engine=engine, steps=steps))
        start = time.perf_counter()
        w.run()
        wall = time.perf_counter() - start
        rates.append(max(h.applied for h in w.hosts.values()) / wall)
        per_k.append(wall / w.steps * 1000)
    return statistics.median(rates), statistics.median(per_k)


def saturated_throughput(nodes: int = 3, batch: int = 100, virtual_s: float = 2.0) -> float:
    """Committed entries per wall-second with the leader fed `batch` proposals every 5 ms and
    no faults: what the core and the simulated I/O path can carry."""
    w = World(0, SimConfig(nodes=nodes, clients=0, faults=False, quiesce_after_ticks=0))
    w.run_until(lambda: w.leader() is not None, 2_000_000)
    start, seq = time.perf_counter(), 0
    first = max(h.applied for h in w.hosts.values())
    for _ in range(int(virtual_s * 200)):
        leader = w.leader()
        if leader is not None:
            for _ in range(batch):
                seq += 1
                w.input(leader, Ask(0, _put(f"k{seq % 5}", seq)))
        w.run_for(5_000)
    wall = time.perf_counter() - start
    return (min(h.applied for h in w.hosts.values()) - first) / wall


def engine_profile(engine: str, nodes: int = 3, seeds: int = 5) -> dict[str, float]:
    """What one engine costs in the simulator, no faults: messages per committed command when
    commands go one at a time (no batching), and virtual milliseconds from a leader crash to
    the next committed command. Medians over seeds."""
    runs = [_profile_one(engine, nodes, seed) for seed in range(seeds)]
    return {"messages_per_commit": statistics.median(r[0] for r in runs),
            "failover_ms": statistics.median(r[1] for r in runs)}


def _profile_one(engine: str, nodes: int, seed: int) -> tuple[float, float]:
    w = World(seed, SimConfig(nodes=nodes, clients=0, faults=False, engine=engine))
    w.run_until(lambda: w.leader() is not None, 5_000_000)
    w.run_for(200_000)  # let the election's own traffic settle
    before, seq = w.stats["messages"], 0
    for _ in range(50):
        leader = w.leader()
        assert leader is not None
        seq += 1
        target = max(h.applied for h in w.hosts.values()) + 1
        w.input(leader, Ask(0, _put("k", seq)))
        w.run_until(partial(_all_applied, w, target), 2_000_000)
    per_commit = (w.stats["messages"] - before) / 50
    leader = w.leader()
    assert leader is not None
    w.crash(leader.id)
    crashed_at = w.now
    while w.now - crashed_at < 10_000_000 and not _after_crash(w):
        w.run_for(10_000)
        new = w.leader()
        if new is not None and not new.busy:  # offer a command every 10 ms until one commits
            w.input(new, Ask(0, _put("after-crash", 1)))
    return per_commit, (w.now - crashed_at) / 1000


def _put(key: str, value: int) -> Command:
    return Command(PutRequest(key.encode(), b"%d" % value))


def _after_crash(w: World) -> bool:
    return any(h.up and h.replica.kv.range(RangeRequest(b"after-crash")).kvs for h in w.hosts.values())


def _all_applied(w: World, index: int) -> bool:
    return all(h.applied >= index for h in w.hosts.values())


def run_bench(repeat: int = 3) -> None:
    t = Table(title="shoal bench (medians)")
    for col in ("what", "figure", "unit", "runs"):
        t.add_column(col)
    with console.status("simulating Raft clusters..."):
        rate, per_k = sim_throughput("raft")
    t.add_row("simulated Raft core, 5 nodes under faults", f"{rate:,.0f}", "committed entries / wall-s", "5 seeds")
    with console.status("saturating a 3-node Raft cluster..."):
        sat = statistics.median(saturated_throughput() for _ in range(repeat))
    t.add_row("simulated Raft core, 3 nodes, saturated", f"{sat:,.0f}", "committed entries / wall-s", str(repeat))
    t.add_row("simulator speed", f"{per_k * 1000:,.1f}", "wall-ms / 1,000 events", "5 seeds")
    with console.status("checking a 10,000-operation history..."):
        times = [float(bench_checker()["seconds"]) for _ in range(repeat)]  # type: ignore[arg-type]
    t.add_row("linearizability check, 10k ops, 10 processes, 5 keys",
              f"{statistics.median(times):.2f}", "seconds", str(repeat))
    console.print(t)
    e = Table(title="Raft and Multi-Paxos in the simulator (3 nodes, no faults, medians of 5 seeds)")
    for col in ("engine", "messages per commit (one at a time)", "leader crash to next commit (virtual ms)",
                "committed entries / wall-s under faults"):
        e.add_column(col, justify="right")
    for engine in ("raft", "paxos"):
        with console.status(f"profiling {engine}..."):
            prof = engine_profile(engine)
            rate, _ = sim_throughput(engine)
        e.add_row(engine, f"{prof['messages_per_commit']:.1f}", f"{prof['failover_ms']:.0f}", f"{rate:,.0f}")
    console.print(e)
