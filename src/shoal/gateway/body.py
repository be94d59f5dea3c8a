"""Streaming message bodies between two connections, never holding a whole large body.

Each copy moves at most `CHUNK` bytes at a time and waits for the receiving side to drain,
so a slow reader throttles a fast writer instead of growing a buffer (backpressure). Chunked
bodies are relayed with their framing as received; sizes are parsed only to find the end.
Every read and drain has an idle timeout, so a stalled peer cannot hold a connection forever.

A failure reading is `BodyError` naming the side that sent; a failure writing surfaces as
ConnectionError or TimeoutError, the receiving side's fault."""

from __future__ import annotations

import asyncio

from .conn import Peer
from .timeouts import Wheel

CHUNK = 64 * 1024
MAX_CHUNK_LINE = 4096  # size line or trailer line


class BodyError(Exception):
    """The sender's body ended early, stalled, or has broken framing."""

    def __init__(self, side: str, message: str):
        super().__init__(f"{side} {message}")
        self.side = side


async def read_some(reader: asyncio.StreamReader, n: int, side: str, idle_s: float) -> bytes:
    try:
        async with asyncio.timeout(idle_s):
            return await reader.read(n)
    except TimeoutError:
        raise BodyError(side, f"sent nothing for {idle_s:g} s") from None
    except ConnectionError as exc:
        raise BodyError(side, f"connection broke: {exc}") from None


async def read_exactly(reader: asyncio.StreamReader | Peer, n: int, side: str, idle_s: float,
                       wheel: Wheel | None = None) -> bytes:
    try:
        async with (wheel.timeout(idle_s) if wheel is not None else asyncio.timeout(idle_s)):
            return await reader.readexactly(n)
    except asyncio.IncompleteReadError as exc:
        raise BodyError(side, f"closed with {n - len(exc.partial)} body bytes to come") from None
    except TimeoutError:
        raise BodyError(side, f"sent nothing for {idle_s:g} s") from None
    except ConnectionError as exc:
        raise BodyError(side, f"connection broke: {exc}") from None


async def drain(writer: asyncio.StreamWriter, idle_s: float) -> None:
    if not writer.transport.get_write_buffer_size():
        return  # all sent already: skip the timer (the common case, on the hot path)
    async with asyncio.timeout(idle_s):
        await writer.drain()


async def copy_length(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int,
                      side: str, idle_s: float) -> None:
    while n > 0:
        data = await read_some(reader, min(n, CHUNK), side, idle_s)
        if not data:
            raise BodyError(side, f"closed with {n} body bytes to come")
        writer.write(data)
        n -= len(data)
        await drain(writer, idle_s)


async def _line(reader: asyncio.StreamReader, side: str, idle_s: float) -> bytes:
    try:
        async with asyncio.timeout(idle_s):
            line = await reader.readuntil(b"\r\n")
    except asyncio.IncompleteReadError:
        raise BodyError(side, "closed inside a chunked body") from None
    except asyncio.LimitOverrunError:
        raise BodyError(side, "sent a chunk line that is too long") from None
    except TimeoutError:
        raise BodyError(side, f"sent nothing for {idle_s:g} s") from None
    except ConnectionError as exc:
        raise BodyError(side, f"connection broke: {exc}") from None
    if len(line) > MAX_CHUNK_LINE:
        raise BodyError(side, "sent a chunk line that is too long")
    return line


async def copy_chunked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                       side: str, idle_s: float) -> None:
    while True:
        line = await _line(reader, side, idle_s)
        try:
            size = int(line.split(b";", 1)[0].strip(), 16)
        except ValueError:
            raise BodyError(side, f"sent a bad chunk size line {line[:40]!r}") from None
        if size < 0:
            raise BodyError(side, "sent a negative chunk size")
        writer.write(line)
        if size == 0:
            break
        await copy_length(reader, writer, size, side, idle_s)
        if await _line(reader, side, idle_s) != b"\r\n":
            raise BodyError(side, "sent chunk data not followed by CRLF")
        writer.write(b"\r\n")
    while True:  # trailers, up to the blank line
        line = await _line(reader, side, idle_s)
        writer.write(line)
        if line == b"\r\n":
            break
    await drain(writer, idle_s)


async def copy_until_eof(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                         side: str, idle_s: float) -> None:
    while data := await read_some(reader, CHUNK, side, idle_s):
        writer.write(data)
        await drain(writer, idle_s)
