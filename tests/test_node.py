"""Real nodes on loopback: replication, reads, watches, leases, failover, membership."""

from __future__ import annotations

import asyncio

from cluster import LocalCluster
from shoal.client import Client


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


def test_put_get_across_a_three_node_cluster(tmp_path):
    async def main():
        async with LocalCluster(tmp_path) as c, Client(c.endpoints) as cl:
            await c.leader()
            put = await cl.put(b"greeting", b"hello")
            assert put.header.revision >= 2
            assert await cl.get_value(b"greeting") == b"hello"
            for i in range(20):
                await cl.put(f"k/{i:02d}".encode(), str(i).encode())
            resp = await cl.get(b"k/", prefix=True)
            assert [kv.value for kv in resp.kvs] == [str(i).encode() for i in range(20)]
            # every replica applied the same state
            await asyncio.sleep(0)
            revs = set()
            for s in c.servers.values():
                await s.node.read_barrier(5)
                revs.add(s.node.kv.hash())
            assert len(revs) == 1
    run(main())
