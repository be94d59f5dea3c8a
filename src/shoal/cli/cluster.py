"""`shoal status` (every member's state), `shoal cluster up` (local node processes until
Ctrl-C) and `shoal cluster stop|start|kill|restart NODE` (one node of a running `cluster up`)."""

from __future__ import annotations

import asyncio
import shlex
import shutil
import signal
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from .common import (
    BASE_PORT,
    ENDPOINTS,
    Output,
    console,
    emit_json,
    fail,
    note,
    output_option,
    print_rows,
    run_client,
    size,
)

if TYPE_CHECKING:
    from rich.table import Table

    from ..client import Client
    from ..local.cluster import ClusterControl, LocalProcessCluster

app = typer.Typer()
cluster_app = typer.Typer(no_args_is_help=True, help="Run a cluster of local node processes.")
app.add_typer(cluster_app, name="cluster")

Row = tuple[int, str, "dict[str, Any] | None"]
STATUS_FIELDS = ("role", "term", "leader", "commit", "applied", "revision", "db_size")


@app.command()
def status(endpoints: str = ENDPOINTS, output: Output = output_option(Output.table)) -> None:
    """Every member: role, term, leader, commit and applied index, revision, size, health.

    Below the table, why each unhealthy member is unhealthy (no leader, no voters, or its
    applied index far behind its commit index: the same verdict as the member's /health).
    Exits 1 when any member is unhealthy or unreachable, 0 when all are healthy."""
    from ..client import ClientError
    from ..server.config import parse_member
    from ..server.health import unhealthy_reasons

    async def body(client: Client) -> int:
        first = await client.status()
        rows: list[Row] = []
        for spec in first["members"].values():
            m = parse_member(spec)
            ep = f"{m.client[0]}:{m.client[1]}"
            try:
                rows.append((m.id, ep, await asyncio.wait_for(client.status(ep), 2.0)))
            except (ClientError, TimeoutError):
                rows.append((m.id, ep, None))
        verdicts = {ident: unhealthy_reasons(st) if st is not None else ["unreachable"]
                    for ident, _, st in rows}
        if output is Output.json:
            emit_json({"members": [_member_json(ident, ep, st, verdicts[ident])
                                   for ident, ep, st in rows]})
        elif output is Output.simple:
            print_rows([[str(ident), ep, *(str(st[f]) for f in STATUS_FIELDS),
                         "unhealthy" if verdicts[ident] else "healthy", "; ".join(verdicts[ident])]
                        if st is not None else [str(ident), ep, *["-"] * 7, "unreachable",
                                                "unreachable"]
                        for ident, ep, st in rows])
        else:
            out = console()
            out.print(_status_table(rows, verdicts))
            if any(st and len(st.get("groups", {})) > 1 for _, _, st in rows):
                out.print(_groups_table(rows))
            for ident, ep, st in rows:
                if st is None:
                    out.print(f"member {ident} ({ep}) is unreachable", highlight=False)
                elif verdicts[ident]:
                    out.print(f"member {ident} ({ep}) is unhealthy: {'; '.join(verdicts[ident])}",
                              highlight=False, markup=False)
        return 1 if any(verdicts.values()) else 0

    run_client(endpoints, body)


