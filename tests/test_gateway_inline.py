"""The gateway's inline path (protocol callbacks, no task) with fake transports, and the
caller's resumable call it relies on (`Caller.begin`, `failed`, `call(resume=)`)."""

from __future__ import annotations

import asyncio
from typing import Any

from shoal.balance import Backend
from shoal.caller import (
    BreakerConfig,
    Caller,
    CallPolicy,
    ConnectFailed,
    Resume,
    SendFailed,
    UpstreamFailed,
)
from shoal.gateway.calls import GatewayCaller
from shoal.gateway.pool import Conn, Pools
from shoal.gateway.proxy import ClientConn, HttpProxy
from shoal.gateway.stats import GatewayStats

GET = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
POST = b"POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi"
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


class FakeTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.out: list[bytes] = []
        self.closing = False

    def write(self, data: Any) -> None:
        self.out.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("10.0.0.9", 4000) if name == "peername" else default

    def get_write_buffer_size(self) -> int:
        return 0

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def two_backends() -> list[Backend]:
    return [Backend("b1", "127.0.0.1:1001"), Backend("b2", "127.0.0.1:1002")]


def gateway(loop: asyncio.AbstractEventLoop, caller: Caller | None = None
            ) -> tuple[HttpProxy, dict[str, Conn], ClientConn, FakeTransport]:
    """A proxy whose two backends each have one idle pooled connection."""
    caller = caller or GatewayCaller("round-robin")
    caller.update(two_backends())
    pools = Pools()
    conns = {}
    for b in two_backends():
        conn = Conn(loop)
        conn.connection_made(FakeTransport())
        pools.get(b.address)._idle.append(conn)
        conns[b.id] = conn
    proxy = HttpProxy(caller, pools, GatewayStats())  # type: ignore[arg-type]
    client = proxy.protocol()
    transport = FakeTransport()
    client.connection_made(transport)
    return proxy, conns, client, transport


def sent(conn: Conn) -> list[bytes]:
    return conn.transport.out  # type: ignore[attr-defined, no-any-return]


def test_a_plain_request_is_served_inline_and_the_call_finished():
    async def main() -> None:
        proxy, conns, client, out = gateway(asyncio.get_running_loop())
        client.data_received(GET + GET)  # pipelined: the second waits for the first answer
        assert client.task is None and client.conn is conns["b1"]
        assert sent(conns["b1"]) == [GET[:-2] + b"X-Forwarded-For: 10.0.0.9\r\n\r\n"]
        conns["b1"].data_received(OK)
        assert out.out == [OK]
        assert client.conn is conns["b2"]  # the pipelined one, round robin
        conns["b2"].data_received(OK)
        assert out.out == [OK, OK] and client.conn is None and client.task is None
        assert proxy.caller.budget.active == 0 and proxy.caller.inflight("b1") == 0
        assert proxy.stats.responses == {200: 2}
        assert proxy.pools.get("127.0.0.1:1001").idle == 1  # back in its pool
    asyncio.run(main())


def test_an_inline_attempt_that_fails_is_retried_on_the_other_backend_in_a_task():
    async def main() -> None:
        proxy, conns, client, out = gateway(asyncio.get_running_loop())
        client.data_received(GET)
        conns["b1"].data_received(b"HTTP/1.1 200 OK\r\nContent")
        conns["b1"].connection_lost(None)  # closed mid-head: a failure, not a stale conn
        assert client.task is not None and client.conn is None
        await asyncio.sleep(0)  # the task picks b2 and sends; b2 answers
        assert sent(conns["b2"])
        conns["b2"].data_received(OK)
        await client.task
        assert out.out == [OK]
        assert proxy.caller.retries == 1 and proxy.caller.budget.active == 0
        assert proxy.caller.outlier._hosts["b1"].failures == 1  # the failure was recorded
    asyncio.run(main())


