"""Bounded watch queues against a real node on loopback, through the client port.

- An iterator its user does not read: the Shoal client's inbox bound cancels that watch alone
  (WatchCanceled, with the revision to resume from); the other watch on the connection goes on.
- A socket nobody reads: the node's connection holds one response per watch and the hub holds
  the rest back, bounded; nothing is lost or canceled, and a replay of history longer than the
  bounds runs at the reader's pace.
- The last resort, a watch the hub does not pace: canceled alone at the connection's bound,
  with the reason and revision, while the connection and its other watches carry on."""

from __future__ import annotations

import asyncio
import contextlib
import socket

import pytest

from cluster import LocalCluster, eventually, run
from shoal.client import Client
from shoal.client.errors import WatchCanceled
from shoal.kv.codec import from_wire, unpack
from shoal.kv.watch import WatchGate, WatchResponse
from shoal.server.client_api import WATCH_FLUSH_BYTES, _Watch
from shoal.wire.protocol import frame, read_frame


def _server_conn(c: LocalCluster):
    conns = c.servers[1].clients._conns
    assert len(conns) == 1
    return next(iter(conns))


def _watching_conn(c: LocalCluster):
    """The node's connection that has watches (the raw client's, not the writer's)."""
    return next((conn for conn in c.servers[1].clients._conns if conn.watches), None)


def test_an_iterator_that_is_not_read_is_canceled_alone_by_the_client_bound(tmp_path):
    events_bound, bytes_bound = 20, 64 * 1024

    async def main():
        async with LocalCluster(tmp_path, n=1, fsync=False) as c, \
                Client(c.endpoints, watch_queue_events=events_bound,
                       watch_queue_bytes=bytes_bound) as cl:
            await c.leader()
            start = (await cl.put(b"start", b"")).header.revision + 1
            slow = cl.watch(b"slow", start_revision=start)
            fast_events: list = []

            async def read_fast():
                async for resp in cl.watch(b"fast", start_revision=start):
                    fast_events.extend(resp.events)

            first = asyncio.create_task(slow.__anext__())
            fast = asyncio.create_task(read_fast())
            try:
                conn = await eventually(lambda: len(cl._conns) == 1 and next(iter(cl._conns.values())),
                                        what="the client's connection")
                await eventually(lambda: len(conn.streams) == 2, what="both watches sent")
                inbox = next(i for i in conn.streams.values() if i.rid == min(conn.streams))
                slow_revs = []
                for i in range(3 * events_bound):
                    slow_revs.append((await cl.put(b"slow", b"%d" % i)).header.revision)
                    await cl.put(b"fast", b"%d" % i)
                    if i == 0:
                        got = await first  # the slow consumer takes one response, then no more
                        assert got.events[0].kv.value == b"0"
                # the client dropped the slow watch and told the server; the fast one lives on
                await eventually(lambda: len(_server_conn(c).watches) == 1, what="the server canceling it")
                assert len(conn.streams) == 1
                assert inbox.queue.peak_events <= events_bound
                assert inbox.queue.peak_bytes <= bytes_bound
                assert len(inbox.queue) == 0  # what it held is released

                with pytest.raises(WatchCanceled) as info:
                    await slow.__anext__()
                assert info.value.resume_revision == slow_revs[0] + 1
                assert "could not keep up" in info.value.reason
                assert f"re-create it from revision {slow_revs[0] + 1}" in str(info.value)

                await eventually(lambda: len(fast_events) == 3 * events_bound, what="every fast event")
                assert [e.kv.value for e in fast_events] == [b"%d" % i for i in range(3 * events_bound)]
                await cl.put(b"fast", b"after")
                await eventually(lambda: fast_events[-1].kv.value == b"after", what="the fast watch going on")

                # re-created from the revision it names, the watch misses nothing
                again = cl.watch(b"slow", start_revision=info.value.resume_revision)
                resp = await again.__anext__()
                assert resp.events[0].kv.value == b"1"
                assert resp.events[0].kv.mod_revision == slow_revs[1]
                await again.aclose()
                await eventually(lambda: len(_server_conn(c).watches) == 1,
                                 what="aclose canceling the watch on the server")
            finally:
                fast.cancel()
                first.cancel()
                with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                    await fast
    run(main())


