"""Talking to a service's members: one connection (`MemberConn`), and a client that finds the
primary through Shoal's store (`ServiceClient`).

    async with Client(endpoints) as store:
        svc = ServiceClient(store, "orders")
        await svc.write({"put": "a", "value": 1})      # -> {"result", "index", "token"}
        r = await svc.read({"get": "a"}, member="127.0.0.1:7302")
        r["result"], r["index"], r["lag"], r["heard_s"]  # how stale that backup may be

`write` retries, under its deadline, only what certainly did not happen: no primary yet, a
member that is not (or no longer) primary refusing before it applied anything, a connection
that failed before the request was sent. A write whose outcome is unknown (a timeout, a
primary fenced while it waited, a connection lost after sending) raises `OutcomeUnknown`:
retrying it blindly could apply it twice."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from typing import TYPE_CHECKING, Any

import msgpack

from .fencing import Keys
from .member import ServiceError
from .protocol import (
    DEFAULT_MAX_FRAME,
    ProtocolError,
    Secret,
    check_response,
    dial_handshake,
    pack,
    read_frame,
)

if TYPE_CHECKING:
    from ..client import Client

RETRYABLE = frozenset({"not_primary", "too_many_requests", "unavailable"})


class OutcomeUnknown(ServiceError):
    """The write may or may not have been applied (and may or may not survive a failover)."""


class MemberConn:
    """One connection to one member, requests pipelined by id."""

    def __init__(self, addr: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 max_frame: int):
        self.addr, self.reader, self.writer, self.max_frame = addr, reader, writer, max_frame
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[tuple[str, Any]]] = {}
        self.error: BaseException | None = None
        self._task = asyncio.create_task(self._read_loop())

    @classmethod
    async def open(cls, addr: str, service: str, secret: Secret | None = None,
                   timeout: float = 2.0, max_frame: int = DEFAULT_MAX_FRAME) -> MemberConn:
        host, sep, port = addr.rpartition(":")
        if not sep or not port.isdigit():
            raise ValueError(f"member address {addr!r}: write host:port")
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(host.strip("[]"), int(port),
                                                           limit=max_frame + 1024)
            try:
                await dial_handshake(reader, writer, service, secret)
            except BaseException:
                writer.close()
                raise
        return cls(addr, reader, writer, max_frame)

    async def _read_loop(self) -> None:
        error: BaseException = ConnectionError(f"member {self.addr} closed the connection")
        try:
            while True:
                v = await read_frame(self.reader, self.max_frame, f"member {self.addr}")
                if v is None:
                    break
                rid, code, body = check_response(v)
                fut = self._pending.pop(rid, None)
                if fut is not None and not fut.done():
                    fut.set_result((code, body))
        except (ProtocolError, OSError) as exc:
            error = exc
        finally:
            self.error = error
            for fut in self._pending.values():
                if not fut.done():
                    fut.set_exception(error)
            self._pending.clear()
            self.writer.close()

    @property
    def alive(self) -> bool:
        return not self._task.done()

    async def call(self, op: str, body: Any = None, timeout: float = 10.0) -> Any:
        """The member's answer; ServiceError with its code if it answered with an error,
        ConnectionError/ProtocolError if the connection failed, TimeoutError."""
        if self.error is not None:
            raise ConnectionError(f"connection to {self.addr} is closed: {self.error}")
        rid = next(self._ids)
        fut: asyncio.Future[tuple[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[rid] = fut
        self.writer.write(pack([rid, op, body], self.max_frame))
        try:
            code, answer = await asyncio.wait_for(fut, timeout)
        finally:
            self._pending.pop(rid, None)
        if code != "ok":
            message = answer.get("message", code) if isinstance(answer, dict) else str(answer)
            details = {k: v for k, v in answer.items() if k != "message"} \
                if isinstance(answer, dict) else {}
            raise ServiceError(code, message, **details)
        return answer

    async def close(self) -> None:
        self._task.cancel()
        self.writer.close()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._task


class ServiceClient:
    """Writes to the primary, found through the store; reads from any member."""

    def __init__(self, store: Client, service: str, secret: Secret | None = None,
                 timeout: float = 10.0):
        self.store, self.service, self.secret, self.timeout = store, service, secret, timeout
        self.keys = Keys(service)
        self._conns: dict[str, MemberConn] = {}
        self._primary: str | None = None

    async def primary(self) -> dict[str, Any] | None:
        """The primary as the store says now: {id, addr, token}, or None during a vacancy."""
        resp = await self.store.get(self.keys.primary)
        if not resp.kvs:
            return None
        value = msgpack.unpackb(resp.kvs[0].value, raw=False)
        return {"id": value.get("id"), "addr": value.get("addr"),
                "token": resp.kvs[0].create_revision}

    async def members(self) -> dict[str, Any]:
        """Everything the store holds about the service: primary, syncset, beacon, members."""
        resp = await self.store.get(self.keys.prefix, prefix=True)
        out: dict[str, Any] = {"revision": resp.header.revision, "primary": None,
                               "syncset": None, "beacon": None, "members": [], "term": 0}
        for kv in resp.kvs:
            try:
                value = msgpack.unpackb(kv.value, raw=False)
            except (ValueError, TypeError, msgpack.UnpackException):
                continue
            if kv.key == self.keys.primary:
                out["primary"] = {**value, "token": kv.create_revision}
            elif kv.key == self.keys.term:
                out["term"] = kv.mod_revision
            elif kv.key == self.keys.syncset:
                out["syncset"] = value
            elif kv.key == self.keys.beacon:
                out["beacon"] = value
            elif kv.key.startswith(self.keys.members):
                out["members"].append(value)
        return out

    async def conn(self, addr: str) -> MemberConn:
        c = self._conns.get(addr)
        if c is None or not c.alive:
            c = self._conns[addr] = await MemberConn.open(addr, self.service, self.secret)
        return c

    async def write(self, op: Any, *, timeout: float | None = None) -> dict[str, Any]:
        """Apply `op` on the primary and wait for its mode's acknowledgement:
        {"result", "index", "token"}."""
        deadline = time.monotonic() + (timeout or self.timeout)
        last: Exception | None = None
        delay = 0.02
        while time.monotonic() < deadline:
            left = deadline - time.monotonic()
            try:
                addr = self._primary
                if addr is None:
                    found = await self.primary()
                    if found is None or not isinstance(found.get("addr"), str):
                        raise ServiceError("not_primary", f"service {self.service!r} has no "
                                           "primary now (a vacancy, or no member runs)")
                    addr = self._primary = found["addr"]
                c = await self.conn(addr)
            except (ServiceError, OSError, TimeoutError, ProtocolError) as exc:
                last, self._primary = exc, None
                await asyncio.sleep(min(delay, max(0.0, deadline - time.monotonic())))
                delay = min(0.2, delay * 2)
                continue
            try:
                answer: dict[str, Any] = await c.call("write", op, timeout=max(0.01, left))
                return answer
            except ServiceError as exc:
                if exc.code not in RETRYABLE:
                    raise (OutcomeUnknown(exc.code, str(exc), **exc.details)
                           if exc.code in ("timeout", "fenced") else exc) from None
                last, self._primary = exc, None
            except (OSError, ProtocolError, TimeoutError) as exc:
                self._primary = None
                raise OutcomeUnknown("unavailable", f"the connection to {addr} failed with "
                                     f"the write in flight: {exc}") from None
            await asyncio.sleep(min(delay, max(0.0, deadline - time.monotonic())))
            delay = min(0.2, delay * 2)
        raise ServiceError("unavailable", f"no primary of {self.service!r} took the write "
                           f"within {timeout or self.timeout:g} s: {last}")

    async def read(self, query: Any, *, member: str | None = None,
                   timeout: float | None = None) -> dict[str, Any]:
        """`query` answered by `member` (an address; default the primary), with how stale the
        answer may be: index (the log index it has applied), token, role, heard_s (seconds
        since it last heard the primary), primary_index and lag (entries behind)."""
        addr = member
        if addr is None:
            found = await self.primary()
            if found is None:
                raise ServiceError("not_primary", f"service {self.service!r} has no primary now")
            addr = found["addr"]
        c = await self.conn(str(addr))
        answer: dict[str, Any] = await c.call("read", query, timeout=timeout or self.timeout)
        return answer

    async def status_of(self, addr: str, timeout: float = 2.0) -> dict[str, Any]:
        c = await self.conn(addr)
        answer: dict[str, Any] = await c.call("status", None, timeout=timeout)
        return answer

    async def close(self) -> None:
        for c in list(self._conns.values()):
            await c.close()
        self._conns.clear()
