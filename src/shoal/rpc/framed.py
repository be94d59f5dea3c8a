"""What both ends of an RPC connection share: the codec, no Nagle delay, and writes made in
one turn of the event loop leaving in one `writelines` (64 callers woken by one read then cost
one syscall, not 64)."""

from __future__ import annotations

import asyncio
import socket

from . import protocol as p


class FramedProtocol(asyncio.Protocol):
    def __init__(self, max_frame: int):
        self.codec = p.Codec(max_frame)
        self.transport: asyncio.Transport | None = None
        self._out: list[bytes] = []
        self._loop = asyncio.get_running_loop()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no subclass
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def _write(self, frame: bytes) -> None:
        out = self._out
        out.append(frame)
        if len(out) == 1:
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        out, self._out = self._out, []
        if self.transport is not None and not self.transport.is_closing():
            self.transport.writelines(out)
