"""Plain TCP mode: each client connection is spliced to one backend connection.

The backend is chosen per connection (hash pickers hash the client address); a connect
failure is retried on another backend, since nothing was sent. Bytes then flow both ways
until either side closes its half, with an idle timeout per direction."""

from __future__ import annotations

import asyncio
import contextlib
import time

from ..balance import Backend
from ..caller import Caller, CallError, ConnectFailed
from ..registry import parse_address
from .body import BodyError, copy_until_eof
from .stats import GatewayStats

Pair = tuple[asyncio.StreamReader, asyncio.StreamWriter]


class TcpProxy:
    def __init__(self, caller: Caller, stats: GatewayStats, connect_timeout: float = 2.0,
                 idle_s: float = 300.0):
        self.caller, self.stats = caller, stats
        self.connect_timeout, self.idle_s = connect_timeout, idle_s

    async def _connect(self, backend: Backend) -> Pair:
        host, port = parse_address(backend.address)
        try:
            async with asyncio.timeout(self.connect_timeout):
                return await asyncio.open_connection(host, port)
        except (OSError, TimeoutError) as exc:
            raise ConnectFailed(f"cannot connect to {backend.address}: {exc or 'timed out'}") from None

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.stats.accepted += 1
        self.stats.connections += 1
        peer = writer.get_extra_info("peername")
        start = time.monotonic()
        try:
            try:
                ex = await self.caller.call(self._connect, client=str(peer[0]) if peer else None)
            except CallError as exc:
                self.stats.response(exc.status, time.monotonic() - start)
                return  # TCP has no way to say why: the connection just closes
            self.stats.response(200, time.monotonic() - start)
            b_reader, b_writer = ex.value
            results = await asyncio.gather(self._pipe(reader, b_writer, "client"),
                                           self._pipe(b_reader, writer, "backend"),
                                           return_exceptions=True)
            b_writer.close()
            self.caller.finish(ex, not any(isinstance(r, BodyError) and r.side == "backend"
                                           for r in results))
        finally:
            self.stats.connections -= 1
            writer.close()

    async def _pipe(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, side: str) -> None:
        try:
            await copy_until_eof(src, dst, side, self.idle_s)
        except BaseException:
            dst.close()  # a broken direction ends the other one too
            raise
        with contextlib.suppress(OSError):
            if dst.can_write_eof() and not dst.is_closing():
                dst.write_eof()  # half-close: pass the end of this direction on
