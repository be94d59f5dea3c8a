"""The caller's end of an RPC connection, and the pool that keeps one per callee process.

`ClientConnection` is an asyncio Protocol driving a `Codec`: `call()` writes a CALL frame and
awaits the future its id maps to; `data_received` resolves futures as answers arrive, in any
order. Writes made in one turn of the event loop leave in one `writelines` (framed.py). A
caller that stops waiting (cancelled, or its deadline passed) sends a CANCEL, so the callee
stops working for nobody.

`Pool` holds one connection per address, shared by every stub in the process, made on first
use and made again after it breaks."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import Mapping

from . import protocol as p
from .deadline import remaining_ms
from .errors import (
    ConnectionLost,
    DeadlineExceeded,
    NotConnected,
    RequestTooLarge,
    RpcError,
    from_frame,
)
from .framed import FramedProtocol

CONNECT_TIMEOUT_S = 2.0
MAX_INFLIGHT = 10_000  # calls open on one connection; more wait for a slot


class ClientConnection(FramedProtocol):
    def __init__(self, address: str, max_frame: int = p.MAX_FRAME):
        super().__init__(max_frame)
        self.address = address
        self.pending: dict[int, tuple[asyncio.Future[p.Reply], str]] = {}
        self.closed = asyncio.Event()
        self.lost: Exception | None = None
        self._ids = itertools.count(1)
        self._slots = asyncio.Semaphore(MAX_INFLIGHT)

    # ------------------------------------------------------------------ protocol callbacks
    def data_received(self, data: bytes) -> None:
        try:
            events = self.codec.receive_data(data)
        except p.ProtocolError as exc:
            self._fail(ConnectionLost(f"{self.address} broke the protocol: {exc}"))
            return
        pending = self.pending
        for ev in events:
            entry = pending.pop(ev.call_id, None)
            if entry is None:
                continue  # answer to a call we cancelled or timed out
            fut, method = entry
            if fut.done():
                continue
            if type(ev) is p.Reply:
                fut.set_result(ev)
            elif type(ev) is p.Error:
                fut.set_exception(from_frame(ev.code, ev.message, method))
            else:
                self._fail(ConnectionLost(f"{self.address} sent a {type(ev).__name__} "
                                          f"to a caller"))
                return

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(ConnectionLost(f"connection to {self.address} lost"
                                  + (f": {exc}" if exc else "")))

    def _fail(self, err: Exception) -> None:
        if self.lost is None:
            self.lost = err
        pending, self.pending = self.pending, {}
        for fut, _ in pending.values():
            if not fut.done():
                fut.set_exception(self.lost)
        if self.transport is not None:
            self.transport.abort()
        self.closed.set()

    # ------------------------------------------------------------------ calling
    async def call(self, method: str, payload: bytes, deadline: float | None = None,
                   metadata: Mapping[str, str] | None = None,
                   local_timer: bool = True) -> p.Reply:
        """One call; `deadline` is absolute on time.monotonic(). Raises an RpcError.
        `local_timer` False: the deadline only travels, the caller times the wait itself."""
        if self.lost is not None:
            raise NotConnected(f"connection to {self.address} is closed: {self.lost}", method)
        ms = remaining_ms(deadline)
        if ms < 0:
            raise DeadlineExceeded("deadline passed before the call was sent", method)
        call_id = next(self._ids)
        try:
            frame = self.codec.call(call_id, method, ms, dict(metadata or {}), payload)
        except p.FrameTooLarge as exc:
            raise RequestTooLarge(str(exc), method) from None
        fut: asyncio.Future[p.Reply] = self._loop.create_future()
        async with self._slots:
            self.pending[call_id] = (fut, method)
            self._write(frame)
            timer = None
            if deadline is not None and local_timer:
                timer = self._loop.call_later(deadline - time.monotonic(), self._expire,
                                              call_id, fut, method)
            try:
                return await fut
            except asyncio.CancelledError:
                self._abandon(call_id)
                raise
            finally:
                if timer is not None:
                    timer.cancel()

    def _expire(self, call_id: int, fut: asyncio.Future[p.Reply], method: str) -> None:
        if not fut.done():
            fut.set_exception(DeadlineExceeded("no answer within the deadline", method))
            self._abandon(call_id)

    def _abandon(self, call_id: int) -> None:
        if self.pending.pop(call_id, None) is not None and self.lost is None:
            self._write(self.codec.cancel(call_id))

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


async def connect(address: str, max_frame: int = p.MAX_FRAME,
                  timeout_s: float = CONNECT_TIMEOUT_S) -> ClientConnection:
    from ..registry.instance import parse_address

    host, port = parse_address(address)
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(timeout_s):
            _, proto = await loop.create_connection(lambda: ClientConnection(address, max_frame),
                                                    host, port)
    except (OSError, TimeoutError) as exc:
        raise NotConnected(f"cannot connect to {address}: {exc or 'timed out'}") from None
    return proto


class Pool:
    """One connection per callee address, shared; a broken one is replaced on next use."""

    def __init__(self, max_frame: int = p.MAX_FRAME):
        self.max_frame = max_frame
        self._conns: dict[str, ClientConnection] = {}
        self._dialing: dict[str, asyncio.Future[ClientConnection]] = {}

    async def get(self, address: str) -> ClientConnection:
        conn = self._conns.get(address)
        if conn is not None and conn.lost is None:
            return conn
        dialing = self._dialing.get(address)
        if dialing is None:  # one dial per address however many callers wait for it
            dialing = asyncio.ensure_future(connect(address, self.max_frame))
            self._dialing[address] = dialing
            dialing.add_done_callback(lambda _: self._dialing.pop(address, None))
        conn = await asyncio.shield(dialing)
        self._conns[address] = conn
        return conn

    async def call(self, address: str, method: str, payload: bytes,
                   deadline: float | None = None,
                   metadata: Mapping[str, str] | None = None,
                   local_timer: bool = True) -> p.Reply:
        conn = self._conns.get(address)
        if conn is None or conn.lost is not None:
            conn = await self.get(address)
        return await conn.call(method, payload, deadline, metadata, local_timer)

    def drop(self, address: str) -> None:
        conn = self._conns.pop(address, None)
        if conn is not None:
            conn.close()

    async def close(self) -> None:
        conns, self._conns = list(self._conns.values()), {}
        for c in conns:
            c.close()
        for c in conns:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(c.closed.wait(), 1.0)


__all__ = ["ClientConnection", "Pool", "RpcError", "connect"]