class RawWatcher:
    """A client port connection spoken by hand, which can stop reading: a small receive window
    and a StreamReader nobody reads (it stops taking from the socket at twice its limit)."""

    async def open(self, endpoint: str) -> RawWatcher:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        host, port = endpoint.rsplit(":", 1)
        await asyncio.get_running_loop().sock_connect(sock, (host, int(port)))
        self.reader, self.writer = await asyncio.open_connection(sock=sock, limit=1 << 20)
        self.events: dict[int, list] = {}
        self.canceled: dict[int, WatchResponse] = {}
        self.replies: dict[int, tuple] = {}
        return self

    async def send(self, *msg) -> None:
        self.writer.write(frame(list(msg)))
        await self.writer.drain()

    async def read_until(self, done, timeout: float = 30) -> None:
        async def loop():
            while not done():
                rid, code, body = await read_frame(self.reader, 1 << 24)
                if code != "event":
                    self.replies[rid] = (code, body)
                    continue
                resp = from_wire(unpack(body, "watch"), WatchResponse, "WatchResponse")
                if resp.canceled:
                    self.canceled[rid] = resp
                else:
                    self.events.setdefault(rid, []).extend(resp.events)
        await asyncio.wait_for(loop(), timeout)

    def close(self) -> None:
        self.writer.close()


async def _two_watches(c: LocalCluster, cl: Client, raw: RawWatcher):
    start = (await cl.put(b"start", b"")).header.revision + 1
    await raw.send(1, "watch", {"key": b"big", "start_revision": start})
    await raw.send(2, "watch", {"key": b"small", "start_revision": start})
    server = await eventually(lambda: (conn := _watching_conn(c)) is not None
                              and len(conn.watches) == 2 and conn, what="both watches")
    return server, next(w for w, s in server.watches.items() if s.req_id == 1)


def test_a_connection_that_is_not_read_holds_its_watches_back_bounded_and_loses_nothing(tmp_path):
    """The socket's buffers fill, then each watch holds at most one response in the node's
    connection: the hub keeps the rest (bounded, or in history). Once the client reads again
    every event arrives, in order, and nothing was canceled."""
    value_bytes, puts = 64 * 1024, 250  # 16 MiB: several times what the socket buffers take

    async def main():
        async with LocalCluster(tmp_path, n=1, fsync=False) as c, Client(c.endpoints) as cl:
            await c.leader()
            raw = await RawWatcher().open(c.endpoints[0])
            try:
                server, big_id = await _two_watches(c, cl, raw)
                small_revs = [(await cl.put(b"small", b"s1")).header.revision]
                big_revs, peak_buffer = [], 0
                for _ in range(puts):
                    big_revs.append((await cl.put(b"big", b"x" * value_bytes)).header.revision)
                    peak_buffer = max(peak_buffer, server.writer.transport.get_write_buffer_size())
                small_revs.append((await cl.put(b"small", b"s2")).header.revision)
                assert big_id in server._held  # the hub is holding it back for us
                one_frame = value_bytes + 1024
                assert server.outbox.peak_bytes <= 2 * one_frame  # one response per watch
                assert peak_buffer <= WATCH_FLUSH_BYTES + one_frame
                assert len(server.watches) == 2 and not server.writer.is_closing()

                await raw.send(3, "status", None)
                await raw.read_until(lambda: 3 in raw.replies and len(raw.events.get(1, ())) == puts
                                     and len(raw.events.get(2, ())) == 2)
                assert raw.replies[3][0] == "ok" and not raw.canceled
                assert [e.kv.mod_revision for e in raw.events[1]] == big_revs
                assert [e.kv.mod_revision for e in raw.events[2]] == small_revs
                await eventually(lambda: not server._held and not server.outbox, what="all sent")
                await cl.put(b"small", b"s3")  # and live events flow as before
                await raw.read_until(lambda: len(raw.events[2]) == 3)
                assert raw.events[2][-1].kv.value == b"s3"
            finally:
                raw.close()
    run(main())


