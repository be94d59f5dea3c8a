"""A virtual-time asyncio event loop: production coroutines run unchanged, and cost no wall time.

`VirtualLoop` subclasses `asyncio.BaseEventLoop` (the loop without I/O; the selector loop's
self-pipe would be a real socket pair) and replaces two things:

- `time()` returns a virtual clock, in seconds from 0. Every timer (`asyncio.sleep`,
  `call_later`, `wait_for`, `asyncio.timeout`) is scheduled against it.
- The selector. `BaseEventLoop._run_once` asks the selector to wait up to `timeout` seconds for
  I/O: 0 when callbacks are ready, the time to the earliest timer otherwise, None when there is
  neither. With no I/O at all, waiting is just moving the clock: `select(timeout)` adds
  `timeout` to the clock and returns no events, and the loop then runs the timers now due. A
  wait with no timer (None) means every task waits for something nobody will ever do: a
  deadlock, raised as `Deadlock` instead of hanging.

So a run is a deterministic function of the callbacks scheduled: the ready queue is FIFO and
the timer heap orders by (when, insertion), neither looks at a salted hash or a real clock.
`max_steps` bounds the loop's iterations, so a task spinning on `sleep(0)` fails the run
instead of looping forever; exceptions nobody retrieves are kept in `errors` (not logged), for
the harness to report."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")
DEFAULT_MAX_STEPS = 20_000_000


class Deadlock(RuntimeError):
    """Nothing is ready and no timer is pending, yet the run has not finished."""


class StepBudgetExceeded(RuntimeError):
    """The loop ran more iterations than its bound: something spins without progress."""


class _VirtualSelector:
    """Stands in for the I/O selector: no I/O, so waiting for events is moving the clock."""

    def __init__(self, loop: VirtualLoop):
        self._loop = loop

    def select(self, timeout: float | None) -> list[Any]:
        if timeout is None:
            raise Deadlock(f"virtual loop at t={self._loop.time():.6f}s: no callback ready and "
                           "no timer pending (every task waits on something nobody will do)")
        if timeout > 0:
            self._loop.advance(timeout)
        return []

    def close(self) -> None:
        pass


class VirtualLoop(asyncio.BaseEventLoop):
    def __init__(self, max_steps: int = DEFAULT_MAX_STEPS):
        super().__init__()
        self._now = 0.0
        self._selector = _VirtualSelector(self)
        self._clock_resolution = 1e-9  # (a timer due within this of now runs now)
        self.max_steps = max_steps
        self.steps = 0
        self.errors: list[str] = []
        self.set_exception_handler(self._keep_error)

    def time(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        assert seconds >= 0
        self._now += seconds

    def _run_once(self) -> None:
        self.steps += 1
        if self.steps > self.max_steps:
            raise StepBudgetExceeded(f"virtual loop ran {self.max_steps} iterations")
        super()._run_once()  # type: ignore[misc]

    def _process_events(self, event_list: list[Any]) -> None:
        pass  # (no I/O, so no events)

    def _write_to_self(self) -> None:
        pass  # (nothing to wake: this loop never blocks in a real wait)

    def _keep_error(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        self.errors.append(f"{context.get('message', 'error')}: {exc!r}" if exc is not None
                           else str(context.get("message")))


def run_virtual(main: Coroutine[Any, Any, T],
                max_steps: int = DEFAULT_MAX_STEPS) -> tuple[T, VirtualLoop]:
    """Run `main` to completion on a fresh VirtualLoop; tasks still running at the end are
    cancelled (asyncio.Runner's shutdown). Returns its result and the loop (its clock, errors)."""
    loop = VirtualLoop(max_steps)
    with asyncio.Runner(loop_factory=lambda: loop) as runner:
        result = runner.run(main)
    return result, loop
