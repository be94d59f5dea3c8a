"""`shoal torture`: real node processes under faults, the history checked afterwards."""

from __future__ import annotations

from pathlib import Path

import typer

from .common import duration

app = typer.Typer()


@app.command()
def torture(
    nodes: int = typer.Option(3, "--nodes", min=3, max=9),
    time_: str = typer.Option("60s", "--time", help="how long the workload runs, e.g. 60s or 5m"),
    seed: int = typer.Option(0, "--seed"),
    clients: int = typer.Option(5, "--clients", min=1),
    history: Path = typer.Option(Path("torture-history.jsonl"), "--history"),
    no_wipe: bool = typer.Option(False, "--no-wipe", help="skip the replaced-disk fault"),
) -> None:
    """Real processes under SIGKILL, SIGSTOP, link cuts and a replaced disk; the history is checked."""
    from rich.console import Console

    from ..torture.run import torture as run_torture

    console = Console()
    seconds = duration(time_)
    console.print(f"torture: {nodes} nodes, {seconds:.0f}s, {clients} clients, seed {seed}")
    r = run_torture(nodes=nodes, seconds=seconds, seed=seed, clients=clients, history=history,
                    wipe=not no_wipe, say=lambda s: console.print(f"  [dim]{s}[/]"))
    console.print(f"operations: {r.counts}; final values {r.final_values}")
    console.print(r.verdict.explanation)
    console.print("[green]every node converged to the same state[/]" if r.converged
                  else "[red]nodes did not converge after healing[/]")
    console.print(f"history: {history} (re-check with: shoal check {history})")
    raise typer.Exit(0 if r.ok else 1)
