"""One etcd client port for gRPC and HTTP, as etcd serves them (etcd splits its listener with
cmux).

Python's gRPC server cannot share a listening socket with aiohttp, so the port belongs to a front
listener that reads the first bytes of each connection and picks the server:

- HTTP/2's connection preface, `PRI * HTTP/2.0\\r\\n\\r\\nSM\\r\\n\\r\\n`, means gRPC. The
  connection is spliced to the gRPC server, which listens on a unix socket in a directory only
  this process's user may enter, so nothing reaches it except through this front (and, with
  TLS, after the front has checked the client's certificate).
- Anything else is HTTP/1.x. The connection is handed to aiohttp's protocol in this process, with
  no second hop: the JSON gateway, `/version`, `/health`, `/metrics`. Bytes that are not HTTP
  get aiohttp's 400 and a close.

With TLS the front terminates it and checks client certificates; the gRPC server behind it is
plaintext. ALPN prefers http/1.1, so a client offering both (curl, browsers) speaks HTTP/1.1,
and one offering only h2 (every gRPC client) gets the h2 that gRPC clients insist on.

Splicing is two asyncio Protocols, one per side: a chunk read from one side is written to the
other as it is. When a side's write buffer passes its high-water mark, the other side stops
reading until it drains (pause_writing/resume_writing drive pause_reading/resume_reading), so a
client or server that stops reading holds at most the transports' buffers. EOF or loss on either
side closes both, after flushing what was already read: HTTP/2 has no use for a half-closed TCP
connection. A connection that has not sent enough bytes to be told apart within
`sniff_timeout_s` (or, with TLS, not finished its handshake by then) is closed."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from typing import cast

from ..server.connections import ConnectionLimits, peer_address

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


class PortMux:
    """The front listener: `http` makes the protocol an HTTP/1.x connection is handed to
    (aiohttp's `web.Server`), `grpc_path` is the gRPC server's unix socket."""

    def __init__(self, http: Callable[[], asyncio.Protocol], grpc_path: str, *,
                 ssl_context: ssl.SSLContext | None = None, sniff_timeout_s: float = 10.0,
                 max_connections: int = 1_000, max_per_address: int = 256):
        assert sniff_timeout_s > 0, sniff_timeout_s
        self.http, self.grpc_path, self.ssl_context = http, grpc_path, ssl_context
        self.sniff_timeout_s = sniff_timeout_s
        self.limits = ConnectionLimits(max_connections, max_per_address)
        self._server: asyncio.Server | None = None
        self._fronts: set[_Front] = set()  # connections not handed to aiohttp: sniffing or spliced

    def _admit(self, front: _Front, address: str) -> bool:
        """Count a new connection in, unless the port or its address is at its bound."""
        if not self.limits.admit(address):
            return False
        self._fronts.add(front)
        return True

    def _forget(self, front: _Front) -> None:
        if front in self._fronts:
            self._fronts.discard(front)
            self.limits.release(front.address)

    async def start(self, host: str, port: int) -> int:
        """Listen on host:port; returns the port (the one chosen, when `port` is 0)."""
        tls = self.ssl_context is not None
        self._server = await asyncio.get_running_loop().create_server(
            lambda: _Front(self), host, port, reuse_address=True, ssl=self.ssl_context,
            ssl_handshake_timeout=self.sniff_timeout_s if tls else None)
        return int(self._server.sockets[0].getsockname()[1])

    def stop_listening(self) -> None:
        if self._server is not None:
            self._server.close()

    def abort_all(self) -> None:
        """Drop every connection still here (aiohttp closes its own)."""
        for front in list(self._fronts):
            front.abort()
        assert not self._fronts

    @property
    def connections(self) -> int:
        """Connections being sniffed or spliced to gRPC."""
        return len(self._fronts)


class _Front(asyncio.Protocol):
    """The client's side of one connection: sniffs, then hands over (HTTP) or splices (gRPC)."""

    def __init__(self, mux: PortMux):
        self.mux = mux
        self.transport: asyncio.Transport | None = None
        self.back: asyncio.Transport | None = None
        self.buf = b""  # bytes read before the route is known or the backend is connected
        self.routed = False
        self._timer: asyncio.TimerHandle | None = None
        self._connect: asyncio.Task[None] | None = None
        self.address = ""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert self.transport is None
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses
        self.address = peer_address(transport.get_extra_info("peername"))
        if not self.mux._admit(self, self.address):
            self.transport.abort()
            return
        self._timer = asyncio.get_running_loop().call_later(self.mux.sniff_timeout_s, self.abort)

    def data_received(self, data: bytes) -> None:
        if self.back is not None:
            self.back.write(data)
            return
        self.buf += data
        if self.routed:  # connecting to gRPC; reading is paused, but TLS may hand over what it holds
            return
        n = min(len(self.buf), len(PREFACE))
        if self.buf[:n] != PREFACE[:n]:
            self._to_http()
        elif n == len(PREFACE):
            self._to_grpc()

    def _to_http(self) -> None:
        assert self.transport is not None and not self.routed
        self._route()
        self.mux._forget(self)
        proto = self.mux.http()
        self.transport.set_protocol(proto)
        proto.connection_made(self.transport)
        proto.data_received(self.buf)
        self.buf = b""

    def _to_grpc(self) -> None:
        assert self.transport is not None and not self.routed
        self._route()
        self.transport.pause_reading()
        self._connect = asyncio.get_running_loop().create_task(self._dial())

    def _route(self) -> None:
        self.routed = True
        if self._timer is not None:
            self._timer.cancel()

    async def _dial(self) -> None:
        assert self.transport is not None
        loop = asyncio.get_running_loop()
        try:
            back, _ = await loop.create_unix_connection(lambda: _Back(self), self.mux.grpc_path)
        except OSError:
            self.abort()  # the gRPC server is gone (stopping): the client sees a reset
            return
        if self.transport.is_closing():
            back.close()
            return
        self.back = back  # type: ignore[assignment]
        back.write(self.buf)
        self.buf = b""
        self.transport.resume_reading()

    def eof_received(self) -> bool:
        return False  # close: connection_lost closes the backend

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self.mux._forget(self)
        if self.back is not None:
            self.back.close()

    def pause_writing(self) -> None:  # the client reads slower than gRPC writes
        if self.back is not None and not self.back.is_closing():
            self.back.pause_reading()

    def resume_writing(self) -> None:
        if self.back is not None and not self.back.is_closing():
            self.back.resume_reading()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()
        if self.back is not None:
            self.back.abort()
        if self._connect is not None:
            self._connect.cancel()
        self.mux._forget(self)


class _Back(asyncio.Protocol):
    """The gRPC server's side of a spliced connection."""

    def __init__(self, front: _Front):
        assert front.transport is not None
        self.client = front.transport

    def data_received(self, data: bytes) -> None:
        self.client.write(data)

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.client.close()  # after flushing what gRPC wrote (a GOAWAY, the last responses)

    def pause_writing(self) -> None:  # gRPC reads slower than the client writes
        if not self.client.is_closing():
            self.client.pause_reading()

    def resume_writing(self) -> None:
        if not self.client.is_closing():
            self.client.resume_reading()

