"""`shoal bench --log`: the event log beside Redis Streams, on the same machine in the same run.

- **Shoal**: a local 3-node cluster; a topic of `partitions` partitions, replication factor 3;
  confluent-kafka producers (librdkafka) with acks=all and enable.idempotence, linger.ms 5,
  Kafka's defaults otherwise: an acknowledged record is in a quorum's WAL.
- **Redis**: Debian's redis-server (installed if missing), one instance per fsync policy,
  appendonly with appendfsync always (an acknowledged XADD is fsynced) and everysec (up to a
  second of acknowledged records may be lost); XADD pipelined 100 at a time on 4 connections
  per generator process (librdkafka batches, and keeps several requests in flight), streams
  capped near 100,000 entries so memory stays bounded.

Produce throughput: `procs` load-generator processes, each one producer (one connection)
sending as fast as the system takes, for `seconds` after a warm-up; only records whose
acknowledgement arrives inside the window count. Around the window the server processes'
utime+stime (procs.cpu_seconds) give server CPU per record, the generators' their own (near
the machine's cores, the generator was the limit).

End-to-end latency: one process holds a producer sending `rate` records a second, each
stamped with the monotonic clock, and a consumer in a group (Shoal: a confluent-kafka consumer
group committing as it goes; Redis: XREADGROUP BLOCK and XACK); latency is from the stamp to
the record's arrival at the consumer; p50 and p99 over every record.

Each figure is run `repeat` times, the systems interleaved within each repeat so they share
the machine's noise, and the median run is quoted, with Shoal's ratio to each Redis."""

from __future__ import annotations

import json
import math
import statistics
import struct
import subprocess
import tempfile
import threading
import time
import traceback
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from shoal.local.cluster import LocalProcessCluster, free_ports

from .debian import ensure
from .loadgen import _pct
from .procs import _sleep_until, run_generators

console = Console()
progress = Console(stderr=True)

TOPIC = "bench-log"
STREAM = "bench-log"
HOST = "127.0.0.1"
PIPELINE = 100  # XADDs per round trip
CONNECTIONS = 4  # Redis connections per generator process, each with a pipeline in flight
STREAM_CAP = 100_000  # entries kept per stream (approximate MAXLEN)


@dataclass
class StreamsPlan:
    sizes: list[int]  # record sizes, bytes
    seconds: float
    repeat: int
    procs: int
    partitions: int = 3
    rate: int = 500  # records a second for the latency runs
    json: bool = False


@dataclass
class Throughput:
    system: str
    size: int
    records: int
    seconds: float
    server_cpu_s: float
    generator_cpu_s: float

    @property
    def records_per_s(self) -> float:
        return self.records / self.seconds

    @property
    def mb_per_s(self) -> float:
        return self.records * self.size / self.seconds / 1e6

    @property
    def server_us_per_record(self) -> float:
        return self.server_cpu_s / self.records * 1e6 if self.records else math.nan

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "records_per_s": self.records_per_s, "mb_per_s": self.mb_per_s,
                "server_us_per_record": self.server_us_per_record}


@dataclass
class Latency:
    system: str
    size: int
    records: int
    p50_ms: float
    p99_ms: float


