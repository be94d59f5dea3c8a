"""The event log on real processes, through Kafka's own client: `shoal torture --workload log`.

Producers (confluent-kafka, so librdkafka's idempotent producer: acks=all,
enable.idempotence, its own retries of the same batch under the same sequence numbers; its
default delivery timeout, message.timeout.ms 300 s, since a shorter one makes librdkafka bump
its epoch after timeouts and send records that may already be written again under the new
epoch, where no broker can recognise them: librdkafka issue #4953) write
into a topic of several partitions; each record's value names its producer and a sequence
number of the producer's own, its key spreads records over the partitions. Consumers in one
group poll, and commit what they polled synchronously after recording it (at least once).
A monitor reads the group's committed offsets every half second. All of it while the nemesis
of torture/run.py kills (SIGKILL), pauses (SIGSTOP) and cuts off nodes; afterwards everything
is healed and a fresh consumer reads every partition back from its start to its end.

The checks:
- every acknowledged record is in the log, at the partition and offset its acknowledgement
  named (a committed record is never lost);
- no record is in the log twice (a retried batch is written once), and every record in it
  is one a producer sent;
- offsets are dense per partition, and each producer's records keep their order within a
  partition;
- a producer's acknowledgements in one partition come in increasing offsets;
- consumers saw every record below the group's final committed offset at least once, and
  what they saw at an offset is what the log holds there;
- the committed offset of a partition never moved backwards, in any reading of it.

Progress is recorded per phase, under the nemesis ("faults") and after the healing
("healed"): records acknowledged, consumed, commits made and the monitor's readings of the
committed offsets (so, how often the group's coordinator answered), their rates, and the
longest stretch without any. It is shown, not checked: a group can rightly make no progress
while the nemesis leaves no quorum, and a restarted node takes seconds to serve again.

Threads, not tasks: librdkafka's clients block; the nemesis runs on the event loop."""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..local.cluster import LocalProcessCluster
from .run import NODE_ARGS, Nemesis

TOPIC = "torture-log"
GROUP = "torture-consumers"
MAX_PROBLEMS = 20  # listed per run; the counts say how many more


@dataclass
class LogResult:
    ok: bool
    problems: list[str]
    counts: dict[str, int]
    partitions: list[dict[str, int]]  # per partition: records, acknowledged, consumed, committed
    faults: list[str] = field(default_factory=list)
    phases: dict[str, dict[str, float]] = field(default_factory=dict)  # see LogWorkload.phases

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "problems": self.problems, "counts": self.counts,
                "partitions": self.partitions, "phases": self.phases, "faults": self.faults}


