"""`shoal sim`: a deterministic simulation campaign, one seed per run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

app = typer.Typer()


@app.command()
def sim(
    nodes: int | None = typer.Option(None, "--nodes", min=1, max=9, help="[default: 5]"),
    seeds: int | None = typer.Option(None, "--seeds", min=1,
                                     help="how many seeds to run [default: 100]"),
    first_seed: int = typer.Option(0, "--first-seed"),
    seed: int | None = typer.Option(None, "--seed", help="replay exactly this seed, with its trace"),
    steps: int | None = typer.Option(None, "--steps", min=100,
                                     help="simulated events per seed [default: 20000]"),
    engine: str | None = typer.Option(None, "--engine", help="raft or paxos [default: raft]"),
    bug: str | None = typer.Option(
        None, "--bug", help="plant a broken rule (e.g. forget-vote) and run the profile that "
                            "catches it, stopping at the first violation"),
    trace: Path | None = typer.Option(None, "--trace", help="write the full event trace of --seed here"),
    workers: int | None = typer.Option(None, "--workers", min=1),
    narrate: bool = typer.Option(False, "--demo", help="explain the run and tabulate every seed"),
) -> None:
    """Run a deterministic simulation campaign of a cluster under faults."""
    from ..sim import SimConfig
    from ..sim.bugs import planted
    from ..sim.report import run_sim
    from .common import fail

    given: dict[str, Any] = {k: v for k, v in (("nodes", nodes), ("steps", steps), ("engine", engine))
                             if v is not None}
    if bug is None:
        cfg, default_seeds = SimConfig(**given), 100
    else:
        try:
            known = planted(bug)
        except ValueError as exc:
            raise fail(str(exc), 2) from None
        if engine is not None and engine != known.engine:
            raise fail(f"{bug} is a bug of the {known.engine} engine, not of {engine}", 2)
        cfg, default_seeds = known.config(**given), known.seeds
    raise typer.Exit(run_sim(cfg, seeds=seeds or default_seeds, first_seed=first_seed, seed=seed,
                             trace=trace, workers=workers, demo=narrate,
                             stop_at_first=bug is not None))
