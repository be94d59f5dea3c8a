"""The dashboard's stream: views of the cluster taken at a steady pace, sent to every viewer as
server-sent events.

A `Feed` takes a view from its source every `interval_s` (the node's own status, or the
aggregator's poll of every node), runs it past the `Observer` (shoal.web.events) for the new
events, and wakes the viewers' streams. Each stream sends one `data:` line per view:

    data: {"view": {...}, "events": [...events since this viewer's last message...]}

the first carrying every event still kept, so a viewer who connects late sees the history.
Views are taken only while someone watches, unless the feed is `always` on (the standalone
aggregator, whose timeline should hold what happened before anyone looked). A slow viewer
is never queued for: it gets the newest view when it is ready for one. Viewers are bounded."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from .events import Observer

log = logging.getLogger("shoal.web")

MAX_VIEWERS = 32
Source = Callable[[], Awaitable[dict[str, Any]]]


class Feed:
    def __init__(self, source: Source, interval_s: float = 0.5, always: bool = False):
        if interval_s <= 0:
            raise ValueError(f"interval_s must be positive, not {interval_s}")
        self.source, self.interval_s, self.always = source, interval_s, always
        self.observer = Observer()
        self.view: dict[str, Any] | None = None
        self._view_json = "null"
        self._seq = 0  # events published so far; each event carries its number
        self._fresh = asyncio.Event()  # set and replaced whenever a new view is in
        self._viewers = 0
        self._closed = False
        self._kicked = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if self.always:
            self._ensure_running()

    async def stop(self) -> None:
        """Stop taking views and end every stream (call it on the app's shutdown, before
        the server waits for open requests: a stream never ends by itself)."""
        self._closed = True
        self._fresh.set()
        self._kicked.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def _ensure_running(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="dashboard-feed")

    async def _run(self) -> None:
        while (self.always or self._viewers) and not self._closed:
            started = time.monotonic()
            try:
                self.publish(await self.source())
            except Exception:  # a bad view must not end the feed; the log says what broke
                log.exception("dashboard: taking a view failed")
            self._kicked.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._kicked.wait(),
                                       max(0.0, self.interval_s - (time.monotonic() - started)))
        self._task = None

    def kick(self) -> None:
        """Take the next view now, not at the next interval (news worth showing at once)."""
        self._kicked.set()

    def publish(self, view: dict[str, Any]) -> None:
        for e in self.observer.observe(view):
            self._seq += 1
            e["seq"] = self._seq
        self.view = view
        self._view_json = json.dumps(view, default=str)  # once per view, whoever watches
        fresh, self._fresh = self._fresh, asyncio.Event()
        fresh.set()

    async def stream(self, req: web.Request) -> web.StreamResponse:
        """One viewer's server-sent events, until it hangs up."""
        if self._viewers >= MAX_VIEWERS:
            return web.json_response({"error": f"{MAX_VIEWERS} viewers already watch this "
                                               "dashboard; close one and retry"}, status=503)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                           "Cache-Control": "no-store"})
        await resp.prepare(req)
        self._viewers += 1
        self._ensure_running()
        sent = 0  # the last event number this viewer has
        try:
            while not self._closed:
                if self.view is None:
                    await self._fresh.wait()
                    continue
                news = [e for e in self.observer.events if e["seq"] > sent]
                sent = self._seq
                data = f'{{"view": {self._view_json}, "events": {json.dumps(news, default=str)}}}'
                await resp.write(f"data: {data}\n\n".encode())
                await self._fresh.wait()
        except ConnectionResetError:
            pass  # the viewer closed the page
        finally:
            self._viewers -= 1
        return resp
