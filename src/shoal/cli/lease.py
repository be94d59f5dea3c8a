"""`shoal lease grant|revoke|keep-alive|ttl|list`."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import typer

from .common import (
    ENDPOINTS,
    Output,
    emit_json,
    interruptible,
    output_option,
    print_rows,
    print_table,
    run_client,
    text,
)

if TYPE_CHECKING:
    from ..client import Client

app = typer.Typer()
lease_app = typer.Typer(no_args_is_help=True, help="Grant, revoke, refresh and inspect leases.")
app.add_typer(lease_app, name="lease")


@lease_app.command("grant")
def lease_grant(ttl: int = typer.Argument(..., help="seconds"), endpoints: str = ENDPOINTS,
                output: Output = output_option(Output.simple)) -> None:
    """Create a lease; keys attached to it are deleted when it expires."""
    async def body(client: Client) -> None:
        resp = await client.lease_grant(ttl)
        if output is Output.json:
            emit_json({"id": resp.id, "ttl": resp.ttl})
        else:
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
def lease_keep_alive(id: int, endpoints: str = ENDPOINTS,
                     output: Output = output_option(Output.simple)) -> None:
    """Refresh lease ID every third of its TTL until Ctrl-C (-o json: JSON lines)."""
    async def body(client: Client) -> None:
        async def refresh() -> None:
            while True:
                resp = await client.lease_keepalive(id)
                if output is Output.json:
                    emit_json({"id": id, "ttl": resp.ttl})
                else:
                    typer.echo(f"lease {id} keepalived with TTL({resp.ttl})")
                await asyncio.sleep(max(resp.ttl / 3, 0.2))

        await interruptible(refresh())

    run_client(endpoints, body)


@lease_app.command("ttl")
def lease_ttl(id: int, keys: bool = typer.Option(False, "--keys", help="list attached keys"),
              endpoints: str = ENDPOINTS, output: Output = output_option(Output.simple)) -> None:
    """Show the remaining time of lease ID."""
    async def body(client: Client) -> int:
        resp = await client.lease_ttl(id, keys=keys)
        if resp.ttl == -1:
            typer.echo(f"lease {id} not found: it expired, was revoked, or never existed", err=True)
            return 1
        if output is Output.json:
            emit_json({"id": id, "ttl": resp.ttl, "granted_ttl": resp.granted_ttl,
                       **({"keys": [text(k) for k in resp.keys]} if keys else {})})
            return 0
        if output is Output.table:
            print_table(["id", "granted ttl", "remaining", *(["keys"] if keys else [])],
                        [[str(id), f"{resp.granted_ttl}s", f"{resp.ttl}s",
                          *([" ".join(text(k) for k in resp.keys)] if keys else [])]])
            return 0
        line = f"lease {id} granted with TTL({resp.granted_ttl}s), remaining({resp.ttl}s)"
        if keys:
            line += f", attached keys({[text(k) for k in resp.keys]})"
        typer.echo(line)
        return 0

    run_client(endpoints, body)


@lease_app.command("list")
def lease_list(endpoints: str = ENDPOINTS, output: Output = output_option(Output.simple)) -> None:
    """List the ids of all live leases."""
    async def body(client: Client) -> None:
        resp = await client.leases()
        if output is Output.json:
            emit_json({"leases": list(resp.leases)})
        elif output is Output.table:
            print_table(["id"], [[str(lease)] for lease in resp.leases], right=("id",))
        else:
            typer.echo(f"found {len(resp.leases)} leases")
            print_rows([[str(lease)] for lease in resp.leases])

    run_client(endpoints, body)
