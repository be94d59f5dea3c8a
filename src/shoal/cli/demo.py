"""`shoal demo`: a real cluster loses its leader under load, and nothing is lost."""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer()


@app.command()
def demo(
    history: Path = typer.Option(None, "--history", help="where to write the recorded history"),
) -> None:
    """A real 3-node cluster loses its leader to kill -9 under load, and nothing is lost.

    Shows the failover time, reads back every acknowledged write and checks the history for
    linearizability. `shoal sim --demo` runs the simulated cluster instead."""
    from ..local.demo import run_demo

    raise typer.Exit(run_demo(history))
