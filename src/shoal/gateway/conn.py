"""One connection's incoming bytes as an asyncio Protocol, for both sides of the proxy.

asyncio streams cost several Python calls per read (feed_data, readuntil on a bytearray,
_wait_for_data, a future per wait). Most gateway messages are one head, or one head and a
small body, that arrive whole in one `data_received`; `Peer` keeps those bytes as they came
and hands out heads and bodies by slicing, with a future only when the bytes have not arrived
yet. Bodies that must stream (chunked, large, until close) switch the connection to an
`asyncio.StreamReader` fed with what is buffered (`stream_reader`), and back afterwards
(`unstream`), so body.py's streaming code is unchanged."""

from __future__ import annotations

import asyncio
from asyncio.streams import FlowControlMixin
from collections.abc import Callable

HEAD_END = b"\r\n\r\n"


class Peer(FlowControlMixin):
    def __init__(self, loop: asyncio.AbstractEventLoop, limit: int):
        super().__init__(loop)
        self.loop, self.limit = loop, limit
        self.transport: asyncio.Transport = None  # type: ignore[assignment]  # set on connect
        self.buf = b""
        self.eof = False  # the peer closed its half, or the connection was lost
        self.error: BaseException | None = None  # why the connection was lost, if it broke
        self.waiter: asyncio.Future[None] | None = None
        self.reader: asyncio.StreamReader | None = None  # while a body streams
        self._writer: asyncio.StreamWriter | None = None
        self.reading_paused = False
        self.listener: Callable[[], None] | None = None  # called on new bytes, EOF or loss

    # ------------------------------------------------------------------ protocol callbacks
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self.reader is not None:
            self.reader.feed_data(data)
            return
        buf = self.buf = self.buf + data if self.buf else data
        if len(buf) > 2 * self.limit and not self.reading_paused:
            self.reading_paused = True  # backpressure: a client pipelining faster than we answer
            self.transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool:
        self.eof = True
        if self.reader is not None:
            self.reader.feed_eof()
        self._wake()
        return True  # keep the transport: the answer may still have to go out

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self.eof = True
        self.error = exc
        if self.reader is not None:
            if exc is None:
                self.reader.feed_eof()
            else:
                self.reader.set_exception(exc)
        self._wake()

    def _wake(self) -> None:
        if self.listener is not None:
            self.listener()
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def resume(self) -> None:
        """Read again once the buffer has been consumed below the limit."""
        if self.reading_paused and len(self.buf) <= self.limit:
            self.reading_paused = False
            self.transport.resume_reading()

    async def _wait(self) -> None:
        if self.reading_paused:  # more is needed than is buffered
            self.reading_paused = False
            self.transport.resume_reading()
        waiter = self.waiter = self.loop.create_future()
        try:
            await waiter
        finally:
            self.waiter = None

    # ------------------------------------------------------------------ reading
    def _raise_eof(self, expected: int | None) -> None:
        if self.error is not None:
            raise self.error
        raise asyncio.IncompleteReadError(self.buf, expected)

    async def read_head(self) -> bytes:
        """The next head, through its blank line. IncompleteReadError at EOF (partial: what
        came of it), LimitOverrunError beyond `limit` bytes, the error that broke the
        connection."""
        while True:
            buf = self.buf
            i = buf.find(HEAD_END)
            if i >= 0:
                i += 4
                if i > self.limit:
                    raise asyncio.LimitOverrunError("head too long", i)
                self.buf = buf[i:]
                return buf[:i]
            if len(buf) > self.limit:
                raise asyncio.LimitOverrunError("head too long", len(buf))
            if self.eof:
                self._raise_eof(None)
            await self._wait()

    def take(self, n: int) -> bytes | None:
        """`n` bytes if they are buffered (the common case, with no await), else None."""
        buf = self.buf
        if len(buf) < n:
            return None
        self.buf = buf[n:]
        return buf[:n]

    async def readexactly(self, n: int) -> bytes:
        """StreamReader.readexactly's contract, for body.read_exactly."""
        while len(self.buf) < n:
            if self.eof:
                self._raise_eof(n)
            await self._wait()
        data = self.take(n)
        assert data is not None
        return data

    def at_eof(self) -> bool:
        return self.eof and not self.buf

    # ------------------------------------------------------------------ streaming
    @property
    def writer(self) -> asyncio.StreamWriter:
        """A StreamWriter on this transport, for body.py's copies and drains."""
        if self._writer is None:
            self._writer = asyncio.StreamWriter(self.transport, self, None, self.loop)
        return self._writer

    def stream_reader(self) -> asyncio.StreamReader:
        """Switch reading to a StreamReader holding what is buffered, for a streamed body."""
        if self.reader is None:
            reader = asyncio.StreamReader(self.limit, self.loop)
            reader.set_transport(self.transport)
            if self.buf:
                reader.feed_data(self.buf)
                self.buf = b""
            if self.eof:
                if self.error is not None:
                    reader.set_exception(self.error)  # type: ignore[arg-type]
                else:
                    reader.feed_eof()
            self.reader = reader
        return self.reader

    def unstream(self) -> None:
        """Back to the plain buffer after a streamed body, keeping whatever followed it."""
        reader = self.reader
        if reader is None:
            return
        self.reader = None
        self.buf = bytes(reader._buffer)  # type: ignore[attr-defined]
        if reader._paused:  # type: ignore[attr-defined]
            reader._paused = False  # type: ignore[attr-defined]
            self.transport.resume_reading()

    @property
    def writing_paused(self) -> bool:
        """The transport's buffer is over its high-water mark (FlowControlMixin's flag)."""
        return bool(self._paused)  # type: ignore[attr-defined]

    def _get_close_waiter(self, stream: asyncio.StreamWriter) -> asyncio.Future[None]:
        fut = self.loop.create_future()  # StreamWriter.wait_closed; the proxy never waits
        fut.set_result(None)
        return fut
