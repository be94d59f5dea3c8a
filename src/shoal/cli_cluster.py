"""The `shoal` commands that run a cluster (`node`, `cluster up`) and use one (`put`, `get`,
`txn`, `lease`, `lock`, `member`, ...). Client commands print etcdctl-like plain lines so they
compose in shell scripts; every failure is one line on stderr and a non-zero exit."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import shlex
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from .client import Client, ClientError, Election, Lock
from .kv.errors import KVError
from .kv.keyvalue import EventType, prefix_end
from .kv.requests import (
    Compare,
    CompareResult,
    CompareTarget,
    DeleteRangeRequest,
    DeleteRangeResponse,
    Op,
    PutRequest,
    PutResponse,
    RangeRequest,
    RangeResponse,
    TxnResponse,
)
from .server.config import ConfigError, parse_member

app = typer.Typer()
cluster_app = typer.Typer(no_args_is_help=True, help="Run a cluster of local node processes.")
lease_app = typer.Typer(no_args_is_help=True, help="Grant, revoke, refresh and inspect leases.")
member_app = typer.Typer(no_args_is_help=True, help="List and change the cluster's members.")
snapshot_app = typer.Typer(no_args_is_help=True, help="Save a snapshot of the key-value store.")
app.add_typer(cluster_app, name="cluster")
app.add_typer(lease_app, name="lease")
app.add_typer(member_app, name="member")
app.add_typer(snapshot_app, name="snapshot")

ENDPOINTS = typer.Option("127.0.0.1:2379", "--endpoints", envvar="SHOAL_ENDPOINTS",
                         help="comma-separated client addresses host:port")
T = TypeVar("T")


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print one clear line on stderr; `raise fail(...)` ends the command with `code`."""
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def text(b: bytes) -> str:
    return b.decode("utf-8", errors="backslashreplace")


# ---------------------------------------------------------------------- running a node
@app.command()
def node(
    id: int | None = typer.Option(None, "--id", help="this node's member id"),
    data_dir: Path | None = typer.Option(None, "--data-dir", help="WAL and snapshots live here"),
    members: str | None = typer.Option(
        None, "--members", help="initial cluster: ID=HOST:PEER_PORT/HOST:CLIENT_PORT,..."),
    http: str | None = typer.Option(None, "--http", help="HOST:PORT for /health /status /metrics"),
    config: Path | None = typer.Option(None, "--config", help="TOML file; flags override it"),
    cluster_id: str | None = typer.Option(None, "--cluster-id", help="the cluster's name"),
    join: bool = typer.Option(False, "--join", help="join a running cluster (no bootstrap)"),
    repair: bool = typer.Option(False, "--repair", help="drop a corrupt WAL tail and go on"),
    tick_ms: int | None = typer.Option(None, "--tick-ms"),
    election_ticks: int | None = typer.Option(None, "--election-ticks"),
    snapshot_entries: int | None = typer.Option(None, "--snapshot-entries"),
    auto_compact: int | None = typer.Option(None, "--auto-compact",
                                            help="revisions of history to keep (0 = keep all)"),
    engine: str | None = typer.Option(None, "--engine", help="consensus engine: raft or paxos"),
    no_fsync: bool = typer.Option(False, "--no-fsync", help="unsafe: do not fsync the WAL"),
    tls_cert: Path | None = typer.Option(None, "--tls-cert"),
    tls_key: Path | None = typer.Option(None, "--tls-key"),
    tls_ca: Path | None = typer.Option(None, "--tls-ca"),
) -> None:
    """Run one node until SIGTERM or Ctrl-C.

    On the way out it hands leadership over. Exits 2 on a bad configuration, a port in use,
    or a data dir that belongs to another cluster or node (or is corrupt)."""
    from .server.config import load
    from .server.main import run
    from .storage import StorageError

    overrides = {
        "id": id, "data_dir": data_dir, "members": members, "http": http,
        "cluster_id": cluster_id, "join": join or None, "repair": repair or None,
        "tick_ms": tick_ms, "election_ticks": election_ticks,
        "snapshot_entries": snapshot_entries, "fsync": False if no_fsync else None,
        "engine": engine, "auto_compact_revisions": auto_compact,
        "tls_cert": tls_cert, "tls_key": tls_key, "tls_ca": tls_ca,
    }
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        run(load(config, overrides))
    except ConfigError as exc:
        raise fail(f"configuration: {exc}", 2) from None
    except StorageError as exc:
        raise fail(f"data dir: {exc}", 2) from None
    except OSError as exc:  # a port taken between the check and the bind
        raise fail(str(exc), 2) from None


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
    from .cluster_local import LocalProcessCluster

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
    table = Table(title="local Shoal cluster", title_justify="left")
    for col in ("node", "client", "peer", "http", "etcd API", "pid", "role"):
        table.add_column(col)
    for i, client, peer, http, etcd in zip(cluster.ids, cluster.endpoints, cluster.peer_endpoints,
                                           cluster.http_endpoints, cluster.etcd_endpoints,
                                           strict=True):
        table.add_row(str(i), client, peer, http, etcd, str(cluster.pid(i)),
                      "[bold green]leader[/]" if i == leader else "follower")
    return table


