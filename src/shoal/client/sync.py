"""A blocking client: the asyncio client running on a private event loop thread, with the same
methods, arguments and answers, and blocking versions of the Lock and Election recipes."""

from __future__ import annotations

import asyncio
import ssl
import threading
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator, Sequence
from typing import Any, TypeVar

from ..kv.keyvalue import KeyValue
from ..kv.requests import (
    CompactionResponse,
    Compare,
    DeleteRangeResponse,
    LeaseGrantResponse,
    LeaseKeepAliveResponse,
    LeaseLeasesResponse,
    LeaseRevokeResponse,
    LeaseTimeToLiveResponse,
    Op,
    PutResponse,
    RangeResponse,
    Request,
    Response,
    SortOrder,
    SortTarget,
    TxnResponse,
)
from ..kv.watch import WatchResponse
from ..kv.watch_queue import DEFAULT_WATCH_QUEUE_BYTES, DEFAULT_WATCH_QUEUE_EVENTS
from ..txn import coordinator as _txn  # (a module: either may be imported first)
from .aio import Client
from .recipes import Election, Lock

T = TypeVar("T")
R = TypeVar("R", bound=Response)


class SyncClient:
    """`with SyncClient(["127.0.0.1:23791"]) as c: c.put(b"k", b"v")`. Every method blocks
    until the cluster answers and returns what the same method of `Client` returns; the
    arguments (endpoints, timeouts, auth, TLS) are the same too. One thread runs the client's
    event loop; methods may be called from any thread."""

    def __init__(self, endpoints: list[str] | str, timeout: float = 10.0, connect_timeout: float = 2.0,
                 *, watch_queue_events: int = DEFAULT_WATCH_QUEUE_EVENTS,
                 watch_queue_bytes: int = DEFAULT_WATCH_QUEUE_BYTES,
                 user: str | None = None, password: str | None = None, token: str | None = None,
                 tls: ssl.SSLContext | None = None):
        self._view = False  # a view of another client's group (group()) owns nothing
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="shoal-client", daemon=True)
        self._thread.start()
        try:
            self._client = self._run(_make(
                endpoints, timeout, connect_timeout, watch_queue_events=watch_queue_events,
                watch_queue_bytes=watch_queue_bytes, user=user, password=password, token=token,
                tls=tls))
        except BaseException:
            self._stop_loop()
            raise

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        fut = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return fut.result()
        except BaseException:
            # Interrupted here (Ctrl-C): stop the coroutine too, or it would carry on unseen
            # (a lock acquired after its caller gave up would never be released).
            fut.cancel()
            raise

    def _iterate(self, stream: AsyncIterator[T]) -> Iterator[T]:
        """Blocking iteration over `stream`; leaving the loop closes it."""
        try:
            while True:
                try:
                    yield self._run(_next(stream))
                except StopAsyncIteration:
                    return
        finally:
            if self._loop.is_running():  # not waited for: this may run in the GC, anywhere
                asyncio.run_coroutine_threadsafe(stream.aclose(), self._loop)  # type: ignore[attr-defined]

    @property
    def endpoints(self) -> list[str]:
        return self._client.endpoints

    @property
    def token(self) -> str | None:
        return self._client.token

    # ------------------------------------------------------------------ key-value
    def put(self, key: bytes, value: bytes, *, lease: int = 0, prev_kv: bool = False,
            timeout: float | None = None) -> PutResponse:
        """Set `key` to `value`, attached to `lease` if not 0 (Client.put)."""
        return self._run(self._client.put(key, value, lease=lease, prev_kv=prev_kv, timeout=timeout))

    def get(self, key: bytes, *, range_end: bytes = b"", prefix: bool = False,
            revision: int = 0, limit: int = 0, serializable: bool = False,
            keys_only: bool = False, count_only: bool = False,
            sort_order: SortOrder = SortOrder.NONE,
            sort_target: SortTarget = SortTarget.KEY, max_create_revision: int = 0,
            timeout: float | None = None) -> RangeResponse:
        """The key `key`, or a range, or a prefix (Client.get): `.kvs`, `.count`, `.more`."""
        return self._run(self._client.get(
            key, range_end=range_end, prefix=prefix, revision=revision, limit=limit,
            serializable=serializable, keys_only=keys_only, count_only=count_only,
            sort_order=sort_order, sort_target=sort_target,
            max_create_revision=max_create_revision, timeout=timeout))

    def get_value(self, key: bytes, *, timeout: float | None = None) -> bytes | None:
        """The value of `key`, or None if it does not exist."""
        return self._run(self._client.get_value(key, timeout=timeout))

    def delete(self, key: bytes, *, range_end: bytes = b"", prefix: bool = False,
               prev_kv: bool = False, timeout: float | None = None) -> DeleteRangeResponse:
        """Delete `key`, a range or a prefix (Client.delete): `.deleted`, `.prev_kvs`."""
        return self._run(self._client.delete(key, range_end=range_end, prefix=prefix,
                                             prev_kv=prev_kv, timeout=timeout))

    def txn(self, compare: Sequence[Compare], success: Sequence[Op] = (),
            failure: Sequence[Op] = (), *, timeout: float | None = None) -> TxnResponse:
        """If every comparison holds run `success`, else `failure` (Client.txn)."""
        return self._run(self._client.txn(compare, success, failure, timeout=timeout))

    def compact(self, revision: int, *, timeout: float | None = None) -> CompactionResponse:
        """Forget history before `revision` (Client.compact)."""
        return self._run(self._client.compact(revision, timeout=timeout))

    # ------------------------------------------------------------------ leases
    def lease_grant(self, ttl: int, id: int = 0, *,
                    timeout: float | None = None) -> LeaseGrantResponse:
        """A lease of `ttl` seconds: `.id`, `.ttl` (Client.lease_grant)."""
        return self._run(self._client.lease_grant(ttl, id, timeout=timeout))

    def lease_revoke(self, id: int, *, timeout: float | None = None) -> LeaseRevokeResponse:
        """End lease `id` now, deleting its keys."""
        return self._run(self._client.lease_revoke(id, timeout=timeout))

    def lease_keepalive(self, id: int, *, timeout: float | None = None) -> LeaseKeepAliveResponse:
        """Restart lease `id`'s time to live once."""
        return self._run(self._client.lease_keepalive(id, timeout=timeout))

    def lease_ttl(self, id: int, keys: bool = False, *,
                  timeout: float | None = None) -> LeaseTimeToLiveResponse:
        """Lease `id`'s remaining `.ttl` (-1: no such lease), and its `.keys` with `keys`."""
        return self._run(self._client.lease_ttl(id, keys, timeout=timeout))

    def leases(self, *, timeout: float | None = None) -> LeaseLeasesResponse:
        """The ids of every live lease (`.leases`)."""
        return self._run(self._client.leases(timeout=timeout))

    def keep_alive(self, lease_id: int, ttl: int) -> KeepAlive:
        """Refresh lease `lease_id` every ttl/3 seconds, in the background, until the returned
        handle is stopped (or used as a context manager and left)."""
        return KeepAlive(self, self._run(_start(self._client, lease_id, ttl)))

    # ------------------------------------------------------------------ watches
    def watch(self, key: bytes, *, range_end: bytes = b"", prefix: bool = False,
              start_revision: int = 0, prev_kv: bool = False, progress_notify: bool = False,
              timeout: float | None = None) -> Iterator[WatchResponse]:
        """Blocking iteration over `Client.watch`: it raises what that raises, WatchCanceled
        for a consumer that could not keep up among them; leaving the loop cancels the watch."""
        return self._iterate(self._client.watch(
            key, range_end=range_end, prefix=prefix, start_revision=start_revision,
            prev_kv=prev_kv, progress_notify=progress_notify, timeout=timeout))

    # ------------------------------------------------------------------ recipes
    def lock(self, name: str, ttl: int = 10) -> SyncLock:
        """A distributed lock: `with client.lock("jobs"): ...` (SyncLock)."""
        return SyncLock(self, name, ttl)

    def election(self, name: str, ttl: int = 10) -> SyncElection:
        """A leader election among every client that uses `name` (SyncElection)."""
        return SyncElection(self, name, ttl)

    # ------------------------------------------------------------------ cluster
    def status(self, endpoint: str | None = None, *,
               timeout: float | None = None) -> dict[str, Any]:
        """One node's status, `endpoint`'s or any node's (Client.status)."""
        return self._run(self._client.status(endpoint, timeout=timeout))

    def member_add(self, id: int, peer: str, client: str, learner: bool = False, *,
                   timeout: float | None = None) -> dict[str, Any]:
        """Add member `id` with its peer and client addresses (Client.member_add)."""
        return self._run(self._client.member_add(id, peer, client, learner, timeout=timeout))

    def member_remove(self, id: int, *, timeout: float | None = None) -> dict[str, Any]:
        """Remove member `id`."""
        return self._run(self._client.member_remove(id, timeout=timeout))

    def member_promote(self, id: int, *, timeout: float | None = None) -> dict[str, Any]:
        """Make learner `id` a voting member."""
        return self._run(self._client.member_promote(id, timeout=timeout))

    def transfer_leadership(self, to: int, *, timeout: float | None = None) -> None:
        """Ask the leader to hand leadership to member `to`."""
        self._run(self._client.transfer_leadership(to, timeout=timeout))

    def snapshot(self, *, timeout: float | None = None) -> tuple[int, bytes]:
        """(applied index, snapshot bytes) of the leader's store."""
        return self._run(self._client.snapshot(timeout=timeout))

    def create_group(self, group_id: int, replicas: int = 3, *,
                     timeout: float | None = None) -> dict[str, Any]:
        """Create consensus group `group_id` on `replicas` nodes."""
        return self._run(self._client.create_group(group_id, replicas, timeout=timeout))

    def remove_group(self, group_id: int, *, timeout: float | None = None) -> None:
        """Remove consensus group `group_id`."""
        self._run(self._client.remove_group(group_id, timeout=timeout))

    def groups(self, *, timeout: float | None = None) -> dict[int, list[int]]:
        """Every group the directory lists, with its members."""
        return self._run(self._client.groups(timeout=timeout))

    def authenticate(self, *, timeout: float | None = None) -> str:
        """A fresh token for this client's user."""
        return self._run(self._client.authenticate(timeout=timeout))

    def call(self, op: str, body: Any, *, leader: bool = True, retry: bool = True,
             timeout: float | None = None, token: str | None = None) -> Any:
        """One request of Shoal's client protocol, by name (Client.call)."""
        return self._run(self._client.call(op, body, leader=leader, retry=retry, timeout=timeout,
                                           token=token))

    def write_request(self, request: Request, expect: type[R],
                      timeout: float | None = None) -> R:
        """Propose any store request to this client's group, exactly once (Client.write_request)."""
        return self._run(self._client.write_request(request, expect, timeout))

    def sharded(self) -> SyncSharded:
        """Key-value calls routed by the shard map, and transactions (Client.sharded)."""
        return SyncSharded(self, self._client.sharded())

    def transaction(self) -> SyncTransaction:
        """`with client.transaction() as tx: v = tx.get(k); tx.put(k2, v)`: a strictly
        serializable transaction over any shards, committed when the block ends."""
        return SyncTransaction(self, self._client.transaction())

    def run_transaction(self, body: Callable[[SyncTransaction], T], attempts: int = 20) -> T:
        """Run `body(tx)` and commit, retrying on TxnAborted with backoff (Client.run_transaction)."""
        return self.sharded().run(body, attempts)

    def group(self, group_id: int) -> SyncClient:
        """A blocking client for group `group_id`, on this client's loop and connections."""
        view = SyncClient.__new__(SyncClient)
        view._loop, view._thread, view._client = self._loop, self._thread, self._client.group(group_id)
        view._view = True
        return view

    def close(self) -> None:
        """Close the connections and stop the loop thread (a group() view leaves that to
        the client it came from)."""
        if self._view:
            return  # the client it came from owns the loop
        try:
            self._run(self._client.close())
            self._run(_cancel_the_rest())  # keep-alives of locks never released, and the like
        finally:
            self._stop_loop()

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()

    def __enter__(self) -> SyncClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SyncTransaction:
    """A blocking Transaction (shoal.txn.coordinator): get blocks, put and delete buffer,
    commit (or the end of a `with` block) runs two-phase commit."""

    def __init__(self, client: SyncClient, tx: _txn.Transaction):
        self._client, self.tx = client, tx

    def get(self, key: bytes) -> bytes | None:
        return self._client._run(self.tx.get(key))

    def put(self, key: bytes, value: bytes) -> None:
        self.tx.put(key, value)

    def delete(self, key: bytes) -> None:
        self.tx.delete(key)

    def commit(self) -> None:
        self._client._run(self.tx.commit())

    def __enter__(self) -> SyncTransaction:
        return self

    def __exit__(self, exc_type: object, *_: object) -> None:
        if exc_type is None and not self.tx.done:
            self.commit()
        self.tx.done = True


