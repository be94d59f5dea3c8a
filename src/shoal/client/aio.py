"""The asyncio client: many endpoints, leader discovery and redirect, retries with backoff under
a deadline, exactly-once writes through sessions, and watch streams that resume after a
reconnect from the last revision they delivered.

A watch's responses wait for its consumer in a bounded inbox (`watch_queue_events`,
`watch_queue_bytes`). A consumer that falls that far behind gets `WatchCanceled` naming the
revision to resume from, as it does when the server cancels a watcher that could not keep up;
the client does not re-create such a watch by itself, since a consumer that is still slow
would only be canceled again.

A connection counts once the node has answered a first request within `connect_timeout`, so
a node that is down, stopped, or another protocol's port (HTTP, gRPC, TLS) is told apart from
a slow answer: the call moves on to the next endpoint, and when none can be reached it fails
at once, naming every endpoint with its own reason."""

from __future__ import annotations

import asyncio
import itertools
import random
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit

import msgpack

from .. import kv
from ..auth.model import INVALID_TOKEN
from ..kv.codec import from_wire, unpack
from ..kv.requests import (
    CompactionRequest,
    CompactionResponse,
    Compare,
    DeleteRangeRequest,
    DeleteRangeResponse,
    LeaseGrantRequest,
    LeaseGrantResponse,
    LeaseKeepAliveRequest,
    LeaseKeepAliveResponse,
    LeaseLeasesRequest,
    LeaseLeasesResponse,
    LeaseRevokeRequest,
    LeaseRevokeResponse,
    LeaseTimeToLiveRequest,
    LeaseTimeToLiveResponse,
    Op,
    OpenSessionRequest,
    OpenSessionResponse,
    PutRequest,
    PutResponse,
    RangeRequest,
    RangeResponse,
    Request,
    Response,
    Session,
    SortOrder,
    SortTarget,
    TxnRequest,
    TxnResponse,
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
from ..txn import coordinator as _txn  # (a module: either may be imported first)
from ..wire.protocol import (
    HEADER,
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
R = TypeVar("R", bound=Response)
T = TypeVar("T")


def parse_endpoint(endpoint: str) -> tuple[str, int, bool]:
    """(host, port, https) of `host:port`, `http://host:port` or `https://host:port`."""
    text = endpoint.strip().rstrip("/")
    parts = urlsplit(text if "://" in text else "//" + text)
    if parts.scheme not in ("", "http", "https") or parts.path:
        raise ValueError(f"endpoint {endpoint!r}: write host:port, http://host:port or "
                         "https://host:port")
    try:
        port = parts.port
    except ValueError:
        port = None
    if not parts.hostname or port is None:
        raise ValueError(f"endpoint {endpoint!r} has no port: clients use a node's client port "
                         "(127.0.0.1:23791 for `shoal cluster up`)")
    return parts.hostname, port, parts.scheme == "https"


def _hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def wrong_port_hint(head: bytes, tls: bool) -> str | None:
    """What is probably listening, if the first bytes a server sent are not the start of a
    Shoal response (a length, then a msgpack array); None if they are."""
    if len(head) > HEADER and (0x90 <= head[HEADER] <= 0x9F or head[HEADER] in (0xDC, 0xDD)):
        return None
    if head.startswith(b"HTTP/"):
        return ("that looks like an HTTP port (a node's /health and /metrics port?); "
                "clients use the node's client port")
    if len(head) >= HEADER + 1 and head[3] == 0x04 and head[4] in (0, 1):  # an HTTP/2 SETTINGS frame
        return "that looks like etcd's gRPC port (HTTP/2); clients use a Shoal node's client port"
    if head[:1] in (b"\x15", b"\x16") and head[1:2] == b"\x03":  # a TLS alert or handshake
        return ("that port speaks TLS: give the client a TLS context "
                "(shoal.client.tls.client_context)" if not tls else "it answered with a TLS record")
    if not head:
        return None  # a plain close: the caller says what it was waiting for
    return f"that is not a Shoal client port (it sent {head[:8]!r})"


class _DialFailed(Unavailable):
    """A connection attempt that ended before the node answered: nothing was asked of it."""

    def __init__(self, endpoint: str, reason: str, wrong_port: bool = False):
        super().__init__(f"cannot connect to {endpoint}: {reason}")
        self.reason, self.wrong_port = reason, wrong_port


def _os_reason(exc: OSError) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, socket.gaierror):
        return f"unknown host ({exc.strerror})"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS: {exc.verify_message}"
    if isinstance(exc, ssl.SSLError):
        return f"TLS: {exc.reason or exc}"
    return exc.strerror or str(exc) or type(exc).__name__


class _WrongPort(ProtocolError):
    """The first bytes from the other end are not a Shoal node's: the message says whose."""


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

    def __init__(self, endpoint: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 tls: bool = False):
        self.endpoint, self.reader, self.writer, self.tls = endpoint, reader, writer, tls
        self.ids = itertools.count(1)
        self.pending: dict[int, asyncio.Future[tuple[str, Any]]] = {}
        self.streams: dict[int, _WatchInbox] = {}
        self.error: BaseException | None = None  # why the connection ended, once it has
        self.refusal: tuple[str, Any] | None = None  # the node's reason, if it refused us
        self.answered = False  # a first frame came, and it was a Shoal node's
        self.task = asyncio.create_task(self._read_loop())

    async def _read_loop(self) -> None:
        error: BaseException = Unavailable(f"connection to {self.endpoint} closed")
        try:
            while True:
                msg = await (read_frame(self.reader, RESPONSE_LIMIT) if self.answered
                             else self._first_frame())
                self.answered = True
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
            error = Unavailable(f"connection to {self.endpoint} failed: {exc}") if self.answered \
                else _DialFailed(self.endpoint, str(exc), wrong_port=isinstance(exc, _WrongPort))
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

    async def _first_frame(self) -> Any:
        """The first frame, read as read_frame does once its first bytes are known to come from
        a Shoal node: from anything else (an HTTP or gRPC port, TLS) they would be taken for a
        huge length, and the answer would be a wait and a riddle instead of a hint."""
        try:
            head = await self.reader.readexactly(HEADER + 1)
        except asyncio.IncompleteReadError as exc:
            head = exc.partial
        hint = wrong_port_hint(head, self.tls)
        if hint is not None:
            raise _WrongPort(hint)
        if not head:
            raise ProtocolError("closed the connection without answering" + (
                "" if self.tls else "; if the cluster uses TLS, give the client a TLS context "
                "(shoal.client.tls.client_context)"))
        if len(head) <= HEADER:
            raise ProtocolError("connection closed in the middle of a frame header")
        size = int.from_bytes(head[:HEADER], "big")
        if size > RESPONSE_LIMIT:
            raise _WrongPort(f"that is not a Shoal client port (a first frame of {size} bytes)")
        try:
            payload = head[HEADER:] + await self.reader.readexactly(size - 1)
        except asyncio.IncompleteReadError:
            raise ProtocolError("connection closed in the middle of a frame") from None
        try:
            return msgpack.unpackb(payload, raw=False, strict_map_key=False)
        except (ValueError, TypeError, msgpack.UnpackException) as exc:
            raise ProtocolError(f"frame is not valid msgpack: {exc}") from None

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


class _Tried:
    """What one call learned of each endpoint it tried, for the error that ends it."""

    def __init__(self) -> None:
        self.why: dict[str, str] = {}  # endpoint -> its latest reason, in the order first tried
        self.undialled: set[str] = set()  # endpoints whose latest connection attempt failed
        self.wrong: set[str] = set()  # endpoints that speak another protocol: not asked again

    def failed(self, endpoint: str, reason: str) -> None:
        self.why[endpoint] = reason

    def dial_failed(self, exc: _DialFailed, endpoint: str) -> None:
        self.failed(endpoint, exc.reason)
        self.undialled.add(endpoint)
        if exc.wrong_port:
            self.wrong.add(endpoint)

    def none_reachable(self, endpoints: list[str]) -> bool:
        return self.undialled.issuperset(endpoints)

    def unavailable(self, lead: str = "no node answered") -> Unavailable:
        listed = ", ".join(f"{ep} ({why})" for ep, why in self.why.items())
        return Unavailable(f"{lead}: {listed}" if listed else lead, dict(self.why))

    def gave_up(self, last: Exception | None, timeout: float) -> Exception:
        """The error for a call out of time: the last refusal of a node that answered (its
        type and code kept, every endpoint's reason added), else that no node answered."""
        if last is None:
            return self.unavailable(f"no node answered within {timeout:g} s")
        if len(self.why) > 1 and last.args:
            listed = ", ".join(f"{ep} ({why})" for ep, why in self.why.items())
            last.args = (f"{last.args[0]}; tried {listed}", *last.args[1:])
        return last


class Client:
    """The asyncio client: `async with Client(["127.0.0.1:23791", ...]) as c: await c.put(b"k", b"v")`

    `endpoints`: the nodes' client ports, as `host:port`, `http://host:port` or
    `https://host:port` (TLS: with `tls` if given, else the system's trusted CAs). Any one
    node is enough; the client finds the leader itself and moves to another node when one fails.

    `timeout` bounds every call, retries included, unless the call gives its own `timeout=`;
    `connect_timeout` bounds every connection attempt (a node that is down, or a port that is
    not a node's client port, costs about that, not the whole timeout).

    With auth on, give `user` and `password` (the client authenticates when it first needs to
    and again when its token expires) or a `token`. With TLS on the cluster, give `tls`
    (shoal.client.tls.client_context): a client certificate in it names the user."""

    def __init__(self, endpoints: list[str] | str, timeout: float = 10.0, connect_timeout: float = 2.0,
                 *, watch_queue_events: int = DEFAULT_WATCH_QUEUE_EVENTS,
                 watch_queue_bytes: int = DEFAULT_WATCH_QUEUE_BYTES,
                 user: str | None = None, password: str | None = None, token: str | None = None,
                 tls: ssl.SSLContext | None = None):
        given = [endpoints] if isinstance(endpoints, str) else list(endpoints)
        if not given:
            raise ValueError("a client needs at least one endpoint")
        self._https: set[str] = set()  # endpoints written https://
        self.endpoints: list[str] = []  # as host:port
        for e in given:
            host, port, https = parse_endpoint(e)
            ep = _hostport(host, port)
            if ep not in self.endpoints:
                self.endpoints.append(ep)
            if https:
                self._https.add(ep)
        if watch_queue_events <= 0 or watch_queue_bytes <= 0:
            raise ValueError("watch_queue_events and watch_queue_bytes must be positive")
        if timeout <= 0 or connect_timeout <= 0:
            raise ValueError("timeout and connect_timeout must be positive")
        self.timeout, self.connect_timeout = timeout, connect_timeout
        self.watch_queue_events, self.watch_queue_bytes = watch_queue_events, watch_queue_bytes
        self._conns: dict[str, _Conn] = {}
        self._connecting: dict[str, asyncio.Future[_Conn]] = {}
        self._leader: str | None = None
        self._next = 0
        self._sessions: list[_SessionSlot] = []  # idle sessions, one per concurrent write
        self._rng = random.Random()
        self.group_id = 0  # the consensus group this client's key-value calls go to
        self._sharded: _txn.TxnClient | None = None
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
        view._credentials, view._https = self._credentials, self._https
        view.group_id, view._owns_conns = group_id, False
        view._conns, view._connecting = self._conns, self._connecting
        return view

    async def create_group(self, group_id: int, replicas: int = 3, *,
                           timeout: float | None = None) -> dict[str, Any]:
        """Create consensus group `group_id` on `replicas` nodes; returns
        `{"group": id, "members": [node ids]}`. Needs the root role when auth is on."""
        return await self.call("group_create", {"group": group_id, "replicas": replicas},  # type: ignore[no-any-return]
                               timeout=timeout)

    async def remove_group(self, group_id: int, *, timeout: float | None = None) -> None:
        """Remove consensus group `group_id` and its data on every node."""
        await self.call("group_remove", {"group": group_id}, timeout=timeout)

    async def groups(self, *, timeout: float | None = None) -> dict[int, list[int]]:
        """Every group the directory lists, with its members."""
        listed = await self.call("group_list", {}, timeout=timeout)
        return {int(g): m for g, m in listed.items()}

    async def close(self) -> None:
        """Close every connection (a client made by group() leaves that to its parent)."""
        if self._sharded is not None:
            await self._sharded.close()
        if not self._owns_conns:
            return  # the client it came from closes the shared connections
        conns = list(self._conns.values())
        self._conns.clear()
        for c in conns:
            c.close()
        await asyncio.gather(*(c.task for c in conns), return_exceptions=True)

    def lock(self, name: str, ttl: int = 10) -> Lock:
        """A distributed lock: `async with client.lock("jobs"): ...` (see recipes.Lock)."""
        return Lock(self, name, ttl)

    def election(self, name: str, ttl: int = 10) -> Election:
        """A leader election among every client that uses `name` (see recipes.Election)."""
        return Election(self, name, ttl)

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
        """A connection that has been answered once, within `connect_timeout`: a port that
        accepts but never answers (a stopped process) or answers in another protocol fails
        here, and the call moves on to another node."""
        if endpoint in self.endpoints:
            host, port = parse_endpoint(endpoint)[:2]
        else:  # a leader's address from a redirect, as the node wrote it: host:port
            host, _, p = endpoint.rpartition(":")
            port = int(p)
        tls = self.tls or (ssl.create_default_context() if endpoint in self._https else None)
        conn: _Conn | None = None
        try:
            async with asyncio.timeout(self.connect_timeout):
                reader, writer = await asyncio.open_connection(host, port, limit=1 << 20, ssl=tls)
                conn = _Conn(endpoint, reader, writer, tls=tls is not None)
                await conn.call("status", None)  # any answer (a refusal too) is a Shoal node's
        except BaseException as exc:
            if conn is not None:
                conn.close()
            if isinstance(exc, TimeoutError):
                raise _DialFailed(endpoint, ("connected, but " if conn else "") +
                                  f"no answer within {self.connect_timeout:g} s" + (
                                      "; if that port is not TLS, drop https:// or the TLS context"
                                      if tls is not None and conn is None else "")) from None
            if isinstance(exc, OSError):
                raise _DialFailed(endpoint, _os_reason(exc)) from None
            if isinstance(exc, Unavailable) and not isinstance(exc, _DialFailed):
                raise _DialFailed(endpoint, str(exc)) from None
            raise
        self._conns[endpoint] = conn
        return conn

    def _pick(self, leader: bool, avoid: set[str] | frozenset[str] = frozenset()) -> str:
        if leader and self._leader and self._leader not in avoid:
            return self._leader
        for _ in range(len(self.endpoints)):
            ep = self.endpoints[self._next % len(self.endpoints)]
            self._next += 1
            if ep not in avoid:
                return ep
        return ep

    async def authenticate(self, *, timeout: float | None = None) -> str:
        """A fresh token for this client's user, from whichever node answers."""
        if self._credentials is None:
            raise ValueError("this client has no user and password to authenticate with")
        user, password = self._credentials
        answer = await self.call("authenticate", {"name": user, "password": password}, token="",
                                 timeout=timeout)
        self.token = answer["token"]
        return self.token  # type: ignore[no-any-return]

    async def call(self, op: str, body: Any, *, leader: bool = True, retry: bool = True,
                   timeout: float | None = None, token: str | None = None) -> Any:
        """Send one request of Shoal's client protocol and return the body of its answer,
        following redirects and retrying what is safe to retry for `timeout` seconds (default
        the client's). `token`: act as its user instead of this client's.

        It raises the node's error for a request that failed there, and Unavailable, naming
        every endpoint tried with its own reason, when no node could serve it: at once if no
        node can be reached at all, else when the time is up. The typed methods (get, put,
        txn, ...) are built on this one."""
        loop = asyncio.get_running_loop()
        budget = timeout if timeout is not None else self.timeout
        end = loop.time() + budget
        delay = 0.02
        tried = _Tried()
        last: Exception | None = None  # the latest retryable refusal from a node that answered
        reauthenticated = token is not None  # (a caller's token is the caller's to renew)
        if token is None and self.token is None and self._credentials is not None:
            await self.authenticate(timeout=budget)
        while True:
            ep = self._pick(leader, tried.wrong)
            wait = 0.0
            try:
                conn = await self._conn(ep)
                tried.undialled.discard(ep)
                wait = max(0.05, end - loop.time())
                code, body_out = await asyncio.wait_for(
                    conn.call(op, body, token=(token if token is not None else self.token) or None),
                    wait)
                if code == "ok":
                    return body_out
                if code == INVALID_TOKEN.code and not reauthenticated and self._credentials:
                    reauthenticated = True  # expired, or the cluster's secret changed
                    await self.authenticate(timeout=max(0.05, end - loop.time()))
                    continue
                err = error_from(code, body_out)
                tried.failed(ep, str(err))
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
            except _DialFailed as exc:
                tried.dial_failed(exc, ep)
                if self._leader == ep:
                    self._leader = None
                if not retry or tried.none_reachable(self.endpoints):
                    raise tried.unavailable() from None
            except (Unavailable, TimeoutError) as exc:
                reason = str(exc) if isinstance(exc, Unavailable) else \
                    f"no answer within {wait:.1f} s"
                tried.failed(ep, reason)
                last = None  # (the last word is this one's: no answer)
                if self._leader == ep:
                    self._leader = None
                if not retry:
                    raise tried.unavailable() from None
            if loop.time() + delay >= end:
                raise tried.gave_up(last, budget)
            await asyncio.sleep(delay * (0.5 + self._rng.random()))
            delay = min(delay * 2, 0.1)  # a new leader is usually elected within a second

    def _kv_body(self, cmd: bytes, **kw: Any) -> dict[str, Any]:
        return {"cmd": cmd, **kw, **({"group": self.group_id} if self.group_id else {})}

    async def _read(self, request: Request, expect: type[R], serializable: bool = False,
                    timeout: float | None = None) -> R:
        body = self._kv_body(encode_command(request), serializable=serializable)
        return _expect(decode_response(await self.call("kv", body, leader=not serializable,
                                                       timeout=timeout)), expect)

    async def _write(self, request: Request, expect: type[R], timeout: float | None = None) -> R:
        """Exactly once: the request carries (session, seq), and every retry reuses them, so a
        write whose acknowledgement was lost is answered from the dedup table, not re-applied."""
        slot = self._sessions.pop() if self._sessions else await self._open_session(timeout)
        slot.seq += 1
        cmd = encode_command(request, Session(slot.client_id, slot.seq))
        expired = False
        try:
            return _expect(decode_response(await self.call("kv", self._kv_body(cmd), timeout=timeout)),
                           expect)
        except kv.ErrSessionExpired:
            expired = True  # the cluster forgot this session: never use it again
            raise
        finally:
            if not expired:  # any other outcome (a store error too) leaves the session usable
                self._sessions.append(slot)

    async def write_request(self, request: Request, expect: type[R],
                            timeout: float | None = None) -> R:
        """Propose any store request (kv/requests.py) to this client's group, exactly once,
        and return its response, checked to be an `expect`. The typed methods cover the usual
        ones; transactions (shoal.txn) send their prepares and resolves through this."""
        return await self._write(request, expect, timeout)

    def sharded(self) -> _txn.TxnClient:
        """Key-value calls routed by the shard map, and transactions across shards
        (shoal.txn.coordinator.TxnClient); one per client, made on first use."""
        if self._sharded is None:
            self._sharded = _txn.TxnClient(self)
        return self._sharded

    def transaction(self) -> _txn.Transaction:
        """`async with client.transaction() as tx: v = await tx.get(k); tx.put(k2, v)`: a
        strictly serializable transaction over keys in any shards, committed when the block
        ends (TxnAborted if it conflicted: `run_transaction` retries)."""
        return self.sharded().transaction()

    async def run_transaction(self, body: Callable[[_txn.Transaction], Awaitable[T]],
                              attempts: int = 20) -> T:
        """`await client.run_transaction(fn)`: run `fn(tx)` and commit, retrying on TxnAborted."""
        return await self.sharded().run(body, attempts)

    async def _open_session(self, timeout: float | None = None) -> _SessionSlot:
        resp = decode_response(await self.call(
            "kv", self._kv_body(encode_command(OpenSessionRequest())), timeout=timeout))
        return _SessionSlot(_expect(resp, OpenSessionResponse).client_id)

    # ------------------------------------------------------------------ key-value
    async def put(self, key: bytes, value: bytes, *, lease: int = 0, prev_kv: bool = False,
                  timeout: float | None = None) -> PutResponse:
        """Set `key` to `value`, attached to `lease` if not 0 (the key goes when the lease
        does). `prev_kv`: the answer carries the key's previous value. Applied exactly once,
        however many times it is retried."""
        return await self._write(PutRequest(key, value, lease=lease, prev_kv=prev_kv), PutResponse,
                                 timeout)

    async def get(self, key: bytes, *, range_end: bytes = b"", prefix: bool = False,
                  revision: int = 0, limit: int = 0, serializable: bool = False,
                  keys_only: bool = False, count_only: bool = False,
                  sort_order: SortOrder = SortOrder.NONE,
                  sort_target: SortTarget = SortTarget.KEY, max_create_revision: int = 0,
                  timeout: float | None = None) -> RangeResponse:
        """The key `key`, or every key in [key, range_end), or every key starting with `key`
        (`prefix`). `.kvs` holds them (KeyValue: key, value, version, create_revision,
        mod_revision, lease), `.count` how many there are, `.header.revision` the store's
        revision. `revision`: as of that revision; `limit`: at most that many (`.more` says
        if there were more); `serializable`: answered by any node from its own copy, which
        may be behind (etcd's serializable read); by default reads are linearizable."""
        if prefix:
            range_end = kv.prefix_end(key)
        return await self._read(RangeRequest(
            key, range_end, limit, revision, sort_order, sort_target, keys_only, count_only,
            max_create_revision=max_create_revision), RangeResponse, serializable, timeout)

    async def get_value(self, key: bytes, *, timeout: float | None = None) -> bytes | None:
        """The value of `key`, or None if it does not exist."""
        resp = await self.get(key, timeout=timeout)
        return resp.kvs[0].value if resp.kvs else None

    async def delete(self, key: bytes, *, range_end: bytes = b"", prefix: bool = False,
                     prev_kv: bool = False, timeout: float | None = None) -> DeleteRangeResponse:
        """Delete `key` (or [key, range_end), or every key starting with `key`); `.deleted`
        says how many went, `.prev_kvs` holds them with `prev_kv`."""
        if prefix:
            range_end = kv.prefix_end(key)
        return await self._write(DeleteRangeRequest(key, range_end, prev_kv), DeleteRangeResponse,
                                 timeout)

    async def txn(self, compare: Sequence[Compare], success: Sequence[Op] = (),
                  failure: Sequence[Op] = (), *, timeout: float | None = None) -> TxnResponse:
        """If every comparison holds, run `success`, else `failure`, all in one revision.
        `.succeeded` says which; `.responses` holds each op's response in order.
        shoal.client.txn has builders (value_equals, put, ...)."""
        return await self._write(TxnRequest(tuple(compare), tuple(success), tuple(failure)),
                                 TxnResponse, timeout)

    async def compact(self, revision: int, *, timeout: float | None = None) -> CompactionResponse:
        """Forget history before `revision`: reads and watches of older revisions fail with
        ErrCompacted."""
        return await self._write(CompactionRequest(revision), CompactionResponse, timeout)

    # ------------------------------------------------------------------ leases
    async def lease_grant(self, ttl: int, id: int = 0, *,
                          timeout: float | None = None) -> LeaseGrantResponse:
        """A lease of `ttl` seconds (`.id`, `.ttl`); keys put with it go when it expires or is
        revoked. Keep it alive with keep_alive() or lease_keepalive()."""
        return await self._write(LeaseGrantRequest(ttl, id), LeaseGrantResponse, timeout)

    async def lease_revoke(self, id: int, *, timeout: float | None = None) -> LeaseRevokeResponse:
        """End lease `id` now, deleting its keys. ErrLeaseNotFound if there is no such lease."""
        return await self._write(LeaseRevokeRequest(id), LeaseRevokeResponse, timeout)

    async def lease_keepalive(self, id: int, *,
                              timeout: float | None = None) -> LeaseKeepAliveResponse:
        """Restart lease `id`'s time to live once (`.ttl`: its full ttl again)."""
        return await self._write(LeaseKeepAliveRequest(id), LeaseKeepAliveResponse, timeout)

    async def lease_ttl(self, id: int, keys: bool = False, *,
                        timeout: float | None = None) -> LeaseTimeToLiveResponse:
        """Lease `id`'s remaining `.ttl` in seconds (-1 if there is no such lease),
        `.granted_ttl`, and with `keys` the `.keys` attached to it."""
        return await self._read(LeaseTimeToLiveRequest(id, keys=keys), LeaseTimeToLiveResponse,
                                timeout=timeout)

    async def leases(self, *, timeout: float | None = None) -> LeaseLeasesResponse:
        """The ids of every live lease (`.leases`)."""
        return await self._read(LeaseLeasesRequest(), LeaseLeasesResponse, timeout=timeout)

    def keep_alive(self, lease_id: int, ttl: int) -> asyncio.Task[None]:
        """Refresh a lease every ttl/3 seconds until the task is cancelled (or a refresh
        fails, which ends the task with that error)."""
        async def loop() -> None:
            while True:
                await asyncio.sleep(max(ttl / 3, 0.1))
                await self.lease_keepalive(lease_id)

        return asyncio.create_task(loop())

    # ------------------------------------------------------------------ watches
    async def watch(self, key: bytes, *, range_end: bytes = b"", prefix: bool = False,
                    start_revision: int = 0, prev_kv: bool = False,
                    progress_notify: bool = False,
                    timeout: float | None = None) -> AsyncIterator[WatchResponse]:
        """Yield watch responses (`.events`: each an Event with `.type` PUT or DELETE and the
        `.kv` it made, `.prev_kv` with `prev_kv`) until the watch ends, from `start_revision`
        (default: from now on). After a lost connection (or a node replacing its store with a
        snapshot) the watch is re-created on any live node from the revision after the last
        one delivered, so no event is missed or repeated. `timeout` bounds each attempt to
        create it; if no node can be reached before it is first created, it raises
        Unavailable as a call does.

        It ends with ErrCompacted if history it needs was compacted, and with WatchCanceled
        (`.reason`, `.resume_revision`) if its consumer could not keep up: more than
        `watch_queue_events` events or `watch_queue_bytes` bytes waited here, or the server's
        own bounds for the connection were passed. Re-create it from `resume_revision` to carry
        on without a gap. Leaving the loop (break, cancel, aclose) cancels it on the server."""
        if prefix:
            range_end = kv.prefix_end(key)
        next_rev = start_revision
        created_once = False
        tried = _Tried()
        while True:
            inbox = _WatchInbox(self.watch_queue_events, self.watch_queue_bytes)
            body = {"key": key, "range_end": range_end, "start_revision": next_rev,
                    "prev_kv": prev_kv, "progress_notify": progress_notify,
                    **({"group": self.group_id} if self.group_id else {})}
            conn: _Conn | None = None
            ep = self._pick(False, tried.wrong)
            try:
                conn = await self._conn(ep)
                tried.undialled.discard(ep)
                code, created = await asyncio.wait_for(conn.call("watch", body, stream=inbox),
                                                       timeout or self.timeout)
            except (Unavailable, TimeoutError) as exc:
                if conn is not None:
                    conn.end_watch(inbox, None)
                if isinstance(exc, _DialFailed):
                    tried.dial_failed(exc, ep)
                    if not created_once and tried.none_reachable(self.endpoints):
                        raise tried.unavailable() from None
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
            created_once, tried = True, _Tried()
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
    async def status(self, endpoint: str | None = None, *,
                     timeout: float | None = None) -> dict[str, Any]:
        """One node's status (`endpoint`'s, or any node's): id, cluster_id, role, leader,
        term, commit, applied, revision, members, groups, alarms and more, as `shoal status`
        shows them."""
        if endpoint is None:
            return await self.call("status", None, leader=False, timeout=timeout)  # type: ignore[no-any-return]
        host, port, https = parse_endpoint(endpoint)
        ep = _hostport(host, port)
        if https:
            self._https.add(ep)
        conn = await self._conn(ep)
        code, body = await asyncio.wait_for(conn.call("status", None), timeout or self.timeout)
        if code != "ok":
            raise error_from(code, body)
        return body  # type: ignore[no-any-return]

    async def member_add(self, id: int, peer: str, client: str, learner: bool = False, *,
                         timeout: float | None = None) -> dict[str, Any]:
        """Add member `id` with its peer and client addresses (host:port), as a learner if
        `learner`; returns the answering node's status."""
        return await self.call("member_add", {"id": id, "peer": peer, "client": client,  # type: ignore[no-any-return]
                                              "learner": learner}, timeout=timeout)

    async def member_remove(self, id: int, *, timeout: float | None = None) -> dict[str, Any]:
        """Remove member `id`; returns the answering node's status."""
        return await self.call("member_remove", {"id": id}, timeout=timeout)  # type: ignore[no-any-return]

    async def member_promote(self, id: int, *, timeout: float | None = None) -> dict[str, Any]:
        """Make learner `id` a voting member; returns the answering node's status."""
        return await self.call("member_promote", {"id": id}, timeout=timeout)  # type: ignore[no-any-return]

    async def transfer_leadership(self, to: int, *, timeout: float | None = None) -> None:
        """Ask the leader to hand leadership to member `to`."""
        await self.call("transfer", {"to": to}, timeout=timeout)

    async def snapshot(self, *, timeout: float | None = None) -> tuple[int, bytes]:
        """(applied index, snapshot bytes) of the leader's store, as `shoal snapshot save`
        writes them."""
        body = await self.call("snapshot", None, timeout=timeout)
        return body["index"], body["data"]


def _expect(resp: Response, cls: type[R]) -> R:
    if not isinstance(resp, cls):
        raise ClientError(f"expected a {cls.__name__}, the node answered {type(resp).__name__}",
                          "bad_response")
    return resp


def _watch_response(data: bytes) -> WatchResponse:
    resp: WatchResponse = from_wire(unpack(data, "watch response"), WatchResponse, "WatchResponse")
    return resp


from .recipes import Election, Lock  # noqa: E402  (last: the recipes build on Client)
