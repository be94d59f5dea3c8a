"""Linearizable histories from a simulated register store, for tests and benchmarks.

Each process runs one operation at a time against a real in-memory store. An operation takes
effect at a random instant between its invoke and its completion, so concurrent operations
overlap as they would against a real linearizable service.
"""

from __future__ import annotations

import heapq
import random
from dataclasses import dataclass

from .history import Event, cas_args

_MAX_LATENCY = 50_000  # ns from invoke to completion
_MAX_THINK = 20_000  # ns between a completion and the process's next invoke


@dataclass
class _Pending:
    process: int
    f: str
    key: str
    value: object
    unknown: bool  # completes with info
    applies: bool  # takes effect (always, unless the outcome is unknown)
    result: object = None
    succeeded: bool = True


def random_history(
    n_ops: int, processes: int, keys: int, seed: int, info_rate: float = 0.05
) -> list[Event]:
    """A linearizable history of `n_ops` read/write/cas operations on keys "k0".."k{keys-1}".

    With probability `info_rate` an operation completes with info; half of those take effect.
    A process that gets info is retired and a fresh process id takes its place.
    """
    rng = random.Random(seed)
    store: dict[str, object] = {}
    written: dict[str, list[object]] = {}
    events: list[Event] = []
    queue: list[tuple[int, int, str, int]] = []  # (time, tie-break, what, process)
    pending: dict[int, _Pending] = {}
    seq = 0

    def schedule(at: int, what: str, process: int) -> None:
        nonlocal seq
        heapq.heappush(queue, (at, seq, what, process))
        seq += 1

    def invoke(now: int, process: int) -> None:
        key = f"k{rng.randrange(keys)}"
        roll = rng.random()
        value: object
        if roll < 0.5:
            f, value = "read", None
        elif roll < 0.8:
            f, value = "write", len(events)  # unique per history
        else:
            # Usually expect the current value so that some cas succeed under contention.
            seen = written.get(key, [None])
            expected = store.get(key) if rng.random() < 0.6 else rng.choice(seen[-5:])
            f, value = "cas", [expected, len(events)]
        unknown = rng.random() < info_rate
        pending[process] = _Pending(
            process, f, key, value, unknown, not unknown or rng.random() < 0.5
        )
        events.append(Event(process, "invoke", f, key, value, now))
        latency = rng.randint(1, _MAX_LATENCY)
        schedule(now + rng.randint(0, latency), "effect", process)
        schedule(now + latency, "complete", process)

    def take_effect(op: _Pending) -> None:
        if not op.applies:
            return
        current = store.get(op.key)
        if op.f == "read":
            op.result = current
        elif op.f == "write":
            store[op.key] = op.value
            written.setdefault(op.key, []).append(op.value)
        else:
            expected, new = cas_args(op.value)
            op.succeeded = current == expected
            if op.succeeded:
                store[op.key] = new
                written.setdefault(op.key, []).append(new)

    def complete(now: int, op: _Pending) -> None:
        if op.unknown:
            kind = "info"
        else:
            kind = "ok" if op.succeeded else "fail"
        value = op.result if op.f == "read" and kind == "ok" else op.value
        events.append(Event(op.process, kind, op.f, op.key, value, now))

    scheduled = min(processes, n_ops)
    next_process = processes
    for process in range(scheduled):
        schedule(rng.randint(0, _MAX_THINK), "invoke", process)
    while queue:
        now, _, what, process = heapq.heappop(queue)
        if what == "invoke":
            invoke(now, process)
        elif what == "effect":
            take_effect(pending[process])
        else:
            op = pending.pop(process)
            complete(now, op)
            if op.unknown:
                process, next_process = next_process, next_process + 1
            if scheduled < n_ops:
                schedule(now + rng.randint(0, _MAX_THINK), "invoke", process)
                scheduled += 1
    return events
