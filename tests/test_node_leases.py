"""Leases against real nodes: grant, time-to-live, attached keys, revoke, expiry with and
without keep-alives, and leases surviving a leader failover."""

from __future__ import annotations

import asyncio

import pytest

from cluster import LocalCluster, ep, eventually, holds_for, run
from shoal import kv
from shoal.client import Client


async def _ttl_at_most(cl: Client, lease: int, seconds: int) -> bool:
    return 0 <= (await cl.lease_ttl(lease)).ttl <= seconds


async def present(cl: Client, key: bytes) -> bool:
    return (await cl.get(key, count_only=True)).count == 1


async def absent(cl: Client, key: bytes) -> bool:
    return (await cl.get(key, count_only=True)).count == 0


def test_lease_grant_ttl_keys_and_revoke(tmp_path):
    async def main():
        async with LocalCluster(tmp_path) as c, Client(c.endpoints) as cl:
            await c.leader()
            g = await cl.lease_grant(30)
            assert g.id > 0 and g.ttl == 30
            g2 = await cl.lease_grant(60, id=777)
            assert g2.id == 777
            with pytest.raises(kv.ErrLeaseExists):
                await cl.lease_grant(10, id=777)

            await cl.put(b"l/a", b"1", lease=g.id)
            await cl.put(b"l/b", b"2", lease=g.id)
            await cl.put(b"l/c", b"3", lease=g2.id)
            await cl.put(b"l/free", b"4")
            assert (await cl.get(b"l/a")).kvs[0].lease == g.id

            t = await cl.lease_ttl(g.id, keys=True)
            assert t.id == g.id and t.granted_ttl == 30 and 28 <= t.ttl <= 30
            assert t.keys == (b"l/a", b"l/b")
            assert (await cl.lease_ttl(g.id)).keys == ()  # keys only when asked

            with pytest.raises(kv.ErrLeaseNotFound):
                await cl.put(b"l/x", b"", lease=424242)

            rev = (await cl.get(b"l/", prefix=True)).header.revision
            await cl.lease_revoke(g.id)
            r = await cl.get(b"l/", prefix=True)
            assert [x.key for x in r.kvs] == [b"l/c", b"l/free"]
            assert r.header.revision == rev + 1  # both keys went in one revision
            assert (await cl.lease_ttl(g.id)).ttl == -1
            with pytest.raises(kv.ErrLeaseNotFound):
                await cl.lease_revoke(g.id)
            with pytest.raises(kv.ErrLeaseNotFound):
                await cl.lease_keepalive(g.id)
            # every replica agrees
            for s in c.servers.values():
                await s.node.read_barrier(5)
                assert s.node.kv.lessor.ids() == [777]
                assert s.node.kv.mvcc.get(b"l/a") is None
    run(main())


def test_a_key_on_a_short_lease_disappears_without_keep_alive(tmp_path):
    async def main():
        async with LocalCluster(tmp_path) as c, Client(c.endpoints) as cl:
            await c.leader()
            loop = asyncio.get_running_loop()
            g = await cl.lease_grant(1)
            granted = loop.time()
            await cl.put(b"eph", b"x", lease=g.id)
            assert await present(cl, b"eph")
            await eventually(lambda: absent(cl, b"eph"), timeout=6, what="the lease to expire")
            # it cannot expire before its TTL (measured from just after the grant returned,
            # so this bound is conservative)
            assert loop.time() - granted >= 0.9
            assert (await cl.lease_ttl(g.id)).ttl == -1
            for s in c.servers.values():
                await s.node.read_barrier(5)
                assert g.id not in s.node.kv.lessor
            with pytest.raises(kv.ErrLeaseNotFound):
                await cl.lease_keepalive(g.id)
    run(main())


def test_a_key_on_a_short_lease_stays_while_kept_alive(tmp_path):
    async def main():
        async with LocalCluster(tmp_path) as c, Client(c.endpoints) as cl:
            await c.leader()
            g = await cl.lease_grant(1)
            await cl.put(b"kept", b"x", lease=g.id)
            ka = cl.keep_alive(g.id, 1)
            try:
                await holds_for(lambda: present(cl, b"kept"), 3.0, "the kept-alive key")
                assert not ka.done()
            finally:
                ka.cancel()
            # once the keep-alives stop, it goes
            await eventually(lambda: absent(cl, b"kept"), timeout=6, what="expiry after keep-alive")
    run(main())


def test_leases_survive_a_leader_failover(tmp_path):
    async def main():
        async with LocalCluster(tmp_path) as c, Client(c.endpoints) as cl:
            old = await c.leader()
            g = await cl.lease_grant(3)
            await cl.put(b"fo", b"x", lease=g.id)
            # let the lease run down to its last second on the old leader
            await eventually(lambda: _ttl_at_most(cl, g.id, 1), timeout=5, what="ttl <= 1")
            await c.stop(old)  # no transfer: the leader just goes away
            new = await c.leader()
            assert new != old
            async with Client([ep(c, i) for i in sorted(c.servers)]) as cl2:
                t = await cl2.lease_ttl(g.id, keys=True)
                # the new leader restarted the lease's clock (a full TTL from its election)
                assert t.ttl >= 2 and t.keys == (b"fo",)
                # ...so it does not expire in what was left of its old TTL
                await holds_for(lambda: present(cl2, b"fo"), 1.5, "the leased key after failover")
                t = await cl2.lease_ttl(g.id)
                assert t.ttl >= 0 and t.granted_ttl == 3
                # keep-alive works against the new leader
                ka = await cl2.lease_keepalive(g.id)
                assert ka.id == g.id and ka.ttl == 3
                # and the new leader expires it when nobody keeps it alive
                await eventually(lambda: absent(cl2, b"fo"), timeout=8, what="expiry on new leader")
                assert (await cl2.lease_ttl(g.id)).ttl == -1
    run(main())


def test_leases_lists_the_granted_leases(tmp_path):
    """Regression: Node.read() used to serve LeaseLeasesRequest through KVStore.apply(), whose
    index assertion failed on every call (fixed in 4cd600a)."""
    async def main():
        async with LocalCluster(tmp_path) as c, Client(c.endpoints, timeout=3) as cl:
            await c.leader()
            a = (await cl.lease_grant(30)).id
            b = (await cl.lease_grant(30)).id
            assert set((await cl.leases()).leases) == {a, b}
            await cl.lease_revoke(a)
            assert (await cl.leases()).leases == (b,)
            # a serializable read may come from a follower that has not applied the revoke yet
            assert set((await cl._read(kv.LeaseLeasesRequest(), kv.LeaseLeasesResponse, serializable=True)).leases) <= {a, b}
    run(main())
