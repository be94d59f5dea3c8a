"""Consumer groups on the Kafka port: the group coordinator (events/coordinator.py, pure)
driven by the node that leads the meta group.

FindCoordinator names the meta leader, so every group's requests reach one coordinator. Each
call's Output is handled in order by one writer task: its records go into the meta group's
store (one transaction per Output, under the reserved keyspace), and only then are its replies
delivered, so a committed offset or a completed rebalance is durable before anyone hears of
it. A JoinGroup or SyncGroup the coordinator parks is answered when a later Output carries
its token. When this node stops leading the meta group, or a write fails, the coordinator is
unloaded (everything parked is answered NOT_COORDINATOR) and the next leader loads a fresh
one from the stored records, as Kafka moves a group coordinator."""

from __future__ import annotations

import asyncio
import itertools
import logging
from typing import TYPE_CHECKING, Any

from ..events import coordinator as C
from ..events.protocol import ErrorCode
from ..events.protocol import heartbeat as hb
from ..events.protocol import join_group as jg
from ..events.protocol import leave_group as lg
from ..events.protocol import offset_commit as oc
from ..events.protocol import offset_fetch as of
from ..events.protocol import sync_group as sg
from ..events.topics import OFFSETS_PREFIX
from ..kv.keyvalue import prefix_end
from ..kv.requests import Command, DeleteRangeRequest, PutRequest, RangeRequest, TxnRequest
from .node import NodeError, now_ms

if TYPE_CHECKING:
    from .kafka import KafkaServer

log = logging.getLogger("shoal.kafka")

TICK_S = 0.1
# Kafka's group.initial.rebalance.delay.ms, shorter than its 3000: the coordinator moves with
# the meta leader, and a group that had not yet completed a generation is loaded Empty, so
# each move costs the delay again (twice over when a second member joins during it).
INITIAL_REBALANCE_DELAY_MS = 1000
GROUP_APIS = (jg.JoinGroupRequest, sg.SyncGroupRequest, hb.HeartbeatRequest,
              lg.LeaveGroupRequest, oc.OffsetCommitRequest, of.OffsetFetchRequest)


