"""The callee's end: a TCP server that runs each incoming call as its own task.

Handlers are registered by full method name ("Inventory.reserve") as
`async handler(payload, metadata) -> bytes`; the application layer (shoal.app.serve) builds
them from component implementations and their method codecs. Per call:

- with a `token` (a deployment's shared secret), a call whose metadata lacks it is refused
  with UNAUTHENTICATED, unrun;
- a deadline already past (deadline_ms < 0) is refused with DEADLINE_EXCEEDED, unrun;
- otherwise the remaining time becomes this task's deadline (`deadline.current`), so the
  calls the handler makes inherit it, and the handler is cancelled when it passes;
- a CANCEL frame for the call cancels its task; nothing is answered for it;
- an exception from the handler is answered as APPLICATION ("TypeName: message"), a
  TimeoutError as DEADLINE_EXCEEDED;
- at most `max_inflight` calls run per connection; a client that pipelines more is read no
  further until some finish (TCP's own flow control then pushes back on it).

Answers leave in one write per turn of the event loop, as on the client side (framed.py)."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import time
from collections.abc import Awaitable, Callable, Mapping

from ..gateway.timeouts import CoarseTimeout, Wheel
from . import protocol as p
from .deadline import current as current_deadline
from .framed import FramedProtocol

log = logging.getLogger(__name__)
Handler = Callable[[bytes, Mapping[str, str]], Awaitable[bytes]]
MAX_INFLIGHT = 1024  # calls running per connection
AUTHORIZATION = "authorization"  # the metadata key of the deployment's token


class ServerConnection(FramedProtocol):
    def __init__(self, server: RpcServer):
        super().__init__(server.max_frame)
        self.server = server
        self.tasks: dict[int, asyncio.Task[None]] = {}
        self._paused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.server.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.connections.discard(self)
        for t in self.tasks.values():
            t.cancel()  # nobody is left to answer
        self.tasks.clear()

    def data_received(self, data: bytes) -> None:
        try:
            events = self.codec.receive_data(data)
        except p.ProtocolError as exc:
            log.warning("rpc: closing a connection that broke the protocol: %s", exc)
            assert self.transport is not None
            self.transport.abort()
            return
        for ev in events:
            if type(ev) is p.Call:
                self._start(ev)
            elif type(ev) is p.Cancel:
                task = self.tasks.pop(ev.call_id, None)
                if task is not None:
                    task.cancel()
            elif type(ev) is p.Refused:
                self._write(self.codec.error(ev.call_id, p.REQUEST_TOO_LARGE,
                                             f"request of {ev.size} bytes exceeds the limit "
                                             f"of {self.codec.max_frame} bytes"))
            else:
                log.warning("rpc: a caller sent a %s; closing", type(ev).__name__)
                assert self.transport is not None
                self.transport.abort()
                return

    def _start(self, call: p.Call) -> None:
        server = self.server
        if call.deadline_ms < 0:
            self._write(self.codec.error(call.call_id, p.DEADLINE_EXCEEDED,
                                         f"{call.method}: deadline already passed; not run"))
            return
        if server.token is not None and not hmac.compare_digest(
                call.metadata.get(AUTHORIZATION, ""), server.token):
            self._write(self.codec.error(call.call_id, p.UNAUTHENTICATED,
                                         f"{call.method}: this server needs the deployment's "
                                         "token; not run"))
            return
        handler = server.handlers.get(call.method)
        if handler is None:
            self._write(self.codec.error(call.call_id, p.UNKNOWN_METHOD,
                                         f"{call.method} is not served here"))
            return
        if server.draining:
            self._write(self.codec.error(call.call_id, p.UNAVAILABLE,
                                         f"{call.method}: server is shutting down; not run"))
            return
        if call.call_id in self.tasks:
            self._write(self.codec.error(call.call_id, p.INTERNAL,
                                         f"call id {call.call_id} is already running"))
            return
        deadline = time.monotonic() + call.deadline_ms / 1000 if call.deadline_ms else None
        task = self._loop.create_task(self._run(call, handler, deadline))
        self.tasks[call.call_id] = task
        if len(self.tasks) >= MAX_INFLIGHT and not self._paused:
            assert self.transport is not None
            self._paused = True
            self.transport.pause_reading()

    async def _run(self, call: p.Call, handler: Handler, deadline: float | None) -> None:
        current_deadline.set(deadline)  # this task's own context: its calls inherit it
        codec = self.codec
        try:
            if deadline is None:
                result = await handler(call.payload, call.metadata)
            else:
                async with CoarseTimeout(self.server.wheel(), deadline - time.monotonic()):
                    result = await handler(call.payload, call.metadata)
            frame = codec.reply(call.call_id, result)
        except TimeoutError as exc:  # ours, or a further hop's deadline (it is the same one)
            frame = codec.error(call.call_id, p.DEADLINE_EXCEEDED, f"{call.method}: {exc}"
                                if str(exc) else f"{call.method}: deadline passed while running")
        except asyncio.CancelledError:
            self._finished(call.call_id)
            raise
        except Exception as exc:  # noqa: BLE001 - the method's own failure goes to its caller
            frame = self._failure(call, exc)
        if self._finished(call.call_id):
            self._write(frame)

    def _failure(self, call: p.Call, exc: Exception) -> bytes:
        """The method ran and raised: APPLICATION, whatever it was (a further hop's
        refusal included: this call did run, so it must not look retry-safe)."""
        if isinstance(exc, p.FrameTooLarge):
            return self.codec.error(call.call_id, p.INTERNAL, f"{call.method}: result {exc}")
        return self.codec.error(call.call_id, p.APPLICATION, f"{type(exc).__name__}: {exc}")

    def _finished(self, call_id: int) -> bool:
        """Forget the call; False if it was cancelled (then nothing is answered)."""
        done = self.tasks.pop(call_id, None) is not None
        if self._paused and len(self.tasks) < MAX_INFLIGHT // 2 and self.transport is not None:
            self._paused = False
            self.transport.resume_reading()
        return done


class RpcServer:
    """`server = RpcServer(handlers); await server.start("127.0.0.1", 0); server.address`"""

    def __init__(self, handlers: Mapping[str, Handler] | None = None,
                 max_frame: int = p.MAX_FRAME, token: str | None = None):
        self.handlers: dict[str, Handler] = dict(handlers or {})
        self.token = token  # when set, every call must carry it as metadata "authorization"
        self.max_frame = max_frame
        self.connections: set[ServerConnection] = set()
        self.draining = False
        self._server: asyncio.Server | None = None
        self._wheel: Wheel | None = None
        self.address = ""

    def wheel(self) -> Wheel:
        """The deadlines of running calls, on one coarse timing wheel (a loop timer per call
        cost more than the rest of a small call; a deadline may fire up to 20 ms late)."""
        if self._wheel is None:
            self._wheel = Wheel()
        return self._wheel

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: ServerConnection(self), host, port,
                                                reuse_address=True)
        bound = self._server.sockets[0].getsockname()
        self.address = f"{bound[0]}:{bound[1]}"
        return self.address

    def running(self) -> int:
        return sum(len(c.tasks) for c in self.connections)

    async def stop(self, grace_s: float = 2.0) -> None:
        """Refuse new calls (UNAVAILABLE: safe to retry elsewhere), let running ones finish
        for up to `grace_s`, then close every connection."""
        self.draining = True
        if self._server is not None:
            self._server.close()
        end = time.monotonic() + grace_s
        while self.running() and time.monotonic() < end:
            await asyncio.sleep(0.01)
        for c in list(self.connections):
            c._flush()
            if c.transport is not None:
                c.transport.close()
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 1.0)
