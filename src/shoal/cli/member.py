"""`shoal member list|add|remove|promote`: the cluster's membership."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer

from .common import ENDPOINTS, Output, emit_json, output_option, print_rows, print_table, run_client

if TYPE_CHECKING:
    from ..client import Client

app = typer.Typer()
member_app = typer.Typer(no_args_is_help=True, help="List and change the cluster's members.")
app.add_typer(member_app, name="member")


@member_app.command("list")
def member_list(endpoints: str = ENDPOINTS, output: Output = output_option(Output.table)) -> None:
    """Every member with its addresses, whether it votes, and who leads."""
    from ..server.config import parse_member

    async def body(client: Client) -> None:
        st = await client.status()
        members = []
        for spec in st["members"].values():
            m = parse_member(spec)
            members.append({
                "id": m.id, "peer": f"{m.peer[0]}:{m.peer[1]}",
                "client": f"{m.client[0]}:{m.client[1]}",
                "etcd": f"{m.etcd[0]}:{m.etcd[1]}" if m.etcd else None,
                "kind": "learner" if m.id in st["learners"] else "voter",
                "leader": m.id == st["leader"]})
        if output is Output.json:
            emit_json({"leader": st["leader"], "members": members})
            return
        rows = [[str(m["id"]), m["peer"], m["client"], m["kind"], "yes" if m["leader"] else ""]
                for m in members]
        if output is Output.simple:
            print_rows(rows)
        else:
            print_table(["id", "peer", "client", "kind", "leader"], rows)

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
