"""`shoal group create|remove|list`: the consensus groups the meta group's directory lists."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer

from .common import ENDPOINTS, Output, emit_json, output_option, print_rows, print_table, run_client

if TYPE_CHECKING:
    from ..client import Client

app = typer.Typer()
group_app = typer.Typer(no_args_is_help=True, help="Create, remove and list consensus groups.")
app.add_typer(group_app, name="group")


@group_app.command("create")
def group_create(group: int = typer.Argument(..., min=1, help="the new group's id"),
                 replicas: int = typer.Option(3, "--replicas", min=1, max=9,
                                              help="on this many meta voters, the least loaded"),
                 endpoints: str = ENDPOINTS) -> None:
    """List a new group in the directory; the chosen nodes open its replicas and elect."""
    async def body(client: Client) -> None:
        made = await client.create_group(group, replicas)
        typer.echo(f"group {made['group']} on nodes {', '.join(map(str, made['members']))}")

    run_client(endpoints, body)


@group_app.command("remove")
def group_remove(group: int = typer.Argument(..., min=1), endpoints: str = ENDPOINTS) -> None:
    """Remove a group: every replica of it closes and its data is deleted."""
    async def body(client: Client) -> None:
        await client.remove_group(group)
        typer.echo(f"group {group} removed")

    run_client(endpoints, body)


@group_app.command("list")
def group_list(endpoints: str = ENDPOINTS, output: Output = output_option(Output.simple)) -> None:
    """Every group in the directory and the nodes that host it."""
    async def body(client: Client) -> None:
        groups = await client.groups()
        if output is Output.json:
            emit_json({"groups": [{"group": g, "members": list(m)} for g, m in groups.items()]})
            return
        rows = [[str(g), ",".join(map(str, members))] for g, members in groups.items()]
        if output is Output.simple:
            print_rows(rows)
        else:
            print_table(["group", "members"], rows, right=("group",))

    run_client(endpoints, body)
