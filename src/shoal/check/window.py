"""Shrinking a non-linearizable key history to a small window that still fails, and saying why.

Two steps, each keeping the guarantee "the window fails, so the history fails":

1. The shortest failing prefix. Linearizability is prefix-closed once operations still running
   at the cut are treated as unknown-outcome, so a binary search over completions finds it.
2. A later start. At a quiescent cut (every completed operation invoked before it has
   returned) the register can only hold one of a set of states S. We over-approximate S segment
   by segment, letting unknown-outcome operations apply any number of times, and carry those
   operations into the window. If the window fails from every state in S, no linearization of
   the whole prefix exists.

Finally, reads the failure does not need are dropped.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from .history import Event
from .register import ABSENT, CAS, READ, WRITE, RegOp, Values, relevant
from .search import Budget, linearizable

_SEGMENT_LIMIT = 50_000  # configurations explored per segment before giving up shrinking
_DROP_LIMIT = 200  # windows larger than this keep their reads: each drop costs a search
_ALTERNATIVES = 12  # values tried when saying what a bad read could have returned


@dataclass(frozen=True)
class Window:
    """Operations that fail from every state in `initial`; `culprit`'s completion ends it."""

    ops: list[RegOp]
    initial: frozenset[int]
    culprit: RegOp
    earlier: int  # completed operations before the window's start
    end: int  # position of the culprit's completion

    def events(self) -> list[Event]:
        """The window's events in history order, as a valid history of its own."""
        located = []
        for op in self.ops:
            located.append((op.source.call, op.source.invoke))
            ret, complete = op.source.ret, op.source.complete
            if ret is not None and complete is not None and ret <= self.end:
                located.append((ret, complete))
        return [event for _, event in sorted(located, key=lambda pair: pair[0])]


def find_window(ops: list[RegOp], budget: Budget) -> Window:
    """A small failing window of a key history already known not to be linearizable."""
    end = _shortest_failing_prefix(ops, budget)
    ops = relevant(prefix(ops, end))
    culprit = next(op for op in ops if op.ret == end)
    start: tuple[int, set[int], list[RegOp]] = (0, {ABSENT}, ops)
    for cut, states in reversed(_cuts(ops)):
        if cut > culprit.call:
            continue
        window = relevant([op for op in ops if op.ret is None or op.call >= cut])
        verdicts = [linearizable(window, s, budget) for s in states]
        if None in verdicts:
            break
        if not any(verdicts):
            start = (cut, states, window)
            break
    cut, states, window = start
    earlier = sum(1 for op in ops if op.ret is not None and op.call < cut)
    window = _drop_reads(window, culprit, states, budget)
    return Window(window, frozenset(states), culprit, earlier, end)


def _drop_reads(ops: list[RegOp], culprit: RegOp, states: set[int], budget: Budget) -> list[RegOp]:
    """Drop reads the failure does not need. Sound: removing a read from a linearizable history
    leaves it linearizable, so if the window still fails without the read, it failed with it."""
    if len(ops) > _DROP_LIMIT:
        return ops
    for op in [op for op in ops if op.kind == READ and op is not culprit]:
        if budget.out_of_time():
            break
        smaller = [other for other in ops if other is not op]
        if not any(linearizable(smaller, s, budget) is not False for s in states):
            ops = smaller
    return ops


def prefix(ops: list[RegOp], end: int) -> list[RegOp]:
    """The history up to position `end`; operations still running there have unknown outcome
    (and a read with unknown outcome constrains nothing)."""
    out = []
    for op in ops:
        if op.call > end:
            continue
        if op.ret is not None and op.ret > end:
            if op.kind == READ:
                continue
            op = op._replace(ret=None)
        out.append(op)
    return out


def explain(window: Window, key: str, values: Values, budget: Budget) -> str:
    """A readable account of why the window fails."""
    op, source = window.culprit, window.culprit.source
    who = f"process {source.process}"
    if op.kind == READ:
        alternatives = _possible_reads(window, budget)
        if alternatives is None:
            why = "it does not fit the operations around it"
        elif alternatives:
            why = f"{key} could only have held {_join(alternatives, values)} then"
        else:
            why = "no value it could have returned fits the operations around it"
        first = f"read of {key} by {who} returned {_show(values.value(op.a))}"
    elif op.kind == CAS:
        first = (
            f"cas of {key} by {who} from {_show(values.value(op.a))} to "
            f"{_show(values.value(op.b))} succeeded"
        )
        why = f"{key} could not have held {_show(values.value(op.a))} then"
    else:
        first = f"write of {key} = {_show(values.value(op.a))} by {who} completed"
        why = "no order of the operations around it fits a register"
    if window.earlier:
        start = (
            f"After the {window.earlier} earlier operation(s) on {key}, it can only hold "
            f"{_join(sorted(window.initial), values)} when this window starts."
        )
    else:
        start = f"{key} starts absent; the window begins with the history."
    count = len(window.ops)
    return "\n".join(
        [
            f"{first}, but no linearization allows it: {why}.",
            start,
            f"No order of the {count} operation(s) in the window that respects real time "
            "(each takes effect between its invoke and its completion; info ones at any time "
            "after their invoke, or never) explains every result.",
        ]
    )