@dataclass
class _Seen:
    """Everything the clients learned, appended to from their threads (under `lock`)."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    sent: set[bytes] = field(default_factory=set)
    acked: dict[bytes, tuple[int, int]] = field(default_factory=dict)  # value -> (partition, offset)
    ack_order: dict[tuple[str, int], list[int]] = field(default_factory=lambda: defaultdict(list))
    consumed: dict[tuple[int, int], bytes] = field(default_factory=dict)  # (partition, offset)
    committed: dict[int, int] = field(default_factory=dict)  # partition -> highest committed
    # The monitor's readings in order: one client reading one after another, so a reading
    # below the one before is an offset that moved back (commit answers from several
    # consumers may be recorded out of their order).
    readings: dict[int, list[int]] = field(default_factory=lambda: defaultdict(list))
    counts: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    # When each acknowledgement, consumed batch and commit happened: (monotonic time, count).
    times: dict[str, list[tuple[float, int]]] = field(default_factory=lambda: defaultdict(list))


class LogWorkload:
    def __init__(self, bootstrap: list[str], producers: int, consumers: int, partitions: int,
                 seed: int):
        self.bootstrap = ",".join(bootstrap)
        # librdkafka logs every refused connection to stderr: the nemesis makes many
        self.base: dict[str, str | int | float | bool] = {"bootstrap.servers": self.bootstrap,
                                                          "log_level": 2}
        self.n_producers, self.n_consumers, self.partitions = producers, consumers, partitions
        self.rng = random.Random(seed)
        self.seen = _Seen()
        self.problems: list[str] = []
        self.partition_rows: list[dict[str, int]] = []  # (the check's table)
        self._stop_producing, self._stop_consuming = threading.Event(), threading.Event()
        self._readers: list[threading.Thread] = []  # the consumers and the monitor
        # (monotonic) the workload's start, the healing, the consumers' stop
        self.started = self.healed = self.stopped = 0.0

    def setup(self) -> None:
        from confluent_kafka.admin import AdminClient, NewTopic

        admin = AdminClient(self.base)
        done = admin.create_topics([NewTopic(TOPIC, num_partitions=self.partitions,
                                             replication_factor=3)])
        done[TOPIC].result(60)

    async def run(self, seconds: float, say: Callable[[str], None]) -> None:
        """Produce and consume for `seconds`; then the producers deliver what they hold."""
        producers = [threading.Thread(target=self._produce, args=(f"p{i}",), daemon=True)
                     for i in range(self.n_producers)]
        self._readers = [threading.Thread(target=self._consume, args=(f"c{i}",), daemon=True)
                         for i in range(self.n_consumers)]
        self._readers.append(threading.Thread(target=self._monitor, daemon=True))
        for t in [*producers, *self._readers]:
            t.start()
        self.started = time.monotonic()
        end = self.started + seconds
        while time.monotonic() < end:
            await asyncio.sleep(min(5.0, max(0.0, end - time.monotonic())))
            self._progress(say)
        self._stop_producing.set()
        for t in producers:
            await asyncio.to_thread(t.join, 90.0)

    async def drain(self, say: Callable[[str], None], timeout: float = 60.0) -> bool:
        """Once the cluster is healed, the consumers go on until the group has committed
        every acknowledged record (or `timeout`); True if it did."""
        end = time.monotonic() + timeout
        while not (done := self._caught_up()) and time.monotonic() < end:
            await asyncio.sleep(1.0)
            self._progress(say)
        self._stop_consuming.set()
        self.stopped = time.monotonic()
        for t in self._readers:
            await asyncio.to_thread(t.join, 60.0)
        return done

    def _caught_up(self) -> bool:
        with self.seen.lock:
            ends: dict[int, int] = {}
            for part, off in self.seen.acked.values():
                ends[part] = max(ends.get(part, 0), off + 1)
            return all(self.seen.committed.get(p, 0) >= e for p, e in ends.items())

    def _progress(self, say: Callable[[str], None]) -> None:
        c = self.seen.counts
        say(f"acknowledged {c['acked']}, delivery failures {c['delivery_failed']}, "
            f"consumed {c['consumed']}, commits {c['commits']}, committed "
            f"{dict(sorted(self.seen.committed.items()))}")

    def phases(self) -> dict[str, dict[str, float]]:
        """Per phase ("faults": from the start to the healing; "healed": from it until the
        consumers stopped): the records acknowledged and consumed, the commits made and the
        monitor's readings of the committed offsets (one every half second while the group's
        coordinator answers), per second, and the longest stretch in seconds without one
        (phase edges included)."""
        ends = {"faults": (self.started, self.healed),
                "healed": (self.healed, self.stopped)}
        out: dict[str, dict[str, float]] = {}
        with self.seen.lock:
            for phase, (start, end) in ends.items():
                row: dict[str, float] = {"seconds": round(end - start, 1)}
                for kind in ("acked", "consumed", "commits", "readings"):
                    at = [(t, n) for t, n in self.seen.times[kind] if start <= t < end]
                    total = sum(n for _, n in at)
                    marks = [start, *(t for t, _ in at), end]
                    row[kind] = total
                    row[f"{kind}_per_s"] = round(total / max(end - start, 1e-9), 1)
                    row[f"{kind}_longest_gap_s"] = round(max(
                        b - a for a, b in zip(marks, marks[1:], strict=False)), 1)
                out[phase] = row
        return out

    # ------------------------------------------------------------------ clients
    def _produce(self, name: str) -> None:
        from confluent_kafka import KafkaError, KafkaException, Producer

        seen, seq = self.seen, 0
        while not self._stop_producing.is_set():
            p = Producer({**self.base, "acks": "all",
                          "enable.idempotence": True, "linger.ms": 5,
                          "partitioner": "murmur2_random"})
            fatal = False

            def report(err: Any, msg: Any) -> None:
                nonlocal fatal
                with seen.lock:
                    if err is not None:
                        seen.counts["delivery_failed"] += 1
                        fatal = fatal or err.fatal()
                        return
                    seen.acked[msg.value()] = (msg.partition(), msg.offset())
                    seen.ack_order[(name, msg.partition())].append(msg.offset())
                    seen.counts["acked"] += 1
                    seen.times["acked"].append((time.monotonic(), 1))

            while not self._stop_producing.is_set() and not fatal:
                value = b"%s:%d" % (name.encode(), seq)
                seq += 1
                with seen.lock:
                    seen.sent.add(value)
                try:
                    p.produce(TOPIC, key=b"k%d" % (seq % 97), value=value, on_delivery=report)
                except BufferError:
                    p.poll(0.5)
                except KafkaException as exc:
                    if exc.args[0].code() != KafkaError._FATAL:
                        raise
                    fatal = True
                p.poll(0)
                time.sleep(0.002)
            p.flush(60)  # every outstanding record acknowledged or failed, then a fresh one
            if fatal:
                with seen.lock:
                    seen.counts["producer_restarts"] += 1

    def _consume(self, name: str) -> None:
        from confluent_kafka import Consumer, KafkaException

        seen = self.seen
        c = Consumer({**self.base, "group.id": GROUP,
                      "client.id": name, "auto.offset.reset": "earliest",
                      "enable.auto.commit": False,
                      "heartbeat.interval.ms": 1000})
        c.subscribe([TOPIC])
        try:
            while not self._stop_consuming.is_set():
                msgs = c.consume(200, 0.5)
                got = [m for m in msgs if m.error() is None]
                if len(got) < len(msgs):
                    with seen.lock:
                        seen.counts["consume_errors"] += len(msgs) - len(got)
                if not got:
                    continue
                with seen.lock:
                    for part, off, value in map(_record, got):
                        was = seen.consumed.setdefault((part, off), value)
                        if was != value:
                            self.problems.append(f"partition {part} offset {off} was consumed "
                                                 f"as {was!r} and later as {value!r}")
                    seen.counts["consumed"] += len(got)
                    seen.times["consumed"].append((time.monotonic(), len(got)))
                try:
                    done = c.commit(asynchronous=False)
                except KafkaException:
                    with seen.lock:
                        seen.counts["commit_failed"] += 1  # (a rebalance, a lost coordinator)
                    continue
                with seen.lock:
                    seen.counts["commits"] += 1
                    seen.times["commits"].append((time.monotonic(), 1))
                    for tp in done or []:
                        if tp.error is None and tp.offset >= 0:
                            seen.committed[tp.partition] = max(
                                tp.offset, seen.committed.get(tp.partition, 0))
        finally:
            c.close()

    def _monitor(self) -> None:
        """The group's committed offsets, read by a client of the group that never joins it."""
        from confluent_kafka import Consumer, KafkaException, TopicPartition

        c = Consumer({**self.base, "group.id": GROUP,
                      "enable.auto.commit": False})
        parts = [TopicPartition(TOPIC, i) for i in range(self.partitions)]
        try:
            while not self._stop_consuming.wait(0.5):
                try:
                    got = c.committed(parts, timeout=5)
                except KafkaException:
                    continue
                with self.seen.lock:
                    self.seen.times["readings"].append((time.monotonic(), 1))
                    for tp in got:
                        if tp.error is None and tp.offset >= 0:
                            self.seen.readings[tp.partition].append(tp.offset)
        finally:
            c.close()

    # ------------------------------------------------------------------ the check
    def read_back(self) -> dict[int, list[tuple[int, bytes]]]:
        """Every partition from its start to its end, with a fresh consumer."""
        from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

        c = Consumer({**self.base, "group.id": "torture-read-back", "enable.auto.commit": False,
                      "fetch.wait.max.ms": 100})
        out: dict[int, list[tuple[int, bytes]]] = {i: [] for i in range(self.partitions)}
        try:
            marks = {i: c.get_watermark_offsets(TopicPartition(TOPIC, i), timeout=30)
                     for i in range(self.partitions)}
            c.assign([TopicPartition(TOPIC, i, OFFSET_BEGINNING) for i in range(self.partitions)])
            deadline = time.monotonic() + 120

            def short(i: int) -> bool:
                low, high = marks[i]
                return high > low and (not out[i] or out[i][-1][0] < high - 1)

            while any(short(i) for i in out):
                if time.monotonic() > deadline:
                    self.problems += [f"partition {i}: read back stalled at "
                                      f"{out[i][-1][0] if out[i] else marks[i][0]} of "
                                      f"{marks[i][1]}" for i in out if short(i)]
                    break
                for m in c.consume(1000, 1.0):
                    if m.error() is None:
                        part, off, value = _record(m)
                        out[part].append((off, value))
            for i, records in out.items():
                if records and records[0][0] != marks[i][0]:
                    self.problems.append(f"partition {i} starts at {records[0][0]}, its low "
                                         f"watermark is {marks[i][0]}")
        finally:
            c.close()
        return out

    def check(self, log: dict[int, list[tuple[int, bytes]]]) -> list[str]:
        seen, problems = self.seen, list(self.problems)
        where: dict[bytes, tuple[int, int]] = {}
        per_partition = []
        for part, records in sorted(log.items()):
            last: dict[bytes, int] = {}
            for k, (off, value) in enumerate(records):
                if k and off != records[k - 1][0] + 1:
                    problems.append(f"partition {part}: offset {off} follows "
                                    f"{records[k - 1][0]}: offsets are not dense")
                if value in where:
                    ack = seen.acked.get(value)
                    problems.append(f"{value!r} is in the log twice: partition {where[value][0]} "
                                    f"offset {where[value][1]} and partition {part} offset {off} "
                                    f"({f'acknowledged at offset {ack[1]}' if ack else 'never acknowledged'})")
                where[value] = (part, off)
                if value not in seen.sent:
                    problems.append(f"partition {part} offset {off} holds {value!r}, which no "
                                    "producer sent")
                    continue
                producer, seq = value.split(b":")
                if int(seq) <= last.get(producer, -1):
                    problems.append(f"partition {part}: {value!r} at {off} comes after "
                                    f"{producer.decode()}'s record {last[producer]}")
                last[producer] = int(seq)
            committed = max([seen.committed.get(part, 0), *seen.readings.get(part, [])])
            per_partition.append({
                "partition": part, "records": len(records),
                "acknowledged": sum(1 for p, _ in seen.acked.values() if p == part),
                "consumed": len({o for p, o in seen.consumed if p == part}),
                "committed": committed})
            by_offset = dict(records)
            unseen = [o for o in range(records[0][0] if records else 0, committed)
                      if (part, o) not in seen.consumed]
            if unseen:
                problems.append(f"partition {part}: {len(unseen)} records below the committed "
                                f"offset {committed} were never consumed, the first at "
                                f"{unseen[0]}")
            for (p, o), value in seen.consumed.items():
                if p == part and by_offset.get(o) != value:
                    problems.append(f"partition {part} offset {o} was consumed as {value!r}; "
                                    f"the log holds {by_offset.get(o)!r} there")
            history = seen.readings.get(part, [])
            back = next((i for i in range(1, len(history)) if history[i] < history[i - 1]), None)
            if back is not None:
                problems.append(f"partition {part}: the committed offset moved back from "
                                f"{history[back - 1]} to {history[back]}")
        for value, (part, off) in seen.acked.items():
            if where.get(value) != (part, off):
                problems.append(f"{value!r} was acknowledged at partition {part} offset {off}; "
                                f"the log holds it at {where.get(value)}")
        for (who, part), offsets in seen.ack_order.items():
            if any(b <= a for a, b in zip(offsets, offsets[1:], strict=False)):
                problems.append(f"{who}'s acknowledgements in partition {part} are not in "
                                "increasing offsets")
        self.partition_rows = per_partition
        return problems


