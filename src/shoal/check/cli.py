"""`shoal check`: read a history file, check it, print the verdict.

`run_check` checks a key-value history for linearizability; `run_txn_check` checks a
transactional history (list-append or rw-register) for isolation anomalies (elle.py)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .elle import TxnCheckResult, check_txn_history
from .history import Event, HistoryError, Operation, cas_args, load_operations, operations
from .linearizability import CheckResult, check_operations
from .search import DEFAULT_MAX_MEMORY
from .txn_anomalies import Anomaly
from .txn_history import DEFAULT_MAX_EVENTS, read_txn_file

EXIT_CODES = {"linearizable": 0, "not linearizable": 1, "undecided": 2}
EXIT_MALFORMED = 3
_TIMELINE_WIDTH = 40
_ROWS_PER_TYPE = 5  # anomalies of one type shown in the table; --json has them all


_UNITS = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "ki": 1 << 10, "mi": 1 << 20, "gi": 1 << 30}


def parse_size(text: str) -> int:
    """Bytes in a size such as `512MB`, `2G`, `1.5GiB` or `100000000`."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmg]i?)?b?\s*", text.lower())
    if match is None:
        raise ValueError(f"not a size: {text!r} (try 512MB or 2GB)")
    return int(float(match[1]) * _UNITS[match[2] or ""])


def run_check(
    path: Path,
    time_limit: float,
    console: Console | None = None,
    max_memory: int = DEFAULT_MAX_MEMORY,
) -> int:
    """Check the history at `path`; returns the exit code (0, 1, 2, or 3 if malformed).
    `max_memory` caps the checker's resident memory in bytes."""
    console = console or Console()
    try:
        events, ops = load_operations(path)
    except HistoryError as e:
        console.print(f"[bold red]malformed history[/] {path}: {e}", highlight=False,
                      soft_wrap=True)
        return EXIT_MALFORMED
    except OSError as e:
        console.print(f"[bold red]cannot read history[/] {path}: {e.strerror}", highlight=False)
        return EXIT_MALFORMED
    result = check_operations(ops, time_limit=time_limit, max_memory=max_memory)
    _print(console, path, len(events), result)
    return EXIT_CODES[result.verdict]


def _print(console: Console, path: Path, n_events: int, result: CheckResult) -> None:
    colour = {True: "green", False: "red", None: "yellow"}[result.ok]
    console.print(
        f"[bold {colour}]{result.verdict.upper()}[/] {path} "
        f"({n_events} events, {result.ops_checked} operations checked)",
        highlight=False,
    )
    console.print(result.explanation, highlight=False, markup=False)
    if result.window:
        console.print(_table(result.window, result.key or ""))


def _table(window: list[Event], key: str) -> Table:
    """One row per operation of the window, with a timeline of invokes and completions."""
    ops = operations(window)
    last = len(window) - 1
    table = Table(title=f"smallest failing window found for key {key!r}", title_justify="left")
    for column in ("process", "op", "args", "result", "invoked", "completed", "timeline"):
        table.add_column(column, no_wrap=column == "timeline")
    for op in ops:
        culprit = op.ret == last
        table.add_row(
            str(op.process),
            op.f,
            escape(_args(op)),
            escape(_result(op)),
            str(op.invoke.time),
            str(op.complete.time) if op.complete is not None else "-",
            _timeline(op, last),
            style="bold red" if culprit else None,
        )
    return table


def _args(op: Operation) -> str:
    if op.f == "write":
        return json.dumps(op.value)
    if op.f == "cas":
        expected, new = cas_args(op.value)
        return f"{json.dumps(expected)} -> {json.dumps(new)}"
    return ""


def _result(op: Operation) -> str:
    if op.complete is None:
        return "no reply yet"
    if op.status == "info":
        return "info (unknown)"
    return json.dumps(op.result) if op.f == "read" and op.status == "ok" else op.status


def _timeline(op: Operation, last: int) -> str:
    """`[───]` from invoke to completion, in event order; `[───…` if the outcome is unknown."""

    def column(position: int) -> int:
        return position * (_TIMELINE_WIDTH - 1) // max(last, 1)

    start = column(op.call)
    if op.status == "info" or op.ret is None:
        return " " * start + "[" + "─" * (_TIMELINE_WIDTH - start - 2) + "…"
    end = max(column(op.ret), start + 1)
    return " " * start + "[" + "─" * (end - start - 1) + "]"


