"""`shoal bench --log`'s harness on a tiny scale: produce throughput counted from
acknowledgements inside the window with the server's CPU, and end-to-end latency through a
consumer group, for Redis Streams (Debian's redis-server) and Shoal's Kafka port (the figures
themselves come from `shoal bench --log`, docs/kafka.md)."""

from __future__ import annotations

import json
import math

import pytest

from shoal.local.cluster import LocalProcessCluster
from shoal_bench.debian import MissingTool
from shoal_bench.streams import (
    Latency,
    RedisServers,
    StreamsPlan,
    Target,
    Throughput,
    _create_topic,
    _report,
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


def test_throughput_units_and_the_json_report(capsys):
    r = Throughput("x", 1000, 5000, 2.0, 0.5, 0.1)
    assert r.records_per_s == 2500 and r.mb_per_s == 2.5 and r.server_us_per_record == 100
    assert math.isnan(Throughput("x", 1, 0, 1.0, 0.0, 0.0).server_us_per_record)
    plan = StreamsPlan([100], 2.0, 3, 2, json=True)
    thr = {("shoal", 100): [Throughput("shoal", 100, n, 2.0, 1.0, 0.2) for n in (30, 10, 20)],
           ("redis-always", 100): [Throughput("redis-always", 100, n, 2.0, 0.0, 0.2)
                                   for n in (0, 0, 5)]}
    lat = {k: [Latency(k[0], 100, 10, p, 2 * p) for p in (1.0, 3.0, 2.0)] for k in thr}
    _report(plan, thr, lat)
    out = json.loads(capsys.readouterr().out, parse_constant=lambda c: pytest.fail(c))
    rows = {row["system"]: row for row in out["results"]}
    assert rows["shoal"]["records"] == 20 and rows["shoal"]["e2e_p50_ms"] == 2.0  # medians
    assert rows["shoal"]["shoal_ratio"] == 1.0 and rows["redis-always"]["e2e_p99_ms"] == 4.0
    # a median run that got nothing through: no CPU per record, no ratio, and still JSON
    assert rows["redis-always"]["records"] == 0
    assert rows["redis-always"]["server_us_per_record"] is None
    assert rows["redis-always"]["shoal_ratio"] is None
