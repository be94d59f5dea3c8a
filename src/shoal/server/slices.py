"""Work written as steps (shoal.kv.mvcc.Steps: a generator that yields to pause) run on the
event loop, which runs between slices: a read or an encoding of 100k keys in one go held the
loop, and a leader's heartbeats with it, for up to a second."""

from __future__ import annotations

import asyncio
from typing import TypeVar, cast

from ..kv.mvcc import Steps

T = TypeVar("T")


async def in_slices(steps: Steps[T]) -> T:
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return cast(T, done.value)
        await asyncio.sleep(0)
