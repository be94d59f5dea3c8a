"""Fast checks for the gateway benchmark's pieces and the gateway's performance work: wrk
output parsing, the HAProxy configuration, the coarse timeouts, and the fast head parsers
agreeing with the full ones. The benchmark itself (`shoal_bench.gateway`) is run by
`make bench`, not here."""

from __future__ import annotations

import asyncio
import os

import pytest

from shoal.gateway.http1 import (
    HttpError,
    parse_request,
    parse_request_full,
    parse_response,
    parse_response_full,
)
from shoal.gateway.timeouts import TICK, Watchdog, Wheel
from shoal_bench.gateway import (
    GatewayBenchPlan,
    SystemResult,
    WrkResult,
    cpu_seconds,
    haproxy_config,
    parse_wrk,
)

WRK_OUTPUT = """Running 10s test @ http://127.0.0.1:8080/
  1 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     3.41ms    1.20ms  40.12ms   90.00%
    Req/Sec    18.90k     1.10k   20.01k    80.00%
  Latency Distribution
     50%  812.00us
     75%    3.60ms
     90%    4.20ms
     99%    1.02s
  188123 requests in 10.00s, 20.10MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 4
Requests/sec:  18812.30
Transfer/sec:      2.01MB
"""


def test_parse_wrk_units_and_errors():
    r = parse_wrk(WRK_OUTPUT)
    assert r.rps == 18812.30
    assert r.p50_ms == pytest.approx(0.812) and r.p99_ms == pytest.approx(1020.0)
    assert r.errors == 7 and r.requests == 188123
    with pytest.raises(ValueError):
        parse_wrk("Requests/sec: 5\n")  # no --latency distribution


def test_medians_and_haproxy_config():
    s = SystemResult("x", [WrkResult(1, 1, 9, 0), WrkResult(3, 2, 1, 0), WrkResult(2, 3, 5, 1)])
    assert (s.rps, s.p50, s.p99, s.errors) == (2, 2, 5, 1)
    cfg = haproxy_config(9000, ["127.0.0.1:1", "127.0.0.1:2"])
    for line in ("nbthread 1", "mode http", "http-reuse always", "option http-keep-alive",
                 "balance roundrobin", "bind 127.0.0.1:9000", "server b2 127.0.0.1:2"):
        assert line in cfg
    assert GatewayBenchPlan().connections == 64
    assert cpu_seconds(os.getpid()) > 0


def test_coarse_timeout_expires_late_by_at_most_a_tick_and_nests_with_cancel():
    async def main():
        wheel = Wheel()
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        with pytest.raises(TimeoutError):
            async with wheel.timeout(0.05):
                await asyncio.sleep(5)
        assert 0.05 <= loop.time() - t0 <= 0.05 + 3 * TICK + 0.1
        async with wheel.timeout(5):  # finishes in time: no error, nothing left pending
            await asyncio.sleep(0)
        assert not any(wheel.slots.values())

        async def victim():
            async with wheel.timeout(5):
                await asyncio.sleep(5)

        task = asyncio.create_task(victim())
        await asyncio.sleep(0.01)
        task.cancel()  # a cancellation from elsewhere stays a cancellation
        with pytest.raises(asyncio.CancelledError):
            await task
        wheel.close()

    asyncio.run(main())


def test_watchdog_rearms_lazily_and_tells_its_expiry_from_a_cancel():
    async def main():
        wheel = Wheel()
        task = asyncio.current_task()
        assert task is not None
        dog = Watchdog(wheel, task)
        for _ in range(5):  # re-armed before it fires: never fires
            dog.arm(0.06)
            await asyncio.sleep(0.03)
            dog.disarm()
        assert not dog.fired
        dog.arm(0.03)
        with pytest.raises(asyncio.CancelledError):
            await asyncio.sleep(5)
        assert dog.timed_out() and task.cancelling() == 0
        dog.close()
        wheel.close()

    asyncio.run(main())


REQUESTS = [
    b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /a?b=1 HTTP/1.1\r\nHost: x\r\nAccept: */*\r\nUser-Agent: wrk\r\n\r\n",
    b"POST /p HTTP/1.1\r\nHost: x\r\ncontent-length: 12\r\n\r\n",
    b"POST /p HTTP/1.1\r\nHost: x\r\nContent-Length:  7 \r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 1.2.3.4\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nTE: trailers\r\nTex: 1\r\n\r\n",
    b"GET / HTTP/1.0\r\n\r\n",
    b"GET / HTTP/1.1\r\nAccept: */*\r\n\r\n",  # no Host: 400
    b"GET / HTTP/1.1\r\nHost : x\r\n\r\n",  # whitespace before the colon: 400
    b"GET / HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
    b"PUT /p HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n\r\n",
]

RESPONSES = [
    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 14\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: keep-alive\r\nX-A: b\r\n\r\n",
    b"HTTP/1.1 200 OK\r\n\r\n",  # until close
    b"HTTP/1.1 204 No Content\r\n\r\n",
    b"HTTP/1.1 304 Not Modified\r\nETag: x\r\n\r\n",
    b"HTTP/1.1 200\r\ncontent-length: 0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nX-Bad : 1\r\n\r\n",
    b"HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\n",
    b"HTTP/1.1 OK\r\n\r\n",
]


def _outcome(fn, *args):
    try:
        return fn(*args)
    except HttpError as exc:
        return ("error", exc.status)


@pytest.mark.parametrize("head", REQUESTS)
def test_fast_request_parser_agrees_with_the_full_one(head):
    assert _outcome(parse_request, head, b"10.0.0.1", None) == \
        _outcome(parse_request_full, head, b"10.0.0.1", None)


@pytest.mark.parametrize("head", RESPONSES)
@pytest.mark.parametrize("method", [b"GET", b"HEAD"])
def test_fast_response_parser_agrees_with_the_full_one(head, method):
    assert _outcome(parse_response, head, method) == _outcome(parse_response_full, head, method)
