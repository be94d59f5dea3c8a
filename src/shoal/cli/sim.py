"""`shoal sim`: a deterministic simulation campaign, one seed per run.

By default the register workload on a simulated Raft (or Paxos) cluster (sim/world.py);
`--workload log` the same world as one partition of the event log, with idempotent producers
and consumers (sim/log_workload.py); `--workload bank|list-append` runs the transaction layer
instead (sim/txn.py): the production coordinator and shards, on a virtual clock, under lost
messages, outages, coordinator kills and splits."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

app = typer.Typer()

TXN_WORKLOADS = ("bank", "list-append")


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
    timeline: Path | None = typer.Option(
        None, "--timeline", help="write a page replaying --seed here (HTML, self-contained)"),
    workers: int | None = typer.Option(None, "--workers", min=1),
    narrate: bool = typer.Option(False, "--demo", help="explain the run and tabulate every seed"),
    workload: str | None = typer.Option(
        None, "--workload", help="register (the cluster simulation) [default], log (a "
                                 "partition of the event log), or bank or list-append: "
                                 "transactions across shards (sim/txn.py)"),
    ops: int | None = typer.Option(None, "--ops", min=1,
                                   help="bank, list-append: transactions per seed [default: 120]"),
    splits: int | None = typer.Option(None, "--splits", min=0, max=5,
                                      help="bank, list-append: splits in the middle of each "
                                           "run [default: 1]"),
    as_json: bool = typer.Option(False, "--json", help="bank, list-append: print JSON"),
    history: Path | None = typer.Option(
        None, "--history", help="bank, list-append: write the history of --seed here (JSON Lines)"),
    crash_steps: bool = typer.Option(
        False, "--crash-steps", help="bank: kill one three-shard transfer's coordinator at "
                                     "every step of its commit, one run per step"),
) -> None:
    """Run a deterministic simulation campaign of a cluster under faults."""
    from .common import fail

    txn_bug = False
    if bug is not None:
        from ..sim.txn_bugs import TXN_PLANTED

        txn_bug = bug in TXN_PLANTED
    if workload in TXN_WORKLOADS or txn_bug:
        given = [name for name, v in (("--nodes", nodes), ("--steps", steps), ("--engine", engine),
                                      ("--trace", trace), ("--timeline", timeline))
                 if v is not None] + (
            ["--demo"] if narrate else [])
        if given:
            raise fail(f"{', '.join(given)}: not options of the transaction workloads", 2)
        raise typer.Exit(_txn(workload, bug, seeds, first_seed, seed, workers, ops, splits,
                              as_json, history, crash_steps))
    if workload not in (None, "register", "log"):
        raise fail(f"unknown workload {workload!r}: register, log, {', '.join(TXN_WORKLOADS)}", 2)
    txn_only = [name for name, v in (("--ops", ops), ("--splits", splits),
                                     ("--history", history)) if v is not None] + [
        name for name, v in (("--json", as_json), ("--crash-steps", crash_steps)) if v]
    if txn_only:
        raise fail(f"{', '.join(txn_only)}: only with --workload {'|'.join(TXN_WORKLOADS)}", 2)

    from ..sim import SimConfig
    from ..sim.bugs import planted
    from ..sim.log_bugs import LOG_PLANTED, LOG_PROFILE
    from ..sim.report import run_sim

    given_cfg: dict[str, Any] = {k: v for k, v in (("nodes", nodes), ("steps", steps),
                                                   ("engine", engine)) if v is not None}
    if bug in LOG_PLANTED or (workload == "log" and bug is None):
        if workload == "register":
            raise fail(f"{bug} is a bug of the event log: --workload log", 2)
        cfg, default_seeds = ((LOG_PLANTED[bug].config(**given_cfg), LOG_PLANTED[bug].seeds)
                              if bug is not None
                              else (SimConfig(**{**LOG_PROFILE, **given_cfg}), 50))
    elif workload == "log":
        raise fail(f"unknown bug {bug!r} of the event log; planted: "
                   f"{', '.join(sorted(LOG_PLANTED))}", 2)
    elif bug is None:
        cfg, default_seeds = SimConfig(**given_cfg), 100
    else:
        try:
            known = planted(bug)
        except ValueError as exc:
            from ..sim.txn_bugs import TXN_PLANTED

            raise fail(f"{exc}; transaction bugs (bank, list-append): "
                       f"{', '.join(sorted(TXN_PLANTED))}; event log bugs (log): "
                       f"{', '.join(sorted(LOG_PLANTED))}", 2) from None
        if engine is not None and engine != known.engine:
            raise fail(f"{bug} is a bug of the {known.engine} engine, not of {engine}", 2)
        cfg, default_seeds = known.config(**given_cfg), known.seeds
    if timeline is not None:
        if seed is None:
            raise fail("--timeline replays one seed: give --seed", 2)
        from ..sim.report import write_timeline

        raise typer.Exit(write_timeline(cfg, seed, timeline))
    raise typer.Exit(run_sim(cfg, seeds=seeds or default_seeds, first_seed=first_seed, seed=seed,
                             trace=trace, workers=workers, demo=narrate,
                             stop_at_first=bug is not None))


def _txn(workload: str | None, bug: str | None, seeds: int | None, first_seed: int,
         seed: int | None, workers: int | None, ops: int | None, splits: int | None,
         as_json: bool, history: Path | None, crash_steps: bool) -> int:
    from ..sim.txn import TxnSimConfig, report
    from ..sim.txn_bugs import txn_planted
    from .common import fail

    overrides: dict[str, Any] = {k: v for k, v in (("ops", ops), ("splits", splits))
                                 if v is not None}
    if history is not None and seed is None:
        raise fail("--history writes the history of one seed: give --seed", 2)
    if crash_steps and (workload or "bank") != "bank":
        raise fail("--crash-steps runs a bank transfer: --workload bank", 2)
    if bug is None:
        cfg, default_seeds = TxnSimConfig(workload=workload or "bank", **overrides), 30
    else:
        known = txn_planted(bug)
        cfg, default_seeds = known.config(workload, **overrides), known.seeds
    replay = "".join(f" --{k} {v}" for k, v in overrides.items())
    return report(cfg, seeds=seeds or default_seeds, first_seed=first_seed, seed=seed,
                  workers=workers, as_json=as_json, history=history, bug=bug,
                  stop_at_first=bug is not None, crash_points=crash_steps, replay_extra=replay)
