"""Coarse timeouts for the proxy's hot path: `asyncio.timeout` semantics, a fraction of the cost.

`asyncio.timeout` arms and cancels a loop timer per use; on uvloop each is a libuv timer
created and destroyed, and at three timeouts per proxied request that was a tenth of the
gateway's time. Here the timeouts of one gateway share a timing wheel: entering a timeout
adds it to the set of its `TICK`-wide slot, leaving removes it, and one loop timer per tick
(only while any timeout is pending) expires the slots that have passed by cancelling their
tasks. A timeout fires between 0 and `TICK` seconds late, which is nothing next to the
seconds-long limits it enforces.

    wheel = Wheel()                        # inside the running loop
    async with wheel.timeout(5.0):         # TimeoutError when the block outlives 5 s
        ...
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from types import TracebackType

TICK = 0.02  # seconds per slot: the most a timeout can fire late


class Wheel:
    __slots__ = ("loop", "slots", "cursor", "handle")

    def __init__(self, loop: asyncio.AbstractEventLoop | None = None):
        self.loop = loop or asyncio.get_running_loop()
        self.slots: dict[int, set[CoarseTimeout | Alarm]] = {}
        self.cursor = 0  # every slot below it has expired
        self.handle: asyncio.TimerHandle | None = None

    def timeout(self, delay: float) -> CoarseTimeout:
        return CoarseTimeout(self, delay)

    def _add(self, t: CoarseTimeout | Alarm, when: float) -> int:
        if self.handle is None:
            self.cursor = int(self.loop.time() / TICK)
            self.handle = self.loop.call_later(TICK, self._tick)
        slot = max(int(when / TICK) + 1, self.cursor)  # expires once the slot's start passed
        members = self.slots.get(slot)
        if members is None:
            self.slots[slot] = {t}
        else:
            members.add(t)
        return slot

    def _remove(self, t: CoarseTimeout | Alarm, slot: int) -> None:
        members = self.slots.get(slot)
        if members is not None:
            members.discard(t)

    def _tick(self) -> None:
        now_slot = int(self.loop.time() / TICK)
        slots = self.slots
        for slot in range(self.cursor, now_slot + 1):
            members = slots.pop(slot, None)
            if members:
                for t in members:
                    t._expire()
        self.cursor = now_slot + 1
        self.handle = self.loop.call_later(TICK, self._tick) if slots else None

    def close(self) -> None:
        if self.handle is not None:
            self.handle.cancel()
            self.handle = None
        self.slots.clear()


class CoarseTimeout:
    """Single use, like `asyncio.timeout(delay)`: on expiry the task is cancelled and the
    block raises TimeoutError (a cancellation from elsewhere stays a cancellation)."""

    __slots__ = ("wheel", "delay", "task", "slot", "expired", "cancelling")

    def __init__(self, wheel: Wheel, delay: float):
        self.wheel, self.delay = wheel, delay
        self.expired = False

    async def __aenter__(self) -> CoarseTimeout:
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("a timeout must be used inside a task")
        self.task = task
        self.cancelling = task.cancelling()
        wheel = self.wheel
        self.slot = wheel._add(self, wheel.loop.time() + self.delay)
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        if not self.expired:
            self.wheel._remove(self, self.slot)
            return
        if self.task.uncancel() <= self.cancelling and exc_type is asyncio.CancelledError:
            raise TimeoutError from exc

    def _expire(self) -> None:
        self.expired = True
        self.task.cancel()


class Alarm:
    """A re-armable deadline that calls `fire()` when it passes: for code driven by protocol
    callbacks, with no task to cancel. `arm` only stores the deadline; the wheel holds at most
    one entry for it and re-queues it lazily when its slot passes early."""

    __slots__ = ("wheel", "deadline", "slot", "fire")

    def __init__(self, wheel: Wheel, fire: Callable[[], None]):
        self.wheel, self.fire = wheel, fire
        self.deadline: float | None = None
        self.slot: int | None = None

    def arm(self, delay: float) -> None:
        when = self.wheel.loop.time() + delay
        self.deadline = when
        if self.slot is None or int(when / TICK) + 1 < self.slot:
            self.close()
            self.slot = self.wheel._add(self, when)

    def disarm(self) -> None:
        self.deadline = None

    def close(self) -> None:
        if self.slot is not None:
            self.wheel._remove(self, self.slot)
            self.slot = None

    def _expire(self) -> None:
        self.slot = None
        when = self.deadline
        if when is None:
            return
        if when > self.wheel.loop.time():
            self.slot = self.wheel._add(self, when)
            return
        self.deadline = None
        self.fire()


class Watchdog(Alarm):
    """An alarm for one task that takes the same kind of timeout again and again (a client
    connection waiting for its next request head): on expiry the task is cancelled and
    `fired` is set. The waiting code catches the CancelledError, calls `timed_out()` to tell
    it from a real cancellation, and goes on."""

    __slots__ = ("task", "fired", "cancelling")

    def __init__(self, wheel: Wheel, task: asyncio.Task[object]):
        super().__init__(wheel, self._cancel)
        self.task = task
        self.fired = False
        self.cancelling = task.cancelling()

    def timed_out(self) -> bool:
        """After a CancelledError: True if it was this deadline (the cancellation is then
        consumed), False if the task was cancelled from elsewhere (re-raise it)."""
        if not self.fired:
            return False
        self.fired = False
        return self.task.uncancel() <= self.cancelling

    def _cancel(self) -> None:
        self.fired = True
        self.task.cancel()
