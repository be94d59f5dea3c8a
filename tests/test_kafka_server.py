"""Kafka's own clients and tools against a 3-node Shoal: kcat (librdkafka's CLI, from Debian),
kafka-python, confluent-kafka and aiokafka produce, consume and list metadata unchanged; an
idempotent producer's retried batch is written once; bad requests get Kafka's errors."""

from __future__ import annotations

import asyncio
import subprocess
import threading
import time
from collections.abc import Iterator

import pytest

from kafka_wire import call
from shoal.events.protocol import (
    ErrorCode,
    build_batch,
)
from shoal.events.protocol import produce as pr
from shoal.events.protocol.records import NewRecord
from shoal.local.cluster import LocalProcessCluster
from shoal_bench.debian import ensure


@pytest.fixture(scope="module")
def bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[str]]:
    with LocalProcessCluster(3, tmp_path_factory.mktemp("kafka")) as cluster:
        cluster.start()
        yield cluster.kafka_bootstrap


def test_kcat_lists_produces_and_consumes(bootstrap: list[str]) -> None:
    kcat = ensure({"kcat": "kcat"})["kcat"]
    bs = ",".join(bootstrap)
    lines = "".join(f"key{i}:value{i}\n" for i in range(20))
    subprocess.run([kcat, "-b", bs, "-P", "-t", "kcat-topic", "-K:"], input=lines.encode(),
                   check=True, timeout=60)
    listed = subprocess.run([kcat, "-b", bs, "-L", "-t", "kcat-topic"], capture_output=True,
                            text=True, check=True, timeout=60).stdout
    assert "3 brokers" in listed and 'topic "kcat-topic" with 1 partitions' in listed
    got = subprocess.run([kcat, "-b", bs, "-C", "-t", "kcat-topic", "-o", "beginning", "-e",
                          "-f", "%k=%s@%o\\n"], capture_output=True, text=True, check=True,
                         timeout=60).stdout.split()
    # every record once, in order, at dense offsets
    assert got == [f"key{i}=value{i}@{i}" for i in range(20)]


def test_kafka_python_and_confluent_round_trip_across_partitions(bootstrap: list[str]) -> None:
    from confluent_kafka import Consumer, Producer
    from confluent_kafka.admin import AdminClient, NewTopic
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition

    admin = AdminClient({"bootstrap.servers": ",".join(bootstrap)})
    futures = admin.create_topics([NewTopic("events", num_partitions=3, replication_factor=3)])
    futures["events"].result(30)
    p = Producer({"bootstrap.servers": ",".join(bootstrap), "acks": "all",
                  "enable.idempotence": True,
                  "partitioner": "murmur2_random"})  # (Java's; librdkafka's default is crc32)
    for i in range(60):
        p.produce("events", key=b"user-%d" % (i % 7), value=b"c%d" % i)
    assert p.flush(30) == 0
    kp = KafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    for i in range(60):
        kp.send("events", key=b"user-%d" % (i % 7), value=b"k%d" % i)
    kp.flush(30)
    kp.close()
    # Both clients hash keys with murmur2 alike, so each key's records share one partition.
    kc = KafkaConsumer(bootstrap_servers=bootstrap, consumer_timeout_ms=5000)
    parts = [TopicPartition("events", i) for i in range(3)]
    kc.assign(parts)
    kc.seek_to_beginning()
    seen = [(m.partition, m.offset, m.key, m.value) for m in kc]
    kc.close()
    assert len(seen) == 120
    by_key: dict[bytes, set[int]] = {}
    for partition, _, key, _ in seen:
        by_key.setdefault(key, set()).add(partition)
    assert all(len(ps) == 1 for ps in by_key.values())
    for i in range(3):  # dense offsets per partition
        offs = sorted(o for p_, o, _, _ in seen if p_ == i)
        assert offs == list(range(len(offs)))
    c = Consumer({"bootstrap.servers": ",".join(bootstrap), "group.id": "solo",
                  "auto.offset.reset": "earliest", "enable.auto.commit": False})
    from confluent_kafka import TopicPartition as CTP
    c.assign([CTP("events", i, 0) for i in range(3)])
    values = set()
    while len(values) < 120:
        m = c.poll(10)
        assert m is not None, f"stalled at {len(values)} records"
        assert m.error() is None, m.error()
        values.add(m.value())
    c.close()
    assert values == {b"c%d" % i for i in range(60)} | {b"k%d" % i for i in range(60)}


