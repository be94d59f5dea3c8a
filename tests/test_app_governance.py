"""Governance of component calls, with real sockets and a real store in one event loop: the
deadline across three hops, cancellation reaching the last callee, a circuit breaker opening
and recovering, and Dubbo's cluster strategies."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from app_chain import A, App, C, CImpl
from cluster import LocalCluster
from shoal.app.config import ComponentConfig, DeployConfig, GroupConfig
from shoal.app.deployed import Deployed
from shoal.app.interface import interface_spec
from shoal.app.process import GroupProcess
from shoal.app.remote import Remote, StrategyRefused
from shoal.app.runtime import handlers, make_stub
from shoal.caller import BreakerConfig, BreakerState, NoBackend
from shoal.client import Client
from shoal.registry import Instance
from shoal.rpc import DeadlineExceeded, Pool, RpcServer
from shoal.rpc.deadline import within

CHAIN = DeployConfig(groups={g: GroupConfig((g.upper(),), 1) for g in ("a", "b", "c")})


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 40))


async def until(cond, what: str, timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while not await cond():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def chain(root: Path):
    """A store, and A, B, C each in a process group of its own (in this loop)."""
    cluster = LocalCluster(root, n=1)
    await cluster.__aenter__()
    await cluster.leader()
    client = Client(cluster.endpoints)
    procs = [GroupProcess(App, CHAIN, g, 0, client, root, exporter="none") for g in "abc"]
    for p in procs:
        await p.start()
    return cluster, client, procs


async def close(cluster, client, procs) -> None:
    for p in procs:
        await p.stop()
    await client.close()
    await cluster.__aexit__(None, None, None)


def test_the_deadline_travels_across_three_hops_and_stops_the_last(tmp_path):
    async def main():
        cluster, client, procs = await chain(tmp_path)
        try:
            async with Deployed(App, client, CHAIN) as d:
                with within(0.8):
                    a, b, c = await d.get(A).probe(0)
                assert 0.8 >= a > b > c > 0, (a, b, c)
                assert a - b >= 0.04 and b - c >= 0.04  # each hop spent 50 ms of it
                t0 = time.monotonic()
                with pytest.raises(DeadlineExceeded), within(0.5):
                    await d.get(A).probe(5000)
                assert time.monotonic() - t0 < 1.5  # C's 5 s sleep was cut at the deadline
        finally:
            await close(cluster, client, procs)

    run(main())


def test_cancelling_a_call_reaches_the_third_hop(tmp_path):
    async def main():
        cluster, client, procs = await chain(tmp_path)
        try:
            async with Deployed(App, client, CHAIN) as d:
                a = d.get(A)
                call = asyncio.ensure_future(a.hold("k1"))

                async def has(key: bytes) -> bool:
                    return await client.get_value(key) is not None

                await until(lambda: has(b"/chain/started/k1"), "C to start holding")
                call.cancel()
                await until(lambda: has(b"/chain/cancelled/k1"), "the cancel to reach C")
                assert all(p.rpc.running() == 0 for p in procs)
        finally:
            await close(cluster, client, procs)

    run(main())


async def _c_server(port: int = 0) -> tuple[RpcServer, CImpl]:
    impl = CImpl()
    server = RpcServer(handlers(interface_spec(C), impl, None))
    await server.start("127.0.0.1", port)
    return server, impl


def test_a_breaker_opens_on_failures_and_recovers_with_the_backend():
    async def main():
        server, _ = await _c_server()
        host, port = server.address.split(":")
        remote = Remote("C", ComponentConfig(retries=0), Pool(),
                        breaker=BreakerConfig(failure_threshold=3, open_s=0.5))
        remote.update([Instance("chain.C", "c-0", server.address)])
        c = make_stub(interface_spec(C), remote, "failover", None)
        assert await c.ping() == 1
        await server.stop(grace_s=0)
        remote.pool.drop(server.address)
        breaker = remote.caller.breakers["c-0"]
        for _ in range(3):
            with pytest.raises(Exception, match="cannot connect|failed"):
                await c.ping()
        assert breaker.state(time.monotonic()) is BreakerState.OPEN
        with pytest.raises(NoBackend, match="no available backend"):
            await c.ping()  # refused at once, nothing sent
        server, impl = await _c_server(int(port))

        async def served() -> bool:
            try:
                return await c.ping() >= 1
            except NoBackend:
                return False

        await until(served, "the breaker to let a probe through", timeout=5)
        assert breaker.state(time.monotonic()) is BreakerState.CLOSED
        assert impl.pings >= 1
        await remote.pool.close()
        await server.stop()

    run(main())


def test_cluster_strategies_failsafe_forking_broadcast_failfast():
    async def main():
        (s1, i1), (s2, i2) = await _c_server(), await _c_server()
        remote = Remote("C", ComponentConfig(forks=2), Pool())
        remote.update([Instance("chain.C", "c-1", s1.address),
                       Instance("chain.C", "c-2", s2.address)])
        spec = interface_spec(C)
        broadcast = make_stub(spec, remote, "broadcast", None)
        await broadcast.bump()  # not idempotent, and still sent to each: that is broadcast
        assert (i1.pings, i2.pings) == (1, 1)
        forking = make_stub(spec, remote, "forking", None)
        assert await forking.ping() >= 1
        assert i1.pings + i2.pings == 4  # both replicas asked, the first answer won
        with pytest.raises(StrategyRefused, match="C.bump: forking .* only @idempotent"):
            await forking.bump()
        await s1.stop(grace_s=0)
        await s2.stop(grace_s=0)
        remote.pool.drop(s1.address)
        remote.pool.drop(s2.address)
        assert await make_stub(spec, remote, "failsafe", None).ping() is None
        with pytest.raises(Exception, match="cannot connect"):
            await make_stub(spec, remote, "failfast", None).ping()
        await remote.pool.close()

    run(main())


def test_failback_sends_a_call_that_never_ran_again_later():
    async def main():
        server, _ = await _c_server()
        port = int(server.address.rsplit(":", 1)[1])
        await server.stop(grace_s=0)
        remote = Remote("C", ComponentConfig(retries=2), Pool())
        remote.update([Instance("chain.C", "c-0", server.address)])
        failback = make_stub(interface_spec(C), remote, "failback", None)
        assert await failback.bump() is None  # not idempotent, but it never reached anyone
        assert len(remote._failback) == 1
        server, impl = await _c_server(port)

        async def resent() -> bool:
            return impl.pings == 1

        await until(resent, "the failed call to be sent again", timeout=8)
        await remote.close()
        await remote.pool.close()
        await server.stop()

    run(main())
