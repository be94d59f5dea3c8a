"""A bounded pool of keep-alive connections per backend.

Reusing a connection skips a TCP handshake and a socket per request, which is most of a
small request's cost. Each pool bounds both its open connections (a request waits for a free
one, under its attempt timeout) and its idle ones (extras are closed on release)."""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque

from ..caller import ConnectFailed
from ..registry import parse_address
from .conn import Peer

READ_LIMIT = 64 * 1024  # a backend's response head must fit in this


class Conn(Peer):
    """A backend connection (conn.py's Peer), reused across requests."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        super().__init__(loop, READ_LIMIT)
        self.reused = False

    def data_received(self, data: bytes) -> None:
        listener = self.listener
        if listener is None or self.reader is not None:
            super().data_received(data)
        else:  # an answer the proxy waits for inline: straight to it
            self.buf = self.buf + data if self.buf else data
            listener()

    def open(self) -> bool:
        """Neither side has closed it, and nothing unread is left from the last response."""
        return not (self.eof or self.buf or self.transport.is_closing())

    def close(self) -> None:
        self.transport.close()


class Pool:
    def __init__(self, address: str, max_conns: int = 256, max_idle: int = 64,
                 connect_timeout: float = 2.0):
        self.address = address
        self.host, self.port = parse_address(address)
        self.max_idle, self.connect_timeout = max_idle, connect_timeout
        self._idle: deque[Conn] = deque()
        # A semaphore, inlined: the free-slot case is two attribute operations per request.
        self.max_conns = max_conns
        self._busy = 0  # connections handed out or being opened
        self._waiters: deque[asyncio.Future[None]] = deque()
        self.opened = 0  # total connects, for metrics
        self.closed = False  # dropped from Pools: connections in use close on release

    def take_idle(self) -> Conn | None:
        """An idle connection that is still open, if there is one and a free slot; else None
        (then `acquire`). Synchronous: the common case costs no coroutine."""
        if self._busy >= self.max_conns or self._waiters:
            return None
        while self._idle:
            conn = self._idle.pop()  # most recently used: the least likely to have timed out
            if conn.open():
                conn.reused = True
                self._busy += 1
                return conn
            conn.close()
        return None

    async def acquire(self, fresh: bool = False) -> Conn:
        """A connection: idle if one is still open (unless `fresh`), else a new one
        (ConnectFailed if that fails)."""
        if self._busy < self.max_conns and not self._waiters:
            self._busy += 1
        else:
            await self._wait_slot()
        while self._idle and not fresh:
            conn = self._idle.pop()  # most recently used: the least likely to have timed out
            if conn.open():
                conn.reused = True
                return conn
            conn.close()
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.connect_timeout):
                _, conn = await loop.create_connection(lambda: Conn(loop), self.host,
                                                       self.port)
        except (OSError, TimeoutError) as exc:
            self._free_slot()
            raise ConnectFailed(f"cannot connect to {self.address}: {exc or 'timed out'}") from None
        except BaseException:
            self._free_slot()
            raise
        self.opened += 1
        return conn

    async def _wait_slot(self) -> None:
        """Wait until `_free_slot` hands this waiter a slot (first come, first served)."""
        fut = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        try:
            await fut
        except BaseException:
            if fut.done() and not fut.cancelled():
                self._free_slot()  # handed a slot as we were cancelled: pass it on
            else:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(fut)
            raise

    def _free_slot(self) -> None:
        while self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_result(None)  # the slot moves to the waiter: _busy is unchanged
                return
        self._busy -= 1

    def release(self, conn: Conn, reusable: bool) -> None:
        self._free_slot()
        conn.unstream()
        if reusable and not self.closed and len(self._idle) < self.max_idle and conn.open():
            self._idle.append(conn)
        else:
            conn.close()

    @property
    def idle(self) -> int:
        return len(self._idle)

    def close(self) -> None:
        self.closed = True
        while self._idle:
            self._idle.pop().close()


class Pools:
    """One pool per backend address, dropped when the address leaves the service."""

    def __init__(self, **pool_options: float):
        self.options = pool_options
        self._pools: dict[str, Pool] = {}
        self._opened_by_dropped = 0

    def get(self, address: str) -> Pool:
        pool = self._pools.get(address)
        if pool is None:
            pool = self._pools[address] = Pool(address, **self.options)  # type: ignore[arg-type]
        return pool

    def retain(self, addresses: set[str]) -> None:
        for address in list(self._pools):
            if address not in addresses:
                pool = self._pools.pop(address)
                self._opened_by_dropped += pool.opened
                pool.close()

    def opened(self) -> int:
        """Backend connections opened so far, by every pool there has been."""
        return self._opened_by_dropped + sum(p.opened for p in self._pools.values())

    def close(self) -> None:
        self.retain(set())
