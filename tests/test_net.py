"""shoal.net over real loopback sockets: ordering, groups, coalescing, bounds, reconnects,
membership (set_peers), hostile peers, mutual TLS and fault injection. Every wait is on a
received message or a condition, with a timeout; nothing sleeps in place of synchronisation."""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import msgpack
import pytest

from conftest import Run  # (and the fixture `run`, which runs a test on both loops)
from shoal.consensus.messages import LocalProtocolError, Message, MsgType
from shoal.net import (
    MAX_GROUP,
    Handshake,
    NetConfig,
    TLSConfig,
    Transport,
    frame,
    install_event_loop,
    message_frame,
)
from shoal.net.codec import encode_message
from shoal.net.pki import Authority

FAST = NetConfig(backoff_base=0.01, backoff_max=0.1, connect_timeout=2, handshake_timeout=2)
LOCAL = ("127.0.0.1", 0)




class Inbox:
    """An on_message callback that queues what it is handed, (group, message)."""

    def __init__(self) -> None:
        self.q: asyncio.Queue[tuple[int, Message]] = asyncio.Queue()

    def __call__(self, group: int, msg: Message) -> None:
        self.q.put_nowait((group, msg))

    async def item(self, timeout: float = 5) -> tuple[int, Message]:
        return await asyncio.wait_for(self.q.get(), timeout)

    async def get(self, timeout: float = 5) -> Message:
        """The next message, which must be of group 0 (the tests that use groups use item)."""
        group, m = await self.item(timeout)
        assert group == 0
        return m

    async def take(self, n: int) -> list[Message]:
        return [await self.get() for _ in range(n)]


