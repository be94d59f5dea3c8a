"""What `shoal sim` and `shoal demo` print: a progress bar while seeds run, then a verdict
table; on a violation, the seed, the one-line replay command and the last events before it."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

from rich.console import Console
from rich.panel import Panel
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from .campaign import SeedResult, campaign, run_seed
from .world import SimConfig, World

console = Console()


def run_sim(cfg: SimConfig, *, seeds: int, first_seed: int, seed: int | None,
            trace: Path | None, workers: int | None, demo: bool = False,
            stop_at_first: bool = False) -> int:
    """`stop_at_first`: end the campaign at the first violation (a planted bug's demonstration)."""
    nodes, steps, engine = cfg.nodes, cfg.steps, cfg.engine
    if seed is not None:
        return _replay(cfg, seed, trace)
    if demo:
        console.print(Panel.fit(
            f"Simulating a {nodes}-node Raft cluster for {seeds} seeds: crashes that lose unsynced "
            "writes, partitions, pauses, lossy links, clock drift, leadership transfers —\n"
            "while clients read, write and compare-and-set. Every run is checked for Raft's safety "
            "properties and its history for linearizability.", title="shoal demo"))
    results: list[SeedResult] = []
    started = time.perf_counter()
    with Progress(TextColumn("[bold]sim[/] {task.description}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("{task.fields[bad]} violations"), TimeRemainingColumn(),
                  console=console, transient=not demo) as bar:
        task = bar.add_task(f"{engine}, {nodes} nodes, {steps} steps", total=seeds, bad=0)
        runs = campaign(cfg, range(first_seed, first_seed + seeds), workers)
        for res in runs:
            results.append(res)
            bar.update(task, advance=1, bad=sum(not r.ok for r in results))
            if stop_at_first and not res.ok:
                runs.close()  # the worker pool stops now, not when the generator is collected
                break
    wall = time.perf_counter() - started
    results.sort(key=lambda r: r.seed)
    if demo:
        _demo_table(results)
    bad = [r for r in results if not r.ok]
    committed = sum(r.committed for r in results)
    console.print(
        f"{len(results)} seeds in {wall:.1f}s: {committed} entries committed "
        f"({committed / wall:,.0f} per wall-second), "
        f"{sum(r.ops for r in results)} client operations, "
        f"{sum(r.stats.get('crashes', 0) for r in results)} crashes, "
        f"{sum(r.stats.get('partitions', 0) for r in results)} partitions.")
    if not bad and cfg.bugs:
        console.print(f"[bold yellow]The planted bug went unnoticed[/] in {len(results)} seeds: "
                      "try more with --seeds.")
        return 0
    if not bad:
        held = ("every acknowledged record kept once, in order" if cfg.workload == "log"
                else "every history linearizable")
        console.print(f"[bold green]No violation[/] in {len(results)} seeds: {held}, "
                      "every invariant held.")
        return 0
    first = bad[0]
    console.print(f"[bold red]{len(bad)} seed(s) violated safety:[/] {', '.join(str(r.seed) for r in bad[:20])}")
    _report_violation(cfg, first)
    return 1


def _replay(cfg: SimConfig, seed: int, trace: Path | None) -> int:
    if trace is not None:
        world = World(seed, replace(cfg, full_trace=True))
        try:
            world.run()
        except Exception as exc:  # noqa: BLE001 - the trace up to the failure is what we want
            console.print(f"[red]{exc}[/]")
        trace.write_text(world.trace_text() + "\n")
        console.print(f"wrote {len(world.trace)} events to {trace}")
    return _verdict(cfg, run_seed(seed, cfg))


def write_timeline(cfg: SimConfig, seed: int, path: Path) -> int:
    """`shoal sim --seed N --timeline PATH`: run the seed recording it (sim/timeline.py), write
    the page that replays it (web/timeline.py), and report its verdict."""
    from ..web.timeline import write
    from .timeline import record_seed

    res, record = record_seed(seed, cfg)
    size = write(path, record)
    console.print(f"wrote the timeline of seed {seed} to {path} ({size / 1e6:.1f} MB: "
                  f"{len(record['frames'])} node states, {len(record['messages'])} messages)")
    return _verdict(cfg, res)


def _verdict(cfg: SimConfig, res: SeedResult) -> int:
    seed = res.seed
    if res.ok:
        console.print(f"seed {seed}: [green]ok[/] — {res.committed} committed, {res.ops} operations, "
                      f"{'' if cfg.workload == 'log' else f'history {res.verdict}, '}{res.stats}")
        return 0
    _report_violation(cfg, res)
    return 1


def _report_violation(cfg: SimConfig, res: SeedResult) -> None:
    console.print(Panel(res.violation or "", title=f"seed {res.seed}", border_style="red"))
    # One line whatever the terminal's width: it is a command to paste.
    console.print(f"replay: [bold]{cfg.replay_command(res.seed)}[/]", soft_wrap=True)
    console.print("last events before it:")
    console.print(res.trace, markup=False, highlight=False)


def _demo_table(results: list[SeedResult]) -> None:
    t = Table(title="Each seed is one run of the cluster under faults")
    for col in ("seed", "elections", "crashes", "partitions", "snapshots", "committed", "client ops",
                "history", "verdict"):
        t.add_column(col, justify="right")
    for r in results:
        t.add_row(str(r.seed), str(r.stats.get("elections", 0)), str(r.stats.get("crashes", 0)),
                  str(r.stats.get("partitions", 0)), str(r.stats.get("snapshots", 0)),
                  str(r.committed), str(r.ops), r.verdict or "-",
                  "[green]safe[/]" if r.ok else f"[red]{r.violation}[/]")
    console.print(t)
