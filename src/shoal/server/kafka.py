"""The Kafka port: Kafka's protocol served by a Shoal node, so Kafka's clients and tools work.

Each partition is a consensus group (kv/partition.py is its state machine); a topic is an entry
in the meta group naming its partitions' groups (events/topics.py). A node answers:

- Metadata with every node registered as a broker (each registers its Kafka address in the meta
  group when it starts) and each partition's leader as its group's leader; the controller is the
  meta group's leader; all of it as this node sees it, so it is answered without a quorum;
- Produce on a partition whose group this node leads: the batches' CRCs are checked, then one
  LogAppendRequest goes through the group's log, so an answer means the batches are on a
  quorum's disks. acks=1 is answered the same way (a stronger promise than Kafka's), acks=0 not
  at all; a partition led elsewhere is NOT_LEADER_OR_FOLLOWER and the client asks again;
- Fetch from the partition's leader after a ReadIndex (the high watermark is the next offset:
  everything applied is committed), long-polling up to max_wait_ms until min_bytes arrived;
- ListOffsets, CreateTopics and DeleteTopics (on the meta leader; another node forwards them
  there over Kafka's protocol), InitProducerId (a counter in the meta group), DescribeConfigs;
- the consumer-group APIs on the group coordinator, the meta group's leader
  (events/coordinator.py is the state machine, its offsets persisted in the meta group).

Requests on one connection are answered in order, one at a time, as Kafka's broker does, so
none may wait long: a ReadIndex is given BARRIER_S, a forward to the controller its own bound,
and one answered late is logged. Malformed frames close the connection; unsupported APIs and
versions get Kafka's error; a node without a quorum answers with Kafka's retriable errors."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from ..events import topics as T
from ..events.protocol import (
    CLOSED,
    NEED_DATA,
    ErrorCode,
    KafkaClientConnection,
    KafkaConnection,
    LocalProtocolError,
    RecordError,
    RemoteProtocolError,
    RequestReceived,
    ResponseReceived,
    UnsupportedRequest,
)
from ..events.protocol import api_versions as av
from ..events.protocol import create_topics as ct
from ..events.protocol import delete_topics as dt
from ..events.protocol import describe_configs as dc
from ..events.protocol import fetch as fe
from ..events.protocol import find_coordinator as fc
from ..events.protocol import init_producer_id as ip
from ..events.protocol import join_group as jg
from ..events.protocol import list_offsets as lo
from ..events.protocol import metadata as md
from ..events.protocol import produce as pr
from ..events.protocol import sync_group as sg
from ..events.protocol.records import iter_batches
from ..events.segments import Segment
from ..kv.partition import STATE_KEY, LogState
from ..kv.requests import (
    Command,
    Compare,
    CompareResult,
    CompareTarget,
    DeleteRangeRequest,
    LogAppendRequest,
    LogAppendResponse,
    LogCompactRequest,
    LogTrimRequest,
    PutRequest,
    RangeRequest,
    TxnRequest,
)
from .kafka_groups import GROUP_APIS, GroupService
from .node import Node, NodeError, now_ms

log = logging.getLogger("shoal.kafka")

MAX_FETCH_WAIT_MS = 30_000
# How long a read waits for its ReadIndex: a leader that cannot confirm its lease by then is
# cut off or overloaded, and the client is better told so than held (a healthy one confirms
# in one heartbeat round).
BARRIER_S = 2.0
SLOW_S = 1.0  # a request answered this much later than it had to be is logged
RETENTION_EVERY_S = 5.0
DEFAULT_PARTITIONS = 1  # Kafka's num.partitions
CONNECTIONS = 1000


class KafkaServer:
    def __init__(self, node: Node, host: str, port: int, advertised_host: str | None = None):
        self.node, self.host, self.port = node, host, port
        self.advertised = advertised_host or host
        self._server: asyncio.AbstractServer | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._appended: dict[int, asyncio.Event] = {}  # group -> set by its next append
        self.groups = GroupService(self)  # consumer groups, coordinated by the meta leader
        self._handlers = self._handler_table()

    # ---------------------------------------------------------------- lifecycle
    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self.host, self.port,
                                                  limit=1 << 20)
        self.port = self._server.sockets[0].getsockname()[1]
        self._spawn(self._retention())
        self._spawn(self.groups.run())

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ---------------------------------------------------------------- connections
    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = KafkaConnection()
        try:
            while True:
                data = await reader.read(1 << 16)
                conn.receive_data(data)
                while True:
                    ev = conn.next_request()
                    if ev is NEED_DATA:
                        break
                    if ev is CLOSED:
                        return
                    if isinstance(ev, UnsupportedRequest):
                        out = conn.send_unsupported(ev)
                        if out is None:
                            return
                        writer.write(out)
                        continue
                    assert isinstance(ev, RequestReceived)
                    started = time.monotonic()
                    body = await self._answer(conn, ev)
                    _note_slow(ev, time.monotonic() - started)
                    if ev.expects_response:
                        writer.write(conn.send_response(ev, body))
                await writer.drain()
                if not data:
                    return
        except RemoteProtocolError as exc:
            log.info("kafka: closing a connection that broke the protocol: %s", exc)
        except LocalProtocolError:
            log.exception("kafka: closing a connection: this server broke the protocol")
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except NodeError as exc:  # (each handler answers what it can with Kafka's errors)
            log.warning("kafka: closing a connection: a request failed: %s", exc)
        finally:
            writer.close()

    async def _answer(self, conn: KafkaConnection, ev: RequestReceived) -> Any:
        if ev.api_key == av.ApiVersionsRequest.API_KEY:
            return conn.api_versions_response()
        if isinstance(ev.body, GROUP_APIS):
            return await self.groups.call(ev.body, ev.api_version, ev.client_id)
        handler: Callable[[Any, int], Any] | None = self._handlers.get(ev.api_key)
        if handler is None:  # every advertised API has one: this is our bug
            raise LocalProtocolError(f"API {ev.api_key} has no handler")
        return await handler(ev.body, ev.api_version)

    def _handler_table(self) -> dict[int, Any]:
        handlers = {md.MetadataRequest.API_KEY: self.metadata,
                    pr.ProduceRequest.API_KEY: self.produce,
                    fe.FetchRequest.API_KEY: self.fetch,
                    lo.ListOffsetsRequest.API_KEY: self.list_offsets,
                    ct.CreateTopicsRequest.API_KEY: self.create_topics,
                    dt.DeleteTopicsRequest.API_KEY: self.delete_topics,
                    ip.InitProducerIdRequest.API_KEY: self.init_producer_id,
                    dc.DescribeConfigsRequest.API_KEY: self.describe_configs,
                    fc.FindCoordinatorRequest.API_KEY: self.find_coordinator}
        return handlers

    # ---------------------------------------------------------------- the cluster's view
    def topics(self) -> dict[str, T.Topic]:
        out = {}
        for kv in self.node.kv.range(RangeRequest(T.TOPIC_PREFIX, T.TOPIC_END)).kvs:
            try:
                t = T.Topic.decode(kv.key, kv.value)
            except T.TopicError as exc:
                log.error("kafka: skipping a topic: %s", exc)
                continue
            out[t.name] = t
        return out

    def brokers(self) -> dict[int, tuple[str, int]]:
        """Every member serving Kafka's protocol, from the meta group's member table (a
        member's spec carries its Kafka address)."""
        out = {n: m.kafka for n, m in self.node.members.items() if m.kafka is not None}
        if self.node.id in out:  # (its own, as bound: the configured port may be 0)
            out[self.node.id] = (self.advertised, self.port)
        return out

    def _leader_of(self, group: int) -> int:
        g = self.node.groups.get(group)
        return g.replica.leader if g is not None and g.replica.leader else -1

    def _controller(self) -> int:
        return self.node.meta.leader or -1

    # ---------------------------------------------------------------- Metadata
    async def metadata(self, req: md.MetadataRequest, version: int) -> md.MetadataResponse:
        # This node's own view, as a Kafka broker answers from its metadata cache: it needs no
        # quorum, so clients learn of new leaders while the meta group has none. A stale
        # leader costs a NOT_LEADER_OR_FOLLOWER and another Metadata.
        known = self.topics()
        wanted = list(known) if req.topics is None or (version == 0 and not req.topics) \
            else [t.name for t in req.topics if t.name is not None]
        missing = [n for n in wanted if n not in known]
        if missing and req.topics is not None and req.allow_auto_topic_creation:
            try:
                await self._create([ct.CreatableTopic(name=n, num_partitions=-1,
                                                      replication_factor=-1, assignments=[],
                                                      configs=[])
                                    for n in missing], version=4, quiet=True)
                await self.node.read_barrier(BARRIER_S)
            except NodeError as exc:  # (the topic is answered unknown: the client asks again)
                log.info("kafka: could not create topics %s: %s", missing, exc)
            known = self.topics()
        brokers = self.brokers()
        out = []
        for name in wanted:
            t = known.get(name)
            if t is None:
                out.append(md.MetadataResponseTopic(error_code=ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
                                                    name=name, partitions=[]))
                continue
            parts = []
            for i, g in enumerate(t.groups):
                leader = self._leader_of(g)
                hosts = self._hosts(g)
                parts.append(md.MetadataResponsePartition(
                    error_code=ErrorCode.NONE if leader > 0 else ErrorCode.LEADER_NOT_AVAILABLE,
                    partition_index=i, leader_id=leader, replica_nodes=hosts, isr_nodes=hosts))
            out.append(md.MetadataResponseTopic(error_code=ErrorCode.NONE, name=name,
                                                partitions=parts))
        return md.MetadataResponse(
            brokers=[md.MetadataResponseBroker(node_id=n, host=h, port=p)
                     for n, (h, p) in sorted(brokers.items())],
            cluster_id=str(self.node.cluster_id), controller_id=self._controller(), topics=out)

    def _hosts(self, group: int) -> list[int]:
        entry = self.node.listed_groups().get(group)
        return sorted(entry.hosts) if entry is not None else []

    # ---------------------------------------------------------------- topics
    async def create_topics(self, req: ct.CreateTopicsRequest,
                            version: int) -> ct.CreateTopicsResponse:
        return ct.CreateTopicsResponse(topics=await self._create(req.topics, version,
                                                                 validate=req.validate_only))

    async def _create(self, wanted: list[ct.CreatableTopic], version: int, quiet: bool = False,
                      validate: bool = False) -> list[ct.CreatableTopicResult]:
        if self.node.meta.role != "leader":
            try:
                fwd = await self._forward(ct.CreateTopicsRequest(
                    topics=wanted, timeout_ms=10_000, validate_only=validate), version)
            except NodeError as exc:
                return [ct.CreatableTopicResult(name=w.name, error_code=ErrorCode.NOT_CONTROLLER,
                                                error_message=str(exc)) for w in wanted]
            return list(fwd.topics)
        results = []
        existing = self.topics()
        for want in wanted:
            try:
                T.check_name(want.name)
                if want.name in existing:
                    raise T.TopicError(f"topic {want.name!r} already exists", 36)
                n = DEFAULT_PARTITIONS if want.num_partitions == -1 else want.num_partitions
                if not 0 < n <= T.MAX_PARTITIONS:
                    raise T.TopicError(f"{n} partitions: 1 to {T.MAX_PARTITIONS}", 37)
                voters = sorted(self.node.core.status().conf.voters)
                rf = min(3, len(voters)) if want.replication_factor == -1 \
                    else want.replication_factor
                if not 0 < rf <= len(voters):
                    raise T.TopicError(f"replication factor {rf}: 1 to {len(voters)} (the "
                                       "cluster's nodes)", 38)
                config = T.check_config({c.name: c.value or "" for c in want.configs})
                if validate:
                    results.append(ct.CreatableTopicResult(name=want.name, error_code=0,
                                                           num_partitions=n, replication_factor=rf))
                    continue
                first = max([0, *self.node.listed_groups()]) + 1
                groups = tuple(range(first, first + n))
                for g in groups:
                    await self.node.create_group(g, rf, 10.0)
                topic = T.Topic(want.name, groups, config)
                await self.node.write(b"", 10.0, decoded=Command(TxnRequest(
                    (Compare(topic.key, CompareTarget.CREATE, CompareResult.EQUAL, 0),),
                    (PutRequest(topic.key, topic.encode()),))))
                results.append(ct.CreatableTopicResult(name=want.name, error_code=0,
                                                       num_partitions=n, replication_factor=rf))
                if not quiet:
                    log.info("kafka: topic %s created: %d partitions, groups %s", want.name, n,
                             list(groups))
            except T.TopicError as exc:
                results.append(ct.CreatableTopicResult(name=want.name, error_code=exc.code,
                                                       error_message=str(exc)))
            except NodeError as exc:
                results.append(ct.CreatableTopicResult(
                    name=want.name, error_code=ErrorCode.REQUEST_TIMED_OUT, error_message=str(exc)))
        return results

    async def delete_topics(self, req: dt.DeleteTopicsRequest,
                            version: int) -> dt.DeleteTopicsResponse:
        if self.node.meta.role != "leader":
            try:
                return await self._forward(req, version)
            except NodeError:
                return dt.DeleteTopicsResponse(responses=[dt.DeletableTopicResult(
                    name=n, error_code=ErrorCode.NOT_CONTROLLER) for n in _names(req)])
        existing = self.topics()
        out = []
        for name in _names(req):
            t = existing.get(name)
            if t is None:
                out.append(dt.DeletableTopicResult(name=name,
                                                   error_code=ErrorCode.UNKNOWN_TOPIC_OR_PARTITION))
                continue
            await self.node.write(b"", 10.0, decoded=Command(DeleteRangeRequest(t.key)))
            for g in t.groups:
                try:
                    await self.node.remove_group(g, 10.0)
                except NodeError as exc:
                    log.warning("kafka: topic %s: group %d: %s", name, g, exc)
            out.append(dt.DeletableTopicResult(name=name, error_code=ErrorCode.NONE))
        return dt.DeleteTopicsResponse(responses=out)

    async def _forward(self, req: Any, version: int, timeout: float = 15.0) -> Any:
        """`req` answered by the meta group's leader's Kafka port, within `timeout` of its
        sending (the leader's own writes give up sooner: a silent leader is paused or cut)."""
        leader = self._controller()
        addr = self.brokers().get(leader)
        if addr is None:
            raise NodeError("no_leader", "no meta leader with a Kafka port is known")
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(*addr), 2.0)
        except (OSError, TimeoutError) as exc:
            raise NodeError("unavailable", f"the meta leader {leader}: {exc!r}") from None
        try:
            client = KafkaClientConnection(client_id=f"shoal-node-{self.node.id}")
            _, frame = client.send_request(req, version)
            writer.write(frame)
            await writer.drain()
            while True:
                data = await asyncio.wait_for(reader.read(1 << 16), timeout)
                client.receive_data(data)
                got = client.next_response()
                if isinstance(got, ResponseReceived):
                    return got.body
                if got is CLOSED or not data:
                    raise NodeError("unavailable", "the meta leader closed the connection")
        except (OSError, TimeoutError) as exc:
            raise NodeError("unavailable", f"the meta leader {leader}: {exc!r}") from None
        finally:
            writer.close()

    # ---------------------------------------------------------------- producers
    async def init_producer_id(self, req: ip.InitProducerIdRequest,
                               version: int) -> ip.InitProducerIdResponse:
        if req.transactional_id:
            return ip.InitProducerIdResponse(error_code=ErrorCode.INVALID_REQUEST, producer_epoch=-1)
        try:
            if self.node.meta.role != "leader":
                return await self._forward(req, version, timeout=6.0)
            for _ in range(20):
                kv = self.node.kv.mvcc.get(T.PRODUCER_ID_KEY)
                current = int(kv.value) if kv is not None else 0
                cmp = Compare(T.PRODUCER_ID_KEY, CompareTarget.MOD, CompareResult.EQUAL,
                              kv.mod_revision if kv is not None else 0)
                resp = await self.node.write(b"", 5.0, decoded=Command(TxnRequest(
                    (cmp,), (PutRequest(T.PRODUCER_ID_KEY, b"%d" % (current + 1)),))))
                if resp.succeeded:
                    return ip.InitProducerIdResponse(error_code=0, producer_id=current + 1,
                                                     producer_epoch=0)
        except NodeError as exc:  # no meta leader, or it did not answer: the producer retries
            log.info("kafka: InitProducerId: %s", exc)
            return ip.InitProducerIdResponse(error_code=ErrorCode.COORDINATOR_NOT_AVAILABLE,
                                             producer_epoch=-1)
        return ip.InitProducerIdResponse(error_code=ErrorCode.COORDINATOR_LOAD_IN_PROGRESS,
                                         producer_epoch=-1)

    async def produce(self, req: pr.ProduceRequest, version: int) -> pr.ProduceResponse:
        known = self.topics()
        # Each partition is its own group: their appends go through their logs side by side,
        # so a request for n partitions costs one consensus round, not n in a row.
        results = iter(await asyncio.gather(*(
            self._append(known.get(td.name), pd.index, pd.records, req.timeout_ms)
            for td in req.topic_data for pd in td.partition_data)))
        out = []
        for td in req.topic_data:
            parts = []
            for pd in td.partition_data:
                code, base, start = next(results)
                parts.append(pr.PartitionProduceResponse(index=pd.index, error_code=code,
                                                         base_offset=base, log_start_offset=start))
            out.append(pr.TopicProduceResponse(name=td.name, partition_responses=parts))
        return pr.ProduceResponse(responses=out)

    async def _append(self, t: T.Topic | None, index: int, records: bytes | None,
                      timeout_ms: int) -> tuple[int, int, int]:
        code, group = self._led(t, index)
        if code:
            return code, -1, -1
        assert t is not None
        data = records or b""
        try:
            limit = T.setting(t.config, "max.message.bytes")
            for _ in iter_batches(memoryview(data), max_batch_size=limit):
                pass  # (checked over a view: the batches themselves are not copied)
        except RecordError as exc:
            return int(exc.error_code), -1, -1
        if not data:
            return ErrorCode.CORRUPT_MESSAGE, -1, -1
        try:
            resp = await self.node.write(b"", max(timeout_ms, 1000) / 1000, group=group,
                                         decoded=Command(LogAppendRequest(
                                             data, now_ms(), T.setting(t.config, "segment.bytes"),
                                             T.setting(t.config, "segment.ms"))))
        except NodeError as exc:
            code = ErrorCode.NOT_LEADER_OR_FOLLOWER if exc.code in ("not_leader", "no_leader") \
                else ErrorCode.REQUEST_TIMED_OUT
            return code, -1, -1
        assert isinstance(resp, LogAppendResponse)
        return resp.error, resp.base_offset, resp.log_start_offset

    def _led(self, t: T.Topic | None, index: int) -> tuple[int, int]:
        """(error code, group) of partition `index` of `t`, where this node must lead it."""
        if t is None or not 0 <= index < len(t.groups):
            return ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, -1
        g = self.node.groups.get(t.groups[index])
        if g is None or g.replica.role != "leader":
            return ErrorCode.NOT_LEADER_OR_FOLLOWER, -1
        return ErrorCode.NONE, t.groups[index]

    def appended(self, group: int) -> asyncio.Event:
        """An event set by the next batch applied to `group` here (a watch on the partition's
        state, which every append moves), so a long-polling fetch wakes at once. Each append
        sets the event and puts a fresh one in its place; no one ever clears one, so a fetch
        that took it before reading cannot miss an append, whatever other fetches do."""
        ev = self._appended.get(group)
        if ev is None:
            ev = self._appended[group] = asyncio.Event()

            def on_append(_resp: object) -> None:
                self._appended[group], done = asyncio.Event(), self._appended[group]
                done.set()

            try:
                self.node.watch(on_append, group=group, key=STATE_KEY)
            except NodeError:
                del self._appended[group]  # (no replica here: a fetch says NOT_LEADER anyway)
        return ev

    # ---------------------------------------------------------------- consumers
    async def fetch(self, req: fe.FetchRequest, version: int) -> fe.FetchResponse:
        known = self.topics()
        wait_ms = min(max(req.max_wait_ms, 0), MAX_FETCH_WAIT_MS)
        end = time.monotonic() + wait_ms / 1000
        groups = [t.groups[fp.partition] for ft in req.topics if (t := known.get(ft.topic))
                  for fp in ft.partitions if 0 <= fp.partition < len(t.groups)]
        unique = sorted(set(groups))
        while True:
            # Taken before reading: an append that lands while the partitions are read
            # wakes the wait below at once, instead of being missed until the next one.
            appended = [self.appended(g) for g in groups]
            # Every partition's ReadIndex at once: one slow to confirm (its leader cut off)
            # holds the others for no longer than itself.
            led = await asyncio.gather(*(self._barrier(g) for g in unique))
            unled = {g for g, ok in zip(unique, led, strict=True) if not ok}
            total, responses = 0, []
            budget = req.max_bytes
            for ft in req.topics:
                t = known.get(ft.topic)
                parts = []
                for fp in ft.partitions:
                    part = self._read(t, fp, min(fp.partition_max_bytes, budget), unled)
                    size = len(part.records or b"")
                    total += size
                    budget = max(0, budget - size)
                    parts.append(part)
                responses.append(fe.FetchableTopicResponse(topic=ft.topic, partitions=parts))
            remaining = end - time.monotonic()
            errors = any(p.error_code for r in responses for p in r.partitions)
            if total >= max(req.min_bytes, 1) or remaining <= 0 or errors:
                return fe.FetchResponse(responses=responses, session_id=0)
            await self._wait_append(appended, remaining)

    async def _wait_append(self, events: list[asyncio.Event], seconds: float) -> None:
        waits = [asyncio.ensure_future(ev.wait()) for ev in events]
        try:
            await asyncio.wait(waits, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()

    async def _barrier(self, group: int) -> bool:
        """A ReadIndex on `group`: False if it failed (the leadership lost, or not confirmed
        within BARRIER_S). One not led here needs none: `_led` refuses it."""
        g = self.node.groups.get(group)
        if g is None or g.replica.role != "leader":
            return True
        try:
            await self.node.read_barrier(BARRIER_S, group)
            return True
        except NodeError:
            return False

    def _read(self, t: T.Topic | None, fp: fe.FetchPartition, max_bytes: int,
              unled: set[int]) -> fe.PartitionData:
        """One partition's records, on this node's replica; `unled` are the groups whose
        leadership was not confirmed (NOT_LEADER_OR_FOLLOWER: the client asks Metadata)."""
        code, group = self._led(t, fp.partition)
        if not code and group in unled:
            code = ErrorCode.NOT_LEADER_OR_FOLLOWER
        if code:
            return fe.PartitionData(partition_index=fp.partition, error_code=code,
                                    high_watermark=-1, records=None)
        kv = self.node.groups[group].replica.kv
        state = LogState.of(kv)
        hw = state.next_offset
        if not state.start_offset <= fp.fetch_offset <= hw:
            return fe.PartitionData(partition_index=fp.partition,
                                    error_code=ErrorCode.OFFSET_OUT_OF_RANGE, high_watermark=hw,
                                    log_start_offset=state.start_offset, records=None)
        # The segments, by their index (at least one batch, as Kafka: a consumer must always
        # progress).
        data = kv.segments.read(fp.fetch_offset, max_bytes) if fp.fetch_offset < hw else b""
        return fe.PartitionData(partition_index=fp.partition, error_code=ErrorCode.NONE,
                                high_watermark=hw, last_stable_offset=hw,
                                log_start_offset=state.start_offset, records=data)

    async def list_offsets(self, req: lo.ListOffsetsRequest,
                           version: int) -> lo.ListOffsetsResponse:
        known = self.topics()
        out = []
        for lt in req.topics:
            t = known.get(lt.name)
            parts = []
            for lp in lt.partitions:
                code, offset, ts = await self._offset_for(t, lp.partition_index, lp.timestamp)
                parts.append(lo.ListOffsetsPartitionResponse(
                    partition_index=lp.partition_index, error_code=code,
                    old_style_offsets=[offset] if offset >= 0 and version == 0 else [], timestamp=ts,
                    offset=offset))
            out.append(lo.ListOffsetsTopicResponse(name=lt.name, partitions=parts))
        return lo.ListOffsetsResponse(topics=out)

    async def _offset_for(self, t: T.Topic | None, index: int,
                          timestamp: int) -> tuple[int, int, int]:
        code, group = self._led(t, index)
        if code or not await self._barrier(group):
            return code or ErrorCode.NOT_LEADER_OR_FOLLOWER, -1, -1
        g = self.node.groups[group]
        state = LogState.of(g.replica.kv)
        if timestamp == -1:  # latest
            return ErrorCode.NONE, state.next_offset, -1
        if timestamp == -2:  # earliest
            return ErrorCode.NONE, state.start_offset, -1
        found = g.replica.kv.segments.offset_for_time(timestamp)  # by the time indexes
        if found is not None:
            return ErrorCode.NONE, max(found[0], state.start_offset), found[1]
        return ErrorCode.NONE, state.next_offset, -1

    # ---------------------------------------------------------------- configs, coordinator
    async def describe_configs(self, req: dc.DescribeConfigsRequest,
                               version: int) -> dc.DescribeConfigsResponse:
        known = self.topics()
        out = []
        for r in req.resources:
            t = known.get(r.resource_name) if r.resource_type == 2 else None  # 2 = topic
            if r.resource_type == 2 and t is None:
                out.append(dc.DescribeConfigsResult(
                    error_code=ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, resource_type=2,
                    resource_name=r.resource_name, configs=[]))
                continue
            config = t.config if t is not None else {}
            names = r.configuration_keys if r.configuration_keys else list(config)
            out.append(dc.DescribeConfigsResult(
                error_code=0, resource_type=r.resource_type, resource_name=r.resource_name,
                configs=[dc.DescribeConfigsResourceResult(
                    name=n, value=config.get(n), read_only=False, is_default=n not in config
                    or config[n] == T.DEFAULTS.get(n), is_sensitive=False,
                    config_source=5 if config.get(n) != T.DEFAULTS.get(n) else 5,
                    synonyms=[], config_type=0, documentation=None)
                    for n in names if n in config]))
        return dc.DescribeConfigsResponse(results=out)

    async def find_coordinator(self, req: fc.FindCoordinatorRequest,
                               version: int) -> fc.FindCoordinatorResponse:
        leader = self._controller()
        addr = self.brokers().get(leader)
        keys = req.coordinator_keys if version >= 4 else [req.key]
        if addr is None:
            code, node_id, host, port = ErrorCode.COORDINATOR_NOT_AVAILABLE, -1, "", -1
        else:
            code, node_id, host, port = ErrorCode.NONE, leader, addr[0], addr[1]
        if version >= 4:
            return fc.FindCoordinatorResponse(coordinators=[fc.Coordinator(
                key=k, node_id=node_id, host=host, port=port, error_code=code) for k in keys])
        return fc.FindCoordinatorResponse(error_code=code, node_id=node_id, host=host, port=port)

    # ---------------------------------------------------------------- retention, compaction
    async def _retention(self) -> None:
        """Delete what the topics' retention.ms and retention.bytes no longer keep, and
        compact the compacted topics, on the partitions this node leads."""
        while True:
            await asyncio.sleep(RETENTION_EVERY_S)
            try:
                for t in self.topics().values():
                    for group in t.groups:
                        await self.clean(t, group)
            except Exception:  # noqa: BLE001 - retention waits for the next round
                log.exception("kafka: retention round failed")

    async def clean(self, t: T.Topic, group: int) -> None:
        """One round of `t`'s cleanup.policy on `group`, if this node leads it: whole closed
        segments past retention go (LogTrimRequest), then the cleaner runs over the closed
        segments not yet compacted (LogCompactRequest); both through the log, so every
        replica does the same."""
        g = self.node.groups.get(group)
        if g is None or g.replica.role != "leader":
            return
        kv = g.replica.kv
        if not kv.segments.segments:
            return
        state = LogState.of(kv)
        if T.deletes(t.config):
            cut = retention_cut(kv.segments.segments, now_ms(),
                                T.setting(t.config, "retention.ms"),
                                T.setting(t.config, "retention.bytes"))
            if cut > state.start_offset:
                await self.node.write(b"", 5.0, group=group,
                                      decoded=Command(LogTrimRequest(cut)))
        closed = kv.segments.closed()
        if T.compacted(t.config) and closed and closed[-1].next_offset > state.cleaned:
            await self.node.write(b"", 30.0, group=group, decoded=Command(LogCompactRequest(
                now_ms(), T.setting(t.config, "delete.retention.ms"))))


def _note_slow(ev: RequestReceived, took: float) -> None:
    """Log a request answered more than SLOW_S later than it had to be (a fetch may long-poll
    for its max wait; a JoinGroup or SyncGroup waits for the rebalance): every later request
    on its connection waited for it."""
    if isinstance(ev.body, jg.JoinGroupRequest | sg.SyncGroupRequest):
        return
    allowed = ev.body.max_wait_ms / 1000 if isinstance(ev.body, fe.FetchRequest) else 0.0
    if took > allowed + SLOW_S:
        log.info("kafka: %s from %s answered in %.1f s", type(ev.body).__name__, ev.client_id,
                 took)


def _names(req: dt.DeleteTopicsRequest) -> list[str]:
    return [t.name for t in req.topics if t.name] if req.topics else list(req.topic_names)


def retention_cut(segments: list[Segment], now: int, keep_ms: int, keep_bytes: int) -> int:
    """The offset before which whole segments are past retention (the active one never is):
    too old when their newest record is older than `keep_ms`, too big while dropping them
    leaves at least `keep_bytes` (Kafka's rule)."""
    size = sum(s.size for s in segments)
    cut = segments[0].base
    for seg, nxt in zip(segments, segments[1:], strict=False):
        too_old = keep_ms >= 0 and 0 <= seg.max_ts < now - keep_ms
        too_big = keep_bytes >= 0 and size - seg.size >= keep_bytes
        if not (too_old or too_big):
            break
        cut, size = nxt.base, size - seg.size
    return cut