def test_aiokafka_produces_and_fetches_with_long_polling(bootstrap: list[str]) -> None:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

    async def main() -> None:
        prod = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
        await prod.start()
        cons = AIOKafkaConsumer(bootstrap_servers=bootstrap, fetch_max_wait_ms=5000)
        await cons.start()
        try:
            await prod.send_and_wait("aio", b"first")  # auto-creates the topic
            tp = TopicPartition("aio", 0)
            cons.assign([tp])
            cons.seek(tp, 0)
            first = await asyncio.wait_for(cons.getone(), 20)
            assert first.value == b"first" and first.offset == 0
            loop = asyncio.get_running_loop()
            waiting = asyncio.ensure_future(cons.getone())
            t0 = loop.time()
            await prod.send_and_wait("aio", b"second")
            second = await asyncio.wait_for(waiting, 20)
            assert second.value == b"second" and second.offset == 1
            assert loop.time() - t0 < 4  # woken by the append, not by max_wait
        finally:
            await cons.stop()
            await prod.stop()

    asyncio.run(main())


def _call(addr: str, body: object, version: int) -> object:
    return call(addr, body, version)[0]


def test_idempotent_retries_are_written_once_and_gaps_refused(bootstrap: list[str]) -> None:
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition

    KafkaProducer(bootstrap_servers=bootstrap).send("idem", b"x").get(30)  # create it
    batch = build_batch([NewRecord(b"once")], producer_id=4242, producer_epoch=0,
                        base_sequence=0).encode()

    def produce(records: bytes) -> pr.PartitionProduceResponse:
        req = pr.ProduceRequest(acks=-1, timeout_ms=10_000, topic_data=[pr.TopicProduceData(
            name="idem", partition_data=[pr.PartitionProduceData(index=0, records=records)])])
        for addr in bootstrap:  # the partition's leader answers; the others say who is not
            resp = _call(addr, req, 9)
            part = resp.responses[0].partition_responses[0]  # type: ignore[attr-defined]
            if part.error_code != ErrorCode.NOT_LEADER_OR_FOLLOWER:
                return part  # type: ignore[no-any-return]
        raise AssertionError("no leader answered")

    first, retry = produce(batch), produce(batch)
    assert first.error_code == 0 and retry.error_code == 0
    assert retry.base_offset == first.base_offset  # the retry answered, not written again
    gap = build_batch([NewRecord(b"gap")], producer_id=4242, producer_epoch=0,
                      base_sequence=5).encode()
    assert produce(gap).error_code == ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER
    kc = KafkaConsumer(bootstrap_servers=bootstrap, consumer_timeout_ms=3000)
    kc.assign([TopicPartition("idem", 0)])
    kc.seek_to_beginning()
    assert [m.value for m in kc] == [b"x", b"once"]
    kc.close()


class _Member(threading.Thread):
    """One consumer of a group on its own thread, polling as an application does."""

    def __init__(self, bootstrap: list[str], group: str, topic: str):
        from kafka import KafkaConsumer

        super().__init__(daemon=True)
        self.consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=group,
                                      auto_offset_reset="earliest", enable_auto_commit=False,
                                      session_timeout_ms=10_000, heartbeat_interval_ms=1000)
        self.values: list[bytes] = []
        self.assigned: list[int] = []
        self.stop, self.commit, self.committed = (threading.Event(), threading.Event(),
                                                  threading.Event())

    def run(self) -> None:
        while not self.stop.is_set():
            for msgs in self.consumer.poll(500).values():
                self.values.extend(m.value for m in msgs)
            self.assigned = sorted(tp.partition for tp in self.consumer.assignment())
            if self.commit.is_set() and not self.committed.is_set():
                self.consumer.commit()
                self.committed.set()
        self.consumer.close()


