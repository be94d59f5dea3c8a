"""`shoal check`: is a recorded history linearizable?"""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer()


@app.command()
def check(
    path: Path = typer.Argument(..., help="history in JSON Lines (see docs/history-format.md)"),
    time_limit: float = typer.Option(60.0, "--time-limit", help="seconds before giving up (exit 2)"),
) -> None:
    """Check a key-value history for linearizability. Exit 0 = linearizable, 1 = not, 2 = undecided."""
    from ..check.cli import run_check

    raise typer.Exit(run_check(path, time_limit))