# ---------------------------------------------------------------------- the two systems
class RedisServers:
    """One redis-server per appendfsync policy, each in a directory of its own."""

    def __init__(self, root: Path):
        self.root = root
        self.bin = ensure({"redis-server": "redis-server"})["redis-server"]
        self.ports = dict(zip(("always", "everysec"), free_ports(2), strict=True))
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self) -> None:
        import redis

        for policy, port in self.ports.items():
            d = self.root / f"redis-{policy}"
            d.mkdir()
            log = open(d / "redis.log", "wb")  # noqa: SIM115 - the child holds it
            self.procs[policy] = subprocess.Popen(
                [self.bin, "--port", str(port), "--bind", HOST, "--dir", str(d), "--save", "",
                 "--appendonly", "yes", "--appendfsync", policy, "--protected-mode", "no"],
                stdout=log, stderr=log, stdin=subprocess.DEVNULL)
            log.close()
        for policy, port in self.ports.items():
            r = redis.Redis(host=HOST, port=port)
            deadline = time.monotonic() + 20
            while True:
                try:
                    r.ping()
                    break
                except redis.ConnectionError:
                    if time.monotonic() > deadline or self.procs[policy].poll() is not None:
                        raise RuntimeError(f"redis-server ({policy}) did not start: see "
                                           f"{self.root / f'redis-{policy}' / 'redis.log'}") from None
                    time.sleep(0.1)
            r.close()

    def reset(self, policy: str) -> None:
        """An empty stream (and consumer group) for the next run."""
        import redis

        r = redis.Redis(host=HOST, port=self.ports[policy])
        r.delete(STREAM)
        r.close()

    def stop(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                p.kill()
                p.wait()


@dataclass(frozen=True)
class Target:
    system: str  # "shoal", "redis-always", "redis-everysec"
    address: str  # Kafka bootstrap, or host:port

    @property
    def redis(self) -> bool:
        return self.system.startswith("redis")


# ---------------------------------------------------------------------- generator processes
@dataclass(frozen=True)
class _Job:
    target: Target
    size: int
    seconds: float
    warmup: float
    seed: int


def _throughput_worker(job: _Job, conn: Connection) -> None:
    try:
        conn.send(("done", (_redis_produce if job.target.redis else _kafka_produce)(job, conn)))
    except BaseException:  # noqa: BLE001 - the parent raises it with this traceback
        conn.send(("error", traceback.format_exc()))
    finally:
        conn.close()


def _window(job: _Job, conn: Connection) -> tuple[float, float]:
    conn.send(("ready", None))
    start = conn.recv()
    _sleep_until(start)
    return start + job.warmup, start + job.warmup + job.seconds


def _kafka_produce(job: _Job, conn: Connection) -> int:
    from confluent_kafka import Producer

    p = Producer({"bootstrap.servers": job.target.address, "acks": "all",
                  "enable.idempotence": True, "linger.ms": 5, "log_level": 2})
    value = bytes(job.size)
    counted = 0
    t0 = t1 = 0.0

    def acked(err: Any, _msg: Any) -> None:
        nonlocal counted
        if err is None and t0 <= time.monotonic() < t1:
            counted += 1

    p.produce(TOPIC, value=value)  # metadata and the producer id, before the clock starts
    p.flush(30)
    t0, t1 = _window(job, conn)
    while time.monotonic() < t1:
        try:
            p.produce(TOPIC, value=value, on_delivery=acked)
        except BufferError:  # librdkafka's queue is full: wait for acknowledgements
            p.poll(0.01)
            continue
        p.poll(0)
    p.flush(30)
    return counted


def _redis_produce(job: _Job, conn: Connection) -> int:
    """CONNECTIONS connections, one thread each, every one sending pipelines back to back:
    several requests in flight per process, as librdkafka keeps several per broker."""
    import redis

    host, port = job.target.address.split(":")
    fields = {b"v": bytes(job.size)}
    counted = [0] * CONNECTIONS
    window: list[float] = []
    go = threading.Event()

    def loop(k: int) -> None:
        r = redis.Redis(host=host, port=int(port))
        r.ping()
        go.wait()
        t0, t1 = window
        while (now := time.monotonic()) < t1:
            pipe = r.pipeline(transaction=False)
            for _ in range(PIPELINE):
                pipe.xadd(STREAM, fields, maxlen=STREAM_CAP, approximate=True)  # type: ignore[arg-type]
            pipe.execute()
            if now >= t0 and time.monotonic() < t1:
                counted[k] += PIPELINE
        r.close()

    threads = [threading.Thread(target=loop, args=(k,), daemon=True) for k in range(CONNECTIONS)]
    for t in threads:
        t.start()
    window.extend(_window(job, conn))
    go.set()
    for t in threads:
        t.join()
    return sum(counted)


def throughput(target: Target, size: int, seconds: float, procs: int,
               server_pids: list[int], warmup: float = 1.0) -> Throughput:
    jobs = [_Job(target, size, seconds, warmup, i) for i in range(procs)]
    counts, server_cpu_s, generator_cpu_s = run_generators(
        _throughput_worker, jobs, warmup=warmup, seconds=seconds, server_pids=server_pids)
    return Throughput(target.system, size, sum(counts), seconds, server_cpu_s, generator_cpu_s)


# ---------------------------------------------------------------------- end-to-end latency
def latency(target: Target, size: int, seconds: float, rate: int) -> Latency:
    """Produce `rate` stamped records a second for `seconds`; a consumer in a group measures
    each one's trip (one process, one monotonic clock)."""
    lat: list[float] = []
    stop = threading.Event()
    ready = threading.Event()
    consume = _redis_consume if target.redis else _kafka_consume
    t = threading.Thread(target=consume, args=(target, lat, ready, stop), daemon=True)
    t.start()
    if not ready.wait(60):
        raise RuntimeError(f"{target.system}: the consumer did not join its group in 60 s")
    send = _redis_sender(target, size) if target.redis else _kafka_sender(target, size)
    begin = time.monotonic()
    n = int(seconds * rate)
    for i in range(n):
        _sleep_until(begin + i / rate)
        send(struct.pack(">d", time.monotonic()))
    send(b"")  # flush
    deadline = time.monotonic() + 30
    while len(lat) < n and time.monotonic() < deadline:
        time.sleep(0.05)
    stop.set()
    t.join(30)
    ordered = sorted(lat)
    return Latency(target.system, size, len(ordered), _pct(ordered, 50), _pct(ordered, 99))


def _kafka_sender(target: Target, size: int) -> Any:
    from confluent_kafka import Producer

    p = Producer({"bootstrap.servers": target.address, "acks": "all",
                  "enable.idempotence": True, "linger.ms": 5, "log_level": 2})
    pad = bytes(max(0, size - 8))

    def send(stamp: bytes) -> None:
        if not stamp:
            p.flush(30)
            return
        p.produce(TOPIC, value=stamp + pad)
        p.poll(0)

    return send


def _kafka_consume(target: Target, lat: list[float], ready: threading.Event,
                   stop: threading.Event) -> None:
    from confluent_kafka import Consumer

    c = Consumer({"bootstrap.servers": target.address, "group.id": f"bench-{time.time_ns()}",
                  "auto.offset.reset": "latest", "enable.auto.commit": True,
                  "fetch.wait.max.ms": 100, "log_level": 2})
    def on_assign(consumer: Any, parts: list[Any]) -> None:
        # Start each partition at its end as it is now, explicitly: "latest" would be looked
        # up only once fetching starts, and a record sent before that would be skipped.
        for tp in parts:
            tp.offset = consumer.get_watermark_offsets(tp, timeout=10, cached=False)[1]
        consumer.assign(parts)
        ready.set()

    c.subscribe([TOPIC], on_assign=on_assign)
    try:
        while not stop.is_set():
            for m in c.consume(500, 0.1):
                value = m.value()
                if m.error() is None and value and len(value) >= 8:
                    lat.append(time.monotonic() - struct.unpack(">d", value[:8])[0])
    finally:
        c.close()


def _redis_sender(target: Target, size: int) -> Any:
    import redis

    host, port = target.address.split(":")
    r = redis.Redis(host=host, port=int(port))
    pad = bytes(max(0, size - 8))

    def send(stamp: bytes) -> None:
        if stamp:
            r.xadd(STREAM, {b"v": stamp + pad}, maxlen=STREAM_CAP, approximate=True)

    return send


def _redis_consume(target: Target, lat: list[float], ready: threading.Event,
                   stop: threading.Event) -> None:
    import redis

    host, port = target.address.split(":")
    r = redis.Redis(host=host, port=int(port))
    r.xgroup_create(STREAM, "bench", id="$", mkstream=True)
    ready.set()
    while not stop.is_set():
        got: Any = r.xreadgroup("bench", "c1", {STREAM: ">"}, count=500, block=100)
        for _, entries in got or []:
            now = time.monotonic()
            for _, fields in entries:
                lat.append(now - struct.unpack(">d", fields[b"v"][:8])[0])
            r.xack(STREAM, "bench", *(eid for eid, _ in entries))
    r.close()


# ---------------------------------------------------------------------- the run
def run_streams_bench(plan: StreamsPlan) -> dict[str, Any]:
    with ExitStack() as stack:
        root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="shoal-streams-")))
        cluster = stack.enter_context(LocalProcessCluster(3, root=root / "shoal"))
        with progress.status("starting a 3-node Shoal cluster and two redis-servers..."):
            cluster.start()
            redis = RedisServers(root)
            stack.callback(redis.stop)
            redis.start()
            _create_topic(",".join(cluster.kafka_bootstrap), plan.partitions)
        targets = [Target("shoal", ",".join(cluster.kafka_bootstrap)),
                   *(Target(f"redis-{p}", f"{HOST}:{port}") for p, port in redis.ports.items())]

        def pids(t: Target) -> list[int]:
            if t.redis:
                return [redis.procs[t.system.removeprefix("redis-")].pid]
            return [p for i in cluster.ids if (p := cluster.pid(i)) is not None]

        thr: dict[tuple[str, int], list[Throughput]] = {}
        lat: dict[tuple[str, int], list[Latency]] = {}
        for rep in range(plan.repeat):
            for size in plan.sizes:
                for t in targets:
                    if t.redis:
                        redis.reset(t.system.removeprefix("redis-"))
                    progress.print(f"run {rep + 1}/{plan.repeat}: {t.system}, {size} B records: "
                                   f"produce for {plan.seconds:.0f} s, {plan.procs} processes")
                    r = throughput(t, size, plan.seconds, plan.procs, pids(t))
                    thr.setdefault((t.system, size), []).append(r)
                    progress.print(f"  {r.records_per_s:,.0f} records/s, {r.mb_per_s:.1f} MB/s, "
                                   f"server {r.server_us_per_record:.0f} us/record, generators "
                                   f"{r.generator_cpu_s / r.seconds:.2f} cores")
                    if t.redis:
                        redis.reset(t.system.removeprefix("redis-"))
                    e2e = latency(t, size, min(plan.seconds, 5.0), plan.rate)
                    lat.setdefault((t.system, size), []).append(e2e)
                    progress.print(f"  end to end at {plan.rate}/s: p50 {e2e.p50_ms:.1f} ms, "
                                   f"p99 {e2e.p99_ms:.1f} ms ({e2e.records} records)")
        out = _report(plan, thr, lat)
    return out


