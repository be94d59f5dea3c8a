"""The client port against real nodes: exactly-once retries through sessions, leader discovery
from a follower, oversized and malformed requests, and backpressure."""

from __future__ import annotations

import asyncio

import pytest

from cluster import LocalCluster, ep, eventually, run
from shoal import kv
from shoal.client import Client, ClientError
from shoal.kv import PutRequest, Session, decode_response, encode_command
from shoal.wire.protocol import (
    BAD_REQUEST,
    REQUEST_TOO_LARGE,
    RETRYABLE,
    TOO_MANY_REQUESTS,
    frame,
    read_frame,
)


async def revision(cl: Client) -> int:
    return (await cl.get(b"\0", count_only=True)).header.revision


# ------------------------------------------------------------------------------ sessions


def test_a_retried_write_with_the_same_session_and_seq_is_applied_once(tmp_path):
    async def main():
        async with LocalCluster(tmp_path) as c, Client(c.endpoints) as cl:
            await c.leader()
            slot = await cl._open_session()
            cmd = encode_command(PutRequest(b"once", b"v", prev_kv=True), Session(slot.client_id, 1))
            before = await revision(cl)
            first = await cl.call("kv", {"cmd": cmd})
            again = await cl.call("kv", {"cmd": cmd})
            assert again == first  # the very same response, from the dedup table
            assert decode_response(first).header.revision == before + 1
            assert await revision(cl) == before + 1  # applied once
            got = (await cl.get(b"once")).kvs[0]
            assert got.version == 1

            # two copies in flight at once (a retry racing its original): still once
            cmd2 = encode_command(PutRequest(b"once", b"w"), Session(slot.client_id, 2))
            a, b = await asyncio.gather(cl.call("kv", {"cmd": cmd2}), cl.call("kv", {"cmd": cmd2}))
            assert a == b
            assert await revision(cl) == before + 2
            assert (await cl.get(b"once")).kvs[0].version == 2

            # an older sequence number is refused, not re-applied
            with pytest.raises(kv.ErrStaleSequence):
                await cl.call("kv", {"cmd": cmd})
            # an unknown session is refused
            with pytest.raises(kv.ErrSessionExpired):
                await cl.call("kv", {"cmd": encode_command(PutRequest(b"once", b"x"),
                                                           Session(999_999, 1))})
            assert await revision(cl) == before + 2
    run(main())


def test_a_retry_after_a_leader_change_is_answered_from_the_replicated_dedup_table(tmp_path):
    async def main():
        async with LocalCluster(tmp_path) as c, Client(c.endpoints) as cl:
            old = await c.leader()
            slot = await cl._open_session()
            cmd = encode_command(PutRequest(b"moved", b"v"), Session(slot.client_id, 1))
            first = await cl.call("kv", {"cmd": cmd})
            await c.stop(old, transfer=True)
            new = await c.leader()
            assert new != old
            again = await cl.call("kv", {"cmd": cmd})
            assert again == first
            assert (await cl.get(b"moved")).kvs[0].version == 1
            assert await revision(cl) == decode_response(first).header.revision
    run(main())


# ------------------------------------------------------------------------------ redirects


def test_a_client_given_only_a_follower_discovers_the_leader(tmp_path):
    async def main():
        async with LocalCluster(tmp_path) as c:
            lead = await c.leader()
            f = min(i for i in c.servers if i != lead)
            await eventually(lambda: c.servers[f].node.leader == lead, what="f to hear the leader")
            async with Client([ep(c, f)]) as raw:
                # the follower answers not_leader, naming the leader and its endpoint
                with pytest.raises(ClientError) as info:
                    await raw.call("kv", {"cmd": encode_command(PutRequest(b"k", b"v"))},
                                   retry=False)
                assert info.value.code == "not_leader"
                assert info.value.details["leader"] == lead
                assert info.value.details["endpoint"] == ep(c, lead)
            assert c.servers[lead].node.kv.mvcc.get(b"k") is None  # nothing was proposed
            async with Client([ep(c, f)]) as cl:
                r = await cl.put(b"k", b"v")
                assert r.header.revision > 1
                assert cl._leader == ep(c, lead)
                assert ep(c, lead) in cl.endpoints
                assert c.servers[lead].node.kv.mvcc.get(b"k").value == b"v"
    run(main())


# ------------------------------------------------------------------------------ bad input


def test_a_value_over_the_store_limit_gets_a_clear_error_and_the_connection_survives(tmp_path):
    async def main():
        async with LocalCluster(tmp_path) as c, Client(c.endpoints, timeout=5) as cl:
            await c.leader()
            await cl.put(b"small", b"1")
            conn = cl._conns[cl._leader]
            limit = kv.KVLimits().max_value_bytes
            with pytest.raises(kv.ErrRequestTooLarge) as info:
                await cl.put(b"big", b"x" * (limit + 1))
            assert "limit" in str(info.value)
            assert cl._conns[cl._leader] is conn and conn.alive  # same connection
            assert await cl.get_value(b"big") is None
            await cl.put(b"small", b"2")
            assert await cl.get_value(b"small") == b"2"
    run(main())


def test_a_request_over_the_frame_limit_gets_request_too_large(tmp_path):
    async def main():
        async with LocalCluster(tmp_path) as c, Client(c.endpoints, timeout=4) as cl:
            await c.leader()
            await cl.put(b"small", b"1")
            loop = asyncio.get_running_loop()
            t = loop.time()
            with pytest.raises(ClientError) as info:
                await cl.put(b"big", b"x" * (1600 * 1024))  # > 1.5 MiB + 64 KiB
            assert info.value.code == REQUEST_TOO_LARGE
            assert loop.time() - t < 2
            assert await cl.get_value(b"small") == b"1"
    run(main())


