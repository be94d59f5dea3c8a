"""`shoal sim`: a deterministic simulation campaign, one seed per run."""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer()


@app.command()
def sim(
    nodes: int = typer.Option(5, "--nodes", min=1, max=9),
    seeds: int = typer.Option(100, "--seeds", min=1, help="how many seeds to run"),
    first_seed: int = typer.Option(0, "--first-seed"),
    seed: int | None = typer.Option(None, "--seed", help="replay exactly this seed, with its trace"),
    steps: int = typer.Option(20_000, "--steps", min=100, help="simulated events per seed"),
    engine: str = typer.Option("raft", "--engine"),
    bug: list[str] = typer.Option([], "--bug", help="switch on a deliberately broken behaviour"),
    trace: Path | None = typer.Option(None, "--trace", help="write the full event trace of --seed here"),
    workers: int | None = typer.Option(None, "--workers", min=1),
    narrate: bool = typer.Option(False, "--demo", help="explain the run and tabulate every seed"),
) -> None:
    """Run a deterministic simulation campaign of a cluster under faults."""
    from ..sim.report import run_sim

    raise typer.Exit(run_sim(nodes=nodes, seeds=seeds, first_seed=first_seed, seed=seed,
                             steps=steps, engine=engine, bugs=bug, trace=trace, workers=workers,
                             demo=narrate))
