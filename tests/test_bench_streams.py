"""`shoal bench --log`'s harness on a tiny scale: produce throughput counted from
acknowledgements inside the window with the server's CPU, and end-to-end latency through a
consumer group, for Redis Streams (Debian's redis-server) and Shoal's Kafka port (the figures
themselves come from `shoal bench --log`, docs/kafka.md)."""

from __future__ import annotations

import math

import pytest

from shoal.local.cluster import LocalProcessCluster
from shoal_bench.debian import MissingTool
from shoal_bench.streams import (
    RedisServers,
    Target,
    Throughput,
    _create_topic,
    latency,
    throughput,
)


def test_redis_streams_throughput_and_latency_are_measured(tmp_path):
    try:
        servers = RedisServers(tmp_path)
    except MissingTool as exc:
        pytest.skip(str(exc))
    servers.start()
    try:
        t = Target("redis-always", f"127.0.0.1:{servers.ports['always']}")
        r = throughput(t, 100, 1.0, 1, [servers.procs["always"].pid], warmup=0.2)
        assert r.records > 0 and r.records % 100 == 0  # whole pipelines, counted when answered
        assert r.server_cpu_s > 0 and r.server_us_per_record > 0
        servers.reset("always")
        e2e = latency(t, 100, 1.0, 200)
        assert e2e.records == 200 and 0 < e2e.p50_ms <= e2e.p99_ms
    finally:
        servers.stop()
    assert all(p.poll() is not None for p in servers.procs.values())


def test_shoal_produce_throughput_and_latency_through_confluent_kafka(tmp_path):
    with LocalProcessCluster(3, root=tmp_path / "shoal") as cluster:
        cluster.start()
        bootstrap = ",".join(cluster.kafka_bootstrap)
        _create_topic(bootstrap, 2)
        t = Target("shoal", bootstrap)
        pids = [p for i in cluster.ids if (p := cluster.pid(i)) is not None]
        r = throughput(t, 1024, 1.0, 1, pids, warmup=0.5)
        assert r.records > 0 and r.mb_per_s == pytest.approx(r.records * 1024 / 1e6)
        assert r.server_cpu_s > 0
        e2e = latency(t, 1024, 1.0, 100)
        assert e2e.records == 100 and 0 < e2e.p50_ms <= e2e.p99_ms


def test_throughput_units():
    r = Throughput("x", 1000, 5000, 2.0, 0.5, 0.1)
    assert r.records_per_s == 2500 and r.mb_per_s == 2.5 and r.server_us_per_record == 100
    assert math.isnan(Throughput("x", 1, 0, 1.0, 0.0, 0.0).server_us_per_record)
