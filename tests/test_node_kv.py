"""Key-value API against real nodes on loopback: ranges, deletes, transactions, compaction,
watches (history, live, resume after a node stops) and reads from followers."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from cluster import LocalCluster, drop_client_connections, ep, eventually, run
from shoal import kv
from shoal.client import Client
from shoal.client.errors import ClientError
from shoal.kv import (
    Compare,
    CompareResult,
    CompareTarget,
    EventType,
    PutRequest,
    RangeRequest,
    SortOrder,
    SortTarget,
)


def test_range_prefix_limit_revision_count_keys_only_and_sort(tmp_path):
    async def main():
        async with LocalCluster(tmp_path) as c, Client(c.endpoints) as cl:
            await c.leader()
            revs = {}
            # values chosen so that value order differs from key order
            for name, value in [("a/1", b"z"), ("a/2", b"x"), ("a/3", b"y"), ("a/4", b"w")]:
                revs[name] = (await cl.put(name.encode(), value)).header.revision
            await cl.put(b"b/1", b"other prefix")
            await cl.put(b"a", b"not under a/")
            updated = (await cl.put(b"a/1", b"z2")).header.revision

            r = await cl.get(b"a/", prefix=True)
            assert [x.key for x in r.kvs] == [b"a/1", b"a/2", b"a/3", b"a/4"]
            assert [x.value for x in r.kvs] == [b"z2", b"x", b"y", b"w"]
            assert r.count == 4 and not r.more
            assert r.header.revision == updated
            a1 = r.kvs[0]
            assert (a1.create_revision, a1.mod_revision, a1.version) == (revs["a/1"], updated, 2)

            r = await cl.get(b"a/", prefix=True, limit=2)
            assert [x.key for x in r.kvs] == [b"a/1", b"a/2"]
            assert r.more and r.count == 4

            # explicit range_end: [a/2, a/4)
            r = await cl.get(b"a/2", range_end=b"a/4")
            assert [x.key for x in r.kvs] == [b"a/2", b"a/3"]

            # an old revision sees the old value and not the keys created later
            r = await cl.get(b"a/", prefix=True, revision=revs["a/2"])
            assert [(x.key, x.value) for x in r.kvs] == [(b"a/1", b"z"), (b"a/2", b"x")]
            assert r.header.revision == updated  # the header is the store's revision (etcd)

            r = await cl.get(b"a/", prefix=True, count_only=True)
            assert r.kvs == () and r.count == 4

            r = await cl.get(b"a/", prefix=True, keys_only=True)
            assert [x.key for x in r.kvs] == [b"a/1", b"a/2", b"a/3", b"a/4"]
            assert all(x.value == b"" for x in r.kvs)
            assert r.kvs[0].mod_revision == updated  # metadata is still there

            r = await cl.get(b"a/", prefix=True, sort_target=SortTarget.VALUE,
                             sort_order=SortOrder.ASCEND)
            assert [x.value for x in r.kvs] == [b"w", b"x", b"y", b"z2"]
            r = await cl.get(b"a/", prefix=True, sort_target=SortTarget.MOD,
                             sort_order=SortOrder.DESCEND)
            assert [x.key for x in r.kvs] == [b"a/1", b"a/4", b"a/3", b"a/2"]
            r = await cl.get(b"a/", prefix=True, sort_target=SortTarget.KEY,
                             sort_order=SortOrder.DESCEND, limit=1)
            assert [x.key for x in r.kvs] == [b"a/4"] and r.more

            with pytest.raises(kv.ErrFutureRev):
                await cl.get(b"a/", prefix=True, revision=updated + 100)
            assert await cl.get_value(b"missing") is None
    run(main())


def test_delete_range_returns_prev_kvs(tmp_path):
    async def main():
        async with LocalCluster(tmp_path) as c, Client(c.endpoints) as cl:
            await c.leader()
            for i in range(3):
                await cl.put(f"d/{i}".encode(), f"v{i}".encode())
            await cl.put(b"e", b"stays")
            before = (await cl.get(b"e")).header.revision

            resp = await cl.delete(b"d/", prefix=True, prev_kv=True)
            assert resp.deleted == 3
            assert [(p.key, p.value) for p in resp.prev_kvs] == [
                (b"d/0", b"v0"), (b"d/1", b"v1"), (b"d/2", b"v2")]
            assert resp.header.revision == before + 1  # one revision for the whole range
            assert (await cl.get(b"d/", prefix=True, count_only=True)).count == 0
            assert await cl.get_value(b"e") == b"stays"

            # without prev_kv the count is still reported, the values are not
            await cl.put(b"f", b"1")
            resp = await cl.delete(b"f")
            assert resp.deleted == 1 and resp.prev_kvs == ()
            # deleting nothing is not a new revision
            rev = resp.header.revision
            resp = await cl.delete(b"nothing-here", prev_kv=True)
            assert resp.deleted == 0 and resp.prev_kvs == () and resp.header.revision == rev
    run(main())


def test_txn_compare_and_swap_success_and_failure(tmp_path):
    async def main():
        async with LocalCluster(tmp_path) as c, Client(c.endpoints) as cl:
            await c.leader()
            created = (await cl.put(b"cas", b"v1")).header.revision

            ok = await cl.txn([Compare(b"cas", CompareTarget.VALUE, CompareResult.EQUAL, b"v1")],
                              [PutRequest(b"cas", b"v2", prev_kv=True)],
                              [RangeRequest(b"cas")])
            assert ok.succeeded
            assert ok.responses[0].prev_kv.value == b"v1"
            assert ok.header.revision == created + 1
            assert await cl.get_value(b"cas") == b"v2"

            # the same swap again fails: the failure branch runs and reports the current value
            bad = await cl.txn([Compare(b"cas", CompareTarget.VALUE, CompareResult.EQUAL, b"v1")],
                               [PutRequest(b"cas", b"v3")],
                               [RangeRequest(b"cas")])
            assert not bad.succeeded
            assert [x.value for x in bad.responses[0].kvs] == [b"v2"]
            assert bad.header.revision == created + 1  # nothing was written
            assert await cl.get_value(b"cas") == b"v2"

            # compare on mod revision and create-if-absent
            mod = (await cl.get(b"cas")).kvs[0].mod_revision
            r = await cl.txn([Compare(b"cas", CompareTarget.MOD, CompareResult.EQUAL, mod)],
                             [PutRequest(b"cas", b"v4")])
            assert r.succeeded and await cl.get_value(b"cas") == b"v4"
            r = await cl.txn([Compare(b"new", CompareTarget.CREATE, CompareResult.EQUAL, 0)],
                             [PutRequest(b"new", b"first")])
            assert r.succeeded
            r = await cl.txn([Compare(b"new", CompareTarget.CREATE, CompareResult.EQUAL, 0)],
                             [PutRequest(b"new", b"second")])
            assert not r.succeeded and await cl.get_value(b"new") == b"first"

            # concurrent increments through CAS: each retried until it wins; none is lost
            await cl.put(b"ctr", b"0")

            async def incr():
                while True:
                    cur = (await cl.get(b"ctr")).kvs[0]
                    r = await cl.txn(
                        [Compare(b"ctr", CompareTarget.MOD, CompareResult.EQUAL, cur.mod_revision)],
                        [PutRequest(b"ctr", str(int(cur.value) + 1).encode())])
                    if r.succeeded:
                        return

            await asyncio.gather(*(incr() for _ in range(8)))
            assert await cl.get_value(b"ctr") == b"8"
    run(main())


def test_compaction_makes_old_revisions_unreadable(tmp_path):
    async def main():
        async with LocalCluster(tmp_path) as c, Client(c.endpoints) as cl:
            await c.leader()
            revs = [(await cl.put(b"k", f"v{i}".encode())).header.revision for i in range(5)]
            await cl.compact(revs[3])
            with pytest.raises(kv.ErrCompacted) as info:
                await cl.get(b"k", revision=revs[1])
            assert info.value.compact_revision == revs[3]
            # at and after the compact revision history is still there
            assert (await cl.get(b"k", revision=revs[3])).kvs[0].value == b"v3"
            assert (await cl.get(b"k")).kvs[0].value == b"v4"
            # compacting again at or below is an error too
            with pytest.raises(kv.ErrCompacted):
                await cl.compact(revs[2])
            # a watch from a compacted revision is refused with the compact revision
            with pytest.raises(kv.ErrCompacted):
                async for _ in cl.watch(b"k", start_revision=revs[0]):
                    pass
            # the compaction is replicated: every node refuses the old revision
            for s in c.servers.values():
                await s.node.read_barrier(5)
                assert s.node.kv.compact_revision == revs[3]
    run(main())


# ------------------------------------------------------------------------------ watch


async def collect(stream, out: list, stop_after: int | None = None) -> None:
    async for resp in stream:
        out.extend(resp.events)
        if stop_after is not None and len(out) >= stop_after:
            return


def test_watch_from_a_past_revision_gets_history_then_live_events(tmp_path):
    async def main():
        async with LocalCluster(tmp_path) as c, Client(c.endpoints) as cl:
            await c.leader()
            first = (await cl.put(b"w/a", b"1")).header.revision
            await cl.put(b"w/b", b"2")
            await cl.put(b"other", b"ignored")
            await cl.delete(b"w/a")
            events: list = []
            task = asyncio.create_task(collect(cl.watch(b"w/", prefix=True, start_revision=first,
                                                        prev_kv=True), events))
            try:
                await eventually(lambda: len(events) >= 3, what="history events")
                await cl.put(b"w/c", b"3")
                await cl.put(b"w/b", b"22")
                await eventually(lambda: len(events) >= 5, what="live events")
            finally:
                task.cancel()
            got = [(e.type, e.kv.key, e.kv.value) for e in events]
            assert got == [(EventType.PUT, b"w/a", b"1"), (EventType.PUT, b"w/b", b"2"),
                           (EventType.DELETE, b"w/a", b""), (EventType.PUT, b"w/c", b"3"),
                           (EventType.PUT, b"w/b", b"22")]
            revs = [e.kv.mod_revision for e in events]
            assert revs == sorted(revs) and len(set(revs)) == 5 and revs[0] == first
            assert events[2].prev_kv is not None and events[2].prev_kv.value == b"1"
            assert events[4].prev_kv.value == b"2"
    run(main())


async def _watch_across_node_stop(tmp_path, drop_connections: bool) -> None:
    async with LocalCluster(tmp_path) as c, Client(c.endpoints) as cl:
        lead = await c.leader()
        f1, f2 = [i for i in sorted(c.servers) if i != lead]
        start = (await cl.put(b"r/start", b"")).header.revision + 1
        # the watch client picks its first endpoint first: the follower we will stop
        async with Client([ep(c, f1), ep(c, f2)], timeout=5) as wcl:
            events: list = []
            task = asyncio.create_task(collect(wcl.watch(b"r/", prefix=True, start_revision=start),
                                               events))
            try:
                for i in range(5):
                    await cl.put(f"r/{i}".encode(), b"before")
                await eventually(lambda: len(events) >= 5, what="events before the stop")
                assert set(wcl._conns) == {ep(c, f1)}  # the watch is served by f1
                await c.stop(f1)
                if drop_connections:
                    drop_client_connections(wcl, ep(c, f1))
                for i in range(5, 10):
                    await cl.put(f"r/{i}".encode(), b"after")
                await eventually(lambda: len(events) >= 10, timeout=8, what="events after the stop")
                await asyncio.sleep(0)
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            assert [e.kv.key for e in events] == [f"r/{i}".encode() for i in range(10)]
            revs = [e.kv.mod_revision for e in events]
            assert revs == list(range(start, start + 10))  # no gap, no duplicate
            assert ep(c, f2) in wcl._conns


def test_watch_resumes_on_another_node_after_its_connection_drops(tmp_path):
    """The node serving the watch stops and its connections drop (as when the process dies):
    the client re-creates the watch elsewhere from the next revision."""
    run(_watch_across_node_stop(tmp_path, drop_connections=True))


def test_watch_resumes_after_the_serving_node_is_stopped_in_process(tmp_path):
    run(_watch_across_node_stop(tmp_path, drop_connections=False))


# ------------------------------------------------------------------------------ follower reads


def test_serializable_reads_are_served_locally_by_a_follower(tmp_path):
    async def main():
        async with LocalCluster(tmp_path) as c, Client(c.endpoints) as cl:
            lead = await c.leader()
            f1, f2 = [i for i in sorted(c.servers) if i != lead]
            await cl.put(b"s", b"v1")
            async with Client([ep(c, f1)], timeout=3) as fcl:
                await eventually(lambda: _value_is(fcl.get(b"s", serializable=True), b"v1"),
                                 what="follower applying v1")
                # cut the follower off: serializable reads still answer, from its own (now
                # stale) state, and without asking the leader anything
                await eventually(lambda: c.servers[f1].node.applied >= c.servers[lead].node.applied)
                c.servers[f1].node.faults.partition([lead, f2])
                c.servers[lead].node.faults.partition([f1])
                c.servers[f2].node.faults.partition([f1])
                await cl.put(b"s", b"v2")
                asked = c.servers[f1].node.meta.stats["read_index"]
                stale = await fcl.get(b"s", serializable=True)
                assert stale.kvs[0].value == b"v1"
                assert c.servers[f1].node.meta.stats["read_index"] == asked
                # a linearizable read on the cut-off follower must not return the stale value
                with pytest.raises(ClientError):
                    await fcl.call("kv", {"cmd": kv.encode_command(RangeRequest(b"s"))},
                                   leader=False, timeout=1.5)
                for s in c.servers.values():
                    s.node.faults.heal()
                await eventually(lambda: _value_is(fcl.get(b"s", serializable=True), b"v2"),
                                 what="follower catching up")
                assert (await fcl.get(b"s")).kvs[0].value == b"v2"
    run(main())


async def _value_is(coro, value: bytes) -> bool:
    r = await coro
    return bool(r.kvs) and r.kvs[0].value == value


def test_linearizable_reads_on_a_follower_see_the_latest_acknowledged_write(tmp_path):
    async def main():
        async with LocalCluster(tmp_path) as c, Client(c.endpoints) as cl:
            lead = await c.leader()
            f1 = min(i for i in c.servers if i != lead)
            follower = c.servers[f1].node
            # slow the follower's inbound replication a little, so a read that skipped the
            # ReadIndex round trip would be likely to see the previous value
            c.servers[lead].node.faults.update(delay=0.01)
            async with Client([ep(c, f1)]) as fcl:
                before = follower.meta.stats["read_index"]
                for i in range(15):
                    w = await cl.put(b"lin", str(i).encode())
                    r = await fcl.get(b"lin")  # linearizable: from the follower, after ReadIndex
                    assert r.kvs[0].value == str(i).encode()
                    assert r.header.revision >= w.header.revision
                assert follower.meta.stats["read_index"] >= before + 15
                assert set(fcl._conns) == {ep(c, f1)}  # no redirect: the follower answered
    run(main())


def test_history_is_compacted_automatically(tmp_path):
    """The store lives in memory: the leader compacts history older than the retention."""
    from shoal.kv import ErrCompacted

    async def main():
        async with LocalCluster(tmp_path, auto_compact_revisions=20) as c, Client(c.endpoints) as cl:
            await c.leader()
            for i in range(60):
                await cl.put(b"k", str(i).encode())
            deadline = asyncio.get_running_loop().time() + 10
            while not all(s.node.kv.compact_revision > 1 for s in c.servers.values()):
                assert asyncio.get_running_loop().time() < deadline, "no automatic compaction"
                await asyncio.sleep(0.05)
            with pytest.raises(ErrCompacted):
                await cl.get(b"k", revision=2)
            assert await cl.get_value(b"k") == b"59"

    asyncio.run(asyncio.wait_for(main(), 60))
