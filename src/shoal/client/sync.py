"""A blocking client: the asyncio client running on a private event loop thread."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

from .aio import Client


class SyncClient:
    """`with SyncClient(["127.0.0.1:2379"]) as c: c.put(b"k", b"v")` — every coroutine method of
    `Client` is available as a plain method; `watch` returns a blocking iterator."""

    def __init__(self, endpoints: list[str] | str, timeout: float = 10.0, **kw: Any):
        self._view = False  # a view of another client's group (group()) owns nothing
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="shoal-client", daemon=True)
        self._thread.start()
        self._client = self._run(_make(endpoints, timeout, **kw))  # kw: watch queue bounds

    def _run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._client, name)
        if not asyncio.iscoroutinefunction(attr):
            raise AttributeError(name)
        return lambda *a, **kw: self._run(attr(*a, **kw))

    def watch(self, key: bytes, **kw: Any) -> Iterator[Any]:
        """Blocking iteration over `Client.watch`: it raises what that raises, WatchCanceled
        for a consumer that could not keep up among them; leaving the loop cancels the watch."""
        stream = self._client.watch(key, **kw)
        try:
            while True:
                try:
                    yield self._run(stream.__anext__())
                except StopAsyncIteration:
                    return
        finally:
            if self._loop.is_running():  # not waited for: this may run in the GC, anywhere
                asyncio.run_coroutine_threadsafe(stream.aclose(), self._loop)

    def group(self, group_id: int) -> SyncClient:
        """A blocking client for group `group_id`, on this client's loop and connections."""
        view = SyncClient.__new__(SyncClient)
        view._loop, view._thread, view._client = self._loop, self._thread, self._client.group(group_id)
        view._view = True
        return view

    def close(self) -> None:
        if self._view:
            return  # the client it came from owns the loop
        self._run(self._client.close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()

    def __enter__(self) -> SyncClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


async def _make(endpoints: list[str] | str, timeout: float, **kw: Any) -> Client:
    return Client(endpoints, timeout, **kw)