def test_a_failed_inline_post_is_not_sent_again():
    async def main() -> None:
        proxy, conns, client, out = gateway(asyncio.get_running_loop())
        client.data_received(POST)
        assert sent(conns["b1"]) == [POST[:-4] + b"X-Forwarded-For: 10.0.0.9\r\n\r\nhi"]
        conns["b1"].data_received(b"HTTP/1.1 banana\r\n\r\n")  # it may have run the POST
        assert client.task is not None
        await client.task
        assert out.out[0].startswith(b"HTTP/1.1 502 ") and b"(1 attempt)" in out.out[0]
        assert not sent(conns["b2"]) and proxy.caller.retries == 0
    asyncio.run(main())


def test_resume_continues_the_same_call_under_its_policy():
    async def attempt(b: Backend) -> str:
        return b.id

    async def main() -> None:
        caller = Caller("round-robin", policy=CallPolicy(max_attempts=2))
        caller.update(two_backends())
        backend, start = caller.begin(None, None)
        caller.failed(backend.id, start)
        ex = await caller.call(attempt, idempotent=True,
                               resume=Resume(start, backend.id, SendFailed("x")))
        assert ex.value != backend.id and ex.attempts == 2 and caller.retries == 1
        caller.finish(ex, True)
        # Not idempotent: a send failure ends the call; a connect failure is retried.
        backend, start = caller.begin(None, None)
        caller.failed(backend.id, start)
        try:
            await caller.call(attempt, resume=Resume(start, backend.id, SendFailed("x")))
            raise AssertionError("a non-idempotent call was retried")
        except UpstreamFailed as exc:
            assert "(1 attempt)" in str(exc)
        backend, start = caller.begin(None, None)
        caller.failed(backend.id, start)
        ex = await caller.call(attempt, resume=Resume(start, backend.id, ConnectFailed("x")))
        caller.finish(ex, True)
        assert caller.budget.active == 0 and caller.budget.retries == 0
    asyncio.run(main())


def test_abandon_gives_back_a_half_open_probe():
    now = [0.0]
    caller = Caller("round-robin", breaker=BreakerConfig(failure_threshold=1, open_s=5),
                    clock=lambda: now[0])
    caller.update(two_backends()[:1])
    caller.breakers["b1"].on_failure(0.0)
    now[0] = 5.0  # half-open: one probe at a time
    backend, _ = caller.begin(None, None)
    assert not caller.breakers["b1"].allow(5.0)  # begin took the probe
    caller.abandon(backend.id)
    assert caller.breakers["b1"].allow(5.0)  # and abandon gave it back
    assert caller.budget.active == 0 and caller.inflight("b1") == 0


def test_long_bursts_are_served_in_a_loop_not_by_recursion():
    async def main() -> None:
        # No backend: every one of many pipelined requests is answered at once.
        proxy = HttpProxy(GatewayCaller("round-robin"), Pools(), GatewayStats())
        client = proxy.protocol()
        out = FakeTransport()
        client.connection_made(out)
        client.data_received(GET * 1500)
        assert len(out.out) == 1500 and all(o.startswith(b"HTTP/1.1 503 ") for o in out.out)
        assert not out.closing and client.buf == b""
        # Many interim answers before the real one are all dropped.
        _, conns, client, out = gateway(asyncio.get_running_loop())
        client.data_received(GET)
        conns["b1"].data_received(b"HTTP/1.1 103 Early Hints\r\n\r\n" * 1500 + OK)
        assert out.out == [OK]
    asyncio.run(main())


def test_a_client_that_leaves_mid_request_ends_its_call_without_a_verdict():
    async def main() -> None:
        proxy, conns, client, _ = gateway(asyncio.get_running_loop())
        client.data_received(GET)
        client.connection_lost(ConnectionResetError("gone"))
        assert client.conn is None and conns["b1"].transport.is_closing()
        assert proxy.caller.budget.active == 0 and proxy.caller.inflight("b1") == 0
        assert proxy.caller.outlier._hosts["b1"].failures == 0
        assert proxy.stats.connections == 0
    asyncio.run(main())