def test_an_oversized_frame_is_refused_and_the_connection_stays_usable(tmp_path):
    """On the wire: the server reads past the oversized frame and keeps serving."""
    async def main():
        async with LocalCluster(tmp_path) as c:
            lead = await c.leader()
            host, port = ep(c, lead).rsplit(":", 1)
            reader, writer = await asyncio.open_connection(host, int(port))
            try:
                big = frame([1, "kv", {"cmd": b"x" * (1600 * 1024)}])
                writer.write(big + frame([2, "status", None]))
                await writer.drain()
                rid, code, body = await asyncio.wait_for(read_frame(reader, 1 << 24), 5)
                assert code == REQUEST_TOO_LARGE and "too large" in body["message"]
                rid, code, body = await asyncio.wait_for(read_frame(reader, 1 << 24), 5)
                assert (rid, code) == (2, "ok") and body["id"] == lead
            finally:
                writer.close()
    run(main())


def test_malformed_frames_and_unknown_ops_get_bad_request_and_the_node_lives_on(tmp_path):
    async def main():
        async with LocalCluster(tmp_path) as c, Client(c.endpoints) as cl:
            lead = await c.leader()
            await cl.put(b"alive", b"1")
            host, port = ep(c, lead).rsplit(":", 1)
            reader, writer = await asyncio.open_connection(host, int(port))

            async def ask(obj):
                writer.write(frame(obj))
                await writer.drain()
                return await asyncio.wait_for(read_frame(reader, 1 << 24), 5)

            try:
                rid, code, body = await ask([1, "no-such-op", {}])
                assert (rid, code) == (1, BAD_REQUEST) and "no-such-op" in body["message"]
                assert (await ask("not a request"))[:2] == [None, BAD_REQUEST]
                assert (await ask([1, 2]))[:2] == [None, BAD_REQUEST]
                assert (await ask([3, "kv", {}]))[:2] == [3, BAD_REQUEST]  # no cmd
                assert (await ask([4, "kv", {"cmd": "text"}]))[:2] == [4, BAD_REQUEST]
                assert (await ask([5, "kv", None]))[:2] == [5, BAD_REQUEST]
                assert (await ask([6, "member_remove", {}]))[:2] == [6, BAD_REQUEST]
                # a cmd that is bytes but not a command: refused by the store's validation
                assert (await ask([7, "kv", {"cmd": b"\x93garbage"}]))[:2] == [7, "MalformedRequest"]
                # the same connection still works
                rid, code, body = await ask([8, "status", None])
                assert (rid, code) == (8, "ok") and body["role"] == "leader"
                # a frame that is not msgpack at all: this connection is closed...
                writer.write((3).to_bytes(4, "big") + b"\xc1\xc1\xc1")
                await writer.drain()
                assert await asyncio.wait_for(read_frame(reader, 1 << 24), 5) is None
            finally:
                writer.close()
            # ...and the node is fine: same leader, still writing
            r = await cl.put(b"alive", b"2")
            assert r.header.revision > 0 and await c.leader() == lead
            assert c.servers[lead].node.role == "leader"
            assert not any(t.done() for t in c.servers[lead].node._tasks)
    run(main())


# ------------------------------------------------------------------------------ backpressure


def test_backpressure_answers_retryable_too_many_requests_and_loses_nothing(tmp_path):
    async def main():
        async with LocalCluster(tmp_path, max_pending_requests=2) as c:
            lead = await c.leader()
            async with Client([ep(c, lead)]) as raw:
                async def one(i):
                    cmd = encode_command(PutRequest(f"bp/{i:03d}".encode(), b"v"))
                    try:
                        await raw.call("kv", {"cmd": cmd}, retry=False)
                        return i, "ok"
                    except ClientError as exc:
                        return i, exc.code

                results = await asyncio.gather(*(one(i) for i in range(40)))
                codes = [code for _, code in results]
                assert TOO_MANY_REQUESTS in codes, codes
                assert "ok" in codes
                assert set(codes) <= {"ok", TOO_MANY_REQUESTS}, codes
                assert TOO_MANY_REQUESTS in RETRYABLE
                accepted = {f"bp/{i:03d}".encode() for i, code in results if code == "ok"}
                refused = {f"bp/{i:03d}".encode() for i, code in results if code != "ok"}
                got = await raw.get(b"bp/", prefix=True, keys_only=True)
                assert {x.key for x in got.kvs} == accepted  # none lost, none sneaked in
                assert not refused & {x.key for x in got.kvs}

            # the ordinary client retries them: a burst all gets through, exactly once each
            async with Client(c.endpoints, timeout=20) as cl:
                await asyncio.gather(*(cl.put(f"r/{i:03d}".encode(), b"v") for i in range(40)))
                got = await cl.get(b"r/", prefix=True)
                assert len(got.kvs) == 40 and all(x.version == 1 for x in got.kvs)
    run(main())


def test_too_many_client_connections_are_refused_with_a_retryable_code(tmp_path):
    async def main():
        async with LocalCluster(tmp_path, max_connections=1) as c:
            lead = await c.leader()
            host, port = ep(c, lead).rsplit(":", 1)
            r1, w1 = await asyncio.open_connection(host, int(port))
            try:
                w1.write(frame([1, "status", None]))
                assert (await asyncio.wait_for(read_frame(r1, 1 << 24), 5))[1] == "ok"
                r2, w2 = await asyncio.open_connection(host, int(port))
                rid, code, body = await asyncio.wait_for(read_frame(r2, 1 << 24), 5)
                assert code == TOO_MANY_REQUESTS and code in RETRYABLE
                assert await asyncio.wait_for(read_frame(r2, 1 << 24), 5) is None  # closed
                w2.close()
            finally:
                w1.close()
    run(main())


