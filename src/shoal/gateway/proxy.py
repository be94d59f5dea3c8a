"""The HTTP/1.1 reverse proxy: one client connection, many requests, each one a call.

Per request: read the head (bounded size and time), buffer a small body so the request can
be retried, ask the caller for an exchange (pick, connect from the pool, send, read the
response head), then stream the response body back and return the backend connection to its
pool. Errors the gateway makes itself are 400/408/413/431/501/505 for bad requests and
502/503/504 for backends, each with a plain-text body that says what happened."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from functools import partial

from ..balance import Backend
from ..caller import CallError, SendFailed
from .body import BodyError, copy_chunked, copy_length, copy_until_eof, drain, read_exactly
from .calls import GatewayCaller
from .http1 import (
    HttpError,
    RequestHead,
    ResponseHead,
    error_response,
    parse_request,
    parse_response,
)
from .pool import Conn, Pools
from .stats import GatewayStats
from .timeouts import Watchdog, Wheel

SMALL_BODY = 64 * 1024  # response bodies up to this go out in one write with their head
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


@dataclass(frozen=True, slots=True)
class ProxyLimits:
    max_head_bytes: int = 16 * 1024  # request head; beyond it: 431
    head_timeout_s: float = 30.0  # waiting for a request head, keep-alive idle time included
    body_idle_s: float = 60.0  # longest silence while a body streams, either way
    retry_buffer_bytes: int = 64 * 1024  # request bodies up to this are buffered (retryable)
    max_body_bytes: int = 1 << 30  # Content-Length beyond it: 413
    max_connections: int = 10_000  # client connections; beyond it new ones get a 503

    def __post_init__(self) -> None:
        if min(self.max_head_bytes, self.retry_buffer_bytes, self.max_connections) < 1:
            raise ValueError("proxy limits must be >= 1")
        if self.head_timeout_s <= 0 or self.body_idle_s <= 0:
            raise ValueError("proxy timeouts must be > 0")


class HttpProxy:
    def __init__(self, caller: GatewayCaller, pools: Pools, stats: GatewayStats,
                 limits: ProxyLimits | None = None, hash_header: str | None = None):
        self.caller, self.pools, self.stats = caller, pools, stats
        self.limits = limits or ProxyLimits()
        self.hash_header = hash_header.lower().encode() if hash_header else None
        self.wheel: Wheel | None = None  # coarse timeouts (timeouts.py), made in the loop

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        stats = self.stats
        stats.accepted += 1
        if stats.connections >= self.limits.max_connections:
            writer.write(error_response(503, "the gateway is at its connection limit", False))
            writer.close()
            return
        stats.connections += 1
        if self.wheel is None:
            self.wheel = Wheel()
        peer = writer.get_extra_info("peername")
        ip = str(peer[0]) if peer else "unknown"
        task = asyncio.current_task()
        assert task is not None
        dog = Watchdog(self.wheel, task)
        ip_bytes = ip.encode()
        try:
            while await self._exchange(reader, writer, ip, ip_bytes, dog):
                pass
        except (ConnectionError, BodyError, TimeoutError):
            pass  # the client left or stalled: nothing to answer
        finally:
            dog.close()
            stats.connections -= 1
            writer.close()

    async def _exchange(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                        ip: str, ip_bytes: bytes, dog: Watchdog) -> bool:
        """Serve one request; True if the connection may carry another."""
        limits = self.limits
        wheel = self.wheel
        assert wheel is not None
        dog.arm(limits.head_timeout_s)  # a deadline re-armed per request, not a timer
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.CancelledError:
            if dog.timed_out():
                return False  # idle keep-alive connection, or a client too slow to send a head
            raise
        except asyncio.IncompleteReadError:
            return False  # closed between requests (or mid-head: nothing useful to say)
        except asyncio.LimitOverrunError:
            return self._refuse(writer, 431, f"request head over {limits.max_head_bytes} bytes")
        finally:
            dog.disarm()
        start = time.monotonic()
        try:
            req = parse_request(head, ip_bytes, self.hash_header)
        except HttpError as exc:
            return self._refuse(writer, exc.status, str(exc))
        body = b""
        streamed = req.chunked or req.content_length > limits.retry_buffer_bytes
        if req.content_length > limits.max_body_bytes:
            return self._refuse(writer, 413, f"body over {limits.max_body_bytes} bytes")
        if req.has_body and req.expect_continue:
            writer.write(CONTINUE)  # we answer it: the Expect header is not forwarded
        if req.content_length > 0 and not streamed:
            body = await read_exactly(reader, req.content_length, "client", limits.body_idle_s,
                                      wheel)

        attempt = partial(self._send, req, body, reader if streamed else None)  # (backend)
        try:
            # A streamed body cannot be sent twice: only connect failures are retried then.
            ex = await self.caller.call(attempt, key=req.affinity, client=ip,
                                        idempotent=req.idempotent and not streamed, timer=dog)
        except CallError as exc:
            keep = req.keep_alive and not streamed
            writer.write(error_response(exc.status, str(exc), keep))
            self.stats.response(exc.status, time.monotonic() - start)
            return keep
        conn, resp = ex.value
        self.stats.response(resp.status, time.monotonic() - start)
        ok, reusable, keep = resp.status < 500, resp.keep_alive, req.keep_alive
        try:
            await self._relay(conn, resp, req, writer)
        except BodyError as exc:
            ok = ok and exc.side != "backend"
            reusable = keep = False
        except (ConnectionError, TimeoutError):  # the client broke or stalled
            reusable = keep = False
        finally:
            self.pools.get(ex.backend.address).release(conn, reusable)
            self.caller.finish(ex, ok)
        return keep and not resp.until_close

    def _refuse(self, writer: asyncio.StreamWriter, status: int, message: str) -> bool:
        writer.write(error_response(status, message, False))
        self.stats.response(status, 0.0)
        return False

    async def _send(self, req: RequestHead, body: bytes, stream_from: asyncio.StreamReader | None,
                    backend: Backend) -> tuple[Conn, ResponseHead]:
        """One attempt: a pooled connection, the request, the response head."""
        pool = self.pools.get(backend.address)
        idle = self.limits.body_idle_s
        fresh = False
        while True:
            conn = None if fresh else pool.take_idle()
            if conn is None:
                conn = await pool.acquire(fresh)
            try:
                conn.writer.write(req.forward + body if body else req.forward)
                if stream_from is not None:
                    if req.chunked:
                        await copy_chunked(stream_from, conn.writer, "client", idle)
                    else:
                        await copy_length(stream_from, conn.writer, req.content_length, "client",
                                          idle)
                while True:
                    resp = parse_response(await conn.reader.readuntil(b"\r\n\r\n"), req.method)
                    if resp.status >= 200:
                        return conn, resp
                    # 1xx interim answers (102, 103) are dropped: we answered 100 ourselves.
            except BodyError:
                pool.release(conn, False)
                raise  # the client's upload failed: not the backend's fault
            except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                    HttpError) as exc:
                pool.release(conn, False)
                closed = isinstance(exc, ConnectionError) or (
                    isinstance(exc, asyncio.IncompleteReadError) and not exc.partial)
                if conn.reused and closed and stream_from is None:
                    # The backend closed this idle keep-alive connection as we reused it; it
                    # never read the request. Go's http.Transport retries this case too.
                    fresh = True
                    continue
                what = "closed the connection" if isinstance(exc, asyncio.IncompleteReadError) else exc
                raise SendFailed(f"{backend.id} at {backend.address}: {what}") from None
            except BaseException:
                pool.release(conn, False)
                raise

    async def _relay(self, conn: Conn, resp: ResponseHead, req: RequestHead,
                     writer: asyncio.StreamWriter) -> None:
        """Send the response head and stream its body to the client."""
        idle = self.limits.body_idle_s
        if not req.keep_alive or resp.until_close:
            head = resp.lines + b"\r\nConnection: close\r\n\r\n"
        elif req.http10:
            head = resp.lines + b"\r\nConnection: keep-alive\r\n\r\n"
        else:
            head = resp.lines + b"\r\n\r\n"
        if resp.no_body:
            writer.write(head)
        elif 0 <= resp.content_length <= SMALL_BODY:
            reader = conn.reader
            # Usually the body came with the head: then read it without arming a timeout.
            if len(reader._buffer) >= resp.content_length:  # type: ignore[attr-defined]
                data = await reader.readexactly(resp.content_length)
            else:
                data = await read_exactly(reader, resp.content_length, "backend", idle,
                                          self.wheel)
            writer.write(head + data)
            if not writer.transport.get_write_buffer_size():
                return  # all sent (the common case): no drain
        else:
            writer.write(head)
            if resp.content_length >= 0:
                await copy_length(conn.reader, writer, resp.content_length, "backend", idle)
            elif resp.chunked:
                await copy_chunked(conn.reader, writer, "backend", idle)
            else:
                await copy_until_eof(conn.reader, writer, "backend", idle)
        await drain(writer, idle)