# ---------------------------------------------------------------------- client plumbing
def run_client(endpoints: str, body: Callable[[Client], Awaitable[int | None]],
               timeout: float = 10.0) -> None:
    """Run `body` with a connected client; turn every client or store error into one line."""
    eps = [e.strip() for e in endpoints.split(",") if e.strip()]
    if not eps:
        raise fail("--endpoints is empty")

    async def main() -> int | None:
        async with Client(eps, timeout=timeout) as client:
            return await body(client)

    try:
        code = asyncio.run(main())
    except (ClientError, KVError, ValueError, OSError) as exc:
        raise fail(str(exc) or type(exc).__name__) from None
    raise typer.Exit(code or 0)


async def interruptible(aw: Awaitable[T]) -> T | None:
    """Await `aw` unless Ctrl-C (or SIGTERM) comes first; then cancel it and return None."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    task = asyncio.ensure_future(aw)
    stopper = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        stopper.cancel()
    if task.done():
        return task.result()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    return None


async def forever() -> None:
    await asyncio.Event().wait()


def print_kvs(resp: RangeResponse, keys_only: bool = False) -> None:
    for kv in resp.kvs:
        typer.echo(text(kv.key))
        if not keys_only:
            typer.echo(text(kv.value))


# ---------------------------------------------------------------------- key-value commands
@app.command()
def status(endpoints: str = ENDPOINTS) -> None:
    """A table of every member: role, term, leader, commit and applied index, revision, size."""
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
        Console().print(_status_table(rows))
        return 0 if all(st is not None for _, _, st in rows) else 1

    run_client(endpoints, body)


def _status_table(rows: list[tuple[int, str, dict[str, Any] | None]]) -> Table:
    table = Table(title_justify="left")
    for col in ("id", "endpoint", "role", "term", "leader", "commit", "applied", "revision",
                "db size"):
        table.add_column(col, justify="right" if col not in ("endpoint", "role") else "left")
    for ident, ep, st in rows:
        if st is None:
            table.add_row(str(ident), ep, "[red]unreachable[/]", *["-"] * 6)
            continue
        role = f"[bold green]{st['role']}[/]" if st["role"] == "leader" else st["role"]
        table.add_row(str(ident), ep, role, str(st["term"]), str(st["leader"]), str(st["commit"]),
                      str(st["applied"]), str(st["revision"]), _size(st["db_size"]))
    return table


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB"):
        if n < 1024:
            return f"{n:.0f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return f"{n:.1f} GiB"


@app.command()
def put(key: str, value: str, lease: int = typer.Option(0, "--lease", help="attach to lease ID"),
        endpoints: str = ENDPOINTS) -> None:
    """Write VALUE under KEY (prints OK once the cluster has committed it)."""
    async def body(client: Client) -> None:
        await client.put(key.encode(), value.encode(), lease=lease)
        typer.echo("OK")

    run_client(endpoints, body)


@app.command()
def get(
    key: str,
    prefix: bool = typer.Option(False, "--prefix", help="every key starting with KEY"),
    rev: int = typer.Option(0, "--rev", help="read at this past revision"),
    limit: int = typer.Option(0, "--limit", help="at most this many keys"),
    serializable: bool = typer.Option(False, "--serializable",
                                      help="answer from the node's local state (may be stale)"),
    keys_only: bool = typer.Option(False, "--keys-only"),
    count_only: bool = typer.Option(False, "--count-only"),
    endpoints: str = ENDPOINTS,
) -> None:
    """Read KEY (a linearizable read unless --serializable): key and value on two lines."""
    async def body(client: Client) -> None:
        resp = await client.get(key.encode(), prefix=prefix, revision=rev, limit=limit,
                                serializable=serializable, keys_only=keys_only,
                                count_only=count_only)
        if count_only:
            typer.echo(str(resp.count))
        else:
            print_kvs(resp, keys_only)

    run_client(endpoints, body)


@app.command("del")
def delete(key: str, prefix: bool = typer.Option(False, "--prefix"),
           endpoints: str = ENDPOINTS) -> None:
    """Delete KEY (or every key with that prefix); prints how many were deleted."""
    async def body(client: Client) -> None:
        resp = await client.delete(key.encode(), prefix=prefix)
        typer.echo(str(resp.deleted))

    run_client(endpoints, body)


@app.command()
def watch(
    key: str,
    prefix: bool = typer.Option(False, "--prefix"),
    rev: int = typer.Option(0, "--rev", help="start from this revision (replays history)"),
    prev_kv: bool = typer.Option(False, "--prev-kv", help="also print the previous value"),
    endpoints: str = ENDPOINTS,
) -> None:
    """Print changes to KEY as they happen (PUT key value / DELETE key) until Ctrl-C."""
    async def body(client: Client) -> None:
        async def stream() -> None:
            async for resp in client.watch(key.encode(), prefix=prefix, start_revision=rev,
                                           prev_kv=prev_kv):
                for ev in resp.events:
                    typer.echo(_event_line(ev, prev_kv))

        await interruptible(stream())

    run_client(endpoints, body)


def _event_line(ev: Any, prev_kv: bool) -> str:
    line = (f"PUT {text(ev.kv.key)} {text(ev.kv.value)}" if ev.type == EventType.PUT
            else f"DELETE {text(ev.kv.key)}")
    line += f"  (rev {ev.kv.mod_revision})"
    if prev_kv and ev.prev_kv is not None:
        line += f"  was {text(ev.prev_kv.value)}"
    return line


TXN_HELP = """Run a transaction read from stdin (etcdctl's form).

Compares, a blank line, the operations to run if every compare holds, a blank line, the
operations to run otherwise.

\b
compare:    TARGET("KEY") OP OPERAND   TARGET: value version create mod lease
                                       OP: = != < >   OPERAND: "text" or a number
operation:  put KEY VALUE [--lease ID] | get KEY [--prefix] | del KEY [--prefix]

\b
Example (compare-and-swap):
  printf 'value("k") = "v1"\\n\\nput k v2\\n\\nget k\\n' | shoal txn

Prints SUCCESS or FAILURE, then each operation's result."""


@app.command(help=TXN_HELP)
def txn(endpoints: str = ENDPOINTS) -> None:
    try:
        compares, success, failure = parse_txn(_txn_sections())
    except ValueError as exc:
        raise fail(f"txn: {exc}") from None

    async def body(client: Client) -> None:
        resp = await client.txn(compares, success, failure)
        typer.echo("SUCCESS" if resp.succeeded else "FAILURE")
        for r in resp.responses:
            _print_op_response(r)

    run_client(endpoints, body)


def _txn_sections() -> Iterator[list[str]]:
    """The three blank-line-separated sections of stdin, prompting when it is a terminal."""
    prompts = ("compares:", "success requests (put, get, del):", "failure requests (put, get, del):")
    for prompt in prompts:
        if sys.stdin.isatty():
            typer.echo(prompt, err=True)
        lines = []
        for line in sys.stdin:
            if not line.strip():
                break
            lines.append(line.strip())
        yield lines


_COMPARE = re.compile(r'^(value|version|create|mod|lease)\("([^"]*)"\)\s*(!=|=|<|>)\s*(.+)$')
_TARGETS = {"value": CompareTarget.VALUE, "version": CompareTarget.VERSION,
            "create": CompareTarget.CREATE, "mod": CompareTarget.MOD, "lease": CompareTarget.LEASE}
_RESULTS = {"=": CompareResult.EQUAL, "!=": CompareResult.NOT_EQUAL, "<": CompareResult.LESS,
            ">": CompareResult.GREATER}


def parse_txn(sections: Iterator[list[str]]) -> tuple[list[Compare], list[Op], list[Op]]:
    compare_lines, success_lines, failure_lines = (next(sections, []) for _ in range(3))
    return ([parse_compare(line) for line in compare_lines],
            [parse_op(line) for line in success_lines], [parse_op(line) for line in failure_lines])


def parse_compare(line: str) -> Compare:
    m = _COMPARE.match(line)
    if not m:
        raise ValueError(f'bad compare {line!r}: expected TARGET("KEY") OP OPERAND, '
                         'e.g. value("k") = "v"')
    target, key, op, raw = m.groups()
    words = shlex.split(raw)
    if len(words) != 1:
        raise ValueError(f"bad compare {line!r}: one operand expected, got {raw!r}")
    operand: int | bytes = words[0].encode()
    if target != "value":
        if not words[0].isdigit():
            raise ValueError(f"bad compare {line!r}: {target} compares with a number")
        operand = int(words[0])
    return Compare(key.encode(), _TARGETS[target], _RESULTS[op], operand)


def parse_op(line: str) -> Op:
    verb, *words = shlex.split(line)
    flags = [w for w in words if w.startswith("--")]
    args = [w for w in words if not w.startswith("--")]
    usage = (f"bad operation {line!r}: expected put KEY VALUE [--lease=ID], "
             "get KEY [--prefix] or del KEY [--prefix]")
    if verb == "put" and len(args) == 2:
        lease = 0
        for flag in flags:
            name, _, number = flag.partition("=")
            if name != "--lease" or not number.isdigit():
                raise ValueError(usage)
            lease = int(number)
        return PutRequest(args[0].encode(), args[1].encode(), lease=lease)
    if verb in ("get", "del", "delete") and len(args) == 1 and set(flags) <= {"--prefix"}:
        key = args[0].encode()
        end = prefix_end(key) if flags else b""
        return RangeRequest(key, end) if verb == "get" else DeleteRangeRequest(key, end)
    raise ValueError(usage)


def _print_op_response(r: Any) -> None:
    if isinstance(r, PutResponse):
        typer.echo("OK")
    elif isinstance(r, RangeResponse):
        print_kvs(r)
    elif isinstance(r, DeleteRangeResponse):
        typer.echo(str(r.deleted))
    elif isinstance(r, TxnResponse):
        typer.echo("SUCCESS" if r.succeeded else "FAILURE")


# ---------------------------------------------------------------------- leases
@lease_app.command("grant")
def lease_grant(ttl: int = typer.Argument(..., help="seconds"), endpoints: str = ENDPOINTS) -> None:
    """Create a lease; keys attached to it are deleted when it expires."""
    async def body(client: Client) -> None:
        resp = await client.lease_grant(ttl)
        typer.echo(f"lease {resp.id} granted with TTL({resp.ttl}s)")

    run_client(endpoints, body)


@lease_app.command("revoke")
def lease_revoke(id: int, endpoints: str = ENDPOINTS) -> None:
    """Revoke lease ID now, deleting its keys."""
    async def body(client: Client) -> None:
        await client.lease_revoke(id)
        typer.echo(f"lease {id} revoked")

    run_client(endpoints, body)


@lease_app.command("keep-alive")
def lease_keep_alive(id: int, endpoints: str = ENDPOINTS) -> None:
    """Refresh lease ID every third of its TTL until Ctrl-C."""
    async def body(client: Client) -> None:
        async def refresh() -> None:
            while True:
                resp = await client.lease_keepalive(id)
                typer.echo(f"lease {id} keepalived with TTL({resp.ttl})")
                await asyncio.sleep(max(resp.ttl / 3, 0.2))

        await interruptible(refresh())

    run_client(endpoints, body)


@lease_app.command("ttl")
def lease_ttl(id: int, keys: bool = typer.Option(False, "--keys", help="list attached keys"),
              endpoints: str = ENDPOINTS) -> None:
    """Show the remaining time of lease ID."""
    async def body(client: Client) -> int:
        resp = await client.lease_ttl(id, keys=keys)
        if resp.ttl == -1:
            typer.echo(f"lease {id} already expired")
            return 1
        line = f"lease {id} granted with TTL({resp.granted_ttl}s), remaining({resp.ttl}s)"
        if keys:
            line += f", attached keys({[text(k) for k in resp.keys]})"
        typer.echo(line)
        return 0

    run_client(endpoints, body)


@lease_app.command("list")
def lease_list(endpoints: str = ENDPOINTS) -> None:
    """List the ids of all live leases."""
    async def body(client: Client) -> None:
        resp = await client.leases()
        typer.echo(f"found {len(resp.leases)} leases")
        for lease in resp.leases:
            typer.echo(str(lease))

    run_client(endpoints, body)


# ---------------------------------------------------------------------- lock and election
@app.command()
def lock(
    name: str,
    command: list[str] | None = typer.Argument(None, help="run this while holding the lock"),
    ttl: int = typer.Option(10, "--ttl", help="seconds before a crashed holder loses the lock"),
    endpoints: str = ENDPOINTS,
) -> None:
    """Acquire lock NAME, print its fencing token, hold it, release it.

    With a COMMAND (after --), run it with the token in $SHOAL_LOCK_TOKEN and exit with its
    code; without one, hold the lock until Ctrl-C."""
    async def body(client: Client) -> int:
        lk = Lock(client, name, ttl)
        try:
            token = await interruptible(lk.acquire())
            if token is None:
                return 130
            typer.echo(f"acquired lock {name}, fencing token {token}")
            if not command:
                await interruptible(forever())
                return 0
            proc = await asyncio.create_subprocess_exec(
                *command, env={**os.environ, "SHOAL_LOCK_TOKEN": str(token)})
            with _ignore_interrupts():  # the child hears Ctrl-C itself; we release after it
                return await proc.wait()
        finally:
            await lk.release()
            typer.echo(f"released lock {name}", err=True)

    run_client(endpoints, body)


@contextlib.contextmanager
def _ignore_interrupts() -> Iterator[None]:
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGINT, lambda: None)
    try:
        yield
    finally:
        loop.remove_signal_handler(signal.SIGINT)


