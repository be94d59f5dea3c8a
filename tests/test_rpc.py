"""Shoal's RPC: the sans-I/O codec (frames, bounds, the two kinds of error) and the connection
and server over real sockets (pipelining, cancellation, deadlines), on both event loops."""

from __future__ import annotations

import asyncio
import time

import pytest

from shoal.rpc import (
    DeadlineExceeded,
    NotConnected,
    RemoteError,
    RequestTooLarge,
    RpcServer,
    UnknownMethod,
    connect,
)
from shoal.rpc import protocol as p
from shoal.rpc.deadline import current as current_deadline

# ---------------------------------------------------------------------------- codec


def test_frames_round_trip_whole_split_and_coalesced():
    a, b = p.Codec(), p.Codec()
    wire = (a.call(7, "Inv.stock", 250, {"traceparent": "00-x"}, b"\x01\x02")
            + a.reply(8, b"ok", {"k": "v"}) + a.error(9, p.APPLICATION, "ValueError: no")
            + a.cancel(10))
    expected = [p.Call(7, "Inv.stock", 250, {"traceparent": "00-x"}, b"\x01\x02"),
                p.Reply(8, {"k": "v"}, b"ok"), p.Error(9, p.APPLICATION, "ValueError: no"),
                p.Cancel(10)]
    assert b.receive_data(wire) == expected
    got = []
    for i in range(len(wire)):  # byte by byte: partial headers and bodies are buffered
        got += b.receive_data(wire[i:i + 1])
    assert got == expected


def test_an_oversized_call_is_refused_unread_and_the_connection_lives_on():
    small = p.Codec(max_frame=64)
    big = p.Codec().call(1, "X.m", 0, {}, b"x" * 1000)
    nxt = p.Codec().call(2, "X.m", 0, {}, b"y")
    events = small.receive_data(big[:500])
    assert events == [p.Refused(1, len(big) - p.HEADER_SIZE)]
    assert len(small._buf) == 0  # nothing of the body was kept
    assert small.receive_data(big[500:] + nxt) == [p.Call(2, "X.m", 0, {}, b"y")]


def test_a_bad_peer_is_a_remote_error_and_our_misuse_a_local_one():
    with pytest.raises(p.RemoteProtocolError, match="REPLY frame of .* exceeds"):
        p.Codec(max_frame=16).receive_data(p.Codec().reply(1, b"z" * 100))
    with pytest.raises(p.RemoteProtocolError, match="unknown frame kind 9"):
        p.Codec().receive_data(p.HEADER.pack(0, 9, 1))
    with pytest.raises(p.RemoteProtocolError, match="CALL 3: malformed body"):
        p.Codec().receive_data(p.HEADER.pack(3, p.Kind.CALL, 3) + b"\x93\x01\x02")
    with pytest.raises(p.RemoteProtocolError, match="metadata entries"):
        body = p._encode(("m", 0, {str(i): "" for i in range(p.MAX_METADATA + 1)}, b""))
        p.Codec().receive_data(p.HEADER.pack(len(body), p.Kind.CALL, 1) + body)
    with pytest.raises(p.FrameTooLarge):
        p.Codec(max_frame=8).call(1, "X.m", 0, {}, b"x" * 100)
    with pytest.raises(p.LocalProtocolError, match="unknown error code"):
        p.Codec().error(1, "oops", "")
    with pytest.raises(p.LocalProtocolError, match="metadata entries"):
        p.Codec().call(1, "X.m", 0, {str(i): "" for i in range(p.MAX_METADATA + 1)}, b"")


# ---------------------------------------------------------------------------- over sockets


async def _serve(handlers, **kw):
    server = RpcServer(handlers, **kw)
    await server.start()
    return server, await connect(server.address)


def test_calls_are_pipelined_on_one_connection_and_answered_out_of_order(run):
    async def main():
        release = asyncio.Event()
        order: list[bytes] = []

        async def slow(payload, md):
            await release.wait()
            order.append(payload)
            return payload

        async def fast(payload, md):
            order.append(payload)
            return payload + md.get("k", "").encode()

        server, conn = await _serve({"S.slow": slow, "S.fast": fast})
        first = asyncio.ensure_future(conn.call("S.slow", b"1"))
        await asyncio.sleep(0)
        assert (await conn.call("S.fast", b"2", metadata={"k": "!"})).payload == b"2!"
        release.set()
        assert (await first).payload == b"1"
        assert order == [b"2", b"1"]
        assert len(server.connections) == 1
        with pytest.raises(UnknownMethod, match="S.nope is not served here"):
            await conn.call("S.nope", b"")
        conn.close()
        await server.stop()

    run(main())


