"""Event loop choice: uvloop when it is installed (faster sockets and timers), else asyncio's."""

from __future__ import annotations

import asyncio


def install_event_loop() -> str:
    """Make new event loops uvloop's if possible. Returns the name of the loop in use."""
    try:
        import uvloop
    except ImportError:
        return "asyncio"
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return "uvloop"