def _until(pred, what: str, timeout: float = 60) -> None:  # type: ignore[no-untyped-def]
    end = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_kafka_python_group_of_three_rebalances_and_commits(bootstrap: list[str]) -> None:
    from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
    from kafka.admin import NewTopic

    KafkaAdminClient(bootstrap_servers=bootstrap).create_topics(
        [NewTopic("grouped", num_partitions=3, replication_factor=3)])
    p = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    for i in range(90):
        p.send("grouped", key=b"k%d" % i, value=b"v%d" % i)
    p.flush(30)
    members = [_Member(bootstrap, "g3", "grouped") for _ in range(3)]
    for m in members:
        m.start()
    _until(lambda: sum(len(m.values) for m in members) >= 90, "the group to read everything")
    _until(lambda: sorted(len(m.assigned) for m in members) == [1, 1, 1], "one partition each")
    assert sorted(v for m in members for v in m.values) == sorted(b"v%d" % i for i in range(90))
    for m in members:
        m.commit.set()
    _until(lambda: all(m.committed.is_set() for m in members), "the commits")
    members[2].stop.set()  # LeaveGroup on close: the other two take its partition
    members[2].join(30)
    _until(lambda: sorted(p for m in members[:2] for p in m.assigned) == [0, 1, 2],
           "the two left to share all three partitions")
    for m in members[:2]:
        m.stop.set()
        m.join(30)
    probe = KafkaConsumer(bootstrap_servers=bootstrap, group_id="g3")
    committed = [probe.committed(TopicPartition("grouped", i)) for i in range(3)]
    probe.close()
    assert sum(committed) == 90  # every partition's offset, durably in the store
    # A new member of the same group starts from the committed offsets: nothing to read.
    late = KafkaConsumer("grouped", bootstrap_servers=bootstrap, group_id="g3",
                         auto_offset_reset="earliest", consumer_timeout_ms=8000)
    assert list(late) == []
    late.close()


def test_confluent_and_aiokafka_consumer_groups(bootstrap: list[str]) -> None:
    from aiokafka import AIOKafkaConsumer
    from confluent_kafka import Consumer, Producer

    p = Producer({"bootstrap.servers": ",".join(bootstrap)})
    for i in range(20):
        p.produce("mixed", value=b"m%d" % i)
    assert p.flush(30) == 0
    c = Consumer({"bootstrap.servers": ",".join(bootstrap), "group.id": "rd",
                  "auto.offset.reset": "earliest", "enable.auto.commit": False,
                  "session.timeout.ms": 10_000})
    c.subscribe(["mixed"])
    got = []
    while len(got) < 20:
        m = c.poll(20)
        assert m is not None, f"stalled after {len(got)}"
        assert m.error() is None, m.error()
        got.append(m.value())
    c.commit(asynchronous=False)
    c.close()
    assert got == [b"m%d" % i for i in range(20)]

    async def aio() -> list[bytes]:
        cons = AIOKafkaConsumer("mixed", bootstrap_servers=bootstrap, group_id="rd",
                                auto_offset_reset="earliest", enable_auto_commit=False)
        await cons.start()
        try:
            p.produce("mixed", value=b"after")
            p.flush(30)
            msg = await asyncio.wait_for(cons.getone(), 30)  # resumes at the committed offset
            return [msg.value]
        finally:
            await cons.stop()

    assert asyncio.run(aio()) == [b"after"]


def test_components_publish_and_subscribe_at_least_once(bootstrap: list[str]) -> None:
    from shoal.events.client import Event, EventLog

    async def main() -> None:
        async with EventLog(bootstrap) as log:
            await log.create_topic("orders", partitions=2)
            for i in range(20):
                await log.publish("orders", b"order-%d" % i, key=b"c%d" % (i % 5))
            handled: list[bytes] = []
            failed_once: set[bytes] = set()

            async def handle(e: Event) -> None:
                assert e.value is not None
                if e.value == b"order-7" and e.value not in failed_once:
                    failed_once.add(e.value)
                    raise RuntimeError("a transient failure")  # delivered again
                handled.append(e.value)
                if len(handled) == 20:
                    sub.stop()

            sub = log.subscribe("orders", group="billing", handler=handle, retry_pause_s=0.05)
            await asyncio.wait_for(sub.run(), 60)
            assert sorted(handled) == sorted(b"order-%d" % i for i in range(20))
            assert failed_once == {b"order-7"}
            # Committed after each success: the group's next member has nothing left.
            await log.publish("orders", b"order-20", key=b"c0")
            rest: list[bytes] = []

            async def collect(e: Event) -> None:
                assert e.value is not None
                rest.append(e.value)
                again.stop()

            again = log.subscribe("orders", group="billing", handler=collect)
            await asyncio.wait_for(again.run(), 60)
            assert rest == [b"order-20"]

    asyncio.run(main())
