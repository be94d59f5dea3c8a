"""The deadline of the call being served, carried through the task by a context variable.

The server sets it from the frame's remaining milliseconds when it starts a call; every call
the method makes reads it, so the remaining time travels on across every hop without the
application passing it along. Absolute, on this process's time.monotonic() clock."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from contextvars import ContextVar

current: ContextVar[float | None] = ContextVar("shoal_rpc_deadline", default=None)


def effective(default_s: float | None) -> float | None:
    """The deadline for an outgoing call: the caller's own, or sooner if the method's
    default (seconds from now) is shorter."""
    inherited = current.get()
    if default_s is None:
        return inherited
    mine = time.monotonic() + default_s
    return mine if inherited is None or mine < inherited else inherited


def remaining_ms(deadline: float | None) -> int:
    """The wire's deadline_ms: 0 for none, negative once past (the callee refuses it)."""
    if deadline is None:
        return 0
    left = deadline - time.monotonic()
    return max(1, int(left * 1000)) if left > 0 else -1


@contextlib.contextmanager
def within(seconds: float) -> Iterator[float]:
    """Calls made inside must finish within `seconds` from now (or sooner, if the current
    deadline already is): `with within(0.5): await inventory.stock("a")`."""
    if seconds <= 0:
        raise ValueError(f"within: expected a positive number of seconds, got {seconds!r}")
    deadline = effective(seconds)
    assert deadline is not None
    token = current.set(deadline)
    try:
        yield deadline
    finally:
        current.reset(token)
