"""Transactions over any keys in any shards: the coordinator of two-phase commit, on the
client API.

A `Transaction` reads through to the shards (remembering the version of every key it read)
and buffers its writes. `commit()`:

1. groups the keys by shard (the router's map); a read made in a shard that no longer holds
   the key aborts the transaction (`shard moved`), since its version means nothing elsewhere;
2. with one shard, sends one *one-phase* prepare: validate the reads and write, in one entry;
3. with several, picks the *record group* (the shard of the first key written, or read) and
   sends every shard its prepare at once; the record group's creates the pending record on
   this client's lease there (kv/intents.py has the participant's side);
4. if every shard voted yes, commits the record (`pending -> committed`): the transaction is
   committed the moment that entry applies, and not before; then resolves every shard's
   intents and forgets the record. If any voted no, aborts the record and the intents.

Isolation is **strict serializability**: at the commit point every key the transaction read or
wrote is locked in its shard (a read validated at its version, a write by an intent), as in
strict two-phase locking, and the commit point lies inside the transaction's real-time span.
No transaction waits for a lock while holding one (a prepare that meets a lock votes no at
once), so there is no deadlock; contention costs aborts, each a `TxnAborted` naming the key
and the reason, which `run()` retries with backoff within a bounded budget.

A coordinator that dies leaves intents behind. A reader or writer that meets one asks the
record (resolver below): committed -> it applies the intent, aborted -> drops it, pending ->
it waits, absent -> the coordinator's lease ended (or the record was never written): it writes
`aborted` where the record would be (presumed abort), so a paused coordinator waking up later
cannot commit, and drops the intent."""

from __future__ import annotations

import asyncio
import os
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from ..client.errors import ClientError
from ..kv.errors import ErrIntentConflict, ErrLeaseNotFound, ErrWrongShard
from ..kv.keyvalue import KeyValue, prefix_end
from ..kv.requests import (
    LOCKING_READ,
    DeleteRangeResponse,
    IntentRange,
    IntentRead,
    IntentWrite,
    PutResponse,
    RangeResponse,
    RecordStatus,
    TxnConflict,
    TxnPrepareRequest,
    TxnPrepareResponse,
    TxnRecordAction,
    TxnRecordRequest,
    TxnRecordResponse,
    TxnResolveRequest,
    TxnResolveResponse,
)
from ..kv.watch import WatchResponse
from ..shard.router import MAX_REROUTES, ShardRouter

if TYPE_CHECKING:
    from ..client.aio import Client

T = TypeVar("T")
RECORD_TTL_S = 5  # a coordinator silent this long is presumed dead: its transaction aborts
ABSENT_GRACE = (0.01, 0.02, 0.05, 0.1)  # a record may still be on its way (prepares are parallel)
MAX_ATTEMPTS = 20
SETTLE_ATTEMPTS = 30  # about a minute of retrying a decision before leaving it to the lease
BUGS = frozenset({"commit-without-every-vote"})  # planted, for sim/txn.py


class TxnAborted(Exception):
    """The transaction did not commit and changed nothing; retrying it may succeed.
    `reason`: conflict (another transaction's lock), changed (a key read was written since),
    shard moved, record aborted (the coordinator was too slow and presumed dead), timeout."""

    retryable = True

    def __init__(self, reason: str, key: bytes | None = None, holder: bytes | None = None):
        where = f" on key {key!r:.80}" if key is not None else ""
        who = f" (held by transaction {holder.hex()})" if holder else ""
        super().__init__(f"transaction aborted: {reason}{where}{who}")
        self.reason, self.key, self.holder = reason, key, holder


class TxnUnknownOutcome(Exception):
    """The commit's decision could not be learnt in time: the transaction may have committed."""


