"""etcd's Watch stream keeps bounded queues. A gRPC client that stops reading its stream has
its watches held back (one response each in the stream's queue, the rest in the hub, bounded)
and loses nothing when it reads again; a history replay longer than the bounds is paced, not
canceled; and the last resort, a watch the hub does not pace, is canceled alone at the bound
with canceled=true and a cancel_reason naming the revision to re-create it from."""

from __future__ import annotations

import asyncio
import queue
from types import SimpleNamespace

import grpc
import pytest

from etcd_cluster import BackgroundCluster
from shoal.etcdapi.api import WatchStream
from shoal.etcdapi.pb import rpc_pb2, rpc_pb2_grpc
from shoal.kv import Event, EventType, KeyValue
from shoal.kv.watch import WatchResponse
from shoal.server.config import NodeConfig

BYTES_BOUND = 256 * 1024
VALUE_BYTES = 64 * 1024


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = BackgroundCluster(tmp_path_factory.mktemp("watch-bounds"), n=1, fsync=False,
                          watch_queue_bytes=BYTES_BOUND).start()
    yield c
    c.stop()


def _stream(cluster):
    async def look():
        (stream,) = cluster.etcd[1].api.watch_streams
        return stream
    return cluster.run(look())


class Watches:
    """A Watch RPC through grpc's blocking stub, fed from a queue; read only when asked."""

    def __init__(self, channel):
        self.requests: queue.Queue = queue.Queue()

        def gen():
            while (item := self.requests.get()) is not None:
                yield item

        self.responses = rpc_pb2_grpc.WatchStub(channel).Watch(gen())

    def create(self, **kw):
        self.requests.put(rpc_pb2.WatchRequest(create_request=rpc_pb2.WatchCreateRequest(**kw)))

    def close(self):
        self.requests.put(None)
        self.responses.cancel()


def test_a_stream_that_is_not_read_holds_its_watches_back_bounded_and_loses_nothing(cluster):
    puts = 250  # 16 MiB: several times what gRPC's window and the socket buffers take
    with grpc.insecure_channel(cluster.endpoints[0]) as ch:
        kv = rpc_pb2_grpc.KVStub(ch)
        start = kv.Put(rpc_pb2.PutRequest(key=b"start", value=b"")).header.revision + 1
        w = Watches(ch)
        try:
            w.create(key=b"big", start_revision=start, watch_id=1)
            w.create(key=b"small", start_revision=start, watch_id=2)
            assert {next(w.responses).watch_id, next(w.responses).watch_id} == {1, 2}
            small_revs = [kv.Put(rpc_pb2.PutRequest(key=b"small", value=b"s1")).header.revision]
            big_revs = [kv.Put(rpc_pb2.PutRequest(key=b"big", value=b"x" * VALUE_BYTES)).header.revision
                        for _ in range(puts)]
            small_revs.append(kv.Put(rpc_pb2.PutRequest(key=b"small", value=b"s2")).header.revision)
            stream = _stream(cluster)
            assert 1 in stream._held  # the hub is holding it back for the stream
            assert stream.out.peak_bytes <= 2 * (VALUE_BYTES + 1024)  # one response per watch
            assert set(stream.hub_ids) == {1, 2}

            big, small = [], []
            while len(big) < puts or len(small) < 2:
                r = next(w.responses)
                assert not r.canceled, r.cancel_reason
                (big if r.watch_id == 1 else small).extend(r.events)
            assert [e.kv.mod_revision for e in big] == big_revs
            assert [(e.kv.value, e.kv.mod_revision) for e in small] == list(zip([b"s1", b"s2"], small_revs, strict=True))
            kv.Put(rpc_pb2.PutRequest(key=b"small", value=b"s3"))
            assert next(w.responses).events[0].kv.value == b"s3"  # live events flow as before
        finally:
            w.close()


def test_a_replay_longer_than_the_bounds_is_paced_not_canceled(cluster):
    with grpc.insecure_channel(cluster.endpoints[0]) as ch:
        kv = rpc_pb2_grpc.KVStub(ch)
        revs = [kv.Put(rpc_pb2.PutRequest(key=b"replay/%d" % i, value=b"v" * VALUE_BYTES)).header.revision
                for i in range(200)]  # 12.5 MiB of history, 50 times the bound
        w = Watches(ch)
        try:
            w.create(key=b"replay/", range_end=b"replay0", start_revision=revs[0])
            assert next(w.responses).created
            got = []
            while len(got) < len(revs):
                r = next(w.responses)
                assert not r.canceled, r.cancel_reason
                got += [e.kv.mod_revision for e in r.events]
            assert got == revs
        finally:
            w.close()


# ---------------------------------------------------------------- the last resort, in-process


class UnpacedNode:
    """A node whose watches ignore the gate: every response goes to the sink at once."""

    def __init__(self, cfg: NodeConfig):
        self.cfg, self.sinks, self.canceled = cfg, {}, []

    def watch(self, sink, **kw):
        watch_id = len(self.sinks) + 100
        self.sinks[watch_id] = sink
        return WatchResponse(watch_id, 1, created=True)

    def cancel_watch(self, watch_id):
        self.canceled.append(watch_id)
        self.sinks.pop(watch_id, None)


def test_a_watch_the_hub_does_not_pace_is_canceled_alone_at_the_stream_bound(tmp_path):
    async def main():
        cfg = NodeConfig(id=1, data_dir=tmp_path, members=(), watch_queue_events=50,
                         watch_queue_bytes=BYTES_BOUND)
        node = UnpacedNode(cfg)
        api = SimpleNamespace(node=node, header=lambda rev=None: rpc_pb2.ResponseHeader(revision=rev or 0),
                              auth=SimpleNamespace(check=lambda *a, **k: None))
        stream = WatchStream(api, None)
        for sid, key in ((1, b"busy"), (2, b"quiet")):
            stream.handle(rpc_pb2.WatchRequest(create_request=rpc_pb2.WatchCreateRequest(key=key, watch_id=sid)))
        busy, quiet = sorted(node.sinks)

        def event(key, rev):
            return (Event(EventType.PUT, KeyValue(key, rev, rev, 1, b"x" * 1000)),)

        node.sinks[quiet](WatchResponse(quiet, 2, event(b"quiet", 2)))
        rev = 3
        while busy in node.sinks:  # nobody reads the stream
            assert rev < 1_000, "never canceled"
            node.sinks[busy](WatchResponse(busy, rev, event(b"busy", rev)))
            assert stream.out.pending(1)[0] <= 50
            rev += 1
        assert node.canceled == [busy] and set(stream.hub_ids) == {2}
        assert stream.out.pending(1) == (0, 0)  # released
        node.sinks[quiet](WatchResponse(quiet, rev, event(b"quiet", rev)))

        out = [await stream.get() for _ in range(len(stream.out))]
        assert [r.watch_id for r in out if r.created] == [1, 2]
        (cancel,) = [r for r in out if r.canceled]
        assert cancel.watch_id == 1
        assert cancel.cancel_reason.startswith("watcher could not keep up: 50 events (")
        assert cancel.cancel_reason.endswith(" MiB) pending; re-create it from revision 3")
        assert [e.kv.mod_revision for r in out if r.watch_id == 2 for e in r.events] == [2, rev]
        assert not [r for r in out if r.watch_id == 1 and r.events]  # its queue was dropped
        stream.close()
    asyncio.run(main())
