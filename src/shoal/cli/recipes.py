"""`shoal lock` and `shoal elect`: the client's recipes (client/recipes.py) on the command line.

Their progress (waiting, acquired, elected, released) goes to stderr: stdout belongs to the
command run under the lock, and to the leader values `elect --listen` prints."""

from __future__ import annotations

import asyncio
import os
from typing import TYPE_CHECKING

import typer

from .common import (
    ENDPOINTS,
    fail,
    forever,
    ignore_interrupts,
    interruptible,
    note,
    run_client,
    text,
)

if TYPE_CHECKING:
    from ..client import Client

app = typer.Typer()


@app.command()
def lock(
    name: str,
    command: list[str] | None = typer.Argument(None, help="run this while holding the lock"),
    ttl: int = typer.Option(10, "--ttl", help="seconds before a crashed holder loses the lock"),
    endpoints: str = ENDPOINTS,
) -> None:
    """Acquire lock NAME, print its fencing token (stderr), hold it, release it.

    With a COMMAND (after --), run it with the token in $SHOAL_LOCK_TOKEN and exit with its
    code; without one, hold the lock until Ctrl-C."""
    from ..client import Lock

    async def body(client: Client) -> int:
        lk = Lock(client, name, ttl)
        try:
            if holder := await _lock_holder(client, name):
                note(f"waiting for lock {name} held by {holder}")
            token = await interruptible(lk.acquire())
            if token is None:
                return 130
            note(f"acquired lock {name}, fencing token {token}")
            if not command:
                await interruptible(forever())
                return 0
            proc = await asyncio.create_subprocess_exec(
                *command, env={**os.environ, "SHOAL_LOCK_TOKEN": str(token)})
            with ignore_interrupts():  # the child hears Ctrl-C itself; we release after it
                return await proc.wait()
        finally:
            await lk.release()
            typer.echo(f"released lock {name}", err=True)

    run_client(endpoints, body)


async def _lock_holder(client: Client, name: str) -> str | None:
    """Who holds lock NAME now, for the person waiting: the oldest key under the lock's prefix
    (client/recipes.py's layout), named by its lease (as `shoal lease list` shows it)."""
    from ..kv.requests import SortOrder, SortTarget

    resp = await client.get(f"/shoal/lock/{name}/".encode(), prefix=True, limit=1,
                            sort_target=SortTarget.CREATE, sort_order=SortOrder.ASCEND)
    if not resp.kvs:
        return None
    kv = resp.kvs[0]
    return f"lease {kv.lease} (fencing token {kv.create_revision})"


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
    from ..client import Election

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
            note(f"elected: {name} = {value} (revision {token}); Ctrl-C resigns")
            await interruptible(forever())
            return 0
        finally:
            await election.resign()
            typer.echo(f"resigned from {name}", err=True)

    run_client(endpoints, body)
