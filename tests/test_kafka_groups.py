"""The consumer groups' host (server/kafka_groups.py) on a node that stops leading the meta
group while a commit's record is being written: the commit in flight and the one queued behind
it are answered NOT_COORDINATOR at once, so the clients find the next coordinator, instead of
waiting for a write to a log this node no longer leads."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from shoal.events.protocol import ErrorCode
from shoal.events.protocol.offset_commit import (
    OffsetCommitRequest,
    OffsetCommitRequestPartition,
    OffsetCommitRequestTopic,
    OffsetCommitResponse,
)
from shoal.server.kafka_groups import TICK_S, GroupService


class _Node:
    """Leads the meta group; its writes are never applied (a leader cut off from the rest)."""

    id = 1

    def __init__(self) -> None:
        self.meta = SimpleNamespace(role="leader")
        self.kv = SimpleNamespace(range=lambda _req: SimpleNamespace(kvs=[]))
        self.writes = 0
        self.never = asyncio.Event()

    async def read_barrier(self, timeout: float, group: int = 0) -> None:
        return None

    async def write(self, command: bytes, timeout: float, **kw: Any) -> None:
        self.writes += 1
        await self.never.wait()


def _commit(offset: int) -> OffsetCommitRequest:
    return OffsetCommitRequest(group_id="g", topics=[OffsetCommitRequestTopic(
        name="t", partitions=[OffsetCommitRequestPartition(partition_index=0,
                                                           committed_offset=offset)])])


def test_commits_are_refused_at_once_when_the_coordinator_moves_away() -> None:
    async def main() -> None:
        node = _Node()
        kafka = SimpleNamespace(node=node, topics=lambda: {"t": SimpleNamespace(groups=(1,))})
        service = GroupService(kafka)  # type: ignore[arg-type]
        runner = asyncio.create_task(service.run())
        first = asyncio.create_task(service.call(_commit(1), 8))
        second = asyncio.create_task(service.call(_commit(2), 8))
        while node.writes < 1:  # the first commit's record is being written
            await asyncio.sleep(0)
        node.meta.role = "follower"
        loop = asyncio.get_running_loop()
        started = loop.time()
        answers = await asyncio.wait_for(asyncio.gather(first, second), 5.0)
        for resp in answers:
            assert isinstance(resp, OffsetCommitResponse)
            assert resp.topics[0].partitions[0].error_code == ErrorCode.NOT_COORDINATOR
        assert loop.time() - started < 10 * TICK_S  # the next tick, not a write's timeout
        assert node.writes == 1  # the queued commit was not written by the old coordinator
        runner.cancel()

    asyncio.run(main())