def _shortest_failing_prefix(ops: list[RegOp], budget: Budget) -> int:
    ends = sorted(op.ret for op in ops if op.ret is not None)
    lo, hi = 0, len(ends) - 1  # ends[hi] is known to fail: it is the whole history
    while lo < hi:
        mid = (lo + hi) // 2
        verdict = linearizable(prefix(ops, ends[mid]), ABSENT, budget)
        if verdict is None:
            break
        if verdict:
            lo = mid + 1
        else:
            hi = mid
    return ends[hi]


class _Free:
    """The unknown-outcome operations carried so far, free to apply any number of times: the
    states they can reach from anywhere (`base`, closed under their cas), kept up to date as
    more are carried, so no state's closure walks them all again."""

    def __init__(self) -> None:
        self.base: set[int] = set()
        self.edges: dict[int, list[int]] = {}

    def carry(self, op: RegOp) -> None:
        if op.kind == WRITE:
            self._spread(op.a)
        elif op.kind == CAS:
            self.edges.setdefault(op.a, []).append(op.b)
            if op.a in self.base:
                self._spread(op.b)

    def _spread(self, state: int) -> None:
        work = [state]
        while work:
            x = work.pop()
            if x not in self.base:
                self.base.add(x)
                work.extend(self.edges.get(x, ()))

    def beyond_base(self, state: int) -> set[int]:
        """What the carried cas lead `state` to, outside `base` (which is closed already)."""
        found: set[int] = set()
        work = [state]
        while work:
            x = work.pop()
            if x not in found and x not in self.base:
                found.add(x)
                work.extend(self.edges.get(x, ()))
        return found


def _cuts(ops: list[RegOp]) -> list[tuple[int, set[int]]]:
    """Quiescent cuts, each with an over-approximation of the states the register can hold
    there. Stops early if a segment is too concurrent to enumerate."""
    completed = sorted((op for op in ops if op.ret is not None), key=lambda op: op.call)
    maybe = sorted((op for op in ops if op.ret is None), key=lambda op: op.call)
    cuts: list[tuple[int, set[int]]] = []
    states = {ABSENT}
    segment: list[RegOp] = []
    last_return = -1
    free, carried = _Free(), 0
    for op in completed:
        if segment and last_return < op.call:
            cut = op.call
            while carried < len(maybe) and maybe[carried].call < cut:
                free.carry(maybe[carried])
                carried += 1
            reached = _segment_states(segment, free, states)
            if reached is None:
                break
            states = reached
            cuts.append((cut, states))
            segment = []
        segment.append(op)
        last_return = max(last_return, op.ret or 0)
    return cuts


def _segment_states(segment: list[RegOp], free: _Free, starts: set[int]) -> set[int] | None:
    """States after every op of `segment` is linearized, from any of `starts`, with the
    carried unknown-outcome ops free to apply any number of times (an over-approximation)."""
    base = free.base
    beyond: dict[int, set[int]] = {}  # per state, worked out once
    full = (1 << len(segment)) - 1
    seen: set[tuple[int, int]] = set()
    reached: set[int] = set()
    completes = False  # some order linearizes the whole segment
    work = [(0, s) for s in starts]
    while work:
        mask, state = work.pop()
        if (mask, state) in seen:
            continue
        seen.add((mask, state))
        if len(seen) > _SEGMENT_LIMIT:
            return None
        extra = beyond.get(state)
        if extra is None:
            extra = beyond[state] = free.beyond_base(state)
        if mask == full:
            completes = True
            reached |= extra
        pending = [j for j in range(len(segment)) if not mask >> j & 1]
        bound = min((segment[j].ret or 0 for j in pending), default=0)
        for j in pending:
            op = segment[j]
            if op.call >= bound:
                continue
            if op.kind == WRITE:
                work.append((mask | 1 << j, op.a))
            elif op.a in extra or op.a in base:
                work.append((mask | 1 << j, op.b if op.kind == CAS else op.a))
    return reached | base if completes else reached


def _possible_reads(window: Window, budget: Budget) -> list[int] | None:
    """Values the culprit read could have returned with the window still linearizable, or None
    if the budget ran out before we knew."""
    culprit = window.culprit
    written = {op.b if op.kind == CAS else op.a for op in window.ops if op.kind != READ}
    candidates = sorted((written | window.initial) - {culprit.a})[:_ALTERNATIVES]
    possible = []
    for value in candidates:
        ops = [op._replace(a=value) if op is culprit else op for op in window.ops]
        verdicts = [linearizable(ops, s, budget) for s in window.initial]
        if None in verdicts:
            return None
        if any(verdicts):
            possible.append(value)
    return possible


def _show(value: object) -> str:
    return "absent (null)" if value is None else json.dumps(value)


def _join(idents: list[int], values: Values) -> str:
    shown = [_show(values.value(i)) for i in idents]
    return shown[0] if len(shown) == 1 else ", ".join(shown[:-1]) + " or " + shown[-1]
