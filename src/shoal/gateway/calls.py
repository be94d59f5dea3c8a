"""The gateway's caller: `shoal.caller.Caller` with cheaper attempt timeouts.

Same policy (deadline, attempt timeout, failover, budget, breakers, outlier ejection, errors);
what differs is the cost of timing an attempt, which the gateway pays once per proxied
request: it re-arms the connection's watchdog, or enters a coarse timeout on the gateway's
timing wheel (timeouts.py), instead of creating a loop timer per attempt."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from ..balance import Backend
from ..caller import Caller
from .timeouts import CoarseTimeout, Watchdog, Wheel

T = TypeVar("T")


class GatewayCaller(Caller):
    wheel: Wheel | None = None  # made in the running loop, on first use

    async def _timed(self, attempt: Callable[[Backend], Awaitable[T]], backend: Backend,
                     timeout: float, timer: Any) -> T:
        if isinstance(timer, Watchdog):  # the calling connection's watchdog, idle meanwhile
            timer.arm(timeout)
            try:
                return await attempt(backend)
            except asyncio.CancelledError:
                if not timer.timed_out():
                    raise
                raise TimeoutError from None
            finally:
                timer.disarm()
        if self.wheel is None:
            self.wheel = Wheel()
        async with CoarseTimeout(self.wheel, timeout):
            return await attempt(backend)
