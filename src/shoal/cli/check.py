"""`shoal check`: is a recorded history linearizable, or free of isolation anomalies?"""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer()

_MODELS = ("register", "list-append", "rw-register")
_CONSISTENCY = ("serializable", "strict-serializable", "snapshot-isolation", "read-committed")


@app.command()
def check(
    path: Path = typer.Argument(..., help="history in JSON Lines (see docs/history-format.md)"),
    time_limit: float = typer.Option(60.0, "--time-limit", help="seconds before giving up (exit 2)"),
    max_memory: str = typer.Option(
        "1GiB", "--max-memory", help="resident memory of the checker before giving up (exit 2)"
    ),
    model: str = typer.Option(
        "register",
        "--model",
        help="register: linearizability of a key-value history; list-append or rw-register: "
        "isolation anomalies of a transactional history",
    ),
    consistency: str | None = typer.Option(
        None,
        "--consistency",
        help="for list-append and rw-register: serializable (default), strict-serializable, "
        "snapshot-isolation or read-committed",
    ),
    process_order: bool = typer.Option(
        False, "--process-order", help="for list-append and rw-register: also require each "
        "process to see its own earlier transactions"
    ),
    json_output: bool = typer.Option(
        False, "--json", help="for list-append and rw-register: print the verdict as JSON"
    ),
) -> None:
    """Check a history. --model register (the default): is a key-value history linearizable?
    Exit 0 = linearizable, 1 = not, 2 = undecided. --model list-append or rw-register: which
    isolation anomalies does a transactional history show? Exit 0 = none that --consistency
    proscribes, 1 = some. Exit 3 = malformed history."""
    if model not in _MODELS:
        raise typer.BadParameter(
            f"{model!r} is not one of {', '.join(_MODELS)}", param_hint="--model"
        )
    if model == "register":
        for given, name in ((consistency is not None, "--consistency"),
                            (process_order, "--process-order"), (json_output, "--json")):
            if given:
                raise typer.BadParameter(
                    "only for --model list-append or rw-register", param_hint=name
                )
        from ..check.cli import parse_size, run_check

        try:
            limit = parse_size(max_memory)
        except ValueError as e:
            raise typer.BadParameter(str(e), param_hint="--max-memory") from None
        raise typer.Exit(run_check(path, time_limit, max_memory=limit))

    consistency = consistency or "serializable"
    if consistency not in _CONSISTENCY:
        raise typer.BadParameter(
            f"{consistency!r} is not one of {', '.join(_CONSISTENCY)}", param_hint="--consistency"
        )
    from ..check.cli import run_txn_check

    raise typer.Exit(
        run_txn_check(
            path, model, consistency, json_output=json_output, process_order=process_order
        )
    )