@app.command()
def elect(
    name: str,
    value: str | None = typer.Argument(None, help="what to proclaim while leading"),
    listen: bool = typer.Option(False, "--listen", help="only print who leads, on every change"),
    ttl: int = typer.Option(10, "--ttl"),
    endpoints: str = ENDPOINTS,
) -> None:
    """Campaign in election NAME with VALUE, lead until Ctrl-C, then resign.

    With --listen, print the leader's value now and on every change instead."""
    if not listen and value is None:
        raise fail("elect needs a VALUE to campaign with, or --listen")

    async def body(client: Client) -> int:
        election = Election(client, name, ttl)
        if listen:
            async def observe() -> None:
                async for leader in election.observe():
                    typer.echo(text(leader) if leader is not None else "(no leader)")

            await interruptible(observe())
            return 0
        try:
            token = await interruptible(election.campaign((value or "").encode()))
            if token is None:
                return 130
            typer.echo(f"elected: {name} = {value} (revision {token}); Ctrl-C resigns")
            await interruptible(forever())
            return 0
        finally:
            await election.resign()
            typer.echo(f"resigned from {name}", err=True)

    run_client(endpoints, body)


# ---------------------------------------------------------------------- membership, snapshots
@member_app.command("list")
def member_list(endpoints: str = ENDPOINTS) -> None:
    """Every member with its addresses, whether it votes, and who leads."""
    async def body(client: Client) -> None:
        st = await client.status()
        table = Table()
        for col in ("id", "peer", "client", "kind", "leader"):
            table.add_column(col)
        for spec in st["members"].values():
            m = parse_member(spec)
            kind = "learner" if m.id in st["learners"] else "voter"
            table.add_row(str(m.id), f"{m.peer[0]}:{m.peer[1]}", f"{m.client[0]}:{m.client[1]}",
                          kind, "yes" if m.id == st["leader"] else "")
        Console().print(table)

    run_client(endpoints, body)


