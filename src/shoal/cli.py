"""The `shoal` command."""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Shoal: consensus you can see and verify.")


@app.command()
def check(
    path: Path = typer.Argument(..., help="history in JSON Lines (see docs/history-format.md)"),
    time_limit: float = typer.Option(60.0, "--time-limit", help="seconds before giving up (exit 2)"),
) -> None:
    """Check a key-value history for linearizability. Exit 0 = linearizable, 1 = not, 2 = undecided."""
    from .check.cli import run_check

    raise typer.Exit(run_check(path, time_limit))


@app.command("lb-report")
def lb_report(
    out: Path = typer.Option(Path("lb-report.png"), "--out", help="where to write the chart"),
    keys: int = typer.Option(1_000_000, "--keys", help="keys hashed for balance and disruption"),
) -> None:
    """Measure every load-balancing picker: balance, disruption, lookup speed, tail latency."""
    from .balance.report import run_report

    run_report(out=out, keys=keys)


if __name__ == "__main__":
    app()
