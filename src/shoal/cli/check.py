"""`shoal check`: is a recorded history linearizable?"""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer()


@app.command()
def check(
    path: Path = typer.Argument(..., help="history in JSON Lines (see docs/history-format.md)"),
    time_limit: float = typer.Option(60.0, "--time-limit", help="seconds before giving up (exit 2)"),
    max_memory: str = typer.Option(
        "1GiB", "--max-memory", help="resident memory of the checker before giving up (exit 2)"
    ),
) -> None:
    """Check a key-value history for linearizability. Exit 0 = linearizable, 1 = not, 2 = undecided."""
    from ..check.cli import parse_size, run_check

    try:
        limit = parse_size(max_memory)
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint="--max-memory") from None
    raise typer.Exit(run_check(path, time_limit, max_memory=limit))
