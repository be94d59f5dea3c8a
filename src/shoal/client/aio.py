"""The asyncio client: many endpoints, leader discovery and redirect, retries with backoff under
a deadline, exactly-once writes through sessions, and watch streams that resume after a
reconnect from the last revision they delivered.

A watch's responses wait for its consumer in a bounded inbox (`watch_queue_events`,
`watch_queue_bytes`). A consumer that falls that far behind gets `WatchCanceled` naming the
revision to resume from, as it does when the server cancels a watcher that could not keep up;
the client does not re-create such a watch by itself, since a consumer that is still slow
would only be canceled again."""

from __future__ import annotations

import asyncio
import itertools
import random
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from .. import kv
from ..auth.model import INVALID_TOKEN
from ..kv.codec import from_wire, unpack
from ..kv.requests import (
    CompactionRequest,
    Compare,
    DeleteRangeRequest,
    LeaseGrantRequest,
    LeaseKeepAliveRequest,
    LeaseLeasesRequest,
    LeaseRevokeRequest,
    LeaseTimeToLiveRequest,
    Op,
    OpenSessionRequest,
    OpenSessionResponse,
    PutRequest,
    RangeRequest,
    Request,
    Session,
    SortOrder,
    SortTarget,
    TxnRequest,
    decode_response,
    encode_command,
)
from ..kv.watch import STORE_REPLACED, WatchResponse
from ..kv.watch_queue import (
    DEFAULT_WATCH_QUEUE_BYTES,
    DEFAULT_WATCH_QUEUE_EVENTS,
    Overflow,
    WatchQueue,
    first_revision,
    slow_watcher_reason,
)
from ..wire.protocol import (
    NOT_LEADER,
    RETRYABLE,
    TIMEOUT,
    TOO_MANY_REQUESTS,
    ProtocolError,
    frame,
    read_frame,
)
from .errors import ClientError, Unavailable, WatchCanceled, compacted, error_from

RESPONSE_LIMIT = 256 * 1024 * 1024  # snapshots come back in one frame


class _WatchInbox:
    """One watch's responses that its consumer has not taken yet: bounded, and ended by the
    overflow, the watch's cancel response or the connection's failure, after what came before."""

    def __init__(self, max_events: int, max_bytes: int):
        self.queue: WatchQueue[WatchResponse] = WatchQueue(max_events, max_bytes, max_bytes)
        self.ready = asyncio.Event()
        self.end: Overflow | BaseException | None = None
        self.rid = 0  # the watch request's id on its connection

    def put(self, resp: WatchResponse, nbytes: int) -> Overflow | None:
        if resp.canceled:
            self.queue.push_final(resp.watch_id, resp, nbytes)
        else:
            overflow = self.queue.push(resp.watch_id, resp, events=len(resp.events), nbytes=nbytes,
                                       first_revision=first_revision(resp.events, resp.revision))
            if overflow is not None:
                self.queue.clear()  # what the consumer was behind on is released, not kept
                self.end = overflow
                self.ready.set()
                return overflow
        self.ready.set()
        return None

    def fail(self, error: BaseException) -> None:
        if self.end is None:
            self.end = error
        self.ready.set()

    async def get(self) -> WatchResponse | Overflow | BaseException:
        while not self.queue and self.end is None:
            self.ready.clear()
            await self.ready.wait()
        if self.queue:  # (an overflow emptied it: then the overflow comes at once)
            return self.queue.pop()
        assert self.end is not None
        return self.end