class GroupService:
    def __init__(self, kafka: KafkaServer, initial_rebalance_delay_ms: int =
                 INITIAL_REBALANCE_DELAY_MS):
        self.kafka, self.node = kafka, kafka.node
        self.config = C.CoordinatorConfig(initial_rebalance_delay_ms=initial_rebalance_delay_ms,
                                          key_prefix=OFFSETS_PREFIX)
        self.coord: C.GroupCoordinator | None = None
        self._tokens = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[Any]] = {}
        self._outputs: asyncio.Queue[C.Output] = asyncio.Queue()
        self._write: asyncio.Future[Any] | None = None  # the writer's write in flight
        self._loading: asyncio.Lock = asyncio.Lock()

    def handlers(self) -> dict[int, Any]:
        return {api.API_KEY: self.call for api in GROUP_APIS}

    async def run(self) -> None:
        """The writer: each Output's records, then its replies, in order; and the timers."""
        writer = asyncio.create_task(self._write_outputs())
        try:
            while True:
                await asyncio.sleep(TICK_S)
                if self.coord is not None and self.node.meta.role != "leader":
                    self._unload("this node no longer leads the meta group")
                elif self.coord is not None:
                    deadline = self.coord.next_deadline()
                    if deadline is not None and deadline <= now_ms():
                        self._emit(self.coord.tick(now_ms()))
        finally:
            writer.cancel()

    async def call(self, request: Any, version: int, client_id: str | None = None) -> Any:
        coord = await self._coordinator()
        if coord is None:
            return _error_for(request, version, ErrorCode.NOT_COORDINATOR)
        token = next(self._tokens)
        fut = asyncio.get_running_loop().create_future()
        self._waiting[token] = fut
        try:
            out = coord.handle(token, request, version=version, now_ms=now_ms(),
                               client_id=client_id, partition_exists=self._partition_exists)
        except Exception:  # noqa: BLE001 - a bug in the state machine: start afresh
            log.exception("kafka: the group coordinator failed; reloading it")
            self._waiting.pop(token, None)
            self._unload("the coordinator failed")
            return _error_for(request, version, ErrorCode.NOT_COORDINATOR)
        self._emit(out)
        try:
            answer = await fut
            log.debug("kafka: %s v%d from %s -> %s", type(request).__name__, version, client_id,
                      getattr(answer, "error_code", None))
            return answer
        finally:
            self._waiting.pop(token, None)

    def _partition_exists(self, topic: str, partition: int) -> bool:
        t = self.kafka.topics().get(topic)
        return t is not None and 0 <= partition < len(t.groups)

    async def _coordinator(self) -> C.GroupCoordinator | None:
        if self.node.meta.role != "leader":
            return None
        async with self._loading:
            if self.coord is None:
                try:
                    await self.node.read_barrier(5.0)
                except NodeError:
                    return None
                kvs = self.node.kv.range(RangeRequest(OFFSETS_PREFIX,
                                                      prefix_end(OFFSETS_PREFIX))).kvs
                coord = C.GroupCoordinator(self.config)
                coord.load(((kv.key, kv.value) for kv in kvs), now_ms=now_ms())
                self.coord = coord
                log.info("kafka: group coordinator loaded on node %d (%d records)",
                         self.node.id, len(kvs))
            return self.coord

    def _emit(self, out: C.Output) -> None:
        if out.replies or out.persist:
            self._outputs.put_nowait(out)

    def _unload(self, why: str) -> None:
        if self.coord is not None:
            log.info("kafka: group coordinator unloaded on node %d: %s", self.node.id, why)
            out, self.coord = self.coord.unload(), None
            self._deliver(out)  # (NOT_COORDINATOR answers: nothing to write)
            # What the old coordinator still had to write is answered NOT_COORDINATOR now (a
            # write in flight may still apply: a commit retried is the same commit), instead
            # of after a write to a log this node no longer leads times out; and none of it is
            # written over the records a next coordinator here would load.
            if self._write is not None:
                self._write.cancel()
            while not self._outputs.empty():
                self._refuse(self._outputs.get_nowait())

    def _refuse(self, out: C.Output) -> None:
        self._deliver(C.Output([C.error_reply(r, ErrorCode.NOT_COORDINATOR)
                                for r in out.replies]))

    async def _write_outputs(self) -> None:
        while True:
            out = await self._outputs.get()
            if out.persist:
                ops = tuple(PutRequest(p.key, p.value) if p.value is not None
                            else DeleteRangeRequest(p.key) for p in out.persist)
                self._write = asyncio.ensure_future(
                    self.node.write(b"", 5.0, decoded=Command(TxnRequest((), ops))))
                try:
                    await asyncio.wait([self._write])
                    self._write.result()
                except asyncio.CancelledError:
                    if not self._write.cancelled():
                        raise  # (the writer itself is stopping)
                    self._refuse(out)  # (unloaded while it was written)
                    continue
                except NodeError as exc:
                    self._refuse(out)
                    self._unload(f"its records could not be written ({exc})")
                    continue
                finally:
                    self._write = None
            self._deliver(out)

    def _deliver(self, out: C.Output) -> None:
        for reply in out.replies:
            fut = self._waiting.get(reply.token)  # type: ignore[call-overload]
            if fut is not None and not fut.done():
                fut.set_result(reply.response)


def _error_for(request: Any, version: int, code: int) -> Any:
    """A group API's answer carrying only `code` (this node is not the coordinator)."""
    if isinstance(request, jg.JoinGroupRequest):
        return jg.JoinGroupResponse(error_code=code, generation_id=-1, protocol_name="",
                                    leader="", member_id=request.member_id, members=[])
    if isinstance(request, sg.SyncGroupRequest):
        return sg.SyncGroupResponse(error_code=code, assignment=b"")
    if isinstance(request, hb.HeartbeatRequest):
        return hb.HeartbeatResponse(error_code=code)
    if isinstance(request, lg.LeaveGroupRequest):
        return lg.LeaveGroupResponse(error_code=code)
    if isinstance(request, oc.OffsetCommitRequest):
        return oc.OffsetCommitResponse(topics=[oc.OffsetCommitResponseTopic(
            name=t.name, partitions=[oc.OffsetCommitResponsePartition(
                partition_index=p.partition_index, error_code=code) for p in t.partitions])
            for t in request.topics])
    assert isinstance(request, of.OffsetFetchRequest)
    if version >= 8:
        return of.OffsetFetchResponse(groups=[of.OffsetFetchResponseGroup(
            group_id=g.group_id, error_code=code, topics=[]) for g in request.groups])
    if version >= 2:
        return of.OffsetFetchResponse(error_code=code, topics=[])
    return of.OffsetFetchResponse(topics=[of.OffsetFetchResponseTopic(  # (no top-level error)
        name=t.name, partitions=[of.OffsetFetchResponsePartition(
            partition_index=i, committed_offset=-1, metadata="", error_code=code)
            for i in t.partition_indexes]) for t in request.topics or []])
