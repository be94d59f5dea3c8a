"""The event log for Shoal's own components: publish, and subscribe with a group, over Kafka's
protocol (aiokafka underneath), so the same code works against a Kafka cluster.

```python
async with EventLog(bootstrap) as log:
    await log.create_topic("orders", partitions=3)
    await log.publish("orders", b'{"id": 7}', key=b"customer-42")

    async def handle(event: Event) -> None:
        ...                                   # raise to have it delivered again
    await log.subscribe("orders", group="billing", handler=handle).run()
```

Publishing is idempotent with acks=all: a record acknowledged is on a quorum of the
partition's replicas, and a retried send is written once. Subscribing is **at least once**:
each record goes to the handler, and its offset is committed only after the handler returned;
a handler that raises gets the record again (after a pause, up to `attempts` times, then the
subscription stops with the error, the offset still uncommitted). Records of one partition are
handled in order, one at a time; partitions are shared among the group's members by the
coordinator's rebalancing."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("shoal.events")


@dataclass(frozen=True, slots=True)
class Event:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int
    headers: tuple[tuple[str, bytes], ...] = ()


Handler = Callable[[Event], Awaitable[None]]


class EventLog:
    def __init__(self, bootstrap: Sequence[str] | str, *, client_id: str = "shoal-events",
                 request_timeout_ms: int = 30_000):
        self.bootstrap = bootstrap if isinstance(bootstrap, str) else ",".join(bootstrap)
        self.client_id, self.request_timeout_ms = client_id, request_timeout_ms
        self._producer: Any = None

    async def __aenter__(self) -> EventLog:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    async def create_topic(self, name: str, partitions: int = 1, replication: int = 3,
                           config: dict[str, str] | None = None) -> None:
        """Create `name` (TopicAlreadyExistsError if it exists)."""
        from aiokafka.admin import AIOKafkaAdminClient, NewTopic

        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap, client_id=self.client_id,
                                    request_timeout_ms=self.request_timeout_ms)
        await admin.start()
        try:
            await admin.create_topics([NewTopic(name, partitions, replication,
                                                topic_configs=config or {})])
        finally:
            await admin.close()

    async def publish(self, topic: str, value: bytes, key: bytes | None = None, *,
                      headers: Sequence[tuple[str, bytes]] = ()) -> tuple[int, int]:
        """Append one record (to the partition the key hashes to, murmur2 as Kafka's); returns
        (partition, offset) once it is committed."""
        if self._producer is None:
            from aiokafka import AIOKafkaProducer

            producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all",
                                        enable_idempotence=True, client_id=self.client_id,
                                        request_timeout_ms=self.request_timeout_ms)
            await producer.start()
            self._producer = producer
        meta = await self._producer.send_and_wait(topic, value, key=key, headers=list(headers))
        return meta.partition, meta.offset

    def subscribe(self, topics: str | Sequence[str], group: str, handler: Handler, *,
                  attempts: int = 5, retry_pause_s: float = 0.5) -> Subscription:
        """A member of consumer group `group` over `topics`; `run()` it."""
        names = [topics] if isinstance(topics, str) else list(topics)
        if attempts < 1:
            raise ValueError("attempts must be at least 1")
        return Subscription(self, names, group, handler, attempts, retry_pause_s)


class Subscription:
    def __init__(self, log_: EventLog, topics: list[str], group: str, handler: Handler,
                 attempts: int, retry_pause_s: float):
        self.log, self.topics, self.group, self.handler = log_, topics, group, handler
        self.attempts, self.retry_pause_s = attempts, retry_pause_s
        self.handled = 0
        self._stop = asyncio.Event()

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        """Handle records until stop() (or a handler fails `attempts` times: raised)."""
        from aiokafka import AIOKafkaConsumer, TopicPartition

        consumer = AIOKafkaConsumer(*self.topics, bootstrap_servers=self.log.bootstrap,
                                    group_id=self.group, enable_auto_commit=False,
                                    auto_offset_reset="earliest", client_id=self.log.client_id)
        await consumer.start()
        try:
            while not self._stop.is_set():
                batches = await consumer.getmany(timeout_ms=200, max_records=100)
                for tp, records in batches.items():
                    for r in records:
                        await self._handle(Event(r.topic, r.partition, r.offset, r.key,
                                                 r.value, r.timestamp,
                                                 tuple((k, bytes(v)) for k, v in r.headers)))
                        await consumer.commit({TopicPartition(tp.topic, tp.partition):
                                               r.offset + 1})
        finally:
            await consumer.stop()

    async def _handle(self, event: Event) -> None:
        for attempt in range(1, self.attempts + 1):
            try:
                await self.handler(event)
                self.handled += 1
                return
            except Exception as exc:  # noqa: BLE001 - the handler's failure: retried, then raised
                if attempt == self.attempts:
                    raise
                log.warning("events: %s[%d]@%d failed (attempt %d of %d): %s", event.topic,
                            event.partition, event.offset, attempt, self.attempts, exc)
                await asyncio.sleep(self.retry_pause_s)
