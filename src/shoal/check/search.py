"""Wing & Gong's linearizability search with Lowe's memoisation, for one register.

As in Porcupine and Knossos: completed operations sit in a doubly linked list of call and return
entries in real-time order. An operation may be linearized next if its call comes before the
first return still in the list; linearizing it "lifts" its two entries out of the list, and
backtracking puts them back. A cache of (linearized set, model state) prunes configurations
already explored.

The linearized set is kept small. With completed operations numbered in call order, let `low`
be the first one not yet linearized: everything before it is, and anything linearized after it
was called before `low` returned. So (low, the bits from low on) names the set exactly, in a
few machine words however long the history, where a plain bitset costs a word per 64
operations on every step.

Operations with unknown outcome (info) have no return entry: they may take effect at any time
after their call, or never. They live in a second list and are tried only after the completed
candidates, and the search succeeds once every completed operation is linearized, leaving the
rest out. Their bits are kept apart in the cache: a configuration that has used a superset of
the unknown-outcome operations of one already explored can do nothing more, so it is pruned.
"""

from __future__ import annotations

import os
import resource
import sys
import time
from itertools import pairwise

from .register import CAS, WRITE, RegOp, relevant

_CHECK_EVERY = 4096  # search steps between deadline and memory checks
DEFAULT_MAX_MEMORY = 1 << 30


class Budget:
    """A wall-clock deadline shared by all searches of one check, and a cap on the resident
    memory of the process, measured while searching."""

    def __init__(self, deadline: float, max_memory: int = DEFAULT_MAX_MEMORY) -> None:
        self.deadline = deadline
        self.max_memory = max_memory
        self.exhausted: str | None = None  # why a search gave up

    def out_of_time(self) -> bool:
        if time.monotonic() > self.deadline:
            self.exhausted = "the time limit passed"
            return True
        return False

    def out_of_memory(self) -> bool:
        used = resident_bytes()
        if used > self.max_memory:
            self.exhausted = (
                f"the checker's memory passed {_mb(self.max_memory)} ({_mb(used)} resident)"
            )
            return True
        return False


def resident_bytes() -> int:
    """The process's resident memory now (Linux), or its peak where /proc is absent."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE
    except OSError:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == "darwin" else peak * 1024  # bytes there, KiB elsewhere


_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _mb(n: int) -> str:
    return f"{n / 1e6:,.0f} MB"


def linearizable(ops: list[RegOp], init: int, budget: Budget) -> bool | None:
    """Whether a register starting in state `init` admits a linearization of `ops`.

    Returns None if the budget ran out first (the reason is left in `budget.exhausted`).
    """
    ops = relevant(ops)
    done = sorted((op for op in ops if op.ret is not None), key=lambda op: op.call)
    maybe = sorted((op for op in ops if op.ret is None), key=lambda op: op.call)
    # What each op needs the register to hold (-1: anything) and what it leaves there.
    expect = [-1 if op.kind == WRITE else op.a for op in done]
    result = [op.b if op.kind == CAS else op.a for op in done]
    iexpect = [-1 if op.kind == WRITE else op.a for op in maybe]
    iresult = [op.b if op.kind == CAS else op.a for op in maybe]

    # Completed ops: entry 2j is op j's call, 2j+1 its return; head and tail sentinels after.
    n = len(done)
    head, tail = 2 * n, 2 * n + 1
    pos = [0] * (2 * n + 2)
    pos[0 : 2 * n : 2] = [op.call for op in done]
    pos[1 : 2 * n : 2] = [op.ret for op in done]  # type: ignore[misc]  # all set
    nxt, prv = [0] * (2 * n + 2), [0] * (2 * n + 2)
    for x, y in pairwise([head, *sorted(range(2 * n), key=pos.__getitem__), tail]):
        nxt[x], prv[y] = y, x

    # Unknown-outcome ops: entry i is maybe[i]; their own sentinels after.
    m = len(maybe)
    ihead, itail = m, m + 1
    icall = [op.call for op in maybe]
    inxt, iprv = [0] * (m + 2), [0] * (m + 2)
    for x, y in pairwise([ihead, *range(m), itail]):
        inxt[x], iprv[y] = y, x

    # A configuration packs into one int: (bits from low) : low : state. Each maps to the
    # unknown-outcome sets explored there (one int, or a list with none a subset of another).
    state_bits = max([init, *expect, *result, *iexpect, *iresult, 0]).bit_length() + 1
    low_bits = n.bit_length()
    cache: dict[int, int | list[int]] = {}

    def visit(key: int, used: int) -> bool:
        seen = cache.get(key)
        if seen is None:
            cache[key] = used
            return True
        if isinstance(seen, int):
            if seen & ~used == 0:
                return False
            cache[key] = used if used & ~seen == 0 else [seen, used]
            return True
        if any(s & ~used == 0 for s in seen):
            return False
        seen[:] = [s for s in seen if used & ~s]
        seen.append(used)
        return True

    state, low, bits, used, remaining = init, 0, 0, 0, n
    # (is unknown-outcome, entry, state, bound, low, bits) to undo each step
    stack: list[tuple[bool, int, int, int, int, int]] = []
    e, i, bound, in_maybe = nxt[head], ihead, 0, False
    steps = 0
    while remaining:
        steps += 1
        if steps % _CHECK_EVERY == 0 and (budget.out_of_time() or budget.out_of_memory()):
            return None
        if not in_maybe:
            if e & 1:
                # First pending return: no completed op after it may go next. Try the
                # unknown-outcome ops invoked before it.
                bound, i, in_maybe = pos[e], inxt[ihead], True
                continue
            j = e >> 1
            want = expect[j]
            if want < 0 or want == state:
                new = result[j]
                if j == low:
                    # Slide low past the run of linearized ops that now starts there.
                    b = bits | 1
                    run = (~b & (b + 1)).bit_length() - 1
                    new_low, new_bits = low + run, b >> run
                else:
                    new_low, new_bits = low, bits | 1 << (j - low)
                key = ((new_bits << low_bits | new_low) << state_bits) | new
                if key not in cache:  # the usual case, inlined: a configuration never seen
                    cache[key] = used
                    fresh = True
                else:
                    fresh = visit(key, used)
                if fresh:
                    stack.append((False, e, state, bound, low, bits))
                    state, low, bits, remaining = new, new_low, new_bits, remaining - 1
                    ret = e + 1
                    nxt[prv[e]], prv[nxt[e]] = nxt[e], prv[e]
                    nxt[prv[ret]], prv[nxt[ret]] = nxt[ret], prv[ret]
                    e = nxt[head]
                    continue
            e = nxt[e]
        elif i != itail and icall[i] < bound:
            want = iexpect[i]
            if want < 0 or want == state:
                new = iresult[i]
                if visit(((bits << low_bits | low) << state_bits) | new, used | 1 << i):
                    stack.append((True, i, state, bound, low, bits))
                    state, used = new, used | 1 << i
                    inxt[iprv[i]], iprv[inxt[i]] = inxt[i], iprv[i]
                    e, in_maybe = nxt[head], False
                    continue
            i = inxt[i]
        else:
            if not stack:
                return False
            was_maybe, x, state, bound, low, bits = stack.pop()
            if was_maybe:
                used ^= 1 << x
                inxt[iprv[x]] = iprv[inxt[x]] = x
                i = inxt[x]
            else:
                remaining += 1
                ret = x + 1
                nxt[prv[ret]] = prv[nxt[ret]] = ret
                nxt[prv[x]] = prv[nxt[x]] = x
                e, in_maybe = nxt[x], False
    return True
