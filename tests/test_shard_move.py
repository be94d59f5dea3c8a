"""Moving a shard's replica between processes through membership changes: the target joins
empty, catches up as a learner, becomes a voter; the source leaves and deletes its copy; no
write is lost, the group serves throughout, and a replica never moves back to a node it left."""

from __future__ import annotations

from pathlib import Path

import pytest

from cluster import LocalCluster, eventually, run
from shoal.client import Client
from shoal.shard.move import MoveError, move_replica
from shoal.shard.split import split


def test_a_replica_moves_to_another_node_and_back_is_refused(tmp_path: Path) -> None:
    async def main() -> None:
        async with LocalCluster(tmp_path, 4) as c, Client(c.endpoints, timeout=20) as cl:
            s = cl.sharded()
            await split(cl, b"m")
            for i in range(50):
                await s.put(b"n/%02d" % i, b"%d" % i)
            hosts = (await cl.groups())[1]
            source = hosts[0]
            target = next(n for n in c.servers if n not in hosts)
            voters = await move_replica(cl, 1, source, target)
            assert target in voters and source not in voters and len(voters) == 3
            await eventually(lambda: 1 not in c.servers[source].node.groups,
                             what="the source to close its replica")
            await eventually(lambda: not (c.root / f"n{source}" / "groups" / "1").exists(),
                             what="the source's files to go")
            replica = c.servers[target].node.groups[1].replica
            await eventually(lambda: replica.kv.mvcc.get(b"n/49") is not None,
                             what="the target to hold the data")
            assert sorted((await cl.groups())[1]) == sorted(voters)
            await s.put(b"n/50", b"50")  # the group goes on serving
            got = await s.range(b"n/", b"n0")
            assert [kv.value for kv in got] == [b"%d" % i for i in range(51)]
            with pytest.raises(Exception, match="never moved back"):
                await move_replica(cl, 1, target, source)
            with pytest.raises(MoveError, match="meta group"):
                await move_replica(cl, 0, 1, 2)

    run(main(), timeout=90)
