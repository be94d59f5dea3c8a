"""`shoal bench` (Shoal beside etcd and HAProxy, or the core in the simulator) and
`shoal lb-report` (every load-balancing picker measured). The harnesses live in the separate
`shoal_bench` package, imported only when a benchmark runs."""

from __future__ import annotations

from pathlib import Path

import typer

from .common import duration

app = typer.Typer()


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
    groups: int = typer.Option(0, "--groups", min=0, help="the idle CPU cost of N groups on a local cluster"),
    spread_writes: bool = typer.Option(False, "--spread-writes", help="with --groups: puts spread over the groups against one group"),
    procs: int = typer.Option(2, "--procs", min=1, help="load-generator processes the clients are split over"),
    check_perf: str | None = typer.Option(None, "--check-perf", help="etcdctl check perf --load=s|m|l|xl against Shoal's etcd API and a 3-member etcd"),
    txn: str | None = typer.Option(None, "--txn", help="bank transfers over 3 shards beside etcd's Txn: spans 1,2,3,hot"),
    log: bool = typer.Option(False, "--log", help="the event log (confluent-kafka, acks=all) beside Redis Streams (appendfsync always, everysec): 100 B and 1 KiB records"),
    rpc: bool = typer.Option(False, "--rpc", help="Shoal's RPC beside grpcio's asyncio unary calls (--clients 1,64), the monolith's call overhead, the shop as a monolith and deployed"),
    json_out: bool = typer.Option(False, "--json", help="print the results as JSON (--groups, --log, and the etcd comparison)"),
) -> None:
    """Throughput and latency of a 3-node cluster (with --compare-etcd: beside etcd), --core,
    or --groups N (what idle groups cost)."""
    if rpc:
        from shoal_bench.rpc import RpcPlan, run_rpc_bench

        run_rpc_bench(RpcPlan(tuple(int(c) for c in clients.split(",")), duration(time_),
                              repeat, procs, json=json_out))
        return
    if log:
        from shoal_bench.streams import StreamsPlan, run_streams_bench

        run_streams_bench(StreamsPlan([100, 1024], duration(time_), repeat, procs, json=json_out))
        return
    if txn is not None:
        from shoal_bench.txn import TxnPlan, run_txn_bench

        run_txn_bench(TxnPlan([int(c) for c in clients.split(",")], txn.split(","),
                              duration(time_), repeat, procs, json_out))
        return
    if check_perf is not None:
        from shoal_bench.check_perf import run_check_perf

        run_check_perf(check_perf, json_out)
        return
    if groups and spread_writes:
        from shoal_bench.groups import run_spread_bench

        run_spread_bench(groups, int(clients.split(",")[0]), duration(time_), repeat, json_out)
        return
    if groups:
        from shoal_bench.groups import run_groups_bench

        run_groups_bench(groups, duration(time_), repeat, json_out)
        return
    if core:
        from shoal_bench.core import run_bench

        run_bench(repeat)
        return
    if gateway:
        from shoal_bench.gateway import GatewayBenchPlan, run_gateway_bench

        run_gateway_bench(GatewayBenchPlan(connections=int(clients.split(",")[0]),
                                           seconds=duration(time_), repeat=repeat))
        return
    from shoal_bench.kv import BenchPlan, run_kv_bench

    plan = BenchPlan(clients=[int(c) for c in clients.split(",")], value_size=value_size,
                     mixes=mix.split(","), seconds=duration(time_), repeat=repeat,
                     compare_etcd=compare_etcd, failover=failover, engines=engines.split(","), grpc=grpc,
                     soak_minutes=duration(soak) / 60 if soak else 0.0, procs=procs, json=json_out)
    run_kv_bench(plan, endpoints.split(",") if endpoints else None)


@app.command("lb-report")
def lb_report(
    out: Path = typer.Option(Path("lb-report.png"), "--out", help="where to write the chart"),
    keys: int = typer.Option(1_000_000, "--keys", help="keys hashed for balance and disruption"),
) -> None:
    """Measure every load-balancing picker: balance, disruption, lookup speed, tail latency."""
    from ..balance.report import run_report

    run_report(out=out, keys=keys)