class SyncSharded:
    """Blocking routed calls and transactions (shoal.txn.coordinator.TxnClient)."""

    def __init__(self, client: SyncClient, sharded: _txn.TxnClient):
        self._client, self._sharded = client, sharded

    def get(self, key: bytes) -> KeyValue | None:
        return self._client._run(self._sharded.get(key))

    def put(self, key: bytes, value: bytes) -> PutResponse:
        return self._client._run(self._sharded.put(key, value))

    def delete(self, key: bytes) -> DeleteRangeResponse:
        return self._client._run(self._sharded.delete(key))

    def range(self, key: bytes, range_end: bytes) -> list[KeyValue]:
        return self._client._run(self._sharded.range(key, range_end))

    def run(self, body: Callable[[SyncTransaction], T], attempts: int = 20) -> T:
        """`body(tx)` in a transaction, committed, retried on TxnAborted up to `attempts`."""
        assert attempts > 0
        for attempt in range(attempts):
            tx = SyncTransaction(self._client, self._sharded.transaction())
            try:
                result = body(tx)
                if not tx.tx.done:
                    tx.commit()
                return result
            except _txn.TxnAborted:
                if attempt == attempts - 1:
                    raise
            self._client._run(self._sharded.backoff(attempt))
        raise AssertionError("unreachable")


