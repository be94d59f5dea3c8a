"""`shoal cluster up` (local node processes until Ctrl-C) and `shoal status` (every member's
state in a table)."""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from .common import ENDPOINTS, fail, run_client, size

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

    from ..client import Client

app = typer.Typer()
cluster_app = typer.Typer(no_args_is_help=True, help="Run a cluster of local node processes.")
app.add_typer(cluster_app, name="cluster")


@app.command()
def status(endpoints: str = ENDPOINTS) -> None:
    """A table of every member: role, term, leader, commit and applied index, revision, size,
    health.

    Below it, why each unhealthy member is unhealthy (no leader, no voters, or its applied
    index far behind its commit index: the same verdict as the member's /health). Exits 1 when
    any member is unhealthy or unreachable, 0 when all are healthy."""
    from rich.console import Console

    from ..client import ClientError
    from ..server.config import parse_member
    from ..server.health import unhealthy_reasons

    async def body(client: Client) -> int:
        first = await client.status()
        rows: list[tuple[int, str, dict[str, Any] | None]] = []
        for spec in first["members"].values():
            m = parse_member(spec)
            ep = f"{m.client[0]}:{m.client[1]}"
            try:
                rows.append((m.id, ep, await asyncio.wait_for(client.status(ep), 2.0)))
            except (ClientError, TimeoutError):
                rows.append((m.id, ep, None))
        verdicts = {ident: unhealthy_reasons(st) if st is not None else ["unreachable"]
                    for ident, _, st in rows}
        console = Console()
        console.print(_status_table(rows, verdicts))
        if any(st and len(st.get("groups", {})) > 1 for _, _, st in rows):
            console.print(_groups_table(rows))
        for ident, ep, st in rows:
            if st is None:
                console.print(f"member {ident} ({ep}) is unreachable", highlight=False)
            elif verdicts[ident]:
                console.print(f"member {ident} ({ep}) is unhealthy: {'; '.join(verdicts[ident])}",
                              highlight=False)
        return 1 if any(verdicts.values()) else 0

    run_client(endpoints, body)


def _status_table(rows: list[tuple[int, str, dict[str, Any] | None]],
                  verdicts: dict[int, list[str]]) -> Table:
    from rich.table import Table

    table = Table(title_justify="left")
    for col in ("id", "endpoint", "role", "term", "leader", "commit", "applied", "revision",
                "db size", "health"):
        table.add_column(col, justify="right" if col not in ("endpoint", "role", "health")
                         else "left")
    for ident, ep, st in rows:
        if st is None:
            table.add_row(str(ident), ep, "[red]unreachable[/]", *["-"] * 6, "[red]unreachable[/]")
            continue
        role = f"[bold green]{st['role']}[/]" if st["role"] == "leader" else st["role"]
        health = "[red]unhealthy[/]" if verdicts[ident] else "[green]healthy[/]"
        table.add_row(str(ident), ep, role, str(st["term"]), str(st["leader"]), str(st["commit"]),
                      str(st["applied"]), str(st["revision"]), size(st["db_size"]), health)
    return table


def _groups_table(rows: list[tuple[int, str, dict[str, Any] | None]]) -> Table:
    """Every consensus group any member hosts: its leader and term (as the member with the
    highest term sees them), the leader's commit index, and each replica's applied index."""
    from rich.table import Table

    views: dict[int, dict[int, dict[str, Any]]] = {}
    for ident, _, st in rows:
        for gid, g in (st or {}).get("groups", {}).items():
            views.setdefault(int(gid), {})[ident] = g
    table = Table(title="groups", title_justify="left")
    for col in ("group", "leader", "term", "commit", "applied per replica"):
        table.add_column(col, justify="right" if col != "applied per replica" else "left")
    for gid in sorted(views):
        best = max(views[gid].values(), key=lambda g: (g["term"], g["role"] == "leader"))
        lead = best["leader"]
        commit = views[gid].get(lead, best)["commit"]
        applied = "  ".join(f"{n}:{g['applied']}" for n, g in sorted(views[gid].items()))
        table.add_row(str(gid), str(lead) if lead else "[red]none[/]", str(best["term"]),
                      str(commit), applied)
    return table


@cluster_app.command("up")
def cluster_up(
    nodes: int = typer.Option(3, "--nodes", min=1, max=9),
    dir: Path | None = typer.Option(None, "--dir", help="data dirs and logs (default: temporary)"),
    base_port: int = typer.Option(
        23790, "--base-port",
        help="clients on BASE+i, peers BASE+100+i, http BASE+200+i, etcd API BASE+300+i; 0 = any"),
    engine: str = typer.Option("raft", "--engine", help="consensus engine: raft or paxos"),
) -> None:
    """Start local node processes and keep them running until Ctrl-C.

    Prints each node's client, peer and http address and the leader. Ctrl-C (or SIGTERM)
    stops them: SIGTERM to each, SIGKILL after 5 s."""
    from rich.console import Console

    from ..local.cluster import LocalProcessCluster
    from ..server.config import ConfigError

    console = Console()
    cluster = LocalProcessCluster(nodes, dir, base_port or None, node_args=["--engine", engine])
    signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        console.print(f"starting {nodes} nodes, data and logs in {cluster.root}")
        try:
            leader = cluster.start()
        except (ConfigError, RuntimeError, TimeoutError) as exc:
            raise fail(str(exc), 2) from None
        console.print(_cluster_table(cluster, leader))
        console.print(f"admin token for /status and /faults: {cluster.admin_token_file}",
                      highlight=False)
        console.print(f"SHOAL_ENDPOINTS={','.join(cluster.endpoints)}", highlight=False)
        console.print("try: shoal status / shoal put k v / shoal get k   — Ctrl-C stops the cluster")
        sys.stdout.flush()
        _watch_processes(cluster, console)
    except KeyboardInterrupt:
        console.print("stopping the cluster (SIGTERM, then SIGKILL after 5 s)...")
    finally:
        codes = cluster.stop()
        if dir is None:
            cluster.close()
    clean = all(c == 0 for c in codes.values())
    console.print(", ".join(f"node {i} exited {c}" for i, c in codes.items())
                  + (" — stopped cleanly" if clean else ""))
    raise typer.Exit(0 if clean else 1)


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _watch_processes(cluster: Any, console: Console) -> None:
    """Block until interrupted, reporting a node that exits on its own."""
    reported: set[int] = set()
    while True:
        time.sleep(0.5)
        for i in cluster.ids:
            if not cluster.alive(i) and i not in reported:
                reported.add(i)
                console.print(f"[red]node {i} exited[/] (code {cluster.procs[i].returncode}); "
                              f"see {cluster.log_path(i)}")
                sys.stdout.flush()


def _cluster_table(cluster: Any, leader: int) -> Table:
    from rich.table import Table

    table = Table(title="local Shoal cluster", title_justify="left")
    for col in ("node", "client", "peer", "http", "etcd API", "pid", "role"):
        table.add_column(col)
    for i, client, peer, http, etcd in zip(cluster.ids, cluster.endpoints, cluster.peer_endpoints,
                                           cluster.http_endpoints, cluster.etcd_endpoints,
                                           strict=True):
        table.add_row(str(i), client, peer, http, etcd, str(cluster.pid(i)),
                      "[bold green]leader[/]" if i == leader else "follower")
    return table