def _member_json(ident: int, ep: str, st: dict[str, Any] | None,
                 reasons: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {"id": ident, "endpoint": ep, "reachable": st is not None,
                           "healthy": not reasons, "reasons": reasons}
    if st is not None:
        out.update({f: st[f] for f in STATUS_FIELDS})
        out["groups"] = {str(g): {k: v[k] for k in ("role", "term", "leader", "commit", "applied")}
                         for g, v in st.get("groups", {}).items()}
    return out


def _status_table(rows: list[Row], verdicts: dict[int, list[str]]) -> Table:
    from rich.table import Table

    table = Table(title_justify="left")
    for col in ("id", "endpoint", "role", "term", "leader", "commit", "applied", "revision",
                "db size", "health"):
        table.add_column(col, justify="right" if col not in ("endpoint", "role", "health")
                         else "left", overflow="fold")  # a narrow terminal: fold, never cut
    for ident, ep, st in rows:
        if st is None:
            table.add_row(str(ident), ep, "[red]unreachable[/]", *["-"] * 6, "[red]unreachable[/]")
            continue
        role = f"[bold green]{st['role']}[/]" if st["role"] == "leader" else st["role"]
        health = "[red]unhealthy[/]" if verdicts[ident] else "[green]healthy[/]"
        table.add_row(str(ident), ep, role, str(st["term"]), str(st["leader"]), str(st["commit"]),
                      str(st["applied"]), str(st["revision"]), size(st["db_size"]), health)
    return table


def _groups_table(rows: list[Row]) -> Table:
    """Every consensus group any member hosts: its leader and term (as the member with the
    highest term sees them), the leader's commit index, and each replica's applied index."""
    from rich.table import Table

    views: dict[int, dict[int, dict[str, Any]]] = {}
    for ident, _, st in rows:
        for gid, g in (st or {}).get("groups", {}).items():
            views.setdefault(int(gid), {})[ident] = g
    table = Table(title="groups", title_justify="left")
    for col in ("group", "leader", "term", "commit", "applied per replica"):
        table.add_column(col, justify="right" if col != "applied per replica" else "left",
                         overflow="fold")
    for gid in sorted(views):
        best = max(views[gid].values(), key=lambda g: (g["term"], g["role"] == "leader"))
        lead = best["leader"]
        commit = views[gid].get(lead, best)["commit"]
        applied = "  ".join(f"{n}:{g['applied']}" for n, g in sorted(views[gid].items()))
        table.add_row(str(gid), str(lead) if lead else "[red]none[/]", str(best["term"]),
                      str(commit), applied)
    return table


# ---------------------------------------------------------------------- cluster up
@cluster_app.command("up")
def cluster_up(
    nodes: int = typer.Option(3, "--nodes", min=1, max=9),
    dir: Path | None = typer.Option(None, "--dir", help="data dirs and logs (default: temporary)"),
    keep: bool = typer.Option(False, "--keep", help="keep data dirs and logs on exit"),
    base_port: int = typer.Option(
        BASE_PORT, "--base-port",
        help="clients on BASE+i, peers BASE+100+i, http BASE+200+i, etcd API BASE+300+i; 0 = any"),
    engine: str = typer.Option("raft", "--engine", help="consensus engine: raft or paxos"),
) -> None:
    """Start local node processes and keep them running until Ctrl-C.

    Prints each node's addresses and command line, and the leader (stdout); progress goes to
    stderr. `shoal cluster stop|start|kill|restart NODE` act on one node meanwhile. Ctrl-C
    (or SIGTERM) stops them all: SIGTERM to each, SIGKILL after 5 s. A temporary directory is
    removed then, unless --keep; a --dir is always kept."""
    from ..local.cluster import ClusterControl, LocalProcessCluster
    from ..server.config import ConfigError

    root = dir or Path(tempfile.mkdtemp(prefix="shoal-cluster-"))
    cluster = LocalProcessCluster(nodes, root, base_port or None, node_args=["--engine", engine])
    control: ClusterControl | None = None
    signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        note(f"starting {nodes} nodes, data and logs in {cluster.root}")
        try:
            leader = cluster.start()
        except (ConfigError, RuntimeError, TimeoutError) as exc:
            keep = True  # the error points at a log: it must still be there
            raise fail(f"{exc}; data and logs kept in {cluster.root}", 2) from None
        control = ClusterControl(cluster)
        cluster.write_state(control.address)
        _print_cluster(cluster, leader)
        note(f"admin token for /status and /faults: {cluster.admin_token_file}")
        note(f"one node: shoal cluster stop|start|kill|restart NODE --dir {cluster.root}")
        note("try: shoal status / shoal put k v / shoal get k   — Ctrl-C stops the cluster")
        _supervise(cluster, control)
    except KeyboardInterrupt:
        note("stopping the cluster (SIGTERM, then SIGKILL after 5 s)...")
    finally:
        codes = cluster.stop()
        if control is not None:
            control.close()
        if dir is None and not keep:
            shutil.rmtree(root, ignore_errors=True)
        elif control is not None:
            cluster.write_state(None)
    clean = all(c == 0 for c in codes.values())
    note(", ".join(f"node {i} exited {c}" for i, c in codes.items())
         + (" — stopped cleanly" if clean else ""))
    note(f"removed {root} (--keep keeps it)" if dir is None and not keep
         else f"data, logs and {root / 'cluster.json'} kept in {root}")
    raise typer.Exit(0 if clean else 1)


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _print_cluster(cluster: LocalProcessCluster, leader: int) -> None:
    out = console()
    out.print(_cluster_table(cluster, leader))
    for i in cluster.ids:
        out.print(f"node {i}: {shlex.join(cluster.command(i))}", markup=False, highlight=False)
    out.print(f"SHOAL_ENDPOINTS={','.join(cluster.endpoints)}", markup=False, highlight=False)
    out.print(f"KAFKA_BOOTSTRAP={','.join(cluster.kafka_bootstrap)}", markup=False,
              highlight=False)
    sys.stdout.flush()


def _supervise(cluster: LocalProcessCluster, control: ClusterControl) -> None:
    """Until interrupted: carry out `shoal cluster stop|start|...` requests, and report a node
    that exits on its own (not one stopped or killed on request)."""
    expected_down: set[int] = set()
    while True:
        done = control.serve(0.5)
        if done is not None:
            op, i, message = done
            note(message)
            if op in ("stop", "kill"):
                expected_down.add(i)
            else:
                expected_down.discard(i)
        changed = False
        for i in cluster.ids:
            if not cluster.alive(i) and i not in expected_down:
                expected_down.add(i)
                changed = True
                note(f"node {i} exited (code {cluster.procs[i].returncode}); "
                     f"see {cluster.log_path(i)}")
        if changed:
            cluster.write_state(control.address)


def _cluster_table(cluster: LocalProcessCluster, leader: int) -> Table:
    from rich.table import Table

    table = Table(title="local Shoal cluster", title_justify="left")
    for col in ("node", "client", "peer", "http", "etcd API", "pid", "role"):
        table.add_column(col, overflow="fold")
    for i, client, peer, http, etcd in zip(cluster.ids, cluster.endpoints, cluster.peer_endpoints,
                                           cluster.http_endpoints, cluster.etcd_endpoints,
                                           strict=True):
        table.add_row(str(i), client, peer, http, etcd, str(cluster.pid(i)),
                      "[bold green]leader[/]" if i == leader else "follower")
    return table


# ---------------------------------------------------------------------- one node
CLUSTER_DIR = typer.Option(
    None, "--dir", envvar="SHOAL_CLUSTER_DIR",
    help="the `cluster up` directory (default: the one running `cluster up` with a temporary one)")


def _one_node(op: str, node: int, dir: Path | None) -> None:
    from ..local.cluster import ask_supervisor, running_roots

    if dir is None:
        roots = running_roots()
        if len(roots) != 1:
            raise fail("no running `shoal cluster up` found; pass --dir" if not roots else
                       f"{len(roots)} `shoal cluster up` are running ({', '.join(map(str, roots))}); "
                       "pass --dir")
        dir = roots[0]
    try:
        typer.echo(ask_supervisor(dir, op, node))
    except RuntimeError as exc:
        raise fail(str(exc)) from None


@cluster_app.command("stop")
def cluster_stop(node: int, dir: Path | None = CLUSTER_DIR) -> None:
    """Stop NODE gracefully (SIGTERM: it hands leadership over; SIGKILL after 5 s)."""
    _one_node("stop", node, dir)


@cluster_app.command("kill")
def cluster_kill(node: int, dir: Path | None = CLUSTER_DIR) -> None:
    """Kill NODE at once (SIGKILL): a crash."""
    _one_node("kill", node, dir)


@cluster_app.command("start")
def cluster_start(node: int, dir: Path | None = CLUSTER_DIR) -> None:
    """Start NODE again on its data dir; returns once it serves."""
    _one_node("start", node, dir)


@cluster_app.command("restart")
def cluster_restart(node: int, dir: Path | None = CLUSTER_DIR) -> None:
    """Stop NODE gracefully and start it again; returns once it serves."""
    _one_node("restart", node, dir)