class _Conn:
    """One TCP connection to one node, with responses matched to requests by id."""

    def __init__(self, endpoint: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.endpoint, self.reader, self.writer = endpoint, reader, writer
        self.ids = itertools.count(1)
        self.pending: dict[int, asyncio.Future[tuple[str, Any]]] = {}
        self.streams: dict[int, _WatchInbox] = {}
        self.error: BaseException | None = None  # why the connection ended, once it has
        self.refusal: tuple[str, Any] | None = None  # the node's reason, if it refused us
        self.task = asyncio.create_task(self._read_loop())

    async def _read_loop(self) -> None:
        error: BaseException = Unavailable(f"connection to {self.endpoint} closed")
        try:
            while True:
                msg = await read_frame(self.reader, RESPONSE_LIMIT)
                if msg is None:
                    break
                rid, code, body = msg
                if rid is None and code != "ok":  # the node refused the connection itself
                    self.refusal = (code, body)
                    break
                if code == "event":
                    if self._event(rid, body):
                        # Let its consumer take it before the next frame, or a burst already
                        # buffered here would land in its inbox in one go, however fast the
                        # consumer is.
                        await asyncio.sleep(0)
                    continue
                fut = self.pending.pop(rid, None)
                if fut is not None and not fut.done():
                    fut.set_result((code, body))
        except (ProtocolError, ConnectionError, ValueError, kv.MalformedRequest) as exc:
            error = Unavailable(f"connection to {self.endpoint} failed: {exc}")
        finally:
            self.error = error
            for fut in self.pending.values():
                if fut.done():
                    continue
                if self.refusal is not None:  # answered as any refused request: retry or not
                    fut.set_result(self.refusal)
                else:
                    fut.set_exception(error)
            for inbox in self.streams.values():
                inbox.fail(error)
            self.writer.close()

    def _event(self, rid: Any, body: Any) -> bool:
        """Hand a watch response to its inbox; True if it went in (its consumer has news)."""
        resp = _watch_response(body)
        inbox = self.streams.get(rid)
        if inbox is None:  # a watch nobody reads any more (its iterator was dropped): stop it
            if not resp.canceled:
                self.cast("watch_cancel", resp.watch_id)
            return False
        if resp.canceled:
            del self.streams[rid]  # the server ended it: nothing follows
        if inbox.put(resp, len(body)) is not None:
            del self.streams[rid]
            self.cast("watch_cancel", resp.watch_id)
            return False
        return True

    def cast(self, op: str, body: Any) -> None:
        """A request whose answer nobody waits for (it is dropped when it arrives)."""
        if not self.writer.is_closing():
            self.writer.write(frame([next(self.ids), op, body]))

    def end_watch(self, inbox: _WatchInbox, watch_id: int | None) -> None:
        """The consumer is gone: forget the watch here and, if it is still live, there too."""
        if self.streams.get(inbox.rid) is inbox:
            del self.streams[inbox.rid]
            if watch_id is not None and self.alive:
                self.cast("watch_cancel", watch_id)

    @property
    def alive(self) -> bool:
        return not self.task.done()

    async def call(self, op: str, body: Any, stream: _WatchInbox | None = None,
                   token: str | None = None) -> tuple[str, Any]:
        if self.refusal is not None:  # it ended before we could ask: the node said why
            return self.refusal
        if self.error is not None:
            raise self.error
        rid = next(self.ids)
        fut: asyncio.Future[tuple[str, Any]] = asyncio.get_running_loop().create_future()
        self.pending[rid] = fut
        if stream is not None:
            stream.rid = rid
            self.streams[rid] = stream
        try:
            self.writer.write(frame([rid, op, body] if token is None else [rid, op, body, token]))
            await self.writer.drain()
        except (ConnectionError, OSError) as exc:
            self.pending.pop(rid, None)
            self.streams.pop(rid, None)
            raise Unavailable(f"connection to {self.endpoint} failed: {exc}") from None
        return await fut

    def close(self) -> None:
        self.task.cancel()
        self.writer.close()


@dataclass
class _SessionSlot:
    client_id: int
    seq: int = 0


class Client:
    """`async with Client(["127.0.0.1:2379", ...]) as c: await c.put(b"k", b"v")`

    With auth on, give `user` and `password` (the client authenticates when it first needs to
    and again when its token expires) or a `token`. With TLS on the cluster, give `tls`
    (shoal.client.tls.client_context): a client certificate in it names the user."""

    def __init__(self, endpoints: list[str] | str, timeout: float = 10.0, connect_timeout: float = 2.0,
                 *, watch_queue_events: int = DEFAULT_WATCH_QUEUE_EVENTS,
                 watch_queue_bytes: int = DEFAULT_WATCH_QUEUE_BYTES,
                 user: str | None = None, password: str | None = None, token: str | None = None,
                 tls: ssl.SSLContext | None = None):
        self.endpoints = [endpoints] if isinstance(endpoints, str) else list(endpoints)
        if not self.endpoints:
            raise ValueError("a client needs at least one endpoint")
        if watch_queue_events <= 0 or watch_queue_bytes <= 0:
            raise ValueError("watch_queue_events and watch_queue_bytes must be positive")
        self.timeout, self.connect_timeout = timeout, connect_timeout
        self.watch_queue_events, self.watch_queue_bytes = watch_queue_events, watch_queue_bytes
        self._conns: dict[str, _Conn] = {}
        self._connecting: dict[str, asyncio.Future[_Conn]] = {}
        self._leader: str | None = None
        self._next = 0
        self._sessions: list[_SessionSlot] = []  # idle sessions, one per concurrent write
        self._rng = random.Random()
        self.group_id = 0  # the consensus group this client's key-value calls go to
        self._owns_conns = True
        if (user is None) != (password is None):
            raise ValueError("give both user and password, or neither")
        self._credentials = (user, password) if user is not None and password is not None else None
        self.token, self.tls = token, tls

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def group(self, group_id: int) -> Client:
        """A client for the key-value store of group `group_id`, sharing this client's
        connections (one per node for every group); it has its own leader and sessions."""
        if group_id < 0:
            raise ValueError(f"group ids are non-negative, not {group_id}")
        view = Client(self.endpoints, self.timeout, self.connect_timeout,
                      watch_queue_events=self.watch_queue_events,
                      watch_queue_bytes=self.watch_queue_bytes, token=self.token, tls=self.tls)
        view._credentials = self._credentials
        view.group_id, view._owns_conns = group_id, False
        view._conns, view._connecting = self._conns, self._connecting
        return view

    async def create_group(self, group_id: int, replicas: int = 3) -> dict[str, Any]:
        return await self.call("group_create", {"group": group_id, "replicas": replicas})  # type: ignore[no-any-return]

    async def remove_group(self, group_id: int) -> None:
        await self.call("group_remove", {"group": group_id})

    async def groups(self) -> dict[int, list[int]]:
        """Every group the directory lists, with its members."""
        return {int(g): m for g, m in (await self.call("group_list", {})).items()}

    async def close(self) -> None:
        if not self._owns_conns:
            return  # the client it came from closes the shared connections
        conns = list(self._conns.values())
        self._conns.clear()
        for c in conns:
            c.close()
        await asyncio.gather(*(c.task for c in conns), return_exceptions=True)

    # ------------------------------------------------------------------ plumbing
    async def _conn(self, endpoint: str) -> _Conn:
        c = self._conns.get(endpoint)
        if c is not None and c.alive:
            return c
        # Calls that start together share one connection attempt instead of racing.
        pending = self._connecting.get(endpoint)
        if pending is None:
            pending = asyncio.ensure_future(self._connect(endpoint))
            self._connecting[endpoint] = pending
            pending.add_done_callback(lambda _: self._connecting.pop(endpoint, None))
        return await asyncio.shield(pending)

    async def _connect(self, endpoint: str) -> _Conn:
        host, _, port = endpoint.rpartition(":")
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(host, int(port), limit=1 << 20, ssl=self.tls),
                self.connect_timeout)
        except (OSError, TimeoutError) as exc:
            raise Unavailable(f"cannot connect to {endpoint}: {exc}") from None
        c = _Conn(endpoint, reader, writer)
        self._conns[endpoint] = c
        return c

    def _pick(self, leader: bool) -> str:
        if leader and self._leader:
            return self._leader
        ep = self.endpoints[self._next % len(self.endpoints)]
        self._next += 1
        return ep

    async def authenticate(self) -> str:
        """A fresh token for this client's user, from whichever node answers."""
        if self._credentials is None:
            raise ValueError("this client has no user and password to authenticate with")
        user, password = self._credentials
        answer = await self.call("authenticate", {"name": user, "password": password}, token="")
        self.token = answer["token"]
        return self.token  # type: ignore[no-any-return]

    async def call(self, op: str, body: Any, *, leader: bool = True, retry: bool = True,
                   deadline: float | None = None, token: str | None = None) -> Any:
        """Send one request, following redirects and retrying what is safe to retry until
        `deadline` (seconds from now, default the client's timeout). `token`: act as its user
        instead of this client's."""
        loop = asyncio.get_running_loop()
        end = loop.time() + (deadline if deadline is not None else self.timeout)
        delay = 0.02
        last: Exception = Unavailable("no endpoint answered")
        reauthenticated = token is not None  # (a caller's token is the caller's to renew)
        if token is None and self.token is None and self._credentials is not None:
            await self.authenticate()
        while True:
            ep = self._pick(leader)
            try:
                conn = await self._conn(ep)
                code, body_out = await asyncio.wait_for(
                    conn.call(op, body, token=(token if token is not None else self.token) or None),
                    max(0.05, end - loop.time()))
                if code == "ok":
                    return body_out
                if code == INVALID_TOKEN.code and not reauthenticated and self._credentials:
                    reauthenticated = True  # expired, or the cluster's secret changed
                    await self.authenticate()
                    continue
                err = error_from(code, body_out)
                if code == NOT_LEADER and body_out.get("endpoint"):
                    self._leader = body_out["endpoint"]
                    if body_out["endpoint"] not in self.endpoints:
                        self.endpoints.append(body_out["endpoint"])
                    last = err
                    if retry and loop.time() < end:
                        continue
                if not retry or (code not in RETRYABLE and code != TIMEOUT):
                    raise err
                if code != TOO_MANY_REQUESTS:
                    self._leader = None  # that node could not serve us: ask around again
                last = err
            except (Unavailable, TimeoutError) as exc:
                last = exc if isinstance(exc, Unavailable) else Unavailable(f"{ep} did not answer in time")
                if self._leader == ep:
                    self._leader = None
                if not retry:
                    raise last from None
            if loop.time() + delay >= end:
                raise last
            await asyncio.sleep(delay * (0.5 + self._rng.random()))
            delay = min(delay * 2, 0.1)  # a new leader is usually elected within a second

    def _kv_body(self, cmd: bytes, **kw: Any) -> dict[str, Any]:
        return {"cmd": cmd, **kw, **({"group": self.group_id} if self.group_id else {})}

    async def _read(self, request: Request, serializable: bool = False) -> Any:
        body = self._kv_body(encode_command(request), serializable=serializable)
        return decode_response(await self.call("kv", body, leader=not serializable))

    async def _write(self, request: Request) -> Any:
        """Exactly once: the request carries (session, seq), and every retry reuses them, so a
        write whose acknowledgement was lost is answered from the dedup table, not re-applied."""
        slot = self._sessions.pop() if self._sessions else await self._open_session()
        slot.seq += 1
        cmd = encode_command(request, Session(slot.client_id, slot.seq))
        expired = False
        try:
            return decode_response(await self.call("kv", self._kv_body(cmd)))
        except kv.ErrSessionExpired:
            expired = True  # the cluster forgot this session: never use it again
            raise
        finally:
            if not expired:  # any other outcome (a store error too) leaves the session usable
                self._sessions.append(slot)

    async def _open_session(self) -> _SessionSlot:
        resp = decode_response(await self.call("kv", self._kv_body(encode_command(OpenSessionRequest()))))
        assert isinstance(resp, OpenSessionResponse), f"opening a session answered {resp!r:.80}"
        return _SessionSlot(resp.client_id)

    # ------------------------------------------------------------------ key-value
    async def put(self, key: bytes, value: bytes, *, lease: int = 0, prev_kv: bool = False) -> Any:
        return await self._write(PutRequest(key, value, lease=lease, prev_kv=prev_kv))

    async def get(self, key: bytes, *, range_end: bytes = b"", prefix: bool = False,
                  revision: int = 0, limit: int = 0, serializable: bool = False,
                  keys_only: bool = False, count_only: bool = False,
                  sort_order: SortOrder = SortOrder.NONE,
                  sort_target: SortTarget = SortTarget.KEY, max_create_revision: int = 0) -> Any:
        if prefix:
            range_end = kv.prefix_end(key)
        return await self._read(RangeRequest(
            key, range_end, limit, revision, sort_order, sort_target, keys_only, count_only,
            max_create_revision=max_create_revision), serializable)

    async def get_value(self, key: bytes) -> bytes | None:
        resp = await self.get(key)
        return resp.kvs[0].value if resp.kvs else None

    async def delete(self, key: bytes, *, range_end: bytes = b"", prefix: bool = False,
                     prev_kv: bool = False) -> Any:
        if prefix:
            range_end = kv.prefix_end(key)
        return await self._write(DeleteRangeRequest(key, range_end, prev_kv))

    async def txn(self, compare: list[Compare], success: list[Op], failure: list[Op] = ()) -> Any:  # type: ignore[assignment]
        return await self._write(TxnRequest(tuple(compare), tuple(success), tuple(failure)))

    async def compact(self, revision: int) -> Any:
        return await self._write(CompactionRequest(revision))

    # ------------------------------------------------------------------ leases
    async def lease_grant(self, ttl: int, id: int = 0) -> Any:
        return await self._write(LeaseGrantRequest(ttl, id))

    async def lease_revoke(self, id: int) -> Any:
        return await self._write(LeaseRevokeRequest(id))

    async def lease_keepalive(self, id: int) -> Any:
        return await self._write(LeaseKeepAliveRequest(id))

    async def lease_ttl(self, id: int, keys: bool = False) -> Any:
        return await self._read(LeaseTimeToLiveRequest(id, keys=keys))

    async def leases(self) -> Any:
        return await self._read(LeaseLeasesRequest())

    def keep_alive(self, lease_id: int, ttl: int) -> asyncio.Task[None]:
        """Refresh a lease every ttl/3 seconds until the task is cancelled."""
        async def loop() -> None:
            while True:
                await asyncio.sleep(max(ttl / 3, 0.1))
                await self.lease_keepalive(lease_id)

        return asyncio.create_task(loop())

    # ------------------------------------------------------------------ watches
    async def watch(self, key: bytes, *, range_end: bytes = b"", prefix: bool = False,
                    start_revision: int = 0, prev_kv: bool = False,
                    progress_notify: bool = False) -> AsyncIterator[WatchResponse]:
        """Yield watch responses until the watch ends. After a lost connection (or a node
        replacing its store with a snapshot) the watch is re-created on any live node from the
        revision after the last one delivered, so no event is missed or repeated.

        It ends with ErrCompacted if history it needs was compacted, and with WatchCanceled
        (`.reason`, `.resume_revision`) if its consumer could not keep up: more than
        `watch_queue_events` events or `watch_queue_bytes` bytes waited here, or the server's
        own bounds for the connection were passed. Re-create it from `resume_revision` to carry
        on without a gap. Leaving the loop (break, cancel, aclose) cancels it on the server."""
        if prefix:
            range_end = kv.prefix_end(key)
        next_rev = start_revision
        while True:
            inbox = _WatchInbox(self.watch_queue_events, self.watch_queue_bytes)
            body = {"key": key, "range_end": range_end, "start_revision": next_rev,
                    "prev_kv": prev_kv, "progress_notify": progress_notify}
            conn: _Conn | None = None
            try:
                conn = await self._conn(self._pick(leader=False))
                code, created = await asyncio.wait_for(conn.call("watch", body, stream=inbox), self.timeout)
            except (Unavailable, TimeoutError):
                if conn is not None:
                    conn.end_watch(inbox, None)
                await asyncio.sleep(0.1)
                continue
            except BaseException:
                if conn is not None:
                    conn.end_watch(inbox, None)
                raise
            if code != "ok":
                conn.end_watch(inbox, None)
                raise error_from(code, created)
            first = _watch_response(created)
            if first.canceled:
                conn.end_watch(inbox, None)
                raise compacted(first.compact_revision) if first.compact_revision else ClientError(first.cancel_reason)
            try:
                while True:
                    item = await inbox.get()
                    if isinstance(item, Overflow):
                        raise WatchCanceled(
                            slow_watcher_reason(item.events, item.bytes, next_rev) + " (in the client)",
                            next_rev)
                    if isinstance(item, BaseException):
                        break  # reconnect and resume
                    resp = item
                    if resp.canceled:
                        if resp.compact_revision:
                            raise compacted(resp.compact_revision)
                        if resp.cancel_reason == STORE_REPLACED:
                            break  # nothing to do with this consumer's pace: resume
                        raise WatchCanceled(resp.cancel_reason or "canceled by the server", next_rev)
                    if resp.events:
                        next_rev = resp.events[-1].kv.mod_revision + 1
                    elif resp.revision:
                        next_rev = max(next_rev, resp.revision + 1)
                    yield resp
            finally:
                conn.end_watch(inbox, first.watch_id)

    # ------------------------------------------------------------------ cluster
    async def status(self, endpoint: str | None = None) -> dict[str, Any]:
        if endpoint is not None:
            code, body = await (await self._conn(endpoint)).call("status", None)
            if code != "ok":
                raise error_from(code, body)
            return body  # type: ignore[no-any-return]
        return await self.call("status", None, leader=False)  # type: ignore[no-any-return]

    async def member_add(self, id: int, peer: str, client: str, learner: bool = False) -> Any:
        return await self.call("member_add", {"id": id, "peer": peer, "client": client, "learner": learner})

    async def member_remove(self, id: int) -> Any:
        return await self.call("member_remove", {"id": id})

    async def member_promote(self, id: int) -> Any:
        return await self.call("member_promote", {"id": id})

    async def transfer_leadership(self, to: int) -> None:
        await self.call("transfer", {"to": to})

    async def snapshot(self) -> tuple[int, bytes]:
        body = await self.call("snapshot", None)
        return body["index"], body["data"]


def _watch_response(data: bytes) -> WatchResponse:
    resp: WatchResponse = from_wire(unpack(data, "watch response"), WatchResponse, "WatchResponse")
    return resp