@member_app.command("add")
def member_add(
    id: int,
    peer: str = typer.Option(..., "--peer", help="HOST:PORT the new node listens on for peers"),
    client_addr: str = typer.Option(..., "--client", help="HOST:PORT for its clients"),
    learner: bool = typer.Option(False, "--learner", help="add as a non-voting learner"),
    endpoints: str = ENDPOINTS,
) -> None:
    """Add member ID; then start it with `shoal node --join` and the new member list."""
    async def body(client: Client) -> None:
        await client.member_add(id, peer, client_addr, learner)
        typer.echo(f"member {id} added{' as a learner' if learner else ''}")

    run_client(endpoints, body)


@member_app.command("remove")
def member_remove(id: int, endpoints: str = ENDPOINTS) -> None:
    """Remove member ID from the cluster."""
    async def body(client: Client) -> None:
        await client.member_remove(id)
        typer.echo(f"member {id} removed")

    run_client(endpoints, body)


@member_app.command("promote")
def member_promote(id: int, endpoints: str = ENDPOINTS) -> None:
    """Make learner ID a voter (once it has caught up)."""
    async def body(client: Client) -> None:
        await client.member_promote(id)
        typer.echo(f"member {id} promoted to voter")

    run_client(endpoints, body)


@snapshot_app.command("save")
def snapshot_save(file: Path, endpoints: str = ENDPOINTS) -> None:
    """Write a consistent snapshot of the store to FILE."""
    async def body(client: Client) -> None:
        index, data = await client.snapshot()
        tmp = file.with_name(file.name + ".part")
        tmp.write_bytes(data)
        tmp.replace(file)  # never leave a half-written snapshot under the real name
        typer.echo(f"snapshot at applied index {index} saved to {file} ({_size(len(data))})")

    run_client(endpoints, body, timeout=60.0)
