"""Linearizability of a key-value history against a register per key.

A key-value store is a set of independent registers, and linearizability is compositional
(P-compositionality, Herlihy & Wing): the history is linearizable iff every key's sub-history
is. So each key is checked on its own, which keeps every search small.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from .history import Event, Operation, collector_paused, operations
from .register import ABSENT, Values, compile_ops
from .search import DEFAULT_MAX_MEMORY, Budget, linearizable
from .window import explain, find_window

LINEARIZABLE = "linearizable"
NOT_LINEARIZABLE = "not linearizable"
UNDECIDED = "undecided"


@dataclass(frozen=True)
class CheckResult:
    """The verdict on a history. `ok` is True, False, or None when undecided; on failure `key`
    names the failing key and `window` is a small sub-history that already fails."""

    verdict: str
    ok: bool | None
    key: str | None
    explanation: str
    window: list[Event] = field(default_factory=list)
    ops_checked: int = 0


def check_history(
    events: Sequence[Event], time_limit: float = 60.0, max_memory: int = DEFAULT_MAX_MEMORY
) -> CheckResult:
    """Check a history; raises HistoryError if it is malformed. `max_memory` caps the
    process's resident memory in bytes, measured during the search."""
    with collector_paused():
        return _check_operations(operations(events), time_limit, max_memory)


def check_operations(
    ops: Sequence[Operation], time_limit: float = 60.0, max_memory: int = DEFAULT_MAX_MEMORY
) -> CheckResult:
    """Check a history already paired into operations (by `operations` or `load_operations`)."""
    with collector_paused():
        return _check_operations(ops, time_limit, max_memory)


def _check_operations(ops: Sequence[Operation], time_limit: float, max_memory: int) -> CheckResult:
    budget = Budget(time.monotonic() + time_limit, max_memory)
    by_key: dict[str, list[Operation]] = {}
    for op in ops:
        by_key.setdefault(op.key, []).append(op)

    checked = 0
    undecided: list[str] = []
    for key in sorted(by_key):
        if budget.out_of_time():
            undecided.extend(k for k in sorted(by_key) if k >= key)
            break
        values = Values()
        reg_ops = compile_ops(by_key[key], values)
        verdict = linearizable(reg_ops, ABSENT, budget)
        checked += len(by_key[key])
        if verdict is None:
            undecided.append(key)
        elif not verdict:
            window = find_window(reg_ops, budget)
            return CheckResult(
                NOT_LINEARIZABLE,
                False,
                key,
                explain(window, key, values, budget),
                window.events(),
                checked,
            )
    if undecided:
        return CheckResult(
            UNDECIDED,
            None,
            undecided[0],
            f"Could not decide key(s) {', '.join(map(repr, undecided))}: {budget.exhausted}. "
            "Every other key is linearizable.",
            [],
            checked,
        )
    return CheckResult(
        LINEARIZABLE,
        True,
        None,
        f"All {checked} operations on {len(by_key)} key(s) have a linearization.",
        [],
        checked,
    )
