"""The same node runtime, client and checker with Multi-Paxos as the engine."""

from __future__ import annotations

import asyncio

from cluster import LocalCluster
from shoal.check import check_history
from shoal.consensus.messages import Entry, EntryKind
from shoal.consensus.paxos import Accept, Accepted, Promise
from shoal.net.paxos_codec import PAXOS
from shoal.torture.workload import Workload


def test_paxos_messages_round_trip_and_reject_nonsense():
    import pytest

    from shoal.consensus.messages import RemoteProtocolError

    msgs = [Accept(1, 2, 65537, (Entry(65537, 5, EntryKind.NORMAL, b"x"),), 4, 3),
            Accepted(2, 1, 65537, 5, 5, 5, 4, 3), Promise(2, 1, 65537, 4, (), None)]
    for m in msgs:
        assert PAXOS.decode(PAXOS.encode(m)) == m
    with pytest.raises(RemoteProtocolError, match="ballot"):
        PAXOS.decode(PAXOS.encode(msgs[0]).replace(b"\xce\x00\x01\x00\x01", b"\xa1x", 1))


def test_paxos_cluster_serves_a_linearizable_workload_through_a_failover(tmp_path):
    async def main():
        async with LocalCluster(tmp_path, engine="paxos") as c:
            await c.leader()
            w = Workload(c.endpoints, clients=4, seed=3)

            async def fail_over():
                await asyncio.sleep(1.5)
                old = await c.leader()
                await c.stop(old)
                await c.leader()  # a new one, among the others
                await c.start(old)

            await asyncio.gather(w.run(4), fail_over())
            result = check_history(w.history)
            assert result.ok is True, result.explanation
            assert w.counts["ok"] > 50

    asyncio.run(asyncio.wait_for(main(), 60))