class KeepAlive:
    """A lease kept alive in the background by a SyncClient; `stop()` ends it."""

    def __init__(self, client: SyncClient, task: asyncio.Task[None]):
        self._client, self._task = client, task

    def stop(self) -> None:
        self._client._loop.call_soon_threadsafe(self._task.cancel)

    def __enter__(self) -> KeepAlive:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class SyncLock:
    """A blocking distributed lock (recipes.Lock): `with client.lock("jobs"): ...`, or
    acquire() and release(). `token` increases with every acquisition (a fencing token)."""

    def __init__(self, client: SyncClient, name: str, ttl: int = 10):
        self._client = client
        self._lock = Lock(client._client, name, ttl)

    @property
    def token(self) -> int:
        return self._lock.token

    def acquire(self, timeout: float | None = None) -> int:
        """Wait until this client holds the lock (at most `timeout` seconds, else
        TimeoutError); returns the fencing token."""
        return self._client._run(self._lock.acquire(timeout))

    def release(self) -> None:
        """Let the next waiter have it."""
        self._client._run(self._lock.release())

    def __enter__(self) -> SyncLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class SyncElection:
    """A blocking leader election (recipes.Election): campaign (wait to lead), proclaim
    (change the value while leading), leader (who leads now), observe (follow changes),
    resign."""

    def __init__(self, client: SyncClient, name: str, ttl: int = 10):
        self._client = client
        self._election = Election(client._client, name, ttl)

    def campaign(self, value: bytes, timeout: float | None = None) -> int:
        """Wait until this client leads, announcing `value` (at most `timeout` seconds, else
        TimeoutError); returns the leadership's revision."""
        return self._client._run(self._election.campaign(value, timeout))

    def proclaim(self, value: bytes) -> None:
        """Change the value this leader announces (RuntimeError if it does not lead)."""
        self._client._run(self._election.proclaim(value))

    def leader(self) -> bytes | None:
        """The current leader's value, or None if nobody leads."""
        return self._client._run(self._election.leader())

    def observe(self) -> Iterator[bytes | None]:
        """The leader's value now and after every change of leader or value (blocking)."""
        return self._client._iterate(self._election.observe())

    def resign(self) -> None:
        """Stop leading (or campaigning): the next in line leads."""
        self._client._run(self._election.resign())


async def _make(endpoints: list[str] | str, timeout: float, connect_timeout: float,
                **kw: Any) -> Client:
    return Client(endpoints, timeout, connect_timeout, **kw)


async def _cancel_the_rest() -> None:
    tasks = asyncio.all_tasks() - {asyncio.current_task()}
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def _next(stream: AsyncIterator[T]) -> T:
    return await anext(stream)


async def _start(client: Client, lease_id: int, ttl: int) -> asyncio.Task[None]:
    return client.keep_alive(lease_id, ttl)
