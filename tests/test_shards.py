"""Shards and transactions across them on a real 3-node cluster: a split under live writes
loses and duplicates nothing, the bank's total never changes under concurrent transfers and
whole-bank reads, and a coordinator that stops at any step of two-phase commit leaves nothing
half-applied and no intent that the next reader does not resolve."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import pytest

from cluster import LocalCluster, eventually, run
from shoal.client import Client
from shoal.kv.requests import RecordStatus
from shoal.shard.split import SplitError, split
from shoal.txn.coordinator import Transaction, TxnAborted, TxnClient

ACCOUNTS = [b"acct/%02d" % i for i in range(12)]


async def _sharded_bank(c: LocalCluster, cl: Client) -> TxnClient:
    s = cl.sharded()
    for a in ACCOUNTS:
        await s.put(a, b"100")
    await split(cl, b"acct/04")
    await split(cl, b"acct/08")
    await s.router.refresh()
    assert len({s.router.map.lookup(a).group for a in ACCOUNTS}) == 3
    return s


def _intents(c: LocalCluster) -> int:
    return sum(g.replica.kv.intents.count for srv in c.servers.values()
               for g in srv.node.groups.values())


def test_split_under_writes_loses_nothing_and_stalls_briefly(tmp_path: Path) -> None:
    async def main() -> None:
        async with LocalCluster(tmp_path, 3) as c, Client(c.endpoints, timeout=20) as cl:
            s = cl.sharded()
            written: dict[bytes, bytes] = {}
            stalls: list[float] = []
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()

            async def writer(w: int) -> None:
                n = 0
                while not stop.is_set():
                    key = b"key/%d/%04d" % (w, n % 40)
                    value = b"%d" % n
                    t = loop.time()
                    await s.put(key, value)
                    stalls.append(loop.time() - t)
                    written[key] = value
                    n += 1

            writers = [asyncio.create_task(writer(w)) for w in range(4)]
            while len(written) < 40:
                await asyncio.sleep(0.01)
            new = await split(cl, b"key/2")
            await asyncio.sleep(0.2)
            stop.set()
            await asyncio.gather(*writers)
            assert new.version == 1 and [sh.group for sh in new.shards] == [0, 1]
            got = {kv.key: kv.value for kv in await s.range(b"key/", b"key0")}
            assert got == written  # every acknowledged write, once, in the shard that owns it
            moved = await cl.group(1).get(b"key/2", range_end=b"key0")
            assert {kv.key for kv in moved.kvs} == {k for k in written if k >= b"key/2"}
            kept = await cl.get(b"key/", range_end=b"key/2")
            assert {kv.key for kv in kept.kvs} == {k for k in written if k < b"key/2"}
            assert max(stalls) < 1.0, max(stalls)  # Shoal's default election timeout
            with pytest.raises(SplitError, match="already"):
                await split(cl, b"key/2")

    run(main())


def test_bank_total_holds_under_concurrent_transfers(tmp_path: Path) -> None:
    async def main() -> None:
        async with LocalCluster(tmp_path, 3) as c, Client(c.endpoints, timeout=20) as cl:
            s = await _sharded_bank(c, cl)
            totals: list[int] = []
            rng = random.Random(7)

            async def transfer(tx: Transaction) -> None:
                src, dst = rng.sample(ACCOUNTS, 2)
                a, b = int(await tx.get(src) or 0), int(await tx.get(dst) or 0)
                amount = rng.randint(1, 5)
                tx.put(src, b"%d" % (a - amount))
                tx.put(dst, b"%d" % (b + amount))

            async def total(tx: Transaction) -> int:
                if rng.random() < 0.5:  # validated at commit
                    return sum([int(await tx.get(a) or 0) for a in ACCOUNTS])
                held = await tx.lock_read(*ACCOUNTS)  # read under shared locks
                return sum(int(v or 0) for v in held.values())

            async def teller() -> None:
                for _ in range(15):
                    await s.run(transfer, attempts=50)

            async def auditor() -> None:
                for _ in range(5):
                    totals.append(await s.run(total, attempts=50))

            await asyncio.gather(*(teller() for _ in range(4)), auditor(), auditor())
            assert totals and all(t == 100 * len(ACCOUNTS) for t in totals), totals
            final = [int((await s.get(a)).value) for a in ACCOUNTS]  # type: ignore[union-attr]
            assert sum(final) == 100 * len(ACCOUNTS) and final != [100] * len(ACCOUNTS)
            await s.close()  # (intents are resolved in the background: let that finish)
            await eventually(lambda: _intents(c) == 0, what="every intent resolved")

    run(main(), timeout=120)


@pytest.mark.parametrize("step", ["after one prepare", "after every prepare", "after the decision",
                                  "after one resolve"])
def test_a_coordinator_that_stops_at_any_step_leaves_no_half_transaction(
        tmp_path: Path, step: str) -> None:
    async def main() -> None:
        async with LocalCluster(tmp_path, 3) as c, Client(c.endpoints, timeout=20) as cl:
            await _sharded_bank(c, cl)
            dying = TxnClient(cl)
            dying.record_ttl_s = 1  # the lease a reader waits out for a pending record
            calls = {"prepare": 0, "record": 0, "resolve": 0}
            src, dst = ACCOUNTS[0], ACCOUNTS[-1]  # two shards; the record lives with src

            dead = asyncio.Event()  # the coordinator's process stops here, for good

            def crash_after(kind: str, n: int, real):  # type: ignore[no-untyped-def]
                async def wrapped(*a):  # type: ignore[no-untyped-def]
                    result = await real(*a)
                    calls[kind] += 1
                    if calls[kind] >= n:
                        dead.set()
                        await asyncio.Event().wait()  # never returns: it is cancelled
                    return result
                return wrapped

            if step == "after one prepare":
                dying._prepare = crash_after("prepare", 1, dying._prepare)  # type: ignore[method-assign]
            elif step == "after every prepare":
                dying._prepare = crash_after("prepare", 2, dying._prepare)  # type: ignore[method-assign]
            elif step == "after the decision":
                dying._record = crash_after("record", 1, dying._record)  # type: ignore[method-assign]
            else:
                dying._resolve_in = crash_after("resolve", 1, dying._resolve_in)  # type: ignore[method-assign]
            tx = dying.transaction()
            a, b = int(await tx.get(src) or 0), int(await tx.get(dst) or 0)
            tx.put(src, b"%d" % (a - 30))
            tx.put(dst, b"%d" % (b + 30))
            commit = asyncio.create_task(tx.commit())
            await dead.wait()
            commit.cancel()
            for task in [*dying._settling, *(t for _, t in dying._leases.values())]:
                task.cancel()  # the process is gone: its lease is no longer kept alive
            committed = step in ("after the decision", "after one resolve")
            # Another client meets the intents and resolves them from the record.
            other = TxnClient(cl)
            values = [int((await other.get(k)).value) for k in (src, dst)]  # type: ignore[union-attr]
            assert values == ([70, 130] if committed else [100, 100]), (step, values)
            assert sum([int((await other.get(k)).value) for k in ACCOUNTS]) == 1200  # type: ignore[union-attr]
            assert _intents(c) == 0
            # A late commit from the paused coordinator cannot change the outcome now.
            record_group = other.router.map.lookup(src).group
            status = await other._record(record_group, tx.id, 1)  # type: ignore[arg-type]
            assert status in (RecordStatus.COMMITTED if committed else RecordStatus.ABORTED,
                              RecordStatus.ABSENT)

    run(main(), timeout=60)


def test_aborts_name_the_reason_and_key(tmp_path: Path) -> None:
    async def main() -> None:
        async with LocalCluster(tmp_path, 3) as c, Client(c.endpoints, timeout=20) as cl:
            s = await _sharded_bank(c, cl)
            tx = s.transaction()
            await tx.get(ACCOUNTS[0])
            await s.put(ACCOUNTS[0], b"5")  # someone writes what tx read
            tx.put(ACCOUNTS[-1], b"1")
            with pytest.raises(TxnAborted) as exc:
                await tx.commit()
            assert exc.value.reason == "changed" and exc.value.key == ACCOUNTS[0]
            assert exc.value.retryable
            async with cl.transaction() as tx2:
                tx2.put(ACCOUNTS[0], b"100")
            assert (await s.get(ACCOUNTS[0])).value == b"100"  # type: ignore[union-attr]

    run(main())


def test_watches_follow_their_shard_and_end_when_a_split_moves_them(tmp_path: Path) -> None:
    async def main() -> None:
        async with LocalCluster(tmp_path, 3) as c, Client(c.endpoints, timeout=20) as cl:
            s = cl.sharded()
            await s.put(b"w/a", b"0")
            await split(cl, b"w/m")
            await s.router.refresh()
            seen: list[bytes] = []

            async def follow(key: bytes) -> None:
                async for resp in s.watch(key):
                    seen.extend(e.kv.value for e in resp.events)
                    if seen:
                        return

            watcher = asyncio.create_task(follow(b"w/q"))  # in group 1, the new shard
            await eventually(lambda: any(g.watch_sinks for srv in c.servers.values()
                                         for gid, g in srv.node.groups.items() if gid == 1),
                             what="the watch to reach group 1")
            await s.put(b"w/q", b"hello")
            await asyncio.wait_for(watcher, 10)
            assert seen == [b"hello"]
            with pytest.raises(ValueError, match="spans 2 shards"):
                async for _ in s.watch(b"w/", prefix=True):
                    pass
            # A watch on a range a split then moves away ends, saying so.
            events: list[bytes] = []

            async def doomed() -> None:
                async for resp in s.watch(b"w/b", range_end=b"w/k"):
                    events.extend(e.kv.key for e in resp.events)

            task = asyncio.create_task(doomed())
            await eventually(lambda: any(g.watch_sinks for g in c.servers[1].node.groups.values())
                             or any(g.watch_sinks for srv in c.servers.values()
                                    for gid, g in srv.node.groups.items() if gid == 0),
                             what="the watch to be created")
            await split(cl, b"w/c")
            from shoal.client.errors import WatchCanceled
            with pytest.raises(WatchCanceled, match="moved to another shard"):
                await asyncio.wait_for(task, 10)
            assert not any(k.startswith(b"w/c") for k in events)  # no drop shown as deletes

    run(main())


def test_a_snapshot_across_shards_sees_one_moment(tmp_path: Path) -> None:
    """Ranges spanning three shards read while transfers run: every snapshot sums to the
    bank's total (shard-by-shard reads without a lock would not), and new keys wait."""
    async def main() -> None:
        async with LocalCluster(tmp_path, 3) as c, Client(c.endpoints, timeout=20) as cl:
            s = await _sharded_bank(c, cl)
            rng = random.Random(3)
            stop = asyncio.Event()

            async def transfer(tx: Transaction) -> None:
                src, dst = rng.sample(ACCOUNTS, 2)
                a, b = int(await tx.get(src) or 0), int(await tx.get(dst) or 0)
                tx.put(src, b"%d" % (a - 7))
                tx.put(dst, b"%d" % (b + 7))

            async def teller() -> None:
                while not stop.is_set():
                    await s.run(transfer, attempts=100)

            tellers = [asyncio.create_task(teller()) for _ in range(3)]
            totals = []
            for _ in range(8):
                kvs = await s.snapshot(b"acct/", b"acct0")
                assert [kv.key for kv in kvs] == ACCOUNTS  # in key order, across 3 shards
                totals.append(sum(int(kv.value) for kv in kvs))
            stop.set()
            await asyncio.gather(*tellers)
            assert totals == [100 * len(ACCOUNTS)] * 8
            await s.close()
            await eventually(lambda: _intents(c) == 0 and not any(
                g.replica.kv.intents.ranges for srv in c.servers.values()
                for g in srv.node.groups.values()), what="every lock given back")

    run(main(), timeout=120)
