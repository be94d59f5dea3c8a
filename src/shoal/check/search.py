"""Wing & Gong's linearizability search with Lowe's memoisation, for one register.

As in Porcupine and Knossos: completed operations sit in a doubly linked list of call and return
entries in real-time order. An operation may be linearized next if its call comes before the
first return still in the list; linearizing it "lifts" its two entries out of the list, and
backtracking puts them back. A cache of (linearized set, model state) prunes configurations
already explored.

Operations with unknown outcome (info) have no return entry: they may take effect at any time
after their call, or never. They live in a second list and are tried only after the completed
candidates, and the search succeeds once every completed operation is linearized, leaving the
rest out. Their bits are kept apart in the cache: a configuration that has used a superset of
the unknown-outcome operations of one already explored can do nothing more, so it is pruned.
"""

from __future__ import annotations

import time
from itertools import pairwise

from .register import RegOp, relevant, step

_CHECK_EVERY = 2048  # search steps between deadline checks


class Budget:
    """A wall-clock deadline shared by all searches of one check, and a memory cap per search."""

    def __init__(self, deadline: float, max_cache_bytes: int = 512 << 20) -> None:
        self.deadline = deadline
        self.max_cache_bytes = max_cache_bytes
        self.exhausted: str | None = None  # why a search gave up

    def out_of_time(self) -> bool:
        if time.monotonic() > self.deadline:
            self.exhausted = "the time limit passed"
            return True
        return False


def linearizable(ops: list[RegOp], init: int, budget: Budget) -> bool | None:
    """Whether a register starting in state `init` admits a linearization of `ops`.

    Returns None if the budget ran out first (the reason is left in `budget.exhausted`).
    """
    ops = relevant(ops)
    done = [op for op in ops if op.ret is not None]
    maybe = sorted((op for op in ops if op.ret is None), key=lambda op: op.call)

    # Completed ops: entry 2j is op j's call, 2j+1 its return; head and tail sentinels after.
    n = len(done)
    head, tail = 2 * n, 2 * n + 1
    pos = [0] * (2 * n + 2)
    order = sorted(
        [(op.call, 2 * j) for j, op in enumerate(done)]
        + [(op.ret, 2 * j + 1) for j, op in enumerate(done) if op.ret is not None]
    )
    for p, entry in order:
        pos[entry] = p
    nxt, prv = [0] * (2 * n + 2), [0] * (2 * n + 2)
    for x, y in pairwise([head, *(entry for _, entry in order), tail]):
        nxt[x], prv[y] = y, x

    # Unknown-outcome ops: entry i is maybe[i]; their own sentinels after.
    m = len(maybe)
    ihead, itail = m, m + 1
    icall = [op.call for op in maybe]
    inxt, iprv = [0] * (m + 2), [0] * (m + 2)
    for x, y in pairwise([ihead, *range(m), itail]):
        inxt[x], iprv[y] = y, x

    # (linearized completed ops, state) -> unknown-outcome sets explored there, none a subset
    # of another.
    cache: dict[tuple[int, int], list[int]] = {}
    max_entries = max(1024, budget.max_cache_bytes // _entry_bytes(n, m))
    entries = 0

    def visit(lin: int, state: int, used: int) -> bool:
        nonlocal entries
        seen = cache.get((lin, state))
        if seen is None:
            cache[(lin, state)] = [used]
        else:
            if any(s & ~used == 0 for s in seen):
                return False
            seen[:] = [s for s in seen if used & ~s]
            seen.append(used)
        entries += 1
        return True

    state, lin, used, remaining = init, 0, 0, n
    stack: list[tuple[bool, int, int, int]] = []  # (is unknown-outcome, entry, state, bound)
    e, i, bound, in_maybe = nxt[head], ihead, 0, False
    steps = 0
    while remaining:
        steps += 1
        if steps % _CHECK_EVERY == 0:
            if budget.out_of_time():
                return None
            if entries > max_entries:
                budget.exhausted = f"the search cache passed {max_entries} entries"
                return None
        if not in_maybe:
            if e & 1:
                # First pending return: no completed op after it may go next. Try the
                # unknown-outcome ops invoked before it.
                bound, i, in_maybe = pos[e], inxt[ihead], True
                continue
            op = done[e >> 1]
            new = step(op, state)
            if new is not None and visit(lin | 1 << (e >> 1), new, used):
                stack.append((False, e, state, bound))
                state, lin, remaining = new, lin | 1 << (e >> 1), remaining - 1
                ret = e + 1
                nxt[prv[e]], prv[nxt[e]] = nxt[e], prv[e]
                nxt[prv[ret]], prv[nxt[ret]] = nxt[ret], prv[ret]
                e = nxt[head]
            else:
                e = nxt[e]
        elif i != itail and icall[i] < bound:
            op = maybe[i]
            new = step(op, state)
            if new is not None and visit(lin, new, used | 1 << i):
                stack.append((True, i, state, bound))
                state, used = new, used | 1 << i
                inxt[iprv[i]], iprv[inxt[i]] = inxt[i], iprv[i]
                e, in_maybe = nxt[head], False
            else:
                i = inxt[i]
        else:
            if not stack:
                return False
            was_maybe, x, state, bound = stack.pop()
            if was_maybe:
                used ^= 1 << x
                inxt[iprv[x]] = iprv[inxt[x]] = x
                i = inxt[x]
            else:
                lin ^= 1 << (x >> 1)
                remaining += 1
                ret = x + 1
                nxt[prv[ret]] = prv[nxt[ret]] = ret
                nxt[prv[x]] = prv[nxt[x]] = x
                e, in_maybe = nxt[x], False
    return True


def _entry_bytes(completed: int, unknown: int) -> int:
    # Two bitset ints, a tuple key, a list and a dict slot; tracemalloc shows about half this.
    return (completed + unknown) // 6 + 300