@dataclass
class Transaction:
    coordinator: TxnClient
    reads: dict[bytes, tuple[int, KeyValue | None]] = field(default_factory=dict)  # group, seen
    writes: dict[bytes, IntentWrite] = field(default_factory=dict)
    id: bytes = field(default_factory=lambda: os.urandom(16))
    done: bool = False
    locked: set[bytes] = field(default_factory=set)  # read under a shared lock (lock_read)
    range_groups: set[int] = field(default_factory=set)  # where lock_range locked a range
    record_group: int | None = None  # fixed by the first lock: where resolvers look

    async def lock_read(self, *keys: bytes) -> dict[bytes, bytes | None]:
        """Read `keys` under shared locks held until the transaction ends (SQL's SELECT ...
        FOR SHARE): writers to them vote no meanwhile, so values read this way stay current,
        and a read-only transaction that locked all it read needs no validation at commit.
        What every key of `keys` holds now is returned (the transaction's own writes first)."""
        self._writable()
        todo = [k for k in dict.fromkeys(keys) if k not in self.writes and k not in self.locked]
        if todo:
            await self.coordinator.lock_reads(self, todo)
        out: dict[bytes, bytes | None] = {}
        for k in keys:
            if k in self.writes:
                out[k] = None if self.writes[k].delete else self.writes[k].value
            else:
                kv = self.reads[k][1]
                out[k] = kv.value if kv is not None else None
        return out

    async def get(self, key: bytes) -> bytes | None:
        """The value of `key` as this transaction sees it: its own write, else the store's."""
        if key in self.writes:
            w = self.writes[key]
            return None if w.delete else w.value
        if key not in self.reads:
            group, kv = await self.coordinator.read_key(key)
            self.reads[key] = (group, kv)
        kv = self.reads[key][1]
        return kv.value if kv is not None else None

    def put(self, key: bytes, value: bytes) -> None:
        self._writable()
        self.writes[key] = IntentWrite(key, value)

    def delete(self, key: bytes) -> None:
        self._writable()
        self.writes[key] = IntentWrite(key, delete=True)

    def _writable(self) -> None:
        if self.done:
            raise RuntimeError("the transaction has already committed or aborted")

    async def commit(self) -> None:
        self._writable()
        self.done = True
        await self.coordinator.commit(self)

    async def __aenter__(self) -> Transaction:
        return self

    async def lock_range(self, key: bytes, range_end: bytes) -> list[KeyValue]:
        """Every key of [key, range_end) (etcd's conventions) across the shards it spans,
        as of one moment: the range is locked in each shard (writers and new keys kept out)
        until the transaction ends."""
        self._writable()
        return await self.coordinator.lock_range(self, key, range_end)

    async def abort(self) -> None:
        """End without committing: give back the locks lock_read took (nothing else is held)."""
        if not self.done:
            self.done = True
            await self.coordinator.release(self)

    async def __aexit__(self, exc_type: object, *_: object) -> None:
        if exc_type is None and not self.done:
            await self.commit()
        await self.abort()