def run_txn_check(
    path: Path,
    model: str,
    consistency: str = "serializable",
    console: Console | None = None,
    *,
    json_output: bool = False,
    process_order: bool = False,
    max_events: int = DEFAULT_MAX_EVENTS,
) -> int:
    """Check the transactional history at `path` for `consistency`; returns the exit code: 0
    valid, 1 anomalies the model proscribes, 3 malformed or unreadable (the message names the
    line). With `json_output` the verdict (or the error) is one JSON object."""
    console = console or Console()
    try:
        events, lines = read_txn_file(path, max_events)
        result = check_txn_history(
            events, model, consistency, process_order=process_order, lines=lines,
            max_events=max_events,
        )
    except (HistoryError, OSError, UnicodeDecodeError) as e:
        if isinstance(e, HistoryError):
            kind, message, line = "malformed history", str(e), e.line
        elif isinstance(e, OSError):
            kind, message, line = "cannot read history", e.strerror or str(e), None
        else:
            kind, message, line = "malformed history", f"not UTF-8: {e.reason}", None
        if json_output:
            error = {"valid": None, "error": kind, "path": str(path), "message": message,
                     "line": line}
            console.out(json.dumps(error), highlight=False)
        else:
            console.print(f"[bold red]{kind}[/] {escape(str(path))}: {escape(message)}",
                          highlight=False, soft_wrap=True)  # (one line: it names the line)
        return EXIT_MALFORMED
    if json_output:
        console.out(json.dumps({"path": str(path), **result.to_json()}, indent=2),
                    highlight=False)
    else:
        _print_txn(console, path, result)
    return 0 if result.valid else 1


def _print_txn(console: Console, path: Path, result: TxnCheckResult) -> None:
    verdict = result.consistency.upper() if result.valid else f"NOT {result.consistency.upper()}"
    colour = "green" if result.valid else "red"
    order = ", with realtime order" if result.realtime else ""
    order += ", with process order" if result.process_order else ""
    console.print(
        f"[bold {colour}]{verdict}[/] {escape(str(path))} ({result.model}: {result.txns} "
        f"transactions, {result.committed} ok, {result.indeterminate} info, {result.failed} "
        f"failed; {result.edges} dependency edges{order})",
        highlight=False,
    )
    console.print(result.explanation, highlight=False, markup=False)
    if result.anomalies:
        console.print(_txn_table(result))


def _txn_table(result: TxnCheckResult) -> Table:
    """One row per anomaly (a few per type): its name, whether the model proscribes it, and its
    evidence: the cycle, the explanation and the transactions with their operations."""
    table = Table(
        title=f"anomalies (violates: proscribed by {result.consistency})",
        title_justify="left",
        show_lines=True,
    )
    table.add_column("anomaly", no_wrap=True)
    table.add_column("violates", no_wrap=True)
    table.add_column("evidence")
    shown: dict[str, int] = {}
    for anomaly in result.anomalies:
        shown[anomaly.name] = shown.get(anomaly.name, 0) + 1
        if shown[anomaly.name] > _ROWS_PER_TYPE:
            continue
        bad = result.violating(anomaly)
        table.add_row(
            anomaly.name,
            "[red]yes[/]" if bad else "[green]no[/]",
            _evidence(anomaly),
            style="bold" if bad else None,
        )
    for name, count in shown.items():
        if count > _ROWS_PER_TYPE:
            table.add_row(name, "", f"... and {count - _ROWS_PER_TYPE} more (all with --json)")
    return table


def _evidence(anomaly: Anomaly) -> str:
    lines = []
    if anomaly.is_cycle:
        lines.append(f"[bold]{escape(anomaly.cycle_text())}[/]")
    lines.append(escape(anomaly.explanation))
    for txn in anomaly.txns:
        lines.append(
            f"  {txn.name} (process {txn.process}, line {txn.line}, {txn.status}): "
            f"{escape(txn.ops_text())}"
        )
    return "\n".join(lines)