async def eventually(cond: Callable[[], bool], timeout: float = 5) -> None:
    """Wait for a condition the transport exposes no event for (a counter, a log line)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not cond():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.005)


def msg(src: int, dst: int, index: int, data: bytes = b"") -> Message:
    return Message(MsgType.APP, src, dst, term=1, index=index, context=data)


async def cluster(n: int, **kw: Any) -> list[tuple[Transport, Inbox]]:
    """n started transports on ephemeral ports, each a peer of all the others."""
    kw.setdefault("config", FAST)
    nodes = []
    for i in range(1, n + 1):
        inbox = Inbox()
        t = Transport(i, LOCAL, {}, "test", inbox, **kw)
        await t.start()
        nodes.append((t, inbox))
    for t, _ in nodes:
        t.set_peers({u.node_id: u.address for u, _ in nodes if u is not t})
    return nodes


async def stop_all(nodes: list[tuple[Transport, Inbox]]) -> None:
    for t, _ in nodes:
        await t.stop()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(LOCAL)
        return s.getsockname()[1]


# ---- delivery --------------------------------------------------------------------------------


def test_three_nodes_exchange_messages_in_order(run: Run) -> None:
    async def main() -> None:
        nodes = await cluster(3)
        for t, _ in nodes:
            for u, _ in nodes:
                if u is not t:
                    for i in range(100):
                        t.send(0, msg(t.node_id, u.node_id, i))
        for t, inbox in nodes:
            got = await inbox.take(200)
            for src in {1, 2, 3} - {t.node_id}:
                assert [m.index for m in got if m.src == src] == list(range(100))
            assert all(m.dst == t.node_id for m in got)
        s = nodes[0][0].stats().peers[2]
        assert (s.sent_frames, s.received_frames, s.dropped_frames) == (100, 100, 0)
        await stop_all(nodes)

    run(main())


def test_a_burst_of_sends_is_coalesced_into_few_writes(run: Run) -> None:
    async def main() -> None:
        (a, _), (_, inbox) = nodes = await cluster(2)
        a.send(0, msg(1, 2, 0))
        await inbox.get()  # connected
        before = a.stats().peers[2].writes
        for i in range(1, 1001):
            a.send(0, msg(1, 2, i))
        assert [m.index for m in await inbox.take(1000)] == list(range(1, 1001))
        writes = a.stats().peers[2].writes - before
        assert writes <= 5, f"1000 sends took {writes} writes"
        await stop_all(nodes)

    run(main())


def test_queue_is_bounded_while_peer_is_down_and_reconnect_delivers(run: Run) -> None:
    async def main() -> None:
        port = free_port()  # nothing listens here yet
        inbox_a = Inbox()
        a = Transport(1, LOCAL, {2: ("127.0.0.1", port)}, "test", inbox_a,
                      config=replace(FAST, max_queue_msgs=10))
        await a.start()
        for i in range(50):
            a.send(0, msg(1, 2, i))
        s = a.stats().peers[2]
        assert (s.queue_depth, s.dropped_frames, s.connects) == (10, 40, 0)

        inbox_b = Inbox()
        b = Transport(2, ("127.0.0.1", port), {1: a.address}, "test", inbox_b, config=FAST)
        await b.start()
        assert [m.index for m in await inbox_b.take(10)] == list(range(10))  # those that fit
        a.send(0, msg(1, 2, 50))
        assert (await inbox_b.get()).index == 50

        await b.stop()  # the peer goes away: the link is noticed dead, then redialed
        await eventually(lambda: not a.stats().peers[2].connected)
        b = Transport(2, ("127.0.0.1", port), {1: a.address}, "test", inbox_b, config=FAST)
        await b.start()
        a.send(0, msg(1, 2, 51))
        assert (await inbox_b.get()).index == 51
        assert a.stats().peers[2].reconnects == 1
        await a.stop()
        await b.stop()

    run(main())


def test_membership_changes_and_unroutable_sends(run: Run) -> None:
    async def main() -> None:
        (a, _), (b, inbox_b) = nodes = await cluster(2)
        a.set_peers({})
        a.send(0, msg(1, 2, 0))
        assert a.stats().unroutable == 1 and 2 not in a.stats().peers and a.peers == {}
        a.set_peers({2: b.address})
        a.send(0, msg(1, 2, 1))
        assert (await inbox_b.get()).index == 1
        await stop_all(nodes)

    run(main())


def test_many_groups_share_one_connection_and_keep_their_order(run: Run) -> None:
    async def main() -> None:
        (a, inbox_a), (b, inbox_b) = nodes = await cluster(2)
        groups = [0, 1, 127, 128, 255, 256, 70_000, MAX_GROUP - 1]  # MAX_GROUP: host frames
        for i in range(200):
            a.send(groups[i % len(groups)], msg(1, 2, i))
            b.send(groups[-1 - i % len(groups)], msg(2, 1, i))
        got_b = [await inbox_b.item() for _ in range(200)]
        got_a = [await inbox_a.item() for _ in range(200)]
        assert [(g, m.index) for g, m in got_b] == [(groups[i % 8], i) for i in range(200)]
        assert [(g, m.index) for g, m in got_a] == [(groups[-1 - i % 8], i) for i in range(200)]
        for t, peer in ((a, 2), (b, 1)):
            s = t.stats().peers[peer]
            assert (s.connects, s.sent_frames, s.received_frames) == (1, 200, 200)
        await stop_all(nodes)

    run(main())


def test_a_bad_group_id_is_our_own_error(run: Run) -> None:
    async def main() -> None:
        (a, _), (_, inbox_b) = nodes = await cluster(2)
        for group in (-1, MAX_GROUP, MAX_GROUP + 1, True, 1.0, "1", None):
            with pytest.raises(LocalProtocolError, match="group id must be an integer"):
                a.send(group, msg(1, 2, 0))  # type: ignore[arg-type]
            with pytest.raises(LocalProtocolError, match="group id must be an integer"):
                a.send(group, msg(1, 9, 0))  # type: ignore[arg-type]  # even if unroutable
        assert a.stats().peers[2].queue_depth == 0 and a.stats().unroutable == 0
        a.send(0, msg(1, 2, 1))
        assert (await inbox_b.get()).index == 1
        await stop_all(nodes)

    run(main())


# ---- membership: set_peers -------------------------------------------------------------------


async def exchange(a: Transport, inbox_a: Inbox, b: Transport, inbox_b: Inbox, i: int) -> None:
    """One message each way, on groups 0 and 5, and both must arrive."""
    a.send(5, msg(a.node_id, b.node_id, i))
    b.send(0, msg(b.node_id, a.node_id, i))
    group, m = await inbox_b.item()
    assert (group, m.src, m.index) == (5, a.node_id, i)
    group, m = await inbox_a.item()
    assert (group, m.src, m.index) == (0, b.node_id, i)


def test_remove_and_readd_in_one_call_sequence_keeps_the_peer(run: Run) -> None:
    """The replaced disk: node 2 removed and re-added before the loop runs again. The closing
    of the old connections, finishing afterwards, must not take the re-added peer with it."""

    async def main() -> None:
        (a, inbox_a), (b, inbox_b) = nodes = await cluster(2)
        await exchange(a, inbox_a, b, inbox_b, 0)
        a.set_peers({})
        a.set_peers({2: b.address})
        assert a.peers == {2: b.address}
        await a.settle()  # every background close has run
        assert a.peers == {2: b.address} and 2 in a.stats().peers
        # a dropped b's connection into it, so b redials, and a, knowing 2, accepts it
        await eventually(lambda: b.stats().peers[1].reconnects == 1
                         and b.stats().peers[1].connected)
        await exchange(a, inbox_a, b, inbox_b, 1)
        assert a.stats().rejected_connections == 0  # node 2 was never refused
        assert a.stats().peers[2].connects == 1  # the fresh dialer's first connection
        await stop_all(nodes)

    run(main())


def test_remove_then_readd_with_the_loop_running_in_between(run: Run) -> None:
    async def main() -> None:
        (a, inbox_a), (b, inbox_b) = nodes = await cluster(2)
        await exchange(a, inbox_a, b, inbox_b, 0)
        a.set_peers({})
        a.send(0, msg(1, 2, 99))
        assert a.stats().unroutable == 1
        # a closed b's connection; b redials and is heard, though a no longer dials it: a
        # member re-added that a has not heard of yet may be the one to tell it so
        await eventually(lambda: b.stats().peers[1].connects >= 2)
        b.send(0, msg(2, 1, 7))
        assert (await inbox_a.item())[1].index == 7
        assert 2 in a.stats().strangers and a.stats().rejected_connections == 0
        a.set_peers({2: b.address})
        await exchange(a, inbox_a, b, inbox_b, 1)
        await a.settle()
        await exchange(a, inbox_a, b, inbox_b, 2)  # and nothing late undid the re-add
        assert a.peers == {2: b.address}
        await stop_all(nodes)

    run(main())


def test_host_messages_travel_outside_every_group(run: Run) -> None:
    async def main() -> None:
        (a, inbox_a), (b, inbox_b) = nodes = await cluster(2)
        heard: list[tuple[int, bytes]] = []
        b.on_host = lambda src, payload: heard.append((src, payload))
        a.send_host(2, b"claims")
        await eventually(lambda: heard == [(1, b"claims")])
        await exchange(a, inbox_a, b, inbox_b, 0)  # and groups' messages are not disturbed
        with pytest.raises(LocalProtocolError):
            a.send_host(2, b"x" * (64 * 1024 + 1))
        await stop_all(nodes)

    run(main())


def test_an_address_change_replaces_the_peer(run: Run) -> None:
    async def main() -> None:
        (a, inbox_a), (b, inbox_b) = await cluster(2)
        await exchange(a, inbox_a, b, inbox_b, 0)
        await b.stop()  # node 2 comes back elsewhere: a new process on another port
        inbox_b2 = Inbox()
        b2 = Transport(2, LOCAL, {1: a.address}, "test", inbox_b2, config=FAST)
        await b2.start()
        a.set_peers({2: b2.address})
        assert a.peers == {2: b2.address}
        await exchange(a, inbox_a, b2, inbox_b2, 1)
        s = a.stats().peers[2]
        assert (s.connects, s.sent_frames) == (1, 1)  # a new dialer, with fresh counters
        # The same table again changes nothing: no connection is dropped or redialed.
        a.set_peers({2: b2.address})
        await a.settle()
        await exchange(a, inbox_a, b2, inbox_b2, 2)
        assert a.stats().peers[2].connects == 1 and b2.stats().peers[1].connects == 1
        await a.stop()
        await b2.stop()

    run(main())


def test_removal_closes_connections_accepted_from_the_removed_node(run: Run) -> None:
    async def main() -> None:
        (a, _), (b, inbox_b) = nodes = await cluster(2)
        b.set_peers({1: a.address, 3: ("127.0.0.1", free_port())})  # we play node 3
        reader, writer = await asyncio.open_connection(*b.address)
        writer.write(GOOD_HELLO + message_frame(4, encode_message(msg(3, 2, 1))))
        assert (await inbox_b.item())[0] == 4  # shaken hands and heard
        b.set_peers({1: a.address})
        assert await asyncio.wait_for(_read_to_eof(reader), 5)  # b hung up on node 3
        writer.close()
        await b.settle()
        assert b.stats().rejected_connections == 0 and inbox_b.q.empty()
        a.send(0, msg(1, 2, 7))  # node 1 is untouched
        assert (await inbox_b.get()).index == 7
        await stop_all(nodes)

    run(main())


def test_nothing_more_is_delivered_from_a_node_once_it_is_removed(run: Run) -> None:
    """Frames already read from the socket in the same chunk are dropped too."""

    async def main() -> None:
        (a, _), (b, _) = nodes = await cluster(2)
        got: list[int] = []

        def remove_on_first(_group: int, m: Message) -> None:
            got.append(m.index)
            b.set_peers({})

        b.on_message = remove_on_first
        for i in range(100):
            a.send(0, msg(1, 2, i))
        await eventually(lambda: bool(got))
        await b.settle()  # the handler of a's connection has returned: nothing can follow
        assert got == [0]
        await stop_all(nodes)

    run(main())


def test_set_peers_is_validated_all_or_nothing() -> None:
    t = Transport(1, LOCAL, {2: ("127.0.0.1", 7002)}, "test", Inbox())
    for bad, why in [
        ({1: ("127.0.0.1", 7001)}, "node 1 cannot be a peer of node 1"),
        ({0: ("127.0.0.1", 7000)}, "node 0 cannot be a peer"),
        ({3: ("127.0.0.1",)}, "is not \\(host, port\\)"),
        ({3: ("127.0.0.1", 70000)}, "is not \\(host, port\\)"),
        ({3: "127.0.0.1:7003"}, "is not \\(host, port\\)"),
    ]:
        with pytest.raises(LocalProtocolError, match=why):
            t.set_peers({3: ("127.0.0.1", 7003), **bad})  # type: ignore[dict-item]
        assert t.peers == {2: ("127.0.0.1", 7002)}
    t.set_peers({3: ("127.0.0.1", 7003)})  # before start: nothing to dial or close yet
    assert t.peers == {3: ("127.0.0.1", 7003)} and set(t.stats().peers) == {3}


# ---- hostile and confused peers --------------------------------------------------------------

GOOD_HELLO = Handshake("test", 3, "raft").encode()
BAD_INPUT = [
    (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "not a Shoal peer"),
    (frame(msgpack.packb([b"HELLO", 1, "test", 3, "raft"])), "bad magic"),
    (Handshake("other", 3, "raft").encode(), "belongs to cluster 'other', not 'test'"),
    (Handshake("test", 3, "paxos").encode(), "speaks codec 'paxos'"),
    (Handshake("test", 3, "raft", version=1).encode(), "protocol version 1, this node speaks 2"),
    (GOOD_HELLO + message_frame(0, b"\xc1"), "raft message: not valid msgpack"),
    (GOOD_HELLO + message_frame(0, msgpack.packb([99] * 16)), "'type': unknown message type"),
    (GOOD_HELLO + message_frame(0, encode_message(msg(1, 2, 0))),
     "message from 1 to 2 on the connection"),
    # protocol 1's payload, the message alone: its array header is no group id
    (GOOD_HELLO + frame(encode_message(msg(3, 2, 0))), "'group': expected an integer"),
    (GOOD_HELLO + frame(b""), "'group': missing"),
    (GOOD_HELLO + frame(b"\xff" + encode_message(msg(3, 2, 0))), "'group': negative"),
    (GOOD_HELLO + frame(msgpack.packb(2**32) + encode_message(msg(3, 2, 0))),
     "'group': larger than 4294967295"),
    (GOOD_HELLO + (FAST.max_frame + 1).to_bytes(4, "big"), "exceeds max_frame"),
]


@pytest.mark.parametrize("data,why", BAD_INPUT, ids=[w for _, w in BAD_INPUT])
def test_bad_peers_are_disconnected_and_logged(run: Run,
    data: bytes, why: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="shoal.net")

    async def main() -> None:
        (a, _), (b, inbox_b) = nodes = await cluster(2)
        b.set_peers({**b.peers, 3: ("127.0.0.1", free_port())})  # node 3 is down; we play it
        reader, writer = await asyncio.open_connection(*b.address)
        writer.write(data)
        assert await asyncio.wait_for(_read_to_eof(reader), 5)  # b hung up on us
        writer.close()
        assert why in caplog.text and "closing connection from" in caplog.text
        assert b.stats().rejected_connections == 1
        a.send(0, msg(1, 2, 7))  # and b goes on serving its good peers
        assert (await inbox_b.get()).index == 7
        await stop_all(nodes)

    run(main())


async def _read_to_eof(reader: asyncio.StreamReader) -> bool:
    while await reader.read(4096):
        pass  # b may have sent its own handshake before it refused what followed
    return True


def test_a_failing_receiver_does_not_cost_the_connection(run: Run,
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def main() -> None:
        got: list[int] = []
        done = asyncio.Event()

        def fussy(_group: int, m: Message) -> None:
            if m.index == 0:
                raise ValueError("receiver bug")
            got.append(m.index)
            done.set()

        (a, _), (b, _) = nodes = await cluster(2)
        b.on_message = fussy
        a.send(0, msg(1, 2, 0))
        a.send(0, msg(1, 2, 1))
        await asyncio.wait_for(done.wait(), 5)
        assert got == [1] and "on_message failed" in caplog.text
        assert a.stats().peers[2].connects == 1
        await stop_all(nodes)

    run(main())


# ---- mutual TLS ------------------------------------------------------------------------------


def make_pki(tmp: Path, ca_name: str, certs: dict[str, int | None]) -> dict[str, TLSConfig]:
    """A CA and, per name, node `id`'s certificate (or a client's, for None), as files: what
    an operator would hand us (`shoal certs` writes the same)."""
    ca = Authority.create(ca_name)
    ca_file = tmp / f"{ca_name}.pem"
    ca_file.write_bytes(ca.pem.cert)
    out = {}
    for name, node_id in certs.items():
        issued = ca.client(name) if node_id is None else ca.node(node_id)
        issued.write(tmp / f"{name}.crt", tmp / f"{name}.key")
        out[name] = TLSConfig(tmp / f"{name}.crt", tmp / f"{name}.key", ca_file)
    return out


def test_mutual_tls(run: Run, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="shoal.net")
    pki = make_pki(tmp_path, "cluster-ca", {"n1": 1, "n2": 2})
    rogue_pki = make_pki(tmp_path, "rogue-ca", {"n3": 3})

    async def main() -> None:
        nodes = []
        for i in (1, 2):
            inbox = Inbox()
            t = Transport(i, LOCAL, {}, "test", inbox, tls=pki[f"n{i}"], config=FAST)
            await t.start()
            nodes.append((t, inbox))
        (a, inbox_a), (b, inbox_b) = nodes
        a.set_peers({2: b.address})
        b.set_peers({1: a.address})
        a.send(0, msg(1, 2, 1))
        b.send(0, msg(2, 1, 2))
        assert (await inbox_b.get()).index == 1 and (await inbox_a.get()).index == 2

        # A client with no certificate at all: refused during the TLS handshake.
        ctx = ssl.create_default_context(cafile=str(pki["n1"].ca_file))
        reader, writer = await asyncio.open_connection(*b.address, ssl=ctx)
        writer.write(Handshake("test", 1, "raft").encode())
        with pytest.raises((ssl.SSLError, ConnectionError, asyncio.IncompleteReadError)):
            await asyncio.wait_for(reader.readexactly(1), 5)
        writer.close()

        # A node whose certificate another CA signed (though it trusts ours): refused too.
        rogue_tls = replace(rogue_pki["n3"], ca_file=pki["n1"].ca_file)
        b.set_peers({1: a.address, 3: ("127.0.0.1", free_port())})
        rogue = Transport(3, LOCAL, {2: b.address}, "test", Inbox(), tls=rogue_tls, config=FAST)
        await rogue.start()
        rogue.send(0, msg(3, 2, 3))
        await eventually(lambda: "node 2 at" in caplog.text)  # the rogue's failed dial
        assert rogue.stats().peers[2].connects == 0 and inbox_b.q.empty()
        await rogue.stop()
        await stop_all(nodes)

    run(main())


# ---- fault injection -------------------------------------------------------------------------


def test_fault_plan_drops_and_partitions(run: Run) -> None:
    async def main() -> None:
        (a, _), (b, inbox_b) = nodes = await cluster(2)
        a.faults.update(drop=1.0)
        for i in range(10):
            a.send(0, msg(1, 2, i))
        a.faults.heal()
        a.send(0, msg(1, 2, 10))
        assert (await inbox_b.get()).index == 10  # the ten before it never left
        assert a.stats().peers[2].fault_dropped == 10

        a.faults.partition([2])
        a.send(0, msg(1, 2, 11))
        a.faults.heal()
        b.faults.update(block_from={1})  # now the receiving side cuts the link
        for i in range(12, 17):
            a.send(0, msg(1, 2, i))
        await eventually(lambda: b.stats().peers[1].fault_dropped == 5)
        b.faults.heal()
        a.send(0, msg(1, 2, 17))
        assert (await inbox_b.get()).index == 17
        assert a.stats().peers[2].fault_dropped == 11

        a.faults.update(delay=0.05)
        loop = asyncio.get_running_loop()
        start = loop.time()
        a.send(0, msg(1, 2, 18))
        a.send(0, msg(1, 2, 19))
        assert [m.index for m in await inbox_b.take(2)] == [18, 19]
        assert loop.time() - start >= 0.049  # uvloop clocks tick in milliseconds
        await stop_all(nodes)

    run(main())


def test_install_event_loop_prefers_uvloop() -> None:
    uvloop = pytest.importorskip("uvloop")
    try:
        assert install_event_loop() == "uvloop"
        loop = asyncio.new_event_loop()
        assert isinstance(loop, uvloop.Loop)
        loop.close()
    finally:
        asyncio.set_event_loop_policy(None)


def test_send_before_start_is_a_local_error() -> None:
    t = Transport(1, LOCAL, {2: ("127.0.0.1", 1)}, "test", Inbox())
    with pytest.raises(LocalProtocolError, match="not started"):
        t.send(0, msg(1, 2, 0))


def test_a_peer_that_hangs_up_is_reported_lost_and_one_we_drop_is_not(run: Run) -> None:
    async def main() -> None:
        lost: list[int] = []
        b = Transport(2, LOCAL, {}, "test", Inbox(), config=FAST, on_peer_lost=lost.append)
        await b.start()
        b.set_peers({1: ("127.0.0.1", free_port()), 3: ("127.0.0.1", free_port())})
        for peer in (1, 3):  # we play nodes 1 and 3, each dialing b
            reader, writer = await asyncio.open_connection(*b.address)
            hello = Handshake("test", peer, "raft").encode()
            writer.write(hello + message_frame(4, encode_message(msg(peer, 2, 1))))
            await eventually(lambda p=peer: p in {c.peer for c in b._inbound.values()})
            if peer == 1:
                writer.close()  # node 1's process exits: its end of the connection closes
                await eventually(lambda: lost == [1])
            else:
                b.set_peers({1: ("127.0.0.1", free_port())})  # we drop node 3 ourselves
                assert await asyncio.wait_for(_read_to_eof(reader), 5)
                writer.close()
        await b.settle()
        assert lost == [1]
        await b.stop()

    run(main())
