"""The client port: pipelined requests over length-prefixed msgpack frames (protocol.py).

Each request runs as its own task, bounded per connection, so a slow linearizable read never
holds up the writes behind it; responses go back tagged with their request id.

Watch events enter the socket's buffer only while it holds less than WATCH_FLUSH_BYTES. The
rest wait in the connection's WatchQueue (kv/watch_queue.py), and a flusher task moves them on
as the socket drains. Each watch paces the hub through a WatchGate: it has room only while
nothing of it waits here (and the connection is under half its total bound), so the hub holds
a slow watch's events back, bounded, or leaves them in history, and the flusher pulls the
watch again once its last response is in the socket. A history replay therefore runs at the
speed of the socket, and a socket nobody reads costs at most one response per watch here.
The queue's hard bounds (`watch_queue_events`, `watch_queue_bytes` per watch,
WATCH_CONNECTION_BYTES per connection) remain the last resort: a watch that passes one is
canceled alone, with a reason naming the revision to resume from, and the connection and its
other watches carry on."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, replace
from typing import Any

from ..auth import (
    AUTH_KEY,
    PERMISSION_DENIED,
    AuthError,
    AuthState,
    guard,
    hidden_counter,
    visible_events,
)
from ..auth.reserved import overlap
from ..kv.codec import pack, to_wire
from ..kv.errors import KVError
from ..kv.requests import (
    Command,
    Compare,
    CompareResult,
    CompareTarget,
    LeaseLeasesRequest,
    LeaseTimeToLiveRequest,
    PutRequest,
    RangeRequest,
    ShardAssignRequest,
    ShardDropRequest,
    ShardExportRequest,
    ShardImportRequest,
    TxnRequest,
    decode_command,
    encode_command,
    encode_response,
    encode_response_steps,
)
from ..kv.watch import WatchFilter, WatchGate, WatchResponse
from ..kv.watch_queue import DEFAULT_WATCH_STREAM_BYTES, WatchQueue, first_revision
from ..shard.map import MAP_KEY, ShardMap
from ..wire.protocol import (
    BAD_REQUEST,
    FRAME_OVERHEAD,
    HEADER,
    MAX_REQUEST_DEPTH,
    MAX_REQUEST_VALUES,
    REQUEST_TOO_LARGE,
    FrameTooComplex,
    FrameTooLarge,
    ProtocolError,
    frame,
    read_frame,
)
from .config import Member, parse_addr
from .connections import ConnectionLimits, peer_address
from .node import Node, NodeError
from .slices import in_slices

log = logging.getLogger("shoal.client_api")

READS = (RangeRequest, LeaseTimeToLiveRequest, LeaseLeasesRequest)
SHARD_REQUESTS = (ShardAssignRequest, ShardExportRequest, ShardImportRequest, ShardDropRequest)
MAX_INFLIGHT_PER_CONNECTION = 512
WRITE_BUFFER_HIGH = 8 * 1024 * 1024  # a client that stops reading is cut off, not buffered forever
WATCH_FLUSH_BYTES = 64 * 1024  # watch events enter the socket's buffer only while it is below this
WATCH_CONNECTION_BYTES = DEFAULT_WATCH_STREAM_BYTES  # watch events pending per connection
FIRST_REQUEST_TIMEOUT = 10.0  # seconds from accept (and TLS handshake) to the first request
ADMIN_OPS = frozenset({"group_create", "group_remove", "group_list", "group_host",
                       "group_member", "member_add", "member_remove",
                       "member_promote", "transfer", "snapshot", "alarm"})


def encode_watch(resp: WatchResponse) -> bytes:
    return pack(to_wire(resp, WatchResponse))


class ClientServer:
    """Every request is checked against the auth state this node has applied (shoal.auth): the
    caller is the user of the request's token, or of the connection's client certificate."""

    def __init__(self, node: Node, addr: tuple[str, int], request_timeout: float = 5.0):
        self.node, self.addr, self.timeout = node, addr, request_timeout
        self.limit = node.cfg.max_request_bytes + FRAME_OVERHEAD
        self._server: asyncio.Server | None = None
        self._conns: set[_Connection] = set()
        self.limits = ConnectionLimits(node.cfg.max_connections, node.cfg.max_connections_per_address)

    async def start(self) -> None:
        files = self.node.cfg.tls()  # a client certificate, when sent, names the user
        tls = files.server_context(require_client_cert=False) if files else None
        self._server = await asyncio.start_server(
            self._serve, *self.addr, limit=1 << 20, ssl=tls,
            ssl_handshake_timeout=FIRST_REQUEST_TIMEOUT if tls else None)

    async def stop(self) -> None:
        """Stop listening and drop every open connection, so clients move to another node."""
        if self._server is not None:
            self._server.close()
            for conn in list(self._conns):
                conn.writer.transport.abort()
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        address = peer_address(peer)
        cfg = self.node.cfg
        if not self.limits.admit(address):
            # etcd's words for it, so an etcd member forwarding here can say the same
            writer.write(frame([None, "too_many_requests", {
                "message": f"too many client connections (at most {cfg.max_connections}, "
                           f"{cfg.max_connections_per_address} per address)"}]))
            writer.close()
            return
        conn = _Connection(self, writer)
        self._conns.add(conn)
        reading: asyncio.Task[Any] | None = None
        try:
            wait = min(FIRST_REQUEST_TIMEOUT, cfg.client_idle_timeout_s)
            while True:
                got: Any
                if reading is None and _frame_buffered(reader, self.limit):
                    # Already here whole (requests come in bursts): read it now, with no task
                    # and no timer, as waiting for it would return at once.
                    got = read_frame(reader, self.limit, MAX_REQUEST_VALUES, MAX_REQUEST_DEPTH)
                else:
                    reading = reading or asyncio.ensure_future(read_frame(
                        reader, self.limit, MAX_REQUEST_VALUES, MAX_REQUEST_DEPTH))
                    done, _ = await asyncio.wait({reading}, timeout=wait)
                    if not done:
                        if conn.busy:  # a watch or a request in flight is not idleness
                            continue
                        log.info("closing client connection from %s: idle for %.0f s", peer, wait)
                        break
                    got, reading = reading, None
                wait = cfg.client_idle_timeout_s
                try:
                    msg = await got
                except FrameTooLarge as exc:
                    conn.send([exc.request_id, REQUEST_TOO_LARGE, {"message": f"request too large: {exc}"}])
                    continue
                except FrameTooComplex as exc:  # read whole, so the stream is still in step
                    conn.send([exc.request_id, BAD_REQUEST, {"message": str(exc)}])
                    continue
                if msg is None:
                    break
                if not (isinstance(msg, list) and len(msg) in (3, 4) and isinstance(msg[1], str)
                        and (len(msg) == 3 or isinstance(msg[3], str))):
                    conn.send([None, BAD_REQUEST, {"message": "a request is [id, op, body] or [id, op, body, token]"}])
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
            if reading is not None:
                reading.cancel()
            self._conns.discard(conn)
            self.limits.release(address)
            conn.close()


def _frame_buffered(reader: asyncio.StreamReader, limit: int) -> bool:
    """Whether the reader holds a whole frame of at most `limit` bytes already."""
    buf = getattr(reader, "_buffer", None)  # (StreamReader's own; absent: take the slow path)
    if not isinstance(buf, bytearray) or len(buf) < HEADER:
        return False
    size = int.from_bytes(buf[:HEADER], "big")
    return size <= limit and len(buf) >= HEADER + size


@dataclass(eq=False, slots=True)
class _Watch:
    req_id: Any  # the watch request's id: every frame of the watch carries it
    gate: WatchGate  # how it paces the hub; gate.watch_id is its hub watch id
    ended: bool = False  # canceled, by the node or here; nothing more of it is sent
    started: bool = False  # its created answer is sent: its events may follow


class _Connection:
    def __init__(self, server: ClientServer, writer: asyncio.StreamWriter):
        self.server, self.node, self.writer = server, server.node, writer
        self.slots = asyncio.Semaphore(MAX_INFLIGHT_PER_CONNECTION)
        self.tasks: set[asyncio.Task[None]] = set()
        self.watches: dict[int, _Watch] = {}  # hub watch id -> its request
        cfg = server.node.cfg
        self.outbox: WatchQueue[bytes] = WatchQueue(
            cfg.watch_queue_events, cfg.watch_queue_bytes,
            max(WATCH_CONNECTION_BYTES, cfg.watch_queue_bytes))
        self._held: dict[int, _Watch] = {}  # watches the hub holds back for us: pull them
        self._flusher: asyncio.Task[None] | None = None
        # Answers sent during one turn of the loop, written together at its end (one write
        # to the socket for a batch of applied writes, not one each).
        self._answers: list[bytes] = []
        self.closed = False
        # drain() then waits exactly while the buffer is above the level the flusher fills to
        writer.transport.set_write_buffer_limits(high=WATCH_FLUSH_BYTES)
        self.cert_user = _cert_user(writer.get_extra_info("peercert"))

    @property
    def busy(self) -> bool:
        return bool(self.tasks or self.watches)

    def send(self, obj: Any) -> None:
        if self.writer.is_closing():
            return
        if self.writer.transport.get_write_buffer_size() > WRITE_BUFFER_HIGH:
            log.warning("client is not reading its responses; closing the connection")
            self.writer.transport.abort()
            return
        if not self._answers:
            asyncio.get_running_loop().call_soon(self._write_answers)
        self._answers.append(frame(obj))

    def _write_answers(self) -> None:
        """Write the answers `send` collected, in order, before anything written after them."""
        answers, self._answers = self._answers, []
        if answers and not self.writer.is_closing():
            self.writer.writelines(answers)

    def done(self, task: asyncio.Task[None]) -> None:
        self.tasks.discard(task)
        self.slots.release()

    def close(self) -> None:
        self._write_answers()  # (close() still writes out what is buffered)
        self.closed = True
        for w, watch in self.watches.items():
            watch.gate.close()
            self.node.cancel_watch(w)
        self.watches.clear()
        self._held.clear()
        self.outbox.clear()
        if self._flusher is not None:
            self._flusher.cancel()
        for t in self.tasks:
            t.cancel()
        self.writer.close()

    # ------------------------------------------------------------ watch events
    def on_watch(self, watch: _Watch, resp: WatchResponse) -> None:
        """The node's sink for one watch: queue the response and write what the socket takes;
        never block, and never poll the hub from here (the node is mid-way through its own
        list of responses, and ours must not overtake them)."""
        self._accept(watch, resp)
        self._write_some()
        self._start_flusher()

    def _has_room(self, watch: _Watch) -> bool:
        """The gate's answer for one watch: room only once its created answer is out, while
        nothing of it is queued here and the connection is under half its total bound. No room:
        the flusher pulls it later."""
        watch_id = watch.gate.watch_id
        if self.closed or watch.ended or watch_id is None:
            return False
        if watch.started and not self.outbox.holds(watch_id) and self.outbox.bytes < self.outbox.max_total_bytes // 2:
            return True
        self._held[watch_id] = watch
        self._start_flusher()
        return False

    def _accept(self, watch: _Watch, resp: WatchResponse) -> None:
        if self.closed or watch.ended:
            return
        if resp.events:
            events = visible_events(resp.events)
            if not events and not resp.canceled:
                return
            resp = replace(resp, events=tuple(events))
        data = frame([watch.req_id, "event", encode_watch(resp)])
        if resp.canceled:  # the node ended it (compaction, a snapshot): nothing follows
            self._end(resp.watch_id, watch)
            self.outbox.push_final(resp.watch_id, data, len(data))
            return
        overflow = self.outbox.push(resp.watch_id, data, events=len(resp.events), nbytes=len(data),
                                    first_revision=first_revision(resp.events, resp.revision))
        if overflow is None:
            return
        # The last resort (the gate keeps a watch from getting here, unless one response is
        # huge or the node ignored the gate): cancel it alone, and say from where to resume.
        slow = self.watches.get(overflow.watch_id, watch if overflow.watch_id == resp.watch_id else None)
        self.node.cancel_watch(overflow.watch_id)
        log.info("watch %d could not keep up; canceled: %s", overflow.watch_id, overflow.reason)
        if slow is not None:
            self._end(overflow.watch_id, slow)
            cancel = WatchResponse(overflow.watch_id, overflow.resume_revision - 1, canceled=True,
                                   cancel_reason=overflow.reason)
            end = frame([slow.req_id, "event", encode_watch(cancel)])
            self.outbox.push_final(overflow.watch_id, end, len(end))

    def _end(self, watch_id: int, watch: _Watch) -> None:
        watch.ended = True
        watch.gate.close()
        self.watches.pop(watch_id, None)
        self._held.pop(watch_id, None)

    def _write_some(self) -> None:
        """Queued frames into the socket's buffer, while it holds at most WATCH_FLUSH_BYTES."""
        transport = self.writer.transport
        if self._answers:  # a watch's created answer goes before its events
            self._write_answers()
        while self.outbox and not self.writer.is_closing() \
                and transport.get_write_buffer_size() <= WATCH_FLUSH_BYTES:
            self.writer.write(self.outbox.pop())

    def _pull_held(self) -> bool:
        """Poll the held-back watches that have room again; True if one gave something."""
        pulled = False
        for watch_id, watch in list(self._held.items()):
            if watch.ended or not self._has_room(watch):
                continue
            resp = watch.gate.pull()
            if resp is None:  # caught up: its next events come through the node's polls
                self._held.pop(watch_id, None)
            else:
                self._accept(watch, resp)
                pulled = True
        return pulled

    def _start_flusher(self) -> None:
        if (self.outbox or self._held) and self._flusher is None and not self.writer.is_closing():
            self._flusher = asyncio.get_running_loop().create_task(self._flush())

    async def _flush(self) -> None:
        try:
            while not self.writer.is_closing():
                self._write_some()
                if self._pull_held():
                    self._write_some()
                if self.outbox:
                    await self.writer.drain()  # the buffer is above WATCH_FLUSH_BYTES: wait
                elif self._held:
                    await asyncio.sleep(0)  # a replay from history: one pull per watch a turn
                else:
                    return
        except ConnectionError:
            pass
        finally:
            self._flusher = None

    async def handle(self, req_id: Any, op: str, body: Any, token: str | None = None) -> None:
        try:
            result = await self.dispatch(req_id, op, body, token)
            self.send([req_id, "ok", result])
        except AuthError as exc:
            self.send([req_id, exc.code, {"message": exc.message}])
        except NodeError as exc:
            self.send([req_id, exc.code, {"message": str(exc), **exc.details}])
        except KVError as exc:
            self.send([req_id, type(exc).__name__, {
                "message": str(exc), "compact_revision": getattr(exc, "compact_revision", 0),
                **exc.details()}])
        except (ValueError, TypeError, KeyError) as exc:
            self.send([req_id, BAD_REQUEST, {"message": f"malformed {op!r} request: {exc}"}])
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - one bad request must not take the node down
            log.exception("request %r failed", op)
            self.send([req_id, "internal", {"message": f"internal error: {exc}"}])

    def caller(self, st: AuthState, token: str | None) -> str | None:
        """Who this request acts as: its token's user, else the connection's certificate's."""
        if st.enabled and not token and self.cert_user is not None:
            if self.cert_user not in st.users:
                raise PERMISSION_DENIED
            return self.cert_user
        return st.user_of(token)

    async def dispatch(self, req_id: Any, op: str, body: Any, token: str | None = None) -> Any:
        node, timeout = self.node, self.server.timeout
        if op == "authenticate":
            return await self.authenticate(body)
        st = self.node.auth.state()
        user = self.caller(st, token)
        if op in ADMIN_OPS:
            st.check_admin(user)
        if op in ("kv", "auth_kv"):
            data = body["cmd"]
            if not isinstance(data, bytes):
                raise ValueError("cmd must be bytes")
            group = int(body.get("group", 0))
            cmd = decode_command(data, node.kv.limits)
            if op == "auth_kv":  # an etcd member's change to the auth state, forwarded here
                st.check_admin(user)
                if group or not _only_auth_key(cmd.request):
                    raise PERMISSION_DENIED
                return encode_response(await node.write(data, timeout, decoded=cmd))
            if isinstance(cmd.request, SHARD_REQUESTS):  # a split's steps (shard/split.py)
                st.check_admin(user)
            else:
                st.check_request(user, cmd.request)
            request, fix = guard(cmd.request, hidden_counter(node.groups[group].replica.kv)
                                 if group in node.groups else lambda *_: 0)
            if request is not cmd.request:
                cmd = replace(cmd, request=request)
                data = encode_command(request, cmd.session)
            if isinstance(cmd.request, READS):
                resp = await node.read(cmd.request, bool(body.get("serializable")), timeout, group)
            else:
                resp = await node.write(data, timeout, decoded=cmd, group=group)
            return await in_slices(encode_response_steps(fix(resp)))
        if op == "shard_map":
            if st.enabled and user is None:
                raise PERMISSION_DENIED
            await node.read_barrier(timeout)
            kv = node.kv.mvcc.get(MAP_KEY)
            return {"map": kv.value if kv else None, "revision": kv.mod_revision if kv else 0}
        if op == "shard_map_cas":
            st.check_admin(user)
            value, expect = bytes(body["map"]), int(body["revision"])
            ShardMap.decode(value)  # (raises on a malformed map: never stored)
            txn = TxnRequest((Compare(MAP_KEY, CompareTarget.MOD, CompareResult.EQUAL, expect),),
                             (PutRequest(MAP_KEY, value),))
            resp = await node.write(b"", timeout, decoded=Command(txn))
            return {"succeeded": resp.succeeded}
        if op == "group_create":
            entry = await node.create_group(int(body["group"]), int(body.get("replicas", 3)), timeout)
            return {"group": entry.group, "members": sorted(entry.members)}
        if op == "group_remove":
            await node.remove_group(int(body["group"]), timeout)
            return None
        if op == "group_host":  # (the meta leader's) list a node as joining or gone
            entry = await node.move_group_host(int(body["group"]), int(body["node"]),
                                               bool(body["join"]), timeout)
            return {"hosts": sorted(entry.hosts)}
        if op == "group_member":  # (the group leader's) a membership change of one group
            n, change = int(body["node"]), str(body["change"])
            if change not in ("add-learner", "add", "remove"):
                raise ValueError(f"change must be add-learner, add or remove, not {change!r}")
            await node.change_membership(change, node.members.get(n), n, timeout,
                                         group=int(body["group"]))
            return node.status()["groups"].get(int(body["group"]))
        if op == "group_list":
            await node.read_barrier(timeout)
            return {gid: sorted(e.hosts) for gid, e in sorted(node.listed_groups().items())}
        if op == "watch":
            key, range_end = bytes(body["key"]), bytes(body.get("range_end", b""))
            st.check_range(user, key, range_end, write=False)
            if range_end == b"" and overlap(key, range_end) is not None:
                raise PERMISSION_DENIED  # (a range over it just never shows reserved keys)
            watch = _Watch(req_id, WatchGate(lambda: self._has_room(watch)))
            created = node.watch(
                lambda resp: self.on_watch(watch, resp), group=int(body.get("group", 0)),
                key=key, range_end=range_end,
                start_revision=int(body.get("start_revision", 0)),
                prev_kv=bool(body.get("prev_kv")),
                filters=tuple(WatchFilter(f) for f in body.get("filters", ())),
                progress_notify=bool(body.get("progress_notify")), gate=watch.gate)
            if not created.canceled and not watch.ended:  # (it may have overflowed already)
                self.watches[created.watch_id] = watch
            # The node's first push found no room: the flusher pulls the watch's history (if
            # any) after `handle` has sent this answer, at the socket's pace.
            watch.started = True
            return encode_watch(created)
        if op == "watch_cancel":
            watch_id = int(body)
            mine = self.watches.get(watch_id)
            if mine is not None:  # only this connection's own
                self._end(watch_id, mine)
                node.cancel_watch(watch_id)
                self.outbox.forget(watch_id)
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
            await node.transfer_leadership(int(body["to"]), group=int(body.get("group", 0)))
            return None
        if op == "snapshot":
            await node.read_barrier(timeout)
            return {"index": node.applied, "data": node.snapshot_bytes()}
        if op == "alarm":  # raise or clear one (etcd's Alarm ACTIVATE / DEACTIVATE)
            return await node.alarm(str(body["action"]), int(body["member"]), str(body["alarm"]),
                                    timeout)
        raise NodeError(BAD_REQUEST, f"unknown operation {op!r}")

    async def authenticate(self, body: Any) -> Any:
        name, password = body["name"], body["password"]
        if not (isinstance(name, str) and isinstance(password, str)):
            raise ValueError("name and password must be strings")
        await self.node.read_barrier(self.server.timeout)  # the latest users and passwords
        st = self.node.auth.state()
        return {"token": await asyncio.to_thread(st.login, name, password)}


def _only_auth_key(request: Any) -> bool:
    """The shape of an auth-state change: compare-and-swap of the auth key, nothing else."""
    return isinstance(request, TxnRequest) and not request.failure and all(
        c.key == AUTH_KEY and not c.range_end for c in request.compare) and all(
        isinstance(o, PutRequest) and o.key == AUTH_KEY for o in request.success)


def _cert_user(cert: Any) -> str | None:
    """The common name of a verified client certificate (etcd's --client-cert-auth)."""
    for rdn in (cert or {}).get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return None
