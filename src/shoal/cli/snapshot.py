"""`shoal snapshot save`: a consistent copy of the key-value store in a file."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from .common import ENDPOINTS, run_client, size

if TYPE_CHECKING:
    from ..client import Client

app = typer.Typer()
snapshot_app = typer.Typer(no_args_is_help=True, help="Save a snapshot of the key-value store.")
app.add_typer(snapshot_app, name="snapshot")


@snapshot_app.command("save")
def snapshot_save(file: Path, endpoints: str = ENDPOINTS) -> None:
    """Write a consistent snapshot of the store to FILE."""
    async def body(client: Client) -> None:
        index, data = await client.snapshot()
        tmp = file.with_name(file.name + ".part")
        tmp.write_bytes(data)
        tmp.replace(file)  # never leave a half-written snapshot under the real name
        typer.echo(f"snapshot at applied index {index} saved to {file} ({size(len(data))})")

    run_client(endpoints, body, timeout=60.0)
