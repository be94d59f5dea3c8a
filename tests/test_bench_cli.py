"""`shoal bench`'s load generator in several processes and its CPU accounting: the client
split, /proc reading, and one tiny real run of the command beside etcd with --json (the
figures themselves come from `make bench`, not from here)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest

from shoal_bench.check_perf import parse
from shoal_bench.debian import MissingTool
from shoal_bench.etcd import ensure_etcd
from shoal_bench.loadgen import LoadResult
from shoal_bench.procs import cpu_seconds, split_clients


def test_split_clients_is_even_and_never_empty():
    assert split_clients(64, 2) == [32, 32]
    assert split_clients(5, 3) == [2, 2, 1]
    assert split_clients(1, 4) == [1]
    assert sum(split_clients(257, 7)) == 257


def test_cpu_seconds_reads_proc_and_is_nan_for_a_gone_process():
    before = cpu_seconds([os.getpid()])
    sum(i * i for i in range(2_000_000))  # some CPU of our own to see
    assert cpu_seconds([os.getpid()]) > before
    p = subprocess.Popen([sys.executable, "-c", ""])
    p.wait()
    assert math.isnan(cpu_seconds([os.getpid(), p.pid]))


def test_percentiles_are_over_every_operation_and_json_has_no_nan():
    r = LoadResult.of("s", "put", 4, [i / 1000 for i in range(1, 101)], 0, 2.0,
                      server_cpu_s=0.05, generator_cpu_s=0.5, procs=2)
    assert (r.ops, r.throughput, r.p50_ms, r.p99_ms) == (100, 50.0, 51.0, 100.0)
    assert r.server_us_per_op == pytest.approx(500.0) and r.generator_cores == 0.25
    unmeasured = LoadResult.of("s", "put", 4, [0.001], 0, 1.0).as_dict()
    assert unmeasured["server_cpu_s"] is None and unmeasured["server_us_per_op"] is None


def test_bench_command_beside_etcd_prints_json_with_cpu_per_op():
    try:
        ensure_etcd()
    except MissingTool as exc:
        pytest.skip(str(exc))
    p = subprocess.run([sys.executable, "-m", "shoal", "bench", "--compare-etcd", "--mix", "put",
                        "--clients", "3", "--time", "0.5s", "--repeat", "1", "--procs", "2", "--json"],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)  # progress went to stderr
    rows = {r["system"]: r for r in out["medians"]}
    assert set(rows) == {"shoal", "etcd"}
    for r in rows.values():
        assert r["procs"] == 2 and r["clients"] == 3 and r["errors"] == 0
        assert r["ops"] > 0 and r["p50_ms"] <= r["p99_ms"]
        # the servers do work for every operation, and /proc saw it
        assert r["server_cpu_s"] > 0 and r["server_us_per_op"] > 0
        assert r["generator_cpu_s"] > 0


def test_check_perf_output_is_read_whether_it_passes_or_fails():
    failed = parse("shoal", " 60 / 60  100.00% 1m0s\nPASS: Throughput is 149 writes/s\n"
                   "Slowest request took too long: 0.544835s\nPASS: Stddev is 0.056647s\nFAIL\n")
    assert (failed.passed, failed.writes_per_s, failed.slowest_s, failed.stddev_s) == (
        False, 149, 0.544835, 0.056647)
    assert failed.lines[-1] == "FAIL" and len(failed.lines) == 4
    passed = parse("etcd", "PASS: Throughput is 150 writes/s\nPASS: Slowest request took "
                   "0.073629s\nPASS: Stddev is 0.004085s\nPASS\n")
    assert (passed.passed, passed.slowest_s) == (True, 0.073629)
    # the servers' CPU over the tool's 60 s, per write it reports
    passed.server_cpu_s = 4.5
    assert passed.server_us_per_write == 4.5 / (150 * 60) * 1e6
    assert failed.server_us_per_write is None  # CPU not read
