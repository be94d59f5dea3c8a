"""Leader-follower: a singleton worker on the Election recipe.

Every instance of a `Worker` with the same name campaigns in one election (recipes.Election).
The one that wins runs the work; the others wait in line, each watching only the candidate
just ahead of it, and the next one takes over when the leader's lease ends: it resigned, it
crashed, or it stopped refreshing its lease (paused, partitioned) and the store expired it.

The work gets a `WorkerContext` holding the **fencing token**: the create revision of the
leader's election key, which grows with every leadership. Its `put`/`delete`/`txn` add one
comparison to every write, "the election key still has this create revision", so the store
itself refuses a write once the leadership has moved on (`Fenced`), however late it arrives.
Pass the token to any other resource the work writes to, for it to do the same check.

Leadership is lost when any of these notice it first, and the work is then cancelled:
- the keep-alive: the worker refreshes its lease every ttl/4 and keeps a deadline, the send
  time of the last acknowledged refresh plus the lease's ttl. Past it the store may have
  expired the lease, so the worker assumes it has, without waiting to hear (a partitioned
  leader hears nothing). A refresh answered "no such lease" ends it at once;
- a watch on the election key: its deletion (expiry, revocation) ends it;
- a fenced write: the work's own write was refused.
`ctx.lost` is set before the cancel, so a `finally:` in the work can tell. The work gets
`grace` seconds to unwind; a work that ignores the cancel is left behind, still fenced. The
worker then resigns and campaigns again, as a follower.

A process paused with SIGSTOP is the case the fence is for: when it resumes, its timers are
all overdue, and a write it had in hand may reach the store before it notices its lease is
gone. The store refuses it. The worker's local deadline is a courtesy (it stops the work
early, and without a network); the fence is the guarantee.

`SyncWorker` is the blocking version for `SyncClient`: the work is a plain function, run in a
thread of its own; it cannot be cancelled, so it should check `ctx.lost` (or `ctx.sleep`)
between steps, and its fenced writes raise `Fenced` once it has lost."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from ..kv.errors import ErrLeaseNotFound, KVError
from ..kv.keyvalue import EventType
from ..kv.requests import (
    Compare,
    CompareResult,
    CompareTarget,
    DeleteRangeRequest,
    DeleteRangeResponse,
    Op,
    PutRequest,
    PutResponse,
    RangeRequest,
    RangeResponse,
    SortOrder,
    SortTarget,
    TxnResponse,
)
from .aio import Client
from .errors import ClientError
from .recipes import Election
from .sync import SyncClient

log = logging.getLogger("shoal.worker")

T = TypeVar("T")
STORE_ERRORS = (ClientError, KVError, TimeoutError, OSError)  # what a call to the store may raise
MAX_BACKOFF = 2.0  # seconds between campaign attempts that failed, at most
EVENT_KINDS = ("campaigning", "leading", "lost", "resigned")
STOPPING = "stopping"  # ctx.reason when the work is cancelled because of stop(), not a loss


class Fenced(ClientError):
    """A write refused by the store because `token` is no longer the current leadership's:
    the election key with that create revision is gone (or was replaced)."""

    def __init__(self, name: str, token: int, current: int | None):
        now = f"the election key now has create revision {current}" if current else \
            "the election key is gone"
        super().__init__(f"worker {name!r}: write fenced: token {token} is stale ({now})",
                         "fenced", token=token, current=current)
        self.token, self.current = token, current


@dataclass(frozen=True, slots=True)
class WorkerEvent:
    """A change of a worker's role: `kind` is one of EVENT_KINDS; `token` the leadership's
    (0 while campaigning); `reason` why it was lost or resigned."""

    kind: str
    token: int = 0
    reason: str = ""
    at: float = 0.0  # time.monotonic()


class WorkerContext:
    """What the work gets while it leads: the fencing `token`, the election `key` and `lease`
    it holds, the `client`, and writes that the store refuses once the token is stale."""

    def __init__(self, client: Client, name: str, key: bytes, token: int, lease: int):
        self.client, self.name, self.key, self.token, self.lease = client, name, key, token, lease
        self.lost = asyncio.Event()  # set (before the work is cancelled) once leadership is lost
        self.reason: str | None = None

    def fence(self) -> Compare:
        """The comparison that holds only while this leadership is current."""
        return Compare(self.key, CompareTarget.CREATE, CompareResult.EQUAL, self.token)

    async def txn(self, compare: Sequence[Compare] = (), success: Sequence[Op] = (),
                  failure: Sequence[Op] = (), *, timeout: float | None = None) -> TxnResponse:
        """`client.txn` with the fence in front of `compare`: Fenced if the token is stale,
        else the response (`.succeeded` False when one of the caller's comparisons failed,
        with the caller's `failure` responses)."""
        # One more read on the failure side tells a fence from the caller's own compares.
        resp = await self.client.txn([self.fence(), *compare], success,
                                     [*failure, RangeRequest(self.key)], timeout=timeout)
        if resp.succeeded:
            return resp
        mine = resp.responses[-1]
        assert isinstance(mine, RangeResponse)
        current = mine.kvs[0].create_revision if mine.kvs else None
        if current != self.token:
            self._lose(f"a write was fenced (token {self.token} is stale)")
            raise Fenced(self.name, self.token, current)
        return TxnResponse(resp.header, False, resp.responses[:-1])

    async def put(self, key: bytes, value: bytes, *, lease: int = 0,
                  timeout: float | None = None) -> PutResponse:
        """Set `key` to `value` while the token is current (Fenced otherwise)."""
        resp = await self.txn((), [PutRequest(key, value, lease=lease)], timeout=timeout)
        out = resp.responses[0]
        assert isinstance(out, PutResponse)
        return out

    async def delete(self, key: bytes, *, range_end: bytes = b"",
                     timeout: float | None = None) -> DeleteRangeResponse:
        """Delete `key` (or [key, range_end)) while the token is current (Fenced otherwise)."""
        resp = await self.txn((), [DeleteRangeRequest(key, range_end)], timeout=timeout)
        out = resp.responses[0]
        assert isinstance(out, DeleteRangeResponse)
        return out

    async def is_current(self, *, timeout: float | None = None) -> bool:
        """Ask the store whether this leadership is still the current one."""
        resp = await self.client.get(self.key, timeout=timeout)
        return bool(resp.kvs) and resp.kvs[0].create_revision == self.token

    def _lose(self, reason: str) -> None:
        if not self.lost.is_set():
            self.reason = reason
            self.lost.set()


class Worker:
    """`await Worker(client, "compactor", work, ttl=10).run()`: run `work(ctx)` on exactly one
    of the instances sharing `name`, the others standing by.

    `ttl`: the lease in seconds, so how long a leader that stopped answering keeps the
    leadership (a takeover takes about that). `value`: what this instance announces as the
    leader (default host:pid). `grace`: how long a cancelled work may take to unwind
    (default ttl). `on_event`: called with each WorkerEvent. `max_unavailable`: seconds of
    failing to reach the store, in a row while campaigning, after which run() gives up with
    the last error.

    run() returns when the work returns (the job is done: the worker resigns) or after stop();
    a work that raises (other than Fenced, which counts as a lost leadership) has the worker
    resign and run() raise it."""

    def __init__(self, client: Client, name: str, work: Callable[[WorkerContext], Awaitable[None]],
                 ttl: int = 10, *, value: bytes | None = None, grace: float | None = None,
                 on_event: Callable[[WorkerEvent], None] | None = None,
                 max_unavailable: float = 600.0):
        if not name or "/" in name:
            raise ValueError(f"a worker name must be non-empty and without '/', got {name!r}")
        if type(ttl) is not int or ttl < 1:
            raise ValueError(f"ttl must be a whole number of seconds >= 1, got {ttl!r}")
        if grace is not None and grace < 0 or max_unavailable <= 0:
            raise ValueError("grace must be >= 0 and max_unavailable > 0")
        self.client, self.name, self.work, self.ttl = client, name, work, ttl
        self.value = value if value is not None else f"{socket.gethostname()}:{os.getpid()}".encode()
        self.grace = float(ttl) if grace is None else grace
        self.on_event, self.max_unavailable = on_event, max_unavailable
        self.prefix = b"/shoal/election/" + name.encode()  # where Election keeps the candidates
        self.context: WorkerContext | None = None  # the current leadership's, while leading
        self._stop = asyncio.Event()
        self._rng = random.Random()

    @property
    def leading(self) -> bool:
        return self.context is not None and not self.context.lost.is_set()

    async def leader(self) -> bytes | None:
        """The value the current leader announced, or None if nobody leads."""
        return await Election(self.client, self.name, self.ttl).leader()

    def stop(self) -> None:
        """Make run() return: the work is cancelled and the leadership resigned. Call it on
        the event loop's thread (SyncWorker.stop from any)."""
        self._stop.set()

    async def run(self) -> None:
        delay, failing_since = 0.05, None
        loop = asyncio.get_running_loop()
        while not self._stop.is_set():
            election = Election(self.client, self.name, self.ttl)
            self._emit("campaigning")
            try:
                token = await self._unless_stopped(election.campaign(self.value))
            except _Stopped:
                break
            except STORE_ERRORS as exc:
                await self._resign(election)
                failing_since = failing_since if failing_since is not None else loop.time()
                if loop.time() - failing_since > self.max_unavailable:
                    raise ClientError(f"worker {self.name!r}: could not campaign for "
                                      f"{self.max_unavailable:.0f}s: {exc}", "unavailable") from exc
                log.warning("worker %r: campaign failed (%s); retrying in %.2fs", self.name, exc, delay)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), delay * (0.5 + self._rng.random() / 2))
                delay = min(delay * 2, MAX_BACKOFF)
                continue
            delay, failing_since = 0.05, None
            if await self._lead(election, token):
                return

    async def _lead(self, election: Election, token: int) -> bool:
        """Lead until the work ends (True: run() returns) or the leadership is lost or given
        up (False: campaign again, unless stopping)."""
        found = await self._context(token)
        if found is None:
            await self._resign(election)
            self._emit("lost", token, "our election key was gone by the time we led")
            return False
        ctx, confirmed_at, revision = found
        self.context = ctx
        self._emit("leading", token)
        work = asyncio.create_task(self._run_work(ctx), name=f"worker-{self.name}-{token}")
        guards = [asyncio.create_task(self._keep_alive(ctx, confirmed_at)),
                  asyncio.create_task(self._watch(ctx, revision + 1))]
        stopping = asyncio.create_task(self._stop.wait())
        try:
            await asyncio.wait({work, stopping, *guards}, return_when=asyncio.FIRST_COMPLETED)
        except BaseException:  # run() itself cancelled (a Ctrl-C through SyncWorker, say)
            ctx._lose(STOPPING)
            work.cancel()
            self.context = None
            # Resign in the background: the recipe's own keep-alive would otherwise hold the
            # leadership, with no work running, for as long as this process lives.
            _background(self._resign(election))
            raise
        finally:
            for t in (stopping, *guards):
                t.cancel()
            await asyncio.gather(stopping, *guards, return_exceptions=True)
        reason: str | None = None  # why a guard ended: the leadership is lost
        for g in guards:
            if g.done() and not g.cancelled() and reason is None:
                exc = g.exception()
                reason = g.result() if exc is None else f"lost track of the lease: {exc!r}"
        if work.done():
            exc = work.exception()
            if exc is None:
                self.context = None
                await self._resign(election)
                self._emit("resigned", token, "the work is done")
                return True
            if not isinstance(exc, Fenced):
                self.context = None
                await self._resign(election)
                self._emit("resigned", token, f"the work failed: {exc!r}")
                raise exc
            reason = ctx.reason or str(exc)
        ctx._lose(reason or STOPPING)
        await self._end_work(work)
        self.context = None
        await self._resign(election)
        self._emit("resigned" if reason is None else "lost", token, ctx.reason or "")
        return False

    async def _context(self, token: int) -> tuple[WorkerContext, float, int] | None:
        """Our election key, read back (campaign may return for a key whose lease expired
        while we waited in line: a paused standby), with when we asked and the revision."""
        asked = asyncio.get_running_loop().time()
        try:
            first = await self.client.get(self.prefix + b"/", prefix=True, limit=1,
                                          sort_target=SortTarget.CREATE,
                                          sort_order=SortOrder.ASCEND, timeout=self.ttl)
        except STORE_ERRORS:
            return None
        if not first.kvs or first.kvs[0].create_revision != token:
            return None
        kv = first.kvs[0]
        return WorkerContext(self.client, self.name, kv.key, token, kv.lease), asked, \
            first.header.revision

    async def _run_work(self, ctx: WorkerContext) -> None:
        await self.work(ctx)

    async def _end_work(self, work: asyncio.Task[None]) -> None:
        if not work.done():
            work.cancel()
            await asyncio.wait({work}, timeout=self.grace)
        if not work.done():
            log.warning("worker %r: the work did not stop within %.1fs of being cancelled; it "
                        "is left running, and its writes are fenced", self.name, self.grace)
            work.add_done_callback(_retrieve)
        elif not work.cancelled() and work.exception() is not None:
            exc = work.exception()
            if not isinstance(exc, Fenced):
                log.warning("worker %r: the work raised while standing down: %r", self.name, exc)

    async def _keep_alive(self, ctx: WorkerContext, confirmed_at: float) -> str:
        """Refresh the lease every ttl/4; return why the leadership must be taken as lost."""
        loop = asyncio.get_running_loop()
        interval = self.ttl / 4
        # Until a refresh of ours is acknowledged the lease's end is not known: the key was
        # there when we asked, and its lease is refreshed every ttl/3 while in line, so give
        # it half a ttl from then (a standby paused in line is what the fence is for).
        deadline = confirmed_at + self.ttl / 2
        while True:
            sent = loop.time()
            budget = max(0.05, min(interval, deadline - sent))  # no answer is worth more
            try:
                resp = await self.client.lease_keepalive(ctx.lease, timeout=budget)
                deadline = max(deadline, sent + resp.ttl)
            except ErrLeaseNotFound:
                return f"lease {ctx.lease} expired: the store no longer has it"
            except STORE_ERRORS as exc:
                log.info("worker %r: keep-alive failed: %s", self.name, exc)
            now = loop.time()
            if now >= deadline:
                return (f"no keep-alive acknowledged within the lease's {self.ttl}s: the store "
                        "may have expired it")
            await asyncio.sleep(max(0.0, min(sent + interval - now, deadline - now)))
            if loop.time() >= deadline:  # e.g. paused (SIGSTOP) through the sleep
                return (f"no keep-alive acknowledged within the lease's {self.ttl}s: the store "
                        "may have expired it")

    async def _watch(self, ctx: WorkerContext, start: int) -> str:
        """Return when our election key is deleted (or found gone after a failed watch)."""
        delay = 0.05
        while True:
            try:
                async for resp in self.client.watch(ctx.key, start_revision=start):
                    if any(e.type is EventType.DELETE for e in resp.events):
                        return "our election key was deleted (lease expired or revoked)"
                    if resp.events:
                        start = resp.events[-1].kv.mod_revision + 1
            except STORE_ERRORS as exc:
                log.info("worker %r: watch on the election key failed (%s); re-reading it",
                         self.name, exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, MAX_BACKOFF)
            try:  # re-read before watching again: the deletion may be what we missed
                resp2 = await self.client.get(ctx.key, timeout=self.ttl)
            except STORE_ERRORS:
                continue  # the keep-alive's deadline covers a store we cannot reach
            if not resp2.kvs or resp2.kvs[0].create_revision != ctx.token:
                return "our election key is gone"
            start = resp2.header.revision + 1

    async def _resign(self, election: Election) -> None:
        """Give up our place (bounded: a partitioned worker's lease expires on its own)."""
        with contextlib.suppress(*STORE_ERRORS):
            await asyncio.wait_for(election.resign(), self.ttl)

    async def _unless_stopped(self, coro: Coroutine[Any, Any, T]) -> T:
        task = asyncio.ensure_future(coro)
        stopping = asyncio.create_task(self._stop.wait())
        try:
            await asyncio.wait({task, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
            if not task.done():
                task.cancel()  # the campaign leaves its place on the way out
                await asyncio.gather(task, return_exceptions=True)
        if task.cancelled():
            raise _Stopped
        return task.result()

    def _emit(self, kind: str, token: int = 0, reason: str = "") -> None:
        log.info("worker %r: %s%s%s", self.name, kind, f" (token {token})" if token else "",
                 f": {reason}" if reason else "")
        if self.on_event is not None:
            try:
                self.on_event(WorkerEvent(kind, token, reason, time.monotonic()))
            except Exception:
                log.exception("worker %r: on_event raised", self.name)


class _Stopped(Exception):
    pass


_BACKGROUND: set[asyncio.Task[Any]] = set()  # referenced until done (asyncio keeps weak refs)


def _background(coro: Coroutine[Any, Any, None]) -> None:
    task = asyncio.ensure_future(coro)
    _BACKGROUND.add(task)
    task.add_done_callback(_BACKGROUND.discard)


def _retrieve(task: asyncio.Task[Any]) -> None:
    if not task.cancelled():
        task.exception()  # seen, so asyncio does not log it as never retrieved


# ---------------------------------------------------------------------- the blocking version


class SyncWorkerContext:
    """WorkerContext for blocking work: the same token, key and lease, blocking fenced
    writes, and `lost`, a threading.Event the work should check between steps."""

    def __init__(self, client: SyncClient, ctx: WorkerContext):
        self._client, self._ctx = client, ctx
        self.client = client
        self.lost = threading.Event()

    @property
    def name(self) -> str:
        return self._ctx.name

    @property
    def token(self) -> int:
        return self._ctx.token

    @property
    def key(self) -> bytes:
        return self._ctx.key

    @property
    def lease(self) -> int:
        return self._ctx.lease

    @property
    def reason(self) -> str | None:
        return self._ctx.reason

    def fence(self) -> Compare:
        return self._ctx.fence()

    def txn(self, compare: Sequence[Compare] = (), success: Sequence[Op] = (),
            failure: Sequence[Op] = (), *, timeout: float | None = None) -> TxnResponse:
        """WorkerContext.txn, blocking (Fenced if the token is stale)."""
        return self._client._run(self._ctx.txn(compare, success, failure, timeout=timeout))

    def put(self, key: bytes, value: bytes, *, lease: int = 0,
            timeout: float | None = None) -> PutResponse:
        return self._client._run(self._ctx.put(key, value, lease=lease, timeout=timeout))

    def delete(self, key: bytes, *, range_end: bytes = b"",
               timeout: float | None = None) -> DeleteRangeResponse:
        return self._client._run(self._ctx.delete(key, range_end=range_end, timeout=timeout))

    def is_current(self, *, timeout: float | None = None) -> bool:
        return self._client._run(self._ctx.is_current(timeout=timeout))

    def sleep(self, seconds: float) -> bool:
        """Wait `seconds`, or less if the leadership is lost meanwhile; True if still leading."""
        return not self.lost.wait(seconds)


class SyncWorker:
    """A blocking Worker: `SyncWorker(sync_client, "compactor", work, ttl=10).run()` blocks
    like Worker.run; `work(ctx)` gets a SyncWorkerContext and runs in a thread of its own.
    `stop()` may be called from any thread."""

    def __init__(self, client: SyncClient, name: str, work: Callable[[SyncWorkerContext], None],
                 ttl: int = 10, *, value: bytes | None = None, grace: float | None = None,
                 on_event: Callable[[WorkerEvent], None] | None = None,
                 max_unavailable: float = 600.0):
        self._client, self._fn = client, work
        self.worker = Worker(client._client, name, self._work, ttl, value=value, grace=grace,
                             on_event=on_event, max_unavailable=max_unavailable)

    def run(self) -> None:
        self._client._run(self.worker.run())

    def stop(self) -> None:
        self._client._loop.call_soon_threadsafe(self.worker.stop)

    @property
    def leading(self) -> bool:
        return self.worker.leading

    def leader(self) -> bytes | None:
        return self._client._run(self.worker.leader())

    async def _work(self, ctx: WorkerContext) -> None:
        sctx = SyncWorkerContext(self._client, ctx)
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()

        def body() -> None:
            error: BaseException | None = None
            try:
                self._fn(sctx)
            except BaseException as exc:  # handed to the loop, which re-raises it
                error = exc
            loop.call_soon_threadsafe(_settle, done, error)

        threading.Thread(target=body, name=f"shoal-worker-{ctx.name}-{ctx.token}",
                         daemon=True).start()
        try:
            await asyncio.shield(done)
        except asyncio.CancelledError:
            sctx.lost.set()  # a thread cannot be cancelled: tell it, and wait (Worker's grace)
            await done
            raise


def _settle(fut: asyncio.Future[None], error: BaseException | None) -> None:
    if fut.done():
        return
    if error is None:
        fut.set_result(None)
    else:
        fut.set_exception(error)
