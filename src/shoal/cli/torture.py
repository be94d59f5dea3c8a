"""`shoal torture`: real node processes under faults, the history checked afterwards."""

from __future__ import annotations

from pathlib import Path

import typer

from .common import Output, duration, emit_json, output_option, print_rows, print_table

app = typer.Typer()


@app.command()
def torture(
    nodes: int = typer.Option(3, "--nodes", min=3, max=9),
    time_: str = typer.Option("60s", "--time", help="how long the workload runs, e.g. 60s or 5m"),
    seed: int = typer.Option(0, "--seed"),
    clients: int = typer.Option(5, "--clients", min=1),
    history: Path = typer.Option(Path("torture-history.jsonl"), "--history"),
    no_wipe: bool = typer.Option(False, "--no-wipe", help="skip the replaced-disk fault"),
    workload: str = typer.Option("register", "--workload",
                                 help="register (linearizable reads, writes, cas), bank "
                                      "(transfers across 3 shards in transactions) or log "
                                      "(Kafka producers and a consumer group)"),
    partitions: int = typer.Option(3, "--partitions", min=1, max=64,
                                   help="log: the topic's partitions"),
    output: Output = output_option(Output.table),
) -> None:
    """Real processes under SIGKILL, SIGSTOP, link cuts and a replaced disk; the history is checked."""
    from rich.console import Console

    from ..torture.run import torture as run_torture
    from ..torture.run import torture_bank

    console = Console()
    seconds = duration(time_)
    if workload not in ("register", "bank", "log"):
        raise typer.BadParameter(f"unknown workload {workload!r}: register, bank or log")
    if output is not Output.table and workload != "log":
        raise typer.BadParameter(f"-o {output.value}: only with --workload log")
    if workload == "log":
        _log(nodes, seconds, seed, clients, partitions, output)
    if workload == "bank":
        console.print(f"torture bank: {nodes} nodes, {seconds:.0f}s, {clients} tellers, seed {seed}")
        result, faults = torture_bank(nodes=nodes, seconds=seconds, seed=seed, clients=clients,
                                      say=lambda s: console.print(f"  [dim]{s}[/]"))
        console.print(f"transfers: {result.counts}; {result.audits} audits; final {result.final}")
        for problem in result.problems:
            console.print(f"[red]{problem}[/]")
        console.print("[green]the bank balanced: every audit saw the total, every acknowledged "
                      "transfer applied once, no aborted one[/]" if result.ok else
                      "[red]the bank did not balance[/]")
        raise typer.Exit(0 if result.ok else 1)
    console.print(f"torture: {nodes} nodes, {seconds:.0f}s, {clients} clients, seed {seed}")
    r = run_torture(nodes=nodes, seconds=seconds, seed=seed, clients=clients, history=history,
                    wipe=not no_wipe, say=lambda s: console.print(f"  [dim]{s}[/]"))
    console.print(f"operations: {r.counts}; final values {r.final_values}")
    console.print(r.verdict.explanation)
    console.print("[green]every node converged to the same state[/]" if r.converged
                  else "[red]nodes did not converge after healing[/]")
    console.print(f"history: {history} (re-check with: shoal check {history})")
    raise typer.Exit(0 if r.ok else 1)


def _log(nodes: int, seconds: float, seed: int, clients: int, partitions: int,
         output: Output) -> None:
    from rich.console import Console

    from ..torture.log import TOPIC, torture_log

    err = Console(stderr=True)  # progress on stderr: stdout holds the table or the JSON
    err.print(f"torture log: {nodes} nodes, {seconds:.0f}s, {clients} producers and "
              f"{clients} consumers, {partitions} partitions, seed {seed}")
    r = torture_log(nodes=nodes, seconds=seconds, seed=seed, producers=clients,
                    consumers=clients, partitions=partitions,
                    say=lambda s: err.print(f"  [dim]{s}[/]"))
    if output is Output.json:
        emit_json(r.to_json())
        raise typer.Exit(0 if r.ok else 1)
    cols = ["partition", "records", "acknowledged", "consumed", "committed"]
    rows = [[str(p[c]) for c in cols] for p in r.partitions]
    if output is Output.simple:
        print_rows(rows)
    else:
        print_table(cols, rows, title=f"{TOPIC} after {len(r.faults)} faults: "
                    + ", ".join(f"{k} {v}" for k, v in sorted(r.counts.items())), right=tuple(cols))
    for problem in r.problems:
        err.print(f"[red]{problem}[/]", markup=True, highlight=False)
    err.print("[green]every acknowledged record is in the log once, in order, at its offset; "
              "consumers saw everything committed; no committed offset moved back[/]" if r.ok
              else f"[red]{r.counts['problems']} problems[/]")
    raise typer.Exit(0 if r.ok else 1)
