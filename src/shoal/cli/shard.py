"""`shoal shard list|split|move|resume|autosplit`: range shards, each a consensus group."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import typer

from .common import (
    ENDPOINTS,
    Output,
    emit_json,
    output_option,
    print_rows,
    print_table,
    run_client,
    text,
)

if TYPE_CHECKING:
    from ..client import Client

app = typer.Typer()
shard_app = typer.Typer(no_args_is_help=True, help="List and split the keyspace's range shards.")
app.add_typer(shard_app, name="shard")


async def shard_rows(client: Client, interval: float) -> list[dict[str, Any]]:
    """Every shard with its group's leader, size and write rate (revisions per second over
    `interval`, 0: not measured), from the nodes' status."""
    router = client.sharded().router
    shard_map = await router.refresh()

    async def groups() -> dict[int, dict[str, Any]]:
        seen: dict[int, dict[str, Any]] = {}
        for ep in client.endpoints:
            try:
                st = await client.status(ep, timeout=2)
            except Exception:  # noqa: BLE001 - a node that is down shows as no leader
                continue
            for gid, g in st["groups"].items():
                line = seen.setdefault(int(gid), dict(g))
                if g["role"] == "leader":
                    line.update(g)
        return seen

    before = await groups()
    after = before
    if interval > 0:
        await asyncio.sleep(interval)
        after = await groups()
    rows = []
    for s in shard_map.shards:
        g = after.get(s.group, {})
        rate = (g.get("revision", 0) - before.get(s.group, {}).get("revision", 0)) / interval \
            if interval > 0 else 0.0
        rows.append({"start": s.start, "end": s.end, "group": s.group,
                     "leader": g.get("leader", 0), "voters": list(g.get("voters", [])),
                     "size_bytes": g.get("size_bytes", 0),
                     "writes_per_s": round(rate, 1)})
    return rows


@shard_app.command("list")
def shard_list(endpoints: str = ENDPOINTS, output: Output = output_option(Output.table),
               interval: float = typer.Option(1.0, "--interval", min=0,
                                              help="seconds to measure write rates over (0: none)")
               ) -> None:
    """Every shard: its key range, group, leader, size and write rate."""
    async def body(client: Client) -> None:
        rows = await shard_rows(client, interval)
        if output is Output.json:
            emit_json({"shards": [{**r, "start": text(r["start"]), "end": text(r["end"])}
                                  for r in rows]})
            return
        lines = [[text(r["start"]) or "(start)", text(r["end"]) or "(end)", str(r["group"]),
                  str(r["leader"] or "-"), ",".join(map(str, r["voters"])),
                  str(r["size_bytes"]), str(r["writes_per_s"])] for r in rows]
        if output is Output.simple:
            print_rows(lines)
        else:
            print_table(["from", "to", "group", "leader", "voters", "bytes", "writes/s"], lines,
                        right=("group", "leader", "bytes", "writes/s"))

    run_client(endpoints, body)


@shard_app.command("split")
def shard_split(key: str = typer.Argument(..., help="the first key of the new shard"),
                replicas: int = typer.Option(3, "--replicas", min=1, max=9),
                endpoints: str = ENDPOINTS) -> None:
    """Split the shard holding KEY at KEY: [KEY, its end) moves to a new group."""
    from ..shard.split import SplitError, split

    async def body(client: Client) -> int:
        try:
            new = await split(client, key.encode(), replicas)
        except SplitError as exc:
            typer.echo(f"split refused: {exc}", err=True)
            return 1
        moved = new.lookup(key.encode())
        typer.echo(f"split at {key!r}: [{key!r}, {text(moved.end) or '(end)'}) is group "
                   f"{moved.group}; shard map version {new.version}")
        return 0

    run_client(endpoints, body, timeout=30)


@shard_app.command("move")
def shard_move(group: int = typer.Argument(..., min=1, help="the shard's group"),
               source: int = typer.Option(..., "--from", help="the node giving up its replica"),
               target: int = typer.Option(..., "--to", help="the node taking it"),
               endpoints: str = ENDPOINTS) -> None:
    """Move GROUP's replica from one node to another (add, catch up, promote, remove)."""
    from ..shard.move import MoveError, move_replica

    async def body(client: Client) -> int:
        try:
            voters = await move_replica(client, group, source, target)
        except MoveError as exc:
            typer.echo(f"move refused: {exc}", err=True)
            return 1
        typer.echo(f"group {group} moved from node {source} to node {target}; voters "
                   f"{', '.join(map(str, voters))}")
        return 0

    run_client(endpoints, body, timeout=30)


@shard_app.command("resume")
def shard_resume(endpoints: str = ENDPOINTS) -> None:
    """Finish a split that was interrupted (the shard map says which)."""
    from ..shard.split import resume

    async def body(client: Client) -> None:
        new = await resume(client)
        typer.echo(f"shard map version {new.version}, {len(new.shards)} shards")

    run_client(endpoints, body, timeout=30)


@shard_app.command("autosplit")
def shard_autosplit(max_bytes: int = typer.Option(64 << 20, "--max-bytes",
                                                  help="split a shard bigger than this"),
                    max_writes: float = typer.Option(0, "--max-writes-per-s",
                                                     help="split a shard written faster (0: off)"),
                    interval: float = typer.Option(5.0, "--interval", min=0.1),
                    once: bool = typer.Option(False, "--once", help="one round, then exit"),
                    endpoints: str = ENDPOINTS) -> None:
    """Keep splitting shards that pass a size or write-rate threshold, at their middle key;
    also finish any interrupted split. Runs until stopped (or one round with --once)."""
    from ..shard.split import SplitError, middle_key, resume, split

    async def body(client: Client) -> None:
        while True:
            await resume(client)
            for r in await shard_rows(client, interval):
                hot = r["size_bytes"] > max_bytes or (max_writes and r["writes_per_s"] > max_writes)
                if not hot:
                    continue
                at = await middle_key(client, r["group"], r["start"], r["end"])
                if at is None:
                    continue
                try:
                    await split(client, at)
                    typer.echo(f"split group {r['group']} at {text(at)!r} "
                               f"({r['size_bytes']} bytes, {r['writes_per_s']} writes/s)")
                except SplitError as exc:
                    typer.echo(f"not split: {exc}", err=True)
            if once:
                return

    run_client(endpoints, body, timeout=30)