def _create_topic(bootstrap: str, partitions: int) -> None:
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(TOPIC, num_partitions=partitions,
                                  replication_factor=3)])[TOPIC].result(60)


def _median(runs: list[Any], key: str) -> Any:
    ordered = sorted(runs, key=lambda r: getattr(r, key))
    return ordered[len(ordered) // 2]


def _report(plan: StreamsPlan, thr: dict[tuple[str, int], list[Throughput]],
            lat: dict[tuple[str, int], list[Latency]]) -> dict[str, Any]:
    rows: list[dict[str, Any]] = []
    for (system, size), runs in thr.items():
        m = _median(runs, "records_per_s")
        e = lat[(system, size)]
        rows.append({**m.to_json(), "runs_records_per_s": [r.records_per_s for r in runs],
                     "e2e_p50_ms": statistics.median(x.p50_ms for x in e),
                     "e2e_p99_ms": statistics.median(x.p99_ms for x in e)})
    for row in rows:
        shoal = next(r for r in rows if r["system"] == "shoal" and r["size"] == row["size"])
        row["shoal_ratio"] = shoal["records_per_s"] / row["records_per_s"] \
            if row["records_per_s"] else math.nan
    out = {"plan": asdict(plan), "results": rows}
    if plan.json:  # (NaN, e.g. CPU per record of a run that got nothing through, is null)
        print(json.dumps({**out, "results": [
            {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in row.items()}
            for row in rows]}))
        return out
    t = Table(title=f"Shoal's log (3 nodes, acks=all, idempotent) beside Redis Streams: medians "
                    f"of {plan.repeat}, {plan.procs} generator processes, {plan.seconds:.0f} s runs")
    for col in ("system", "record", "records/s", "MB/s", "server us/record", "gen cores",
                "e2e p50 ms", "e2e p99 ms", "Shoal ×"):
        t.add_column(col, justify="left" if col == "system" else "right")
    for row in rows:
        t.add_row(row["system"], f"{row['size']} B", f"{row['records_per_s']:,.0f}",
                  f"{row['mb_per_s']:.1f}", f"{row['server_us_per_record']:.0f}",
                  f"{row['generator_cpu_s'] / row['seconds']:.2f}",
                  f"{row['e2e_p50_ms']:.1f}", f"{row['e2e_p99_ms']:.1f}",
                  "" if row["system"] == "shoal" else f"{row['shoal_ratio']:.2f}")
    console.print(t)
    return out
