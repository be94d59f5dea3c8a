"""Outlier ejection (Envoy semantics) and health-check thresholds: pure, time as an argument."""

from __future__ import annotations

import asyncio

import pytest

from shoal.registry import (
    HealthConfig,
    HealthState,
    OutlierConfig,
    OutlierDetector,
    check_http,
    check_tcp,
)


def detector(n: int = 10, **kw) -> OutlierDetector:
    d = OutlierDetector(OutlierConfig(**kw))
    d.update([f"b{i}" for i in range(n)])
    return d


def fail(d: OutlierDetector, bid: str, times: int, now: float) -> bool:
    return any([d.on_result(bid, False, now) for _ in range(times)])


def test_consecutive_failures_eject_and_a_success_resets_the_count():
    d = detector(consecutive_failures=3)
    fail(d, "b0", 2, 0)
    d.on_result("b0", True, 0)
    assert not fail(d, "b0", 2, 0)
    assert d.on_result("b0", False, 0)
    assert d.ejected() == {"b0"}


def test_ejection_time_grows_with_repeated_ejection_and_decays_when_healthy():
    d = detector(consecutive_failures=1, base_ejection_s=40, max_ejection_s=100,
                 interval_s=10)
    assert fail(d, "b0", 1, 0)
    assert not d.sweep(39.9) and d.sweep(40)  # first ejection: 40 s
    assert fail(d, "b0", 1, 41)
    assert not d.sweep(120.9) and d.sweep(121)  # second, soon after: 80 s
    assert fail(d, "b0", 1, 122)
    assert d.ejection_multiplier("b0") == 3
    assert not d.sweep(221.9) and d.sweep(222)  # third: 120 s, capped at 100
    # 50 s healthy (5 intervals) forgives all three ejections: back to the base time
    assert fail(d, "b0", 1, 272)
    assert d.ejection_multiplier("b0") == 1
    assert not d.sweep(311.9) and d.sweep(312)


def test_max_ejection_percent_caps_ejections_but_one_is_always_allowed():
    d = detector(n=10, consecutive_failures=1, max_ejection_percent=20)
    for i in range(5):
        fail(d, f"b{i}", 1, 0)
    assert d.ejected() == {"b0", "b1"}
    small = detector(n=3, consecutive_failures=1, max_ejection_percent=10)
    for i in range(3):
        fail(small, f"b{i}", 1, 0)
    assert small.ejected() == {"b0"}  # 10% of 3 rounds to 0, but one may go
    alone = detector(n=1, consecutive_failures=1)
    assert not fail(alone, "b0", 5, 0)  # never the last backend


def test_membership_change_keeps_survivors_and_drops_the_rest():
    d = detector(n=3, consecutive_failures=1, max_ejection_percent=50)
    fail(d, "b0", 1, 0)
    d.update(["b0", "b2", "b9"])
    assert d.ejected() == {"b0"}
    d.update(["b2"])
    assert d.ejected() == frozenset()


def test_outlier_config_validation():
    with pytest.raises(ValueError, match="max_ejection_percent"):
        OutlierConfig(max_ejection_percent=120)


def test_health_thresholds_debounce_both_ways():
    s = HealthState(HealthConfig(healthy_threshold=2, unhealthy_threshold=3))
    assert s.observe(True) and s.healthy  # the first result decides
    assert not s.observe(False) and not s.observe(False)
    assert s.observe(False) and s.healthy is False  # third failure in a row
    assert not s.observe(True)
    assert not s.observe(False)  # the run of passes broke
    assert not s.observe(True)
    assert s.observe(True) and s.healthy


def test_health_config_validation():
    with pytest.raises(ValueError, match="kind"):
        HealthConfig(kind="icmp")


def test_tcp_and_http_checks_against_a_real_socket():
    async def main():
        async def serve(reader, writer):
            line = await reader.readline()
            status = b"200 OK" if b"/health" in line else b"404 Not Found"
            writer.write(b"HTTP/1.1 " + status + b"\r\nContent-Length: 0\r\n\r\n")
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        addr = f"127.0.0.1:{server.sockets[0].getsockname()[1]}"
        assert await check_tcp(addr, 2.0)
        assert await check_http(addr, "/health", 200, 2.0)
        assert not await check_http(addr, "/other", 200, 2.0)
        server.close()
        await server.wait_closed()
        assert not await check_tcp(addr, 2.0)
        assert not await check_http(addr, "/health", 200, 2.0)

    asyncio.run(asyncio.wait_for(main(), 20))
