"""`shoal lease grant|revoke|keep-alive|ttl|list`."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import typer

from .common import ENDPOINTS, interruptible, run_client, text

if TYPE_CHECKING:
    from ..client import Client

app = typer.Typer()
lease_app = typer.Typer(no_args_is_help=True, help="Grant, revoke, refresh and inspect leases.")
app.add_typer(lease_app, name="lease")


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
            typer.echo(f"lease {id} not found: it expired, was revoked, or never existed", err=True)
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
