"""Lock and Election recipes against real nodes."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from cluster import LocalCluster, eventually, holds_for, run
from shoal.client import Client, Election, Lock
from shoal.kv import Compare, CompareResult, CompareTarget, PutRequest


async def cancel(task: asyncio.Task) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task


def test_lock_mutual_exclusion_and_increasing_fencing_tokens(tmp_path):
    rounds = 3

    async def main():
        async with LocalCluster(tmp_path) as c, Client(c.endpoints) as admin:
            await c.leader()
            await admin.put(b"counter", b"0")
            inside = 0
            overlaps = 0
            tokens: list[int] = []

            async def contender(n: int) -> None:
                nonlocal inside, overlaps
                async with Client(c.endpoints) as cl:
                    for _ in range(rounds):
                        lock = Lock(cl, "ctr", ttl=5)
                        token = await lock.acquire()
                        inside += 1
                        overlaps += inside > 1
                        tokens.append(token)
                        try:
                            cur = (await cl.get(b"counter")).kvs[0]
                            await asyncio.sleep(0.01)  # widen the window a racing holder would hit
                            r = await cl.txn(
                                [Compare(b"counter", CompareTarget.MOD, CompareResult.EQUAL,
                                         cur.mod_revision)],
                                [PutRequest(b"counter", str(int(cur.value) + 1).encode())])
                            assert r.succeeded, f"contender {n}: counter changed under the lock"
                        finally:
                            inside -= 1
                            await lock.release()

            await asyncio.gather(*(contender(n) for n in range(3)))
            assert overlaps == 0
            assert await admin.get_value(b"counter") == str(3 * rounds).encode()
            # tokens in the order the lock was granted are strictly increasing
            assert len(tokens) == 3 * rounds
            assert tokens == sorted(tokens) and len(set(tokens)) == len(tokens)
            # every lock key is gone, and every lease with it
            assert (await admin.get(b"/shoal/lock/", prefix=True, count_only=True)).count == 0
            for s in c.servers.values():
                await s.node.read_barrier(5)
                assert s.node.kv.lessor.ids() == []
    run(main())


def test_a_holder_whose_lease_is_revoked_loses_the_lock_to_the_next_waiter(tmp_path):
    async def main():
        async with LocalCluster(tmp_path) as c, Client(c.endpoints) as ca, \
                Client(c.endpoints) as cb:
            await c.leader()
            a = Lock(ca, "res", ttl=10)
            b = Lock(cb, "res", ttl=10)
            ta = await a.acquire()
            waiting = asyncio.create_task(b.acquire())
            try:
                await eventually(lambda: b.token > 0, what="b to queue up")
                assert b.token > ta
                # b waits while a holds the lock
                await holds_for(lambda: not waiting.done(), 0.5, "b waiting")
                # a's lease is revoked (as when its session dies): its key goes, b gets in
                await ca.lease_revoke(a._q.lease)
                tb = await asyncio.wait_for(waiting, 5)
                assert tb == b.token and tb > ta
                held = await cb.get(b"/shoal/lock/res/", prefix=True)
                assert [x.key for x in held.kvs] == [b._q.key]  # a's key is gone
                await b.release()
            finally:
                await cancel(waiting)
                if a._q._keepalive is not None:
                    await cancel(a._q._keepalive)
    run(main())


def test_election_campaign_leader_proclaim_observe_resign(tmp_path):
    async def main():
        async with LocalCluster(tmp_path) as c, Client(c.endpoints) as c1, \
                Client(c.endpoints) as c2, Client(c.endpoints) as c3:
            await c.leader()
            alice, bob = Election(c1, "boss", ttl=10), Election(c2, "boss", ttl=10)
            watcher = Election(c3, "boss")
            assert await watcher.leader() is None

            seen: list[bytes | None] = []

            async def observe():
                async for value in watcher.observe():
                    seen.append(value)

            obs = asyncio.create_task(observe())
            try:
                await eventually(lambda: seen == [None], what="the observer's first value")
                await alice.campaign(b"alice")
                assert await watcher.leader() == b"alice"
                bob_campaign = asyncio.create_task(bob.campaign(b"bob"))
                await eventually(lambda: bob._q.revision > 0, what="bob to enter the race")
                await holds_for(lambda: not bob_campaign.done(), 0.3, "bob waiting")
                assert await watcher.leader() == b"alice"  # bob's key is not the leader's

                await alice.proclaim(b"alice v2")
                assert await watcher.leader() == b"alice v2"

                await alice.resign()
                await asyncio.wait_for(bob_campaign, 5)
                assert await watcher.leader() == b"bob"
                with pytest.raises(RuntimeError):
                    await alice.proclaim(b"alice again")
                await eventually(lambda: seen[-1:] == [b"bob"], what="the observer to see bob")
                assert seen == [None, b"alice", b"alice v2", b"bob"]
                await bob.resign()
                await eventually(lambda: seen[-1:] == [None], what="the observer to see no leader")
            finally:
                await cancel(obs)
    run(main())


def test_a_candidate_that_is_not_leading_cannot_proclaim(tmp_path):
    async def main():
        async with LocalCluster(tmp_path) as c, Client(c.endpoints) as c1, \
                Client(c.endpoints) as c2:
            await c.leader()
            alice, bob = Election(c1, "boss", ttl=10), Election(c2, "boss", ttl=10)
            await alice.campaign(b"alice")
            bob_campaign = asyncio.create_task(bob.campaign(b"bob"))
            try:
                await eventually(lambda: bob._q.revision > 0, what="bob to enter the race")
                with pytest.raises(RuntimeError):
                    await bob.proclaim(b"usurper")
            finally:
                await alice.resign()
                await asyncio.wait_for(bob_campaign, 5)
                leader = await Election(c1, "boss").leader()
                await bob.resign()
            assert leader == b"bob"
    run(main())