def test_a_fast_reader_replays_more_history_than_the_bounds_without_being_canceled(tmp_path):
    async def main():
        async with LocalCluster(tmp_path, n=1, fsync=False, watch_queue_bytes=256 * 1024) as c, \
                Client(c.endpoints) as cl:
            await c.leader()
            start = (await cl.put(b"x", b"")).header.revision + 1
            revs = [(await cl.put(b"h/%d" % i, b"v" * 64 * 1024)).header.revision for i in range(200)]
            got = []
            async for resp in cl.watch(b"h/", prefix=True, start_revision=start):
                got += [e.kv.mod_revision for e in resp.events]
                if len(got) >= len(revs):
                    break
            # 12.5 MiB, past the node's 256 KiB and the client's 8 MiB: paced, not canceled
            assert got == revs
    run(main())


def test_a_watch_the_hub_does_not_pace_is_canceled_alone_at_the_connection_bound(tmp_path):
    """The last resort: a sink whose watcher ignores the gate (as if the node did not pass it
    on) over a socket nobody reads. At the bound it is canceled with the reason and the
    revision to resume from, its queue released; the connection and its other watches go on."""
    bytes_bound, value_bytes = 256 * 1024, 64 * 1024

    async def main():
        async with LocalCluster(tmp_path, n=1, fsync=False, watch_queue_bytes=bytes_bound) as c, \
                Client(c.endpoints) as cl:
            await c.leader()
            raw = await RawWatcher().open(c.endpoints[0])
            try:
                server, big_id = await _two_watches(c, cl, raw)
                start = (await cl.put(b"start", b"")).header.revision + 1
                unpaced = _Watch(9, WatchGate(lambda: True))  # not given to the hub
                created = server.node.watch(lambda r: server.on_watch(unpaced, r), key=b"nogate",
                                            start_revision=start)
                server.watches[created.watch_id] = unpaced
                small_revs = [(await cl.put(b"small", b"s1")).header.revision]
                revs = []
                while created.watch_id in server.watches:
                    # (kernel socket buffers take a few MiB first; 64 MiB means no bound at all)
                    assert len(revs) < 1_000, "the unpaced watch was never canceled"
                    revs.append((await cl.put(b"nogate", b"x" * value_bytes)).header.revision)
                one_frame = value_bytes + 1024
                assert server.outbox.peak_bytes <= bytes_bound + 2 * one_frame
                assert len(server.outbox) <= 3  # released: only the others' and the cancel
                assert set(server.watches) == {big_id, *(w for w in server.watches if w != big_id)}
                assert len(server.watches) == 2 and not server.writer.is_closing()
                small_revs.append((await cl.put(b"small", b"s2")).header.revision)

                await raw.send(3, "status", None)
                await raw.read_until(lambda: 9 in raw.canceled and 3 in raw.replies
                                     and len(raw.events.get(2, ())) == 2)
                canceled = raw.canceled[9]
                assert "watcher could not keep up" in canceled.cancel_reason
                resume = canceled.revision + 1
                assert f"re-create it from revision {resume}" in canceled.cancel_reason
                assert resume in revs  # it missed some, and says from where
                assert [e.kv.mod_revision for e in raw.events[9]] == [r for r in revs if r < resume]
                assert [e.kv.mod_revision for e in raw.events[2]] == small_revs
                assert raw.replies[3][0] == "ok"
                await cl.put(b"small", b"s3")
                await raw.read_until(lambda: len(raw.events[2]) == 3)
            finally:
                raw.close()
    run(main())