def progress_line(phases: dict[str, dict[str, float]]) -> str:
    """The phases in one line: what the clients achieved under faults and after the healing."""
    return "; ".join(
        f"{name} ({p['seconds']:.0f} s): acknowledged {p['acked']:.0f} ({p['acked_per_s']:.0f}/s, "
        f"longest stall {p['acked_longest_gap_s']:.1f} s), consumed {p['consumed']:.0f} "
        f"({p['consumed_per_s']:.0f}/s, longest stall {p['consumed_longest_gap_s']:.1f} s), "
        f"commits {p['commits']:.0f}, offsets read {p['readings']:.0f}"
        for name, p in phases.items())


def _record(m: Any) -> tuple[int, int, bytes]:
    """(partition, offset, value) of a consumed message."""
    return int(m.partition()), int(m.offset()), bytes(m.value() or b"")


def torture_log(nodes: int = 3, seconds: float = 60.0, seed: int = 0, producers: int = 3,
                consumers: int = 3, partitions: int = 3, root: Path | None = None,
                say: Callable[[str], None] = lambda _: None) -> LogResult:
    """The log workload under kills, pauses and link cuts (no disk replacement: a wiped node
    would take its replicas of the partitions' groups with it, as in torture_bank)."""
    rng = random.Random(seed)
    with LocalProcessCluster(nodes, root=root, node_args=NODE_ARGS) as cluster:
        leader = cluster.start()
        say(f"cluster of {nodes} up, leader n{leader}; Kafka at {','.join(cluster.kafka_bootstrap)}")
        work = LogWorkload(cluster.kafka_bootstrap, producers, consumers, partitions,
                           rng.randrange(1 << 30))
        work.setup()
        say(f"topic {TOPIC}: {partitions} partitions, replication factor 3")

        async def faults_then_healed(nemesis: Nemesis) -> None:
            await nemesis.run(seconds, None)
            work.healed = time.monotonic()

        async def main() -> list[str]:
            nemesis = Nemesis(cluster, rng, say)
            await asyncio.gather(work.run(seconds, say), faults_then_healed(nemesis))
            await asyncio.to_thread(cluster.wait_leader, 30.0)
            say("healed; the consumers catch up")
            if not await work.drain(say):
                work.problems.append("the consumer group did not commit every acknowledged "
                                     "record within 60 s of the healing")
            return nemesis.done

        faults = asyncio.run(main())
        say("reading every partition back")
        log = work.read_back()
        problems = work.check(log)
        phases = work.phases()
        say(progress_line(phases))
    counts = dict(work.seen.counts)
    counts["records_in_log"] = sum(len(r) for r in log.values())
    counts["problems"] = len(problems)
    return LogResult(not problems, problems[:MAX_PROBLEMS], counts, work.partition_rows, faults,
                     phases)