class TxnClient:
    """Routed key-value calls and transactions for one Client (`client.sharded()`)."""

    def __init__(self, client: Client, bugs: frozenset[str] = frozenset()):
        if unknown := bugs - BUGS:
            raise ValueError(f"unknown coordinator bugs {sorted(unknown)}; known: {sorted(BUGS)}")
        self.bugs = bugs  # planted bugs, for the transaction simulator only
        self.client = client
        self.router = ShardRouter(client)
        self._leases: dict[int, tuple[int, asyncio.Task[None]]] = {}
        self.record_ttl_s = RECORD_TTL_S
        self._settling: set[asyncio.Task[None]] = set()  # decisions still being delivered
        self._rng = random.Random()

    async def close(self) -> None:
        """Let the background resolves finish (a little while), then stop everything."""
        if self._settling:
            await asyncio.wait(set(self._settling), timeout=2.0)
        for task in self._settling:
            task.cancel()
        for _, task in self._leases.values():
            task.cancel()
        self._leases.clear()

    # ---------------------------------------------------------------- plain, routed calls
    async def get(self, key: bytes) -> KeyValue | None:
        return (await self.read_key(key))[1]

    async def read_key(self, key: bytes) -> tuple[int, KeyValue | None]:
        """(the group that answered, the key's current version), intents resolved first."""
        async def read(c: Client) -> tuple[int, KeyValue | None]:
            resp: RangeResponse = await self.resolving(lambda: c.get(key))
            return c.group_id, resp.kvs[0] if resp.kvs else None
        return await self.router.on_key(key, read)

    async def put(self, key: bytes, value: bytes) -> PutResponse:
        return await self.router.on_key(key, lambda c: self.resolving(lambda: c.put(key, value)))

    async def delete(self, key: bytes) -> DeleteRangeResponse:
        return await self.router.on_key(key, lambda c: self.resolving(lambda: c.delete(key)))

    async def snapshot(self, key: bytes, range_end: bytes) -> list[KeyValue]:
        """Every key of [key, range_end) across the shards it spans, as of one moment: a
        read-only transaction that locks the range in each shard, reads, and lets go."""
        async def body(tx: Transaction) -> list[KeyValue]:
            return await tx.lock_range(key, range_end)
        return await self.run(body)

    async def range(self, key: bytes, range_end: bytes) -> list[KeyValue]:
        """Every key of [key, range_end) (etcd's conventions), read shard by shard, in order.
        Each shard's part is at one revision of that shard; `snapshot` reads them all as of
        one moment."""
        parts = await self.on_range(key, range_end, lambda c, lo, hi: c.get(lo, range_end=hi))
        return [kv for part in parts for kv in part.kvs]

    async def on_range(self, key: bytes, range_end: bytes,
                       call: Callable[[Client, bytes, bytes], Awaitable[T]]) -> list[T]:
        """`call(client of the shard, lo, hi)` for each shard's part of [key, range_end), in
        key order, intents resolved and routed again if a split moves keys under it."""
        if self.router.revision < 0:
            await self.router.refresh()
        out: list[T] = []
        at = key
        for _ in range(MAX_REROUTES):
            try:
                for shard, lo, hi in self.router.map.pieces(at, range_end):
                    view = self.router.view(shard.group)
                    lo = lo or b"\0"  # (etcd's first key: the empty key is no key)

                    def part(v: Client = view, lo: bytes = lo, hi: bytes = hi) -> Awaitable[T]:
                        return call(v, lo, hi)
                    out.append(await self.resolving(part))
                    if not shard.end:
                        break
                    at = shard.end
                return out
            except ErrWrongShard as exc:  # a split under the read: go on from where it got
                await self.router.refresh(exc.version)
        raise RuntimeError(f"range {key!r:.80}: shards moved {MAX_REROUTES} times under it")

    async def watch(self, key: bytes, *, range_end: bytes = b"", prefix: bool = False,
                    **kw: Any) -> AsyncIterator[WatchResponse]:
        """Client.watch on the shard that holds [key, range_end): a watch follows one shard's
        revisions, so the range must lie in one shard; a split that moves it ends the watch
        (WatchCanceled naming the shard map version: watch again)."""
        if prefix:
            range_end = prefix_end(key)
        for attempt in range(2):
            shard_map = await self.router.refresh() if attempt or self.router.revision < 0 \
                else self.router.map
            pieces = shard_map.pieces(key, range_end)
            if len(pieces) != 1:
                raise ValueError(f"the watched range spans {len(pieces)} shards; a watch "
                                 "follows one shard's revisions: watch each part")
            try:
                async for resp in self.router.view(pieces[0][0].group).watch(
                        key, range_end=range_end, **kw):
                    yield resp
                return
            except ErrWrongShard:
                continue  # a stale map: read it again once

    async def resolving(self, call: Callable[[], Awaitable[T]]) -> T:
        """`call()`, resolving the intents it meets and trying again, until the client's
        timeout."""
        loop = asyncio.get_running_loop()
        end = loop.time() + self.client.timeout
        while True:
            try:
                return await call()
            except ErrIntentConflict as exc:
                if loop.time() > end:
                    raise
                await self.resolve(exc.conflicts, end)

    # ---------------------------------------------------------------- transactions
    def transaction(self) -> Transaction:
        """`async with client.transaction() as tx: v = await tx.get(k); tx.put(k2, v)`;
        commits when the block ends, or raises TxnAborted (retry with `run`)."""
        return Transaction(self)

    async def run(self, body: Callable[[Transaction], Awaitable[T]],
                  attempts: int = MAX_ATTEMPTS) -> T:
        """Run `body(tx)` in a transaction and commit it, again after every TxnAborted, up to
        `attempts` times, with jittered exponential backoff; the last abort is raised."""
        assert attempts > 0
        for attempt in range(attempts):
            tx = self.transaction()
            try:
                result = await body(tx)
                if not tx.done:
                    await tx.commit()
                return result
            except TxnAborted:
                await tx.abort()
                if attempt == attempts - 1:
                    raise
            except BaseException:
                await asyncio.shield(tx.abort())
                raise
            await self.backoff(attempt)
        raise AssertionError("unreachable")

    async def backoff(self, attempt: int) -> None:
        """The pause before retry `attempt + 1`: exponential, with full jitter, so contenders
        that aborted each other spread out."""
        await asyncio.sleep(min(0.01 * 2 ** attempt, 0.5) * self._rng.random())

    async def commit(self, tx: Transaction) -> None:
        if not tx.reads and not tx.writes and not tx.range_groups:
            return
        if not tx.writes and tx.locked == set(tx.reads):
            await self.release(tx)  # every read was locked while the others were: consistent
            return
        if self.router.revision < 0:
            await self.router.refresh()
        by_group: dict[int, tuple[list[IntentRead], list[IntentWrite]]] = {}
        for key, (group, kv) in sorted(tx.reads.items()):
            if self.router.map.lookup(key).group != group:
                raise TxnAborted("shard moved", key)
            by_group.setdefault(group, ([], []))[0].append(
                IntentRead(key, kv.mod_revision if kv is not None else 0))
        for key, w in sorted(tx.writes.items()):
            by_group.setdefault(self.router.map.lookup(key).group, ([], []))[1].append(w)
        for g in tx.range_groups:  # (their range locks are given back by the resolve)
            by_group.setdefault(g, ([], []))
        if len(by_group) == 1 and tx.record_group is None:
            [(group, (reads, writes))] = by_group.items()
            try:
                resp = await self._prepare(group, TxnPrepareRequest(
                    tx.id, group, tuple(reads), tuple(writes), one_phase=True))
            except ErrWrongShard as exc:  # (refused as a whole: nothing was written)
                await self.router.refresh(exc.version)
                raise TxnAborted("shard moved", exc.key) from None
            if not resp.prepared:
                await self._refuse(resp.conflicts)
            return
        record_group = tx.record_group
        if record_group is None:
            anchor = min(tx.writes) if tx.writes else min(tx.reads)
            record_group = self.router.map.lookup(anchor).group
        by_group.setdefault(record_group, ([], []))  # (it holds the record either way)
        lease = await self._lease(record_group)
        requests = {g: TxnPrepareRequest(tx.id, record_group, tuple(r), tuple(w),
                                         record_lease=lease if g == record_group else 0)
                    for g, (r, w) in by_group.items()}
        results = await asyncio.gather(*(self._prepare(g, req) for g, req in requests.items()),
                                       return_exceptions=True)
        votes = dict(zip(requests, results, strict=True))
        prepared = [g for g, v in votes.items() if isinstance(v, TxnPrepareResponse) and v.prepared]
        if "commit-without-every-vote" in self.bugs and record_group in prepared:
            prepared = list(votes)  # (planted: the record group's yes is taken for everyone's)
        all_yes = len(prepared) == len(votes)
        action = TxnRecordAction.COMMIT if all_yes else TxnRecordAction.ABORT
        undo = requests if not all_yes else {g: requests[g] for g in prepared}
        try:
            status = await self._record(record_group, tx.id, action)
        except (ClientError, TimeoutError) as exc:
            # Whoever holds the decision (this client, or the lease's end) must still reach the
            # intents: keep at it in the background. Only a commit's outcome is in doubt.
            self._settle_later(tx.id, record_group, undo, action)
            if all_yes:
                raise TxnUnknownOutcome(f"the commit of {tx.id.hex()} was not confirmed: "
                                        f"{exc}") from exc
            status = RecordStatus.ABORTED
        else:
            # The decision is durable: the intents are resolved in the background (as in
            # CockroachDB), and anyone who meets one first resolves it from the record.
            self._settle_later(tx.id, record_group, undo, action, decided=status)
        if all_yes:
            if status != RecordStatus.COMMITTED:
                raise TxnAborted("record aborted")
            return
        for v in votes.values():
            if isinstance(v, ErrLeaseNotFound):
                self._drop_lease(record_group)
                raise TxnAborted("lease expired")
            if isinstance(v, ErrWrongShard):
                await self.router.refresh(v.version)
                raise TxnAborted("shard moved", v.key)
            if isinstance(v, BaseException):  # (no commit was ever asked for: a sure abort)
                raise TxnAborted(f"a shard did not vote ({type(v).__name__}: {v})") from v
        conflicts = [c for v in votes.values() if isinstance(v, TxnPrepareResponse)
                     for c in v.conflicts]
        await self._refuse(tuple(conflicts))

    async def lock_reads(self, tx: Transaction, keys: Sequence[bytes]) -> None:
        """Lock and read `keys` for `tx`. The first lock also creates the transaction's
        pending record, before any other shard is locked, so a writer that meets one of these
        locks finds a live record and waits or gives up, and never presumes it abandoned."""
        if self.router.revision < 0:
            await self.router.refresh()
        by_group: dict[int, list[bytes]] = {}
        for k in keys:
            by_group.setdefault(self.router.map.lookup(k).group, []).append(k)
        if tx.record_group is None:
            tx.record_group = min(by_group)
            await self._lock_in(tx, tx.record_group, by_group.pop(tx.record_group, []),
                                await self._lease(tx.record_group))
        await asyncio.gather(*(self._lock_in(tx, g, ks, 0) for g, ks in by_group.items()))

    async def lock_range(self, tx: Transaction, key: bytes, range_end: bytes) -> list[KeyValue]:
        """Lock [key, range_end) in every shard it spans, for `tx` (no writer, no new key
        until it ends), and its keys as of then: one snapshot across shards. The first
        shard's lock creates the record, as in lock_reads."""
        if self.router.revision < 0:
            await self.router.refresh()
        pieces = self.router.map.pieces(key, range_end)
        found: list[list[KeyValue]] = [[] for _ in pieces]

        async def one(i: int, lease: int) -> None:
            shard, lo, hi = pieces[i]
            found[i] = await self._lock_in(tx, shard.group, (), lease,
                                           (IntentRange(lo or b"\0", hi or b"\0"),))
        if tx.record_group is None:
            tx.record_group = pieces[0][0].group
            await one(0, await self._lease(tx.record_group))
            rest = range(1, len(pieces))
        else:
            rest = range(len(pieces))
        await asyncio.gather(*(one(i, 0) for i in rest))
        return [kv for part in found for kv in part]

    async def _lock_in(self, tx: Transaction, group: int, keys: Sequence[bytes],
                       lease: int, ranges: tuple[IntentRange, ...] = ()) -> list[KeyValue]:
        assert tx.record_group is not None
        req = TxnPrepareRequest(tx.id, tx.record_group,
                                tuple(IntentRead(k, LOCKING_READ) for k in keys),
                                record_lease=lease, lock_ranges=ranges)
        loop = asyncio.get_running_loop()
        end = loop.time() + self.client.timeout
        while True:
            try:
                resp = await self._prepare(group, req)
            except ErrLeaseNotFound:
                self._drop_lease(group)
                raise TxnAborted("lease expired") from None
            except ErrWrongShard as exc:
                await self.router.refresh(exc.version)
                raise TxnAborted("shard moved", exc.key) from None
            if resp.prepared:
                break
            decided = [c for c in resp.conflicts if c.reason == "decided"]
            if decided or loop.time() > end:
                await self._refuse(resp.conflicts)
            await self.resolve(resp.conflicts, min(end, loop.time() + 0.05), wait_pending=True)
        got = {kv.key: kv for kv in resp.kvs}
        for k in [*keys, *(k for k in got if ranges)]:
            tx.reads[k] = (group, got.get(k))
            tx.locked.add(k)
        if ranges:
            tx.range_groups.add(group)
        return list(resp.kvs)

    async def release(self, tx: Transaction) -> None:
        """Give back `tx`'s shared locks and its record, if it took any."""
        if tx.record_group is None:
            return
        try:
            await self._record(tx.record_group, tx.id, TxnRecordAction.ABORT)
            by_group: dict[int, list[bytes]] = {g: [] for g in tx.range_groups}
            for k in sorted(tx.locked):
                by_group.setdefault(tx.reads[k][0], []).append(k)
            await asyncio.gather(*(self._resolve_in(g, tx.id, False, ks)
                                   for g, ks in by_group.items()))
            await self._record(tx.record_group, tx.id, TxnRecordAction.FORGET)
        except (ClientError, TimeoutError):
            pass  # the locks point at an aborted (or, once the lease ends, absent) record

    async def _refuse(self, conflicts: Sequence[TxnConflict]) -> None:
        """Raise the abort these conflicts cause, after resolving the locks among them so the
        retry does not meet the same abandoned intents."""
        locks = [c for c in conflicts if c.reason == "locked"]
        if locks:
            loop = asyncio.get_running_loop()
            try:
                await self.resolve(locks, loop.time() + 0.2, wait_pending=False)
            except (TxnAborted, ClientError, TimeoutError):
                pass  # (a courtesy to the retry: the abort stands either way)
        first = conflicts[0] if conflicts else None
        if first is None:
            raise TxnAborted("conflict")
        raise TxnAborted("conflict" if first.reason == "locked" else first.reason,
                         first.key or None, first.holder or None)

    def _settle_later(self, txn: bytes, record_group: int,
                      prepared: dict[int, TxnPrepareRequest], action: TxnRecordAction,
                      decided: RecordStatus | None = None) -> None:
        """Deliver the decision (`action` on the record, which answers the status; or the
        status `decided` already) and the resolves of `txn` in the background, retrying until
        they go through; past SETTLE_ATTEMPTS give up the record group's lease instead, so a
        record still pending ends and presumed abort decides."""
        async def settle() -> None:
            status = decided
            for attempt in range(SETTLE_ATTEMPTS):
                if attempt or status is None:
                    await asyncio.sleep(min(0.05 * 2 ** attempt, 2.0))
                try:
                    if status is None:
                        status = await self._record(record_group, txn, action)
                    await self._finish(txn, record_group, prepared,
                                       status == RecordStatus.COMMITTED)
                    return
                except (ClientError, TimeoutError):
                    continue
            self._drop_lease(record_group)

        task = asyncio.get_running_loop().create_task(settle())
        self._settling.add(task)
        task.add_done_callback(self._settling.discard)

    async def _finish(self, txn: bytes, record_group: int,
                      prepared: dict[int, TxnPrepareRequest], commit: bool) -> None:
        """Resolve the intents the prepared shards hold, then forget the record."""
        await asyncio.gather(*(self._resolve_in(g, txn, commit, [
            *(w.key for w in r.writes), *(x.key for x in r.reads)]) for g, r in prepared.items()))
        await self._record(record_group, txn, TxnRecordAction.FORGET)

    async def _prepare(self, group: int, req: TxnPrepareRequest) -> TxnPrepareResponse:
        return await self.router.view(group).write_request(req, TxnPrepareResponse)

    async def _record(self, group: int, txn: bytes, action: TxnRecordAction) -> RecordStatus:
        resp = await self.router.view(group).write_request(TxnRecordRequest(txn, action),
                                                           TxnRecordResponse)
        return resp.status

    async def _resolve_in(self, group: int, txn: bytes, commit: bool,
                          keys: Sequence[bytes]) -> None:
        """Resolve `txn`'s intents on `keys`, all in `group` as last known: one request."""
        try:
            await self.router.view(group).write_request(
                TxnResolveRequest(txn, commit, tuple(keys)), TxnResolveResponse)
        except ErrWrongShard:
            await self._resolve_keys(txn, commit, keys)  # a split moved some of them

    async def _resolve_keys(self, txn: bytes, commit: bool, keys: Sequence[bytes]) -> None:
        """Resolve `txn`'s intents on `keys`, each in the shard that holds it now."""
        for key in keys:  # (a split moved some: one request per key keeps rerouting simple)
            async def one(c: Client, key: bytes = key) -> TxnResolveResponse:
                return await c.write_request(TxnResolveRequest(txn, commit, (key,)),
                                             TxnResolveResponse)
            await self.router.on_key(key, one)

    async def resolve(self, conflicts: Sequence[TxnConflict], deadline: float,
                      wait_pending: bool = True) -> None:
        """Resolve the intents named by `conflicts` from their records (see the module)."""
        loop = asyncio.get_running_loop()
        holders: dict[tuple[bytes, int], list[bytes]] = {}
        for c in conflicts:
            holders.setdefault((c.holder, c.holder_group), []).append(c.key)
        for (txn, group), keys in holders.items():
            status = await self._record(group, txn, TxnRecordAction.STATUS)
            grace = iter(ABSENT_GRACE)
            delay = 0.005
            while status in (RecordStatus.PENDING, RecordStatus.ABSENT):
                if status == RecordStatus.ABSENT:
                    pause = next(grace, None)
                    if pause is None:
                        status = await self._record(group, txn, TxnRecordAction.ABORT_ABANDONED)
                        break
                elif not wait_pending or loop.time() > deadline:
                    raise TxnAborted("conflict", keys[0], txn)
                else:
                    pause, delay = delay, min(delay * 2, 0.1)
                await asyncio.sleep(pause)
                status = await self._record(group, txn, TxnRecordAction.STATUS)
            # (the record stays: it is its coordinator's to forget, other keys may need it)
            await self._resolve_keys(txn, status == RecordStatus.COMMITTED, keys)

    # ---------------------------------------------------------------- the record's lease
    async def _lease(self, group: int) -> int:
        held = self._leases.get(group)
        if held is not None and not held[1].done():
            return held[0]
        view = self.router.view(group)
        lease = (await view.lease_grant(self.record_ttl_s)).id
        task = view.keep_alive(lease, self.record_ttl_s)
        # A refresh that fails ends the task; the next transaction grants a new lease.
        task.add_done_callback(lambda t: t.cancelled() or t.exception())
        self._leases[group] = (lease, task)
        return lease

    def _drop_lease(self, group: int) -> None:
        held = self._leases.pop(group, None)
        if held is not None:
            held[1].cancel()
