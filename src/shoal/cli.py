"""The `shoal` command."""

from __future__ import annotations

from pathlib import Path

import typer

from .cli_cluster import app as cluster_commands
from .cli_governance import app as governance_commands

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Shoal: consensus you can see and verify.")
app.add_typer(cluster_commands)  # node, cluster up, and the client commands, at the top level
app.add_typer(governance_commands)  # shoal service register/list/watch, shoal gateway


@app.command()
def check(
    path: Path = typer.Argument(..., help="history in JSON Lines (see docs/history-format.md)"),
    time_limit: float = typer.Option(60.0, "--time-limit", help="seconds before giving up (exit 2)"),
) -> None:
    """Check a key-value history for linearizability. Exit 0 = linearizable, 1 = not, 2 = undecided."""
    from .check.cli import run_check

    raise typer.Exit(run_check(path, time_limit))


@app.command()
def sim(
    nodes: int = typer.Option(5, "--nodes", min=1, max=9),
    seeds: int = typer.Option(100, "--seeds", min=1, help="how many seeds to run"),
    first_seed: int = typer.Option(0, "--first-seed"),
    seed: int | None = typer.Option(None, "--seed", help="replay exactly this seed, with its trace"),
    steps: int = typer.Option(20_000, "--steps", min=100, help="simulated events per seed"),
    engine: str = typer.Option("raft", "--engine"),
    bug: list[str] = typer.Option([], "--bug", help="switch on a deliberately broken behaviour"),
    trace: Path | None = typer.Option(None, "--trace", help="write the full event trace of --seed here"),
    workers: int | None = typer.Option(None, "--workers", min=1),
    narrate: bool = typer.Option(False, "--demo", help="explain the run and tabulate every seed"),
) -> None:
    """Run a deterministic simulation campaign of a cluster under faults."""
    from .sim.report import run_sim

    raise typer.Exit(run_sim(nodes=nodes, seeds=seeds, first_seed=first_seed, seed=seed,
                             steps=steps, engine=engine, bugs=bug, trace=trace, workers=workers,
                             demo=narrate))


@app.command()
def demo(
    history: Path = typer.Option(None, "--history", help="where to write the recorded history"),
) -> None:
    """A real 3-node cluster loses its leader to kill -9 under load, and nothing is lost.

    Shows the failover time, reads back every acknowledged write and checks the history for
    linearizability. `shoal sim --demo` runs the simulated cluster instead."""
    from .demo import run_demo

    raise typer.Exit(run_demo(history))


@app.command()
def bench(
    core: bool = typer.Option(False, "--core", help="the consensus core in the simulator and the checker"),
    gateway: bool = typer.Option(False, "--gateway", help="the Shoal gateway against HAProxy (wrk, same backends)"),
    clients: str = typer.Option("64", "--clients", help="concurrent clients; a list like 1,16,64 runs each"),
    value_size: int = typer.Option(256, "--value-size", min=1),
    mix: str = typer.Option("put", "--mix", help="put, get, or P:G like 50:50; a list like put,get runs each"),
    time_: str = typer.Option("10s", "--time", help="length of each measured run"),
    repeat: int = typer.Option(3, "--repeat", min=1, help="runs per figure; the median is quoted"),
    compare_etcd: bool = typer.Option(False, "--compare-etcd", help="run a 3-member etcd side by side"),
    failover: bool = typer.Option(False, "--failover", help="also time kill -9 of the leader to the next write"),
    endpoints: str | None = typer.Option(None, "--endpoints", help="an existing Shoal cluster instead of a local one"),
    engines: str = typer.Option("raft", "--engines", help="raft, paxos, or raft,paxos side by side"),
    grpc: bool = typer.Option(False, "--grpc", help="drive Shoal through its etcd API with etcd's client"),
    soak: str | None = typer.Option(None, "--soak", help="e.g. 30m: a long load, memory sampled per node"),
) -> None:
    """Throughput and latency of a 3-node cluster (with --compare-etcd: beside etcd), or --core."""
    if core:
        from .bench.core import run_bench

        run_bench(repeat)
        return
    if gateway:
        from .bench.gateway import GatewayBenchPlan, run_gateway_bench

        run_gateway_bench(GatewayBenchPlan(connections=int(clients.split(",")[0]),
                                           seconds=_duration(time_), repeat=repeat))
        return
    from .bench.kv import BenchPlan, run_kv_bench

    plan = BenchPlan(clients=[int(c) for c in clients.split(",")], value_size=value_size,
                     mixes=mix.split(","), seconds=_duration(time_), repeat=repeat,
                     compare_etcd=compare_etcd, failover=failover, engines=engines.split(","), grpc=grpc,
                     soak_minutes=_duration(soak) / 60 if soak else 0.0)
    run_kv_bench(plan, endpoints.split(",") if endpoints else None)


@app.command()
def torture(
    nodes: int = typer.Option(3, "--nodes", min=3, max=9),
    time_: str = typer.Option("60s", "--time", help="how long the workload runs, e.g. 60s or 5m"),
    seed: int = typer.Option(0, "--seed"),
    clients: int = typer.Option(5, "--clients", min=1),
    history: Path = typer.Option(Path("torture-history.jsonl"), "--history"),
    no_wipe: bool = typer.Option(False, "--no-wipe", help="skip the replaced-disk fault"),
) -> None:
    """Real processes under SIGKILL, SIGSTOP, link cuts and a replaced disk; the history is checked."""
    from rich.console import Console

    from .torture.run import torture as run_torture

    console = Console()
    seconds = _duration(time_)
    console.print(f"torture: {nodes} nodes, {seconds:.0f}s, {clients} clients, seed {seed}")
    r = run_torture(nodes=nodes, seconds=seconds, seed=seed, clients=clients, history=history,
                    wipe=not no_wipe, say=lambda s: console.print(f"  [dim]{s}[/]"))
    console.print(f"operations: {r.counts}; final values {r.final_values}")
    console.print(r.verdict.explanation)
    console.print("[green]every node converged to the same state[/]" if r.converged
                  else "[red]nodes did not converge after healing[/]")
    console.print(f"history: {history} (re-check with: shoal check {history})")
    raise typer.Exit(0 if r.ok else 1)


def _duration(text: str) -> float:
    units = {"s": 1, "m": 60, "h": 3600}
    try:
        return float(text[:-1]) * units[text[-1]] if text[-1] in units else float(text)
    except (ValueError, IndexError):
        raise typer.BadParameter(f"{text!r} is not a duration like 60s or 5m") from None


@app.command("lb-report")
def lb_report(
    out: Path = typer.Option(Path("lb-report.png"), "--out", help="where to write the chart"),
    keys: int = typer.Option(1_000_000, "--keys", help="keys hashed for balance and disruption"),
) -> None:
    """Measure every load-balancing picker: balance, disruption, lookup speed, tail latency."""
    from .balance.report import run_report

    run_report(out=out, keys=keys)


if __name__ == "__main__":
    app()
