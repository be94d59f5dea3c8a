"""The gateway with real processes: backends that register themselves in a real cluster,
traffic through the proxy with a real HTTP client, and a backend killed mid-run."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import aiohttp

from cluster import LocalCluster, free_ports
from shoal.caller import BudgetConfig, CallPolicy
from shoal.gateway import Gateway, GatewayConfig
from shoal.registry import HealthConfig, OutlierConfig

SERVICE = "web"
BACKEND = Path(__file__).with_name("http_backend.py")  # a small HTTP backend


def run(coro, timeout: float = 120):
    return asyncio.run(asyncio.wait_for(coro, timeout))


def start_backend(ident: str, port: int, endpoints: list[str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(BACKEND), "--port", str(port), "--id", ident,
         "--register", SERVICE, "--endpoints", ",".join(endpoints), "--ttl", "3"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def until(cond, timeout: float, what: str) -> None:
    end = asyncio.get_running_loop().time() + timeout
    while not cond():
        if asyncio.get_running_loop().time() > end:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def config(endpoints: list[str], **kw) -> GatewayConfig:
    base = dict(service=SERVICE, endpoints=endpoints, listen="127.0.0.1:0", admin="127.0.0.1:0",
                health=HealthConfig("http", interval_s=1.0, timeout_s=1.0, unhealthy_threshold=3),
                outlier=OutlierConfig(consecutive_failures=2, base_ejection_s=60,
                                      max_ejection_percent=50))
    base.update(kw)
    return GatewayConfig(**base)


# Four clients may all be retrying at once when a backend dies: let the budget cover them
# (Envoy's default minimum of 3 would refuse the fourth, by design).
FOUR_CLIENTS = BudgetConfig(min_retry_concurrency=4)


def test_gateway_routes_streams_and_survives_a_killed_backend(tmp_path):
    async def main():
        procs: dict[str, subprocess.Popen] = {}
        async with LocalCluster(tmp_path) as c:
            await c.leader()
            for ident, port in zip(("b0", "b1", "b2"), free_ports(3), strict=True):
                procs[ident] = start_backend(ident, port, c.endpoints)
            try:
                async with Gateway(config(c.endpoints, budget=FOUR_CLIENTS)) as gw, aiohttp.ClientSession() as http:
                    await until(lambda: len(gw.caller.routable()) == 3, 60, "3 backends")
                    url = f"http://127.0.0.1:{gw.port}"
                    seen = set()
                    for _ in range(12):
                        async with http.get(url + "/") as r:
                            assert r.status == 200
                            seen.add(r.headers["X-Backend"])
                            assert r.headers["X-Seen-For"] == "127.0.0.1"
                    assert seen == {"b0", "b1", "b2"}  # round robin over all three

                    # streaming both ways, bigger than any buffer the gateway keeps
                    async with http.get(url + "/big?n=5000000") as r:
                        assert r.status == 200 and len(await r.read()) == 5_000_000
                    payload = os.urandom(1_500_000)
                    async with http.post(url + "/echo", data=payload) as r:
                        assert r.status == 200 and await r.read() == payload

                    # kill b0 while four clients keep sending idempotent requests
                    statuses: list[int] = []
                    errors: list[str] = []
                    stop = asyncio.Event()

                    async def client() -> None:
                        while not stop.is_set():
                            async with http.get(url + "/") as r:
                                body = await r.read()
                                statuses.append(r.status)
                                if r.status != 200:
                                    errors.append(body.decode())

                    workers = [asyncio.create_task(client()) for _ in range(4)]
                    await until(lambda: len(statuses) >= 40, 30, "traffic before the kill")
                    procs["b0"].send_signal(signal.SIGKILL)
                    killed_at = len(statuses)
                    await until(lambda: len(statuses) >= killed_at + 200, 60, "traffic after")
                    stop.set()
                    await asyncio.gather(*workers)
                    assert set(statuses) == {200}, (errors, gw.caller.budget.refused)
                    # Ejected, or already forgotten by the registry when its lease ran out
                    # (a loaded machine gets there first): not routable either way, and the
                    # ejection is counted below.
                    assert "b0" not in {b.id for b in gw.caller.routable()}
                    async with http.get(f"http://127.0.0.1:{gw.admin_port}/metrics") as r:
                        metrics = await r.text()
                    assert "shoal_gateway_ejections_total 1.0" in metrics
                    assert 'shoal_gateway_responses_total{service="web",status="200"}' in metrics
                    # and its lease runs out: the registry forgets it
                    await until(lambda: "b0" not in gw.caller.backends, 30, "b0 to expire")
            finally:
                for p in procs.values():
                    p.kill()
                    p.wait()

    run(main())


def test_gateway_errors_limits_and_tcp_mode(tmp_path):
    async def main():
        async with LocalCluster(tmp_path) as c:
            await c.leader()
            port = free_ports(1)[0]
            proc = start_backend("solo", port, c.endpoints)
            try:
                slow = config(c.endpoints, policy=CallPolicy(deadline_s=0.5, try_timeout_s=0.3),
                              health=None)
                empty = config(c.endpoints, service="nobody", admin=None)
                tcp = config(c.endpoints, mode="tcp", admin=None)
                async with Gateway(slow) as gw, Gateway(empty) as none, Gateway(tcp) as tgw, \
                        aiohttp.ClientSession() as http:
                    await until(lambda: len(gw.caller.routable()) == 1, 60, "the backend")
                    await until(lambda: len(tgw.caller.routable()) == 1, 60, "the backend")
                    async with http.get(f"http://127.0.0.1:{none.port}/") as r:
                        assert r.status == 503 and "no available backend" in await r.text()
                    async with http.get(f"http://127.0.0.1:{gw.port}/slow?s=2") as r:
                        assert r.status == 504 and "did not answer" in await r.text()
                    async with http.get(f"http://127.0.0.1:{gw.port}/",
                                        headers={"X-Huge": "a" * 20000}) as r:
                        assert r.status == 431
                    async with http.get(f"http://127.0.0.1:{tgw.port}/") as r:
                        assert r.status == 200 and await r.text() == "hello from solo\n"
                    # a raw pipelined keep-alive exchange: two requests, two answers, one socket
                    reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
                    writer.write(b"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n"
                                 b"Connection: close\r\n\r\n")
                    data = await reader.read()
                    writer.close()
                    assert data.count(b"hello from solo") == 2
                    assert data.count(b"HTTP/1.1 200") == 2
            finally:
                proc.kill()
                proc.wait()

    run(main())
