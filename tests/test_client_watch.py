"""What the client's watch iterator does with a canceled watch: a node that replaced its store
is followed by a re-created watch from the next revision; a watcher that could not keep up
ends with WatchCanceled naming the revision to resume from, and is not re-created (a slow
consumer would be canceled again, forever); leaving the loop cancels the watch on the server.
A scripted node on loopback plays the server side, and the blocking client is checked against
a real node."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from cluster import eventually, run
from etcd_cluster import BackgroundCluster
from shoal.client import Client, SyncClient
from shoal.client.errors import WatchCanceled
from shoal.kv import Event, EventType, KeyValue
from shoal.kv.watch import STORE_REPLACED, WatchResponse
from shoal.kv.watch_queue import slow_watcher_reason
from shoal.server.client_api import encode_watch
from shoal.wire.protocol import frame, read_frame


def put(rev: int) -> Event:
    return Event(EventType.PUT, KeyValue(b"k", rev, rev, 1, b"%d" % rev))


class ScriptedNode:
    """Answers each watch request with created, then what `script(n, watch_id, start)` gives."""

    def __init__(self, script):
        self.script, self.requests = script, []

    async def __aenter__(self):
        self.server = await asyncio.start_server(self.serve, "127.0.0.1", 0)
        self.endpoint = f"127.0.0.1:{self.server.sockets[0].getsockname()[1]}"
        return self

    async def __aexit__(self, *exc):
        self.server.close()

    async def serve(self, reader, writer):
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            await self._serve(reader, writer)

    async def _serve(self, reader, writer):
        while (msg := await read_frame(reader, 1 << 20)) is not None:
            rid, op, body = msg
            self.requests.append((op, body))
            if op != "watch":
                writer.write(frame([rid, "ok", None]))
                continue
            n = sum(1 for o, _ in self.requests if o == "watch")
            watch_id, start = 100 + n, body["start_revision"]
            writer.write(frame([rid, "ok", encode_watch(WatchResponse(watch_id, start - 1, created=True))]))
            for resp in self.script(n, watch_id, start):
                writer.write(frame([rid, "event", encode_watch(resp)]))

    def watches(self):
        return [body for op, body in self.requests if op == "watch"]


def test_a_store_replaced_by_a_snapshot_is_resumed_from_the_next_revision():
    def script(n, watch_id, start):
        if n == 1:
            return [WatchResponse(watch_id, 5, (put(5),)),
                    WatchResponse(watch_id, 0, canceled=True, cancel_reason=STORE_REPLACED)]
        return [WatchResponse(watch_id, 6, (put(start),))]

    async def main():
        async with ScriptedNode(script) as node, Client(node.endpoint) as cl:
            got = []
            async for resp in cl.watch(b"k", start_revision=5):
                got += [e.kv.mod_revision for e in resp.events]
                if len(got) == 2:
                    break
            assert got == [5, 6]
            assert [w["start_revision"] for w in node.watches()] == [5, 6]
    run(main())


def test_a_watcher_that_could_not_keep_up_ends_with_the_revision_to_resume_from():
    reason = slow_watcher_reason(10_000, 8 * 1024 * 1024, 6)

    def script(n, watch_id, start):
        return [WatchResponse(watch_id, 5, (put(5),)),
                WatchResponse(watch_id, 5, canceled=True, cancel_reason=reason)]

    async def main():
        async with ScriptedNode(script) as node, Client(node.endpoint) as cl:
            got = []
            with pytest.raises(WatchCanceled) as info:
                async for resp in cl.watch(b"k", start_revision=5):
                    got += [e.kv.mod_revision for e in resp.events]
            assert got == [5]
            assert info.value.resume_revision == 6 and info.value.reason == reason
            assert "re-create it from revision 6" in str(info.value)
            assert len(node.watches()) == 1  # not re-created behind the consumer's back
    run(main())


def test_leaving_the_loop_cancels_the_watch_on_the_server():
    def script(n, watch_id, start):
        return [WatchResponse(watch_id, 5, (put(5),))]

    async def main():
        async with ScriptedNode(script) as node, Client(node.endpoint) as cl:
            stream = cl.watch(b"k", start_revision=5)
            async for _ in stream:
                break
            await stream.aclose()
            await eventually(lambda: ("watch_cancel", 101) in node.requests, what="watch_cancel sent")
            assert not next(iter(cl._conns.values())).streams
    run(main())


def test_the_blocking_client_raises_it_too(tmp_path):
    c = BackgroundCluster(tmp_path, n=1, fsync=False).start()
    try:
        endpoint = "{}:{}".format(*c.members[0].client)
        with SyncClient(endpoint, watch_queue_events=5) as cl:
            start = cl.put(b"k", b"start").header.revision + 1
            stream = cl.watch(b"k", start_revision=start)
            cl.put(b"k", b"0")
            assert next(stream).events[0].kv.value == b"0"
            for i in range(1, 20):  # the consumer stops reading: the client's inbox overflows
                cl.put(b"k", b"%d" % i)
            with pytest.raises(WatchCanceled) as info:
                while True:
                    next(stream)
            assert info.value.resume_revision == start + 1  # the first one it did not take
            assert "could not keep up" in info.value.reason
    finally:
        c.stop()