def test_a_method_error_reaches_the_caller_with_its_type(run):
    async def main():
        async def boom(payload, md):
            raise KeyError("sku-9")

        server, conn = await _serve({"S.boom": boom})
        with pytest.raises(RemoteError) as info:
            await conn.call("S.boom", b"")
        assert info.value.type_name == "KeyError" and "sku-9" in str(info.value)
        with pytest.raises(RequestTooLarge):
            await conn.call("S.boom", b"x" * (p.MAX_FRAME + 1))
        conn.close()
        await server.stop()

    run(main())


def test_an_oversized_request_is_refused_by_the_server(run):
    async def main():
        async def echo(payload, md):
            return payload

        server, conn = await _serve({"S.echo": echo}, max_frame=1024)
        with pytest.raises(RequestTooLarge, match="exceeds the limit of 1024"):
            await conn.call("S.echo", b"x" * 5000)
        assert (await conn.call("S.echo", b"still here")).payload == b"still here"
        conn.close()
        await server.stop()

    run(main())


def test_cancelling_the_caller_cancels_the_callee(run):
    async def main():
        started, cancelled = asyncio.Event(), asyncio.Event()

        async def block(payload, md):
            started.set()
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                cancelled.set()
                raise
            return b""

        server, conn = await _serve({"S.block": block})
        call = asyncio.ensure_future(conn.call("S.block", b""))
        await asyncio.wait_for(started.wait(), 5)
        call.cancel()
        await asyncio.wait_for(cancelled.wait(), 5)  # the CANCEL frame reached the callee
        assert server.running() == 0
        conn.close()
        await server.stop()

    run(main())


def test_the_deadline_becomes_the_callees_and_a_passed_one_is_refused_unrun(run):
    async def main():
        ran: list[float] = []

        async def probe(payload, md):
            d = current_deadline.get()
            assert d is not None
            ran.append(d - time.monotonic())
            return b""

        async def sleepy(payload, md):
            await asyncio.sleep(10)
            return b""

        server, conn = await _serve({"S.probe": probe, "S.sleepy": sleepy})
        await conn.call("S.probe", b"", deadline=time.monotonic() + 0.5)
        assert 0.2 < ran[0] <= 0.5  # the remaining time, less the trip
        with pytest.raises(DeadlineExceeded, match="before the call was sent"):
            await conn.call("S.probe", b"", deadline=time.monotonic() - 1)
        # a forwarded call whose deadline already passed: the server refuses it unrun
        raw = p.Codec()
        reader, writer = await asyncio.open_connection(*server.address.split(":"))
        writer.write(raw.call(1, "S.probe", -1, {}, b""))
        events = []
        while not events:
            events = raw.receive_data(await reader.read(4096))
        assert isinstance(events[0], p.Error) and events[0].code == p.DEADLINE_EXCEEDED
        assert len(ran) == 1
        t0 = time.monotonic()
        with pytest.raises(DeadlineExceeded):
            await conn.call("S.sleepy", b"", deadline=time.monotonic() + 0.2)
        assert time.monotonic() - t0 < 2
        writer.close()
        conn.close()
        await server.stop()

    run(main())


def test_no_server_is_not_connected_and_a_lost_connection_fails_calls_in_flight(run):
    async def main():
        with pytest.raises(NotConnected, match="cannot connect"):
            await connect("127.0.0.1:1")
        started = asyncio.Event()

        async def block(payload, md):
            started.set()
            await asyncio.Event().wait()
            return b""

        server, conn = await _serve({"S.block": block})
        call = asyncio.ensure_future(conn.call("S.block", b""))
        await asyncio.wait_for(started.wait(), 5)
        for c in list(server.connections):
            assert c.transport is not None
            c.transport.abort()
        from shoal.rpc import ConnectionLost

        with pytest.raises(ConnectionLost):
            await call
        await server.stop()

    run(main())


def test_a_server_with_a_token_refuses_calls_without_it(run):
    async def main():
        ran = []

        async def echo(payload, md):
            ran.append(payload)
            return payload

        server, conn = await _serve({"S.echo": echo}, token="s3cret")
        from shoal.rpc import Unauthenticated

        with pytest.raises(Unauthenticated, match="needs the deployment's token; not run"):
            await conn.call("S.echo", b"a")
        with pytest.raises(Unauthenticated):
            await conn.call("S.echo", b"b", metadata={"authorization": "guess"})
        assert ran == []
        assert (await conn.call("S.echo", b"c", metadata={"authorization": "s3cret"})).payload == b"c"
        conn.close()
        await server.stop()

    run(main())
