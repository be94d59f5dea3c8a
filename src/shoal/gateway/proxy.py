"""The HTTP/1.1 reverse proxy: one client connection, many requests, each one a call.

Per request: read the head (bounded size and time), buffer a small body so the request can
be retried, ask the caller for an exchange (pick, connect from the pool, send, read the
response head), then stream the response body back and return the backend connection to its
pool. Plain requests do all of that inline, in protocol callbacks; the rest in a task (see
HttpProxy). Errors the gateway makes itself are 400/408/413/431/501/505 for bad requests and
502/503/504 for backends, each with a plain-text body that says what happened."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial

from ..balance import Backend
from ..caller import CallError, ConnectFailed, Exchange, NoBackend, Resume, SendFailed
from .body import BodyError, copy_chunked, copy_length, copy_until_eof, drain, read_exactly
from .calls import GatewayCaller
from .conn import HEAD_END, Peer
from .http1 import (
    HttpError,
    RequestHead,
    ResponseHead,
    error_response,
    parse_request,
    parse_response,
)
from .pool import READ_LIMIT, Conn, Pool, Pools
from .stats import GatewayStats
from .timeouts import Alarm, Watchdog, Wheel

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


def response_head(resp: ResponseHead, req: RequestHead) -> bytes:
    """The head to send the client, with the Connection header its request calls for."""
    if not req.keep_alive or resp.until_close:
        return resp.lines + b"\r\nConnection: close\r\n\r\n"
    if req.http10:
        return resp.lines + b"\r\nConnection: keep-alive\r\n\r\n"
    return resp.lines + b"\r\n\r\n"


class ClientConn(Peer):
    """A client connection (conn.py's Peer) and the state of its request in flight."""

    def __init__(self, proxy: HttpProxy, loop: asyncio.AbstractEventLoop, wheel: Wheel):
        super().__init__(loop, proxy.limits.max_head_bytes)
        self.proxy = proxy
        self.counted = False  # in stats.connections
        self.ip, self.ip_bytes = "unknown", b"unknown"
        # The head timeout, or the inline attempt's timeout.
        self.alarm = Alarm(wheel, partial(proxy._alarm, self))
        self.task: asyncio.Task[None] | None = None  # serving a request the slow way
        # The request whose first attempt runs inline, waiting for `conn` to answer:
        self.conn: Conn | None = None
        self.pool: Pool | None = None
        self.req: RequestHead | None = None
        self.body = b""
        self.backend: Backend | None = None
        self.t0 = self.start = 0.0  # the call's start (caller clock); the request's (stats)
        self.on_upstream = partial(proxy._upstream, self)  # the listener on `conn`

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.proxy._accept(self)

    def data_received(self, data: bytes) -> None:
        if self.task is not None or self.conn is not None or self.reader is not None:
            super().data_received(data)  # buffered for whoever serves this connection now
        else:
            self.buf = self.buf + data if self.buf else data
            self.proxy._next(self)

    def eof_received(self) -> bool:
        super().eof_received()
        if self.task is None and self.conn is None:
            self.proxy._next(self)
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self.proxy._lost(self)


class HttpProxy:
    """Plain requests (no body or a small one that came with the head, an idle pooled
    connection, a small fixed-length answer) are served inline by protocol callbacks: no
    task, no future, no coroutine. Everything else, and whatever an inline request runs into
    (a connect, a failure to retry, a body to stream, a slow client), continues in a task
    with the same caller call (`Caller.begin`, `call(resume=)`)."""

    def __init__(self, caller: GatewayCaller, pools: Pools, stats: GatewayStats,
                 limits: ProxyLimits | None = None, hash_header: str | None = None):
        self.caller, self.pools, self.stats = caller, pools, stats
        self.limits = limits or ProxyLimits()
        self.hash_header = hash_header.lower().encode() if hash_header else None
        self.wheel: Wheel | None = None  # coarse timeouts (timeouts.py), made in the loop
        self.head_timeout_s = self.limits.head_timeout_s
        # The inline attempt's timeout: the first attempt's, as in Caller.call.
        self.try_timeout_s = min(caller.policy.try_timeout_s, caller.policy.deadline_s)

    def protocol(self) -> ClientConn:
        """The protocol factory for `loop.create_server`."""
        if self.wheel is None:
            self.wheel = Wheel()
        return ClientConn(self, asyncio.get_running_loop(), self.wheel)

    # ------------------------------------------------------------------ connections
    def _accept(self, client: ClientConn) -> None:
        stats = self.stats
        stats.accepted += 1
        transport = client.transport
        if stats.connections >= self.limits.max_connections:
            transport.write(error_response(503, "the gateway is at its connection limit", False))
            transport.close()
            return
        stats.connections += 1
        client.counted = True
        peer = transport.get_extra_info("peername")
        if peer:
            client.ip = str(peer[0])
            client.ip_bytes = client.ip.encode()
        client.alarm.arm(self.head_timeout_s)  # re-armed per request, not a timer

    def _lost(self, client: ClientConn) -> None:
        if client.counted:
            client.counted = False
            self.stats.connections -= 1
        client.alarm.close()
        conn, backend = client.conn, client.backend
        if conn is not None and backend is not None:  # it left while its answer was coming
            self._detach(client).release(conn, False)
            self.caller.abandon(backend.id)  # no verdict on the backend, as for a cancel

    def _alarm(self, client: ClientConn) -> None:
        if client.conn is not None:
            self._failed(client, TimeoutError())  # the inline attempt timed out
        elif client.task is None:
            client.transport.close()  # idle keep-alive connection, or too slow to send a head

    # ------------------------------------------------------------------ the inline path
    def _next(self, client: ClientConn) -> None:
        """Serve the next buffered request: inline if it is plain, else in a task."""
        while self._one(client):
            pass  # answered at once (no backend): on to the next pipelined one

    def _one(self, client: ClientConn) -> bool:
        """Start serving one buffered request; True if it was answered already and the
        connection can go on to the next."""
        transport = client.transport
        if transport.is_closing():
            return False
        buf = client.buf
        end = buf.find(HEAD_END) + 4
        if end < 4:
            if client.eof and not buf:
                transport.close()  # closed between requests
            elif client.eof or len(buf) > client.limit:
                self._slow(client, partial(self._exchange, client))  # answers 431, or gives up
            return False  # the rest of the head is still to come
        limits = self.limits
        start = time.monotonic()
        try:
            req = parse_request(buf[:end], client.ip_bytes, self.hash_header)
        except HttpError:
            req = None
        n = max(req.content_length, 0) if req is not None else 0
        if (req is None or end > client.limit or req.chunked or n > limits.retry_buffer_bytes
                or (n > 0 and (req.expect_continue or len(buf) < end + n))):
            # The slow path refuses it, or reads its body with a timeout.
            self._slow(client, partial(self._exchange, client))
            return False
        client.buf = buf[end + n:]
        client.resume()
        body = buf[end:end + n] if n else b""
        try:
            backend, t0 = self.caller.begin(req.affinity, client.ip)
        except NoBackend as exc:
            transport.write(error_response(exc.status, str(exc), req.keep_alive))
            self.stats.response(exc.status, time.monotonic() - start)
            if not req.keep_alive:
                transport.close()
                return False
            client.alarm.arm(self.head_timeout_s)
            return True
        pool = client.pool = self.pools.get(backend.address)
        client.req, client.body, client.backend, client.t0, client.start = (req, body, backend,
                                                                            t0, start)
        conn = pool.take_idle()
        if conn is None:
            self._slow(client, partial(self._connect, client, False))
        else:
            self._send_inline(client, conn, self.try_timeout_s)
        return False

    def _send_inline(self, client: ClientConn, conn: Conn, timeout: float) -> None:
        req, body = client.req, client.body
        assert req is not None
        conn.transport.write(req.forward + body if body else req.forward)
        client.conn = conn
        client.alarm.arm(timeout)
        conn.listener = client.on_upstream

    def _upstream(self, client: ClientConn) -> None:
        """The inline request's backend sent bytes, or closed."""
        conn, req, backend = client.conn, client.req, client.backend
        assert conn is not None and req is not None and backend is not None
        while True:
            buf = conn.buf
            end = buf.find(HEAD_END) + 4
            if end < 4 or end > READ_LIMIT:
                self._no_head(client, conn, end > READ_LIMIT or len(buf) > READ_LIMIT)
                return
            try:
                resp = parse_response(buf[:end], req.method)
            except HttpError as exc:
                self._failed(client, self._send_failed(client, exc))
                return
            conn.buf = buf[end:]
            if resp.status >= 200:
                break
            # 1xx interim answers (102, 103) are dropped, as in _send.
        conn.listener = client.conn = None
        client.alarm.disarm()
        ex = Exchange(backend, (conn, resp), client.t0, 1)
        self.stats.response(resp.status, time.monotonic() - client.start)
        if resp.no_body:
            data: bytes | None = b""
        elif 0 <= resp.content_length <= SMALL_BODY:
            data = conn.take(resp.content_length)
        else:
            data = None
        if data is None:  # a body to wait for or to stream: in a task
            self._slow(client, partial(self._deliver, client, ex, req))
            return
        transport = client.transport
        if not transport.is_closing():
            transport.write(response_head(resp, req) + data)
        client.pool.release(conn, resp.keep_alive)  # type: ignore[union-attr]
        self.caller.finish(ex, resp.status < 500)
        if not req.keep_alive or resp.until_close:
            transport.close()
        elif client.writing_paused:  # the client reads slowly: wait for it, bounded
            self._slow(client, partial(self._drained, client))
        else:
            client.alarm.arm(self.head_timeout_s)
            if client.buf or client.eof:  # pipelined, or closed meanwhile
                self._next(client)

    def _no_head(self, client: ClientConn, conn: Conn, too_long: bool) -> None:
        """No complete response head yet: fail if it is too long or the backend closed."""
        if too_long:
            self._failed(client, self._send_failed(client, "response head too long"))
        elif conn.eof:
            error = conn.error
            if conn.reused and (isinstance(error, ConnectionError)
                                or (error is None and not conn.buf)):
                # The backend closed this idle keep-alive connection as we reused it and
                # never read the request: again on a fresh one (see _send).
                self._detach(client).release(conn, False)
                self._slow(client, partial(self._connect, client, True))
            else:
                self._failed(client, self._send_failed(
                    client, "closed the connection" if error is None else error))

    @staticmethod
    def _send_failed(client: ClientConn, what: object) -> SendFailed:
        backend = client.backend
        assert backend is not None
        return SendFailed(f"{backend.id} at {backend.address}: {what}")

    def _detach(self, client: ClientConn) -> Pool:
        """The inline request stops waiting on its backend connection; its pool."""
        assert client.conn is not None and client.pool is not None
        client.conn.listener = None
        client.conn = None
        client.alarm.disarm()
        return client.pool

    def _failed(self, client: ClientConn, error: Exception) -> None:
        """The inline attempt failed: recorded, then the call goes on in a task (retry or
        error answer, by the caller's policy)."""
        conn, req, backend = client.conn, client.req, client.backend
        assert conn is not None and req is not None and backend is not None
        self._detach(client).release(conn, False)
        self.caller.failed(backend.id, client.t0)
        resume = Resume(client.t0, backend.id, error)
        self._slow(client, partial(self._serve, client, req, client.body, client.start, resume))

    # ------------------------------------------------------------------ the slow path
    def _slow(self, client: ClientConn, work: Callable[[Watchdog], Awaitable[bool]]) -> None:
        """Serve one request in a task: `work(dog)` says whether the connection stays open."""
        client.alarm.disarm()
        client.task = client.loop.create_task(self._run(client, work))

    async def _run(self, client: ClientConn, work: Callable[[Watchdog], Awaitable[bool]]) -> None:
        assert self.wheel is not None
        task = asyncio.current_task()
        assert task is not None
        dog = Watchdog(self.wheel, task)
        keep = False
        try:
            keep = await work(dog)
        except (ConnectionError, BodyError, TimeoutError):
            pass  # the client left or stalled: nothing to answer
        finally:
            dog.close()
            client.task = None
            if not keep:
                client.transport.close()
        if client.conn is not None:
            return  # its attempt goes on inline (after _connect)
        client.alarm.arm(self.head_timeout_s)
        self._next(client)  # back to the inline path

    async def _connect(self, client: ClientConn, fresh: bool, dog: Watchdog) -> bool:
        """The inline request's backend needs a new connection: open it, then go on inline."""
        backend, pool, req = client.backend, client.pool, client.req
        assert backend is not None and pool is not None and req is not None
        dog.arm(self.try_timeout_s)
        error: Exception
        try:
            conn = await pool.acquire(fresh)
        except ConnectFailed as exc:
            error = exc
        except asyncio.CancelledError:
            if not dog.timed_out():
                self.caller.abandon(backend.id)
                raise
            error = TimeoutError()
        else:
            if client.transport.is_closing():  # the client left meanwhile
                pool.release(conn, True)
                self.caller.abandon(backend.id)
                return False
            left = self.try_timeout_s - (self.caller.clock() - client.t0)
            self._send_inline(client, conn, max(left, 0.0))
            return True
        finally:
            dog.disarm()
        self.caller.failed(backend.id, client.t0)
        return await self._serve(client, req, client.body, client.start,
                                 Resume(client.t0, backend.id, error), dog)

    async def _exchange(self, client: ClientConn, dog: Watchdog) -> bool:
        """Read and serve one request; True if the connection may carry another."""
        limits = self.limits
        wheel = self.wheel
        assert wheel is not None
        dog.arm(limits.head_timeout_s)
        try:
            head = await client.read_head()
        except asyncio.CancelledError:
            if dog.timed_out():
                return False  # idle keep-alive connection, or a client too slow to send a head
            raise
        except asyncio.IncompleteReadError:
            return False  # closed between requests (or mid-head: nothing useful to say)
        except asyncio.LimitOverrunError:
            return self._refuse(client, 431, f"request head over {limits.max_head_bytes} bytes")
        finally:
            dog.disarm()
        start = time.monotonic()
        try:
            req = parse_request(head, client.ip_bytes, self.hash_header)
        except HttpError as exc:
            return self._refuse(client, exc.status, str(exc))
        body = b""
        streamed = req.chunked or req.content_length > limits.retry_buffer_bytes
        if req.content_length > limits.max_body_bytes:
            return self._refuse(client, 413, f"body over {limits.max_body_bytes} bytes")
        if req.has_body and req.expect_continue:
            client.transport.write(CONTINUE)  # we answer it: the Expect header is not forwarded
        if req.content_length > 0 and not streamed:
            body = await read_exactly(client, req.content_length, "client", limits.body_idle_s,
                                      wheel)
        return await self._serve(client, req, body, start, None, dog)

    async def _serve(self, client: ClientConn, req: RequestHead, body: bytes, start: float,
                     resume: Resume | None, dog: Watchdog) -> bool:
        """The call for a request read (and its first attempt failed, with `resume`)."""
        streamed = req.chunked or req.content_length > self.limits.retry_buffer_bytes
        attempt = partial(self._send, req, body, client.stream_reader() if streamed else None)
        try:
            # A streamed body cannot be sent twice: only connect failures are retried then.
            ex = await self.caller.call(attempt, key=req.affinity, client=client.ip,
                                        idempotent=req.idempotent and not streamed, timer=dog,
                                        resume=resume)
        except CallError as exc:
            keep = req.keep_alive and not streamed
            client.transport.write(error_response(exc.status, str(exc), keep))
            self.stats.response(exc.status, time.monotonic() - start)
            return keep
        finally:
            if streamed:
                client.unstream()
        self.stats.response(ex.value[1].status, time.monotonic() - start)
        return await self._deliver(client, ex, req, dog)

    async def _deliver(self, client: ClientConn, ex: Exchange[tuple[Conn, ResponseHead]],
                       req: RequestHead, dog: Watchdog) -> bool:
        """Relay the answer, return the backend connection and end the call."""
        conn, resp = ex.value
        ok, reusable, keep = resp.status < 500, resp.keep_alive, req.keep_alive
        try:
            await self._relay(conn, resp, req, client)
        except BodyError as exc:
            ok = ok and exc.side != "backend"
            reusable = keep = False
        except (ConnectionError, TimeoutError):  # the client broke or stalled
            reusable = keep = False
        finally:
            self.pools.get(ex.backend.address).release(conn, reusable)
            self.caller.finish(ex, ok)
        return keep and not resp.until_close

    async def _drained(self, client: ClientConn, dog: Watchdog) -> bool:
        await drain(client.writer, self.limits.body_idle_s)
        return True

    def _refuse(self, client: ClientConn, status: int, message: str) -> bool:
        client.transport.write(error_response(status, message, False))
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
                conn.transport.write(req.forward + body if body else req.forward)
                if stream_from is not None:
                    if req.chunked:
                        await copy_chunked(stream_from, conn.writer, "client", idle)
                    else:
                        await copy_length(stream_from, conn.writer, req.content_length, "client",
                                          idle)
                while True:
                    resp = parse_response(await conn.read_head(), req.method)
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
                     client: ClientConn) -> None:
        """Send the response head and stream its body to the client."""
        idle = self.limits.body_idle_s
        head = response_head(resp, req)
        transport = client.transport
        if resp.no_body:
            transport.write(head)
        elif 0 <= resp.content_length <= SMALL_BODY:
            # Usually the body came with the head: then it is taken without a timeout.
            data = conn.take(resp.content_length)
            if data is None:
                data = await read_exactly(conn, resp.content_length, "backend", idle, self.wheel)
            transport.write(head + data)
        else:
            transport.write(head)
            reader, writer = conn.stream_reader(), client.writer
            if resp.content_length >= 0:
                await copy_length(reader, writer, resp.content_length, "backend", idle)
            elif resp.chunked:
                await copy_chunked(reader, writer, "backend", idle)
            else:
                await copy_until_eof(reader, writer, "backend", idle)
        if transport.get_write_buffer_size():  # not all sent (rare): wait, bounded
            await drain(client.writer, idle)
