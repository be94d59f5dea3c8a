"""The client port: pipelined requests over length-prefixed msgpack frames (protocol.py).

Each request runs as its own task, bounded per connection, so a slow linearizable read never
holds up the writes behind it; responses go back tagged with their request id."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from ..kv.codec import pack, to_wire
from ..kv.errors import KVError
from ..kv.requests import (
    LeaseLeasesRequest,
    LeaseTimeToLiveRequest,
    RangeRequest,
    decode_command,
    encode_response,
)
from ..kv.watch import WatchFilter, WatchResponse
from ..wire.protocol import (
    BAD_REQUEST,
    FRAME_OVERHEAD,
    REQUEST_TOO_LARGE,
    FrameTooLarge,
    ProtocolError,
    frame,
    read_frame,
)
from .config import Member, parse_addr
from .node import Node, NodeError

log = logging.getLogger("shoal.client_api")

READS = (RangeRequest, LeaseTimeToLiveRequest, LeaseLeasesRequest)
MAX_INFLIGHT_PER_CONNECTION = 512
WRITE_BUFFER_HIGH = 8 * 1024 * 1024  # a client that stops reading is cut off, not buffered forever


def encode_watch(resp: WatchResponse) -> bytes:
    return pack(to_wire(resp, WatchResponse))


class ClientServer:
    def __init__(self, node: Node, addr: tuple[str, int], request_timeout: float = 5.0):
        self.node, self.addr, self.timeout = node, addr, request_timeout
        self.limit = node.cfg.max_request_bytes + FRAME_OVERHEAD
        self._server: asyncio.Server | None = None
        self._conns: set[_Connection] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, *self.addr, limit=1 << 20)

    async def stop(self) -> None:
        """Stop listening and drop every open connection, so clients move to another node."""
        if self._server is not None:
            self._server.close()
            for conn in list(self._conns):
                conn.writer.transport.abort()
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        if len(self._conns) >= self.node.cfg.max_connections:
            writer.write(frame([None, "too_many_requests", {"message": "too many client connections"}]))
            writer.close()
            return
        conn = _Connection(self, writer)
        self._conns.add(conn)
        try:
            while True:
                try:
                    msg = await read_frame(reader, self.limit)
                except FrameTooLarge as exc:
                    conn.send([exc.request_id, REQUEST_TOO_LARGE, {"message": f"request too large: {exc}"}])
                    continue
                if msg is None:
                    break
                if not (isinstance(msg, list) and len(msg) == 3 and isinstance(msg[1], str)):
                    conn.send([None, BAD_REQUEST, {"message": "a request is [id, op, body]"}])
                    continue
                await conn.slots.acquire()
                task = asyncio.create_task(conn.handle(*msg))
                conn.tasks.add(task)
                task.add_done_callback(conn.done)
        except ProtocolError as exc:
            log.warning("client %s spoke nonsense, closing: %s", peer, exc)
        except ConnectionError:
            pass
        finally:
            self._conns.discard(conn)
            conn.close()


class _Connection:
    def __init__(self, server: ClientServer, writer: asyncio.StreamWriter):
        self.server, self.node, self.writer = server, server.node, writer
        self.slots = asyncio.Semaphore(MAX_INFLIGHT_PER_CONNECTION)
        self.tasks: set[asyncio.Task[None]] = set()
        self.watches: set[int] = set()

    def send(self, obj: Any) -> None:
        if self.writer.is_closing():
            return
        if self.writer.transport.get_write_buffer_size() > WRITE_BUFFER_HIGH:
            log.warning("client is not reading its responses; closing the connection")
            self.writer.transport.abort()
            return
        self.writer.write(frame(obj))

    def done(self, task: asyncio.Task[None]) -> None:
        self.tasks.discard(task)
        self.slots.release()

    def close(self) -> None:
        for w in self.watches:
            self.node.cancel_watch(w)
        for t in self.tasks:
            t.cancel()
        self.writer.close()

    async def handle(self, req_id: Any, op: str, body: Any) -> None:
        try:
            result = await self.dispatch(req_id, op, body)
            self.send([req_id, "ok", result])
        except NodeError as exc:
            self.send([req_id, exc.code, {"message": str(exc), **exc.details}])
        except KVError as exc:
            self.send([req_id, type(exc).__name__, {
                "message": str(exc), "compact_revision": getattr(exc, "compact_revision", 0)}])
        except (ValueError, TypeError, KeyError) as exc:
            self.send([req_id, BAD_REQUEST, {"message": f"malformed {op!r} request: {exc}"}])
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - one bad request must not take the node down
            log.exception("request %r failed", op)
            self.send([req_id, "internal", {"message": f"internal error: {exc}"}])

    async def dispatch(self, req_id: Any, op: str, body: Any) -> Any:
        node, timeout = self.node, self.server.timeout
        if op == "kv":
            data = body["cmd"]
            if not isinstance(data, bytes):
                raise ValueError("cmd must be bytes")
            cmd = decode_command(data, node.kv.limits)
            if isinstance(cmd.request, READS):
                resp = await node.read(cmd.request, bool(body.get("serializable")), timeout)
            else:
                resp = await node.write(data, timeout, decoded=cmd)
            return encode_response(resp)
        if op == "watch":
            created = node.watch(
                lambda resp: self.send([req_id, "event", encode_watch(resp)]),
                key=bytes(body["key"]), range_end=bytes(body.get("range_end", b"")),
                start_revision=int(body.get("start_revision", 0)),
                prev_kv=bool(body.get("prev_kv")),
                filters=tuple(WatchFilter(f) for f in body.get("filters", ())),
                progress_notify=bool(body.get("progress_notify")))
            if not created.canceled:
                self.watches.add(created.watch_id)
            return encode_watch(created)
        if op == "watch_cancel":
            self.watches.discard(int(body))
            node.cancel_watch(int(body))
            return None
        if op == "status":
            return node.status()
        if op == "member_add":
            m = Member(int(body["id"]), parse_addr(body["peer"], "peer"), parse_addr(body["client"], "client"))
            await node.change_membership("add-learner" if body.get("learner") else "add", m, m.id, timeout)
            return node.status()
        if op in ("member_remove", "member_promote"):
            n = int(body["id"])
            member = node.members.get(n) if op == "member_promote" else None
            await node.change_membership("remove" if op == "member_remove" else "add", member, n, timeout)
            return node.status()
        if op == "transfer":
            await node.transfer_leadership(int(body["to"]))
            return None
        if op == "snapshot":
            await node.read_barrier(timeout)
            return {"index": node.applied, "data": node.snapshot_bytes()}
        raise NodeError(BAD_REQUEST, f"unknown operation {op!r}")
