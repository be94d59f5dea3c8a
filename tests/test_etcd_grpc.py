"""The etcd API through independent clients: aetcd (asyncio, PyPI) through its public API,
raw gRPC stubs built from etcd's protos for the Lock and Election services, etcd's errors for
bad requests, auth, the JSON gateway, and TLS with client certificates."""

from __future__ import annotations

import asyncio
import base64
import json
import queue
import urllib.request

import aetcd
import aetcd.exceptions
import grpc
import pytest

from etcd_cluster import BackgroundCluster
from shoal.etcdapi.pb import (
    auth_pb2,
    rpc_pb2,
    rpc_pb2_grpc,
    v3election_pb2,
    v3election_pb2_grpc,
    v3lock_pb2,
    v3lock_pb2_grpc,
)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = BackgroundCluster(tmp_path_factory.mktemp("grpc"), fsync=False).start()
    yield c
    c.stop()


@pytest.fixture
def channel(cluster):
    with grpc.insecure_channel(cluster.endpoints[1]) as ch:  # a follower or the leader
        yield ch


def run(coro, timeout: float = 30):
    return asyncio.run(asyncio.wait_for(coro, timeout))


def aclient(cluster, i: int = 0, **kw) -> aetcd.Client:
    host, port = cluster.endpoints[i].split(":")
    return aetcd.Client(host, int(port), timeout=10, **kw)


# ---------------------------------------------------------------- aetcd


def test_aetcd_kv_txn_and_compaction(cluster):
    async def main():
        async with aclient(cluster, 2) as c:
            await c.put(b"ae/a", b"1")
            await c.put(b"ae/b", b"2")
            assert (await c.get(b"ae/a")).value == b"1"
            got = await c.get_prefix(b"ae/")
            assert [kv.key for kv in got] == [b"ae/a", b"ae/b"]
            ok, _ = await c.transaction(
                compare=[c.transactions.value(b"ae/a") == b"1"],
                success=[c.transactions.put(b"ae/a", b"tx")], failure=[])
            assert ok and (await c.get(b"ae/a")).value == b"tx"
            deleted = await c.delete_prefix(b"ae/")
            assert deleted.deleted == 2
            await c.put(b"ae/c", b"1")
            rev = (await c.put(b"ae/c", b"2")).header.revision
            await c.compact(rev)
            with pytest.raises(aetcd.exceptions.RevisionCompactedError):
                async for _ in await c.watch(b"ae/c", start_revision=rev - 1):
                    break

    run(main())


def test_aetcd_watch_sees_puts_and_deletes_in_order(cluster):
    async def main():
        async with aclient(cluster, 0) as watcher, aclient(cluster, 1) as writer:
            it = await watcher.watch_prefix(b"aw/", prev_kv=True)
            await asyncio.sleep(0.2)
            await writer.put(b"aw/x", b"1")
            await writer.put(b"aw/x", b"2")
            await writer.delete(b"aw/x")
            seen = []
            async for ev in it:
                seen.append((ev.kind, ev.kv.key, ev.kv.value, ev.prev_kv.value if ev.prev_kv else None))
                if len(seen) == 3:
                    break
            assert seen == [("PUT", b"aw/x", b"1", b""), ("PUT", b"aw/x", b"2", b"1"),
                            ("DELETE", b"aw/x", b"", b"2")]
            await it.cancel()

    run(main())


def test_aetcd_lease_ttl_refresh_revoke(cluster):
    async def main():
        async with aclient(cluster) as c:
            lease = await c.lease(20)
            await c.put(b"al/k", b"v", lease=lease)
            assert 0 < await lease.remaining_ttl() <= 20
            assert await lease.granted_ttl() == 20
            assert await lease.keys() == [b"al/k"]
            await lease.refresh()
            await lease.revoke()
            assert await c.get(b"al/k") is None
            # a short lease expires by itself, with its key
            short = await c.lease(1)  # raised to the minimum TTL
            await c.put(b"al/short", b"v", lease=short)
            assert await short.granted_ttl() >= 1

    run(main())


def test_aetcd_lock_serializes_holders(cluster):
    async def main():
        async with aclient(cluster, 0) as a, aclient(cluster, 2) as b:
            inside = 0
            peak = 0

            async def worker(c):
                nonlocal inside, peak
                for _ in range(3):
                    async with c.lock(b"alock", ttl=10):
                        inside += 1
                        peak = max(peak, inside)
                        await asyncio.sleep(0.02)
                        inside -= 1

            await asyncio.gather(worker(a), worker(b))
            assert peak == 1

    run(main())


# ---------------------------------------------------------------- raw gRPC


def test_every_response_has_a_full_header(cluster, channel):
    kv = rpc_pb2_grpc.KVStub(channel)
    resp = kv.Put(rpc_pb2.PutRequest(key=b"h/k", value=b"v"))
    h = resp.header
    node = cluster.servers[2].node
    assert (h.cluster_id, h.member_id) == (node.cluster_id, 2)
    assert h.revision >= 2 and h.raft_term >= 1
    st = rpc_pb2_grpc.MaintenanceStub(channel).Status(rpc_pb2.StatusRequest())
    assert st.header.member_id == 2 and st.leader == cluster.leader()


def test_malformed_and_unknown_requests_get_etcd_errors(cluster, channel):
    kv = rpc_pb2_grpc.KVStub(channel)
    cases = [
        (lambda: kv.Put(rpc_pb2.PutRequest(key=b"")), grpc.StatusCode.INVALID_ARGUMENT,
         "etcdserver: key is not provided"),
        (lambda: kv.Put(rpc_pb2.PutRequest(key=b"k", value=b"v", ignore_value=True)),
         grpc.StatusCode.INVALID_ARGUMENT, "etcdserver: value is provided"),
        (lambda: kv.Put(rpc_pb2.PutRequest(key=b"k", lease=123456)), grpc.StatusCode.NOT_FOUND,
         "etcdserver: requested lease not found"),
        (lambda: kv.Put(rpc_pb2.PutRequest(key=b"k", value=b"x" * (1536 * 1024 + 10))),
         grpc.StatusCode.INVALID_ARGUMENT, "etcdserver: request is too large"),
        (lambda: kv.Range(rpc_pb2.RangeRequest(key=b"k", revision=10**9)),
         grpc.StatusCode.OUT_OF_RANGE, "etcdserver: mvcc: required revision is a future revision"),
        (lambda: kv.Txn(rpc_pb2.TxnRequest(success=[
            rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=b"d", value=b"1")),
            rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=b"d", value=b"2"))])),
         grpc.StatusCode.INVALID_ARGUMENT, "etcdserver: duplicate key given in txn request"),
        (lambda: kv.Txn(rpc_pb2.TxnRequest(success=[
            rpc_pb2.RequestOp(request_range=rpc_pb2.RangeRequest(key=b"a"))] * 129)),
         grpc.StatusCode.INVALID_ARGUMENT, "etcdserver: too many operations in txn request"),
        (lambda: rpc_pb2_grpc.LeaseStub(channel).LeaseRevoke(rpc_pb2.LeaseRevokeRequest(ID=987)),
         grpc.StatusCode.NOT_FOUND, "etcdserver: requested lease not found"),
        (lambda: rpc_pb2_grpc.AuthStub(channel).Authenticate(
            rpc_pb2.AuthenticateRequest(name="x", password="y")),
         grpc.StatusCode.FAILED_PRECONDITION, "etcdserver: authentication is not enabled"),
        (lambda: rpc_pb2_grpc.ClusterStub(channel).MemberRemove(rpc_pb2.MemberRemoveRequest(ID=99)),
         grpc.StatusCode.NOT_FOUND, "etcdserver: member not found"),
    ]
    for call, code, message in cases:
        with pytest.raises(grpc.RpcError) as info:
            call()
        assert (info.value.code(), info.value.details()) == (code, message)
    # bytes that are not a protobuf message, and a method etcd has but we do not serve
    raw = channel.unary_unary("/etcdserverpb.KV/Range")
    with pytest.raises(grpc.RpcError) as info:
        raw(b"\xff\xff\xff")
    assert info.value.code() == grpc.StatusCode.INTERNAL  # grpc's own "failed to deserialize"
    with pytest.raises(grpc.RpcError) as info:
        rpc_pb2_grpc.MaintenanceStub(channel).Downgrade(rpc_pb2.DowngradeRequest())
    assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert kv.Range(rpc_pb2.RangeRequest(key=b"k")).header.revision > 0  # still serving


def test_watch_stream_several_watches_cancel_progress_filters(cluster, channel):
    kv = rpc_pb2_grpc.KVStub(channel)
    start = kv.Put(rpc_pb2.PutRequest(key=b"ws/a", value=b"0")).header.revision
    q: queue.Queue = queue.Queue()

    def gen():
        while True:
            item = q.get()
            if item is None:
                return
            yield item

    stream = rpc_pb2_grpc.WatchStub(channel).Watch(gen())
    q.put(rpc_pb2.WatchRequest(create_request=rpc_pb2.WatchCreateRequest(
        key=b"ws/a", start_revision=start)))
    q.put(rpc_pb2.WatchRequest(create_request=rpc_pb2.WatchCreateRequest(
        key=b"ws/", range_end=b"ws0", filters=[rpc_pb2.WatchCreateRequest.NOPUT], watch_id=7)))
    created = [next(stream), next(stream)]
    ids = set()
    for r in created:
        if r.created:
            ids.add(r.watch_id)
    history = [r for r in created if r.events]
    while len(ids) < 2:
        r = next(stream)
        if r.created:
            ids.add(r.watch_id)
        else:
            history.append(r)
    assert 7 in ids
    if not history:
        history.append(next(stream))
    assert history[0].events[0].kv.value == b"0"  # replayed from the start revision
    kv.Put(rpc_pb2.PutRequest(key=b"ws/a", value=b"1"))
    kv.DeleteRange(rpc_pb2.DeleteRangeRequest(key=b"ws/a"))
    got = {}
    while len(got) < 2 or sum(len(v) for v in got.values()) < 3:
        r = next(stream)
        got.setdefault(r.watch_id, []).extend((e.type, e.kv.key) for e in r.events)
    other = next(i for i in ids if i != 7)
    assert got[other] == [(0, b"ws/a"), (1, b"ws/a")]
    assert got[7] == [(1, b"ws/a")]  # NOPUT
    q.put(rpc_pb2.WatchRequest(progress_request=rpc_pb2.WatchProgressRequest()))
    r = next(stream)
    assert r.watch_id == -1 and r.header.revision >= start + 2
    q.put(rpc_pb2.WatchRequest(cancel_request=rpc_pb2.WatchCancelRequest(watch_id=7)))
    r = next(stream)
    assert r.canceled and r.watch_id == 7
    for _ in range(2):
        q.put(rpc_pb2.WatchRequest(create_request=rpc_pb2.WatchCreateRequest(key=b"x", watch_id=5)))
    r = next(stream)
    assert r.created and r.watch_id == 5 and not r.canceled
    r = next(stream)
    assert r.canceled and "duplicate watch ID" in r.cancel_reason
    q.put(None)
    stream.cancel()


def test_lock_and_election_services(cluster, channel):
    lease_stub = rpc_pb2_grpc.LeaseStub(channel)
    lock = v3lock_pb2_grpc.LockStub(channel)
    l1 = lease_stub.LeaseGrant(rpc_pb2.LeaseGrantRequest(TTL=30)).ID
    l2 = lease_stub.LeaseGrant(rpc_pb2.LeaseGrantRequest(TTL=30)).ID
    held = lock.Lock(v3lock_pb2.LockRequest(name=b"svc-lock", lease=l1))
    assert held.key.startswith(b"svc-lock/")
    second = lock.Lock.future(v3lock_pb2.LockRequest(name=b"svc-lock", lease=l2))
    with pytest.raises(grpc.FutureTimeoutError):
        second.result(timeout=0.5)
    lock.Unlock(v3lock_pb2.UnlockRequest(key=held.key))
    assert second.result(timeout=10).key != held.key
    with pytest.raises(grpc.RpcError) as info:
        lock.Lock(v3lock_pb2.LockRequest(name=b"svc-lock2", lease=424242))
    assert info.value.details() == "etcdserver: requested lease not found"

    el = v3election_pb2_grpc.ElectionStub(channel)
    lead = el.Campaign(v3election_pb2.CampaignRequest(name=b"svc-el", lease=l1, value=b"one")).leader
    assert el.Leader(v3election_pb2.LeaderRequest(name=b"svc-el")).kv.value == b"one"
    observe = el.Observe(v3election_pb2.LeaderRequest(name=b"svc-el"))
    assert next(observe).kv.value == b"one"
    el.Proclaim(v3election_pb2.ProclaimRequest(leader=lead, value=b"two"))
    assert next(observe).kv.value == b"two"
    follower = el.Campaign.future(v3election_pb2.CampaignRequest(name=b"svc-el", lease=l2, value=b"b"))
    with pytest.raises(grpc.FutureTimeoutError):
        follower.result(timeout=0.5)
    el.Resign(v3election_pb2.ResignRequest(leader=lead))
    assert follower.result(timeout=10).leader.lease == l2
    assert next(observe).kv.value == b"b"
    observe.cancel()
    with pytest.raises(grpc.RpcError) as info:
        el.Proclaim(v3election_pb2.ProclaimRequest(leader=lead, value=b"stale"))
    assert info.value.details() == "election: not leader"


def test_cluster_member_update_promote_and_move_leader(cluster, channel):
    cl = rpc_pb2_grpc.ClusterStub(channel)
    added = cl.MemberAdd(rpc_pb2.MemberAddRequest(
        peerURLs=["http://127.0.0.1:9?client=127.0.0.1:10"], isLearner=True))
    new = added.member.ID
    assert added.member.isLearner and added.member.peerURLs == ["http://127.0.0.1:9"]
    upd = cl.MemberUpdate(rpc_pb2.MemberUpdateRequest(ID=new, peerURLs=["http://127.0.0.1:11"]))
    assert next(m for m in upd.members if m.ID == new).peerURLs == ["http://127.0.0.1:11"]
    with pytest.raises(grpc.RpcError) as info:
        cl.MemberPromote(rpc_pb2.MemberPromoteRequest(ID=1))
    assert info.value.details() == "etcdserver: can only promote a learner member"
    # a learner that never started has acknowledged nothing: it is not in sync, so not promoted
    with pytest.raises(grpc.RpcError) as info:
        cl.MemberPromote(rpc_pb2.MemberPromoteRequest(ID=new))
    assert info.value.details() == "etcdserver: can only promote a learner member which is in sync with leader"
    cl.MemberRemove(rpc_pb2.MemberRemoveRequest(ID=new))
    assert len(cl.MemberList(rpc_pb2.MemberListRequest(linearizable=True)).members) == 3

    leader = cluster.leader()
    target = next(i for i in (1, 2, 3) if i != leader)
    with grpc.insecure_channel(cluster.endpoints[leader - 1]) as lch:
        rpc_pb2_grpc.MaintenanceStub(lch).MoveLeader(rpc_pb2.MoveLeaderRequest(targetID=target))
    assert cluster.leader() == target
    mt = rpc_pb2_grpc.MaintenanceStub(channel)
    assert mt.Defragment(rpc_pb2.DefragmentRequest()).header.member_id == 2
    assert list(mt.Alarm(rpc_pb2.AlarmRequest()).alarms) == []
    hashes = set()
    for ep in cluster.endpoints:
        with grpc.insecure_channel(ep) as ch:
            rev = rpc_pb2_grpc.KVStub(ch).Range(rpc_pb2.RangeRequest(key=b"x")).header.revision
            hashes.add(rpc_pb2_grpc.MaintenanceStub(ch).HashKV(
                rpc_pb2.HashKVRequest(revision=rev - 1)).hash)
    assert len(hashes) == 1


def test_json_gateway(cluster):
    base = f"http://127.0.0.1:{cluster.etcd_ports[1]}"  # the gRPC port serves it too, as etcd's

    def post(path, body, token=None):
        req = urllib.request.Request(base + path, json.dumps(body).encode(),
                                     {"Content-Type": "application/json"})
        if token:
            req.add_header("Authorization", token)
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    b64 = lambda s: base64.b64encode(s).decode()  # noqa: E731
    status, out = post("/v3/kv/put", {"key": b64(b"gw/k"), "value": b64(b"hello")})
    assert status == 200 and int(out["header"]["revision"]) > 1
    status, out = post("/v3/kv/range", {"key": b64(b"gw/k")})
    assert base64.b64decode(out["kvs"][0]["value"]) == b"hello" and out["count"] == "1"
    status, out = post("/v3/lease/grant", {"TTL": 30})
    lease = out["ID"]
    status, out = post("/v3/lease/timetolive", {"ID": lease})
    assert out["grantedTTL"] == "30"
    status, out = post("/v3/kv/range", {"key": b64(b"k"), "revision": 10**9})
    assert status == 400 and out["message"] == "etcdserver: mvcc: required revision is a future revision"
    status, out = post("/v3/kv/put", {"key": 5})
    assert status == 400
    # the watch stream: one create request, then a JSON object per line
    req = urllib.request.Request(base + "/v3/watch", json.dumps(
        {"create_request": {"key": b64(b"gw/w")}}).encode())
    with urllib.request.urlopen(req, timeout=10) as stream:
        assert json.loads(stream.readline())["result"]["created"] is True
        post("/v3/kv/put", {"key": b64(b"gw/w"), "value": b64(b"seen")})
        event = json.loads(stream.readline())["result"]["events"][0]
        assert base64.b64decode(event["kv"]["value"]) == b"seen"
    req = urllib.request.Request(base + "/v3/lease/keepalive", json.dumps({"ID": lease}).encode())
    with urllib.request.urlopen(req, timeout=10) as stream:
        assert json.loads(stream.readline())["result"]["TTL"] == "30"


def test_auth_users_roles_permissions_and_tokens(cluster, channel):
    auth = rpc_pb2_grpc.AuthStub(channel)
    kv = rpc_pb2_grpc.KVStub(channel)
    auth.UserAdd(rpc_pb2.AuthUserAddRequest(name="root", password="rootpw"))
    auth.RoleAdd(rpc_pb2.AuthRoleAddRequest(name="root"))
    auth.UserGrantRole(rpc_pb2.AuthUserGrantRoleRequest(user="root", role="root"))
    auth.UserAdd(rpc_pb2.AuthUserAddRequest(name="alice", password="alicepw"))
    auth.RoleAdd(rpc_pb2.AuthRoleAddRequest(name="app"))
    auth.RoleGrantPermission(rpc_pb2.AuthRoleGrantPermissionRequest(name="app", perm=auth_pb2.Permission(
        permType=auth_pb2.Permission.READWRITE, key=b"app/", range_end=b"app0")))
    auth.UserGrantRole(rpc_pb2.AuthUserGrantRoleRequest(user="alice", role="app"))
    auth.AuthEnable(rpc_pb2.AuthEnableRequest())
    try:
        with pytest.raises(grpc.RpcError) as info:
            kv.Put(rpc_pb2.PutRequest(key=b"app/x", value=b"1"))
        assert info.value.details() == "etcdserver: user name is empty"
        with pytest.raises(grpc.RpcError) as info:
            auth.Authenticate(rpc_pb2.AuthenticateRequest(name="alice", password="wrong"))
        assert (info.value.code(), info.value.details()) == (
            grpc.StatusCode.INVALID_ARGUMENT,
            "etcdserver: authentication failed, invalid user ID or password")
        token = auth.Authenticate(rpc_pb2.AuthenticateRequest(name="alice", password="alicepw")).token
        md = [("token", token)]
        kv.Put(rpc_pb2.PutRequest(key=b"app/x", value=b"1"), metadata=md)
        with pytest.raises(grpc.RpcError) as info:
            kv.Put(rpc_pb2.PutRequest(key=b"other", value=b"1"), metadata=md)
        assert (info.value.code(), info.value.details()) == (
            grpc.StatusCode.PERMISSION_DENIED, "etcdserver: permission denied")
        with pytest.raises(grpc.RpcError):
            kv.Range(rpc_pb2.RangeRequest(key=b"\0", range_end=b"\0"), metadata=md)
        with pytest.raises(grpc.RpcError) as info:
            kv.Range(rpc_pb2.RangeRequest(key=b"app/x"), metadata=[("token", token + "x")])
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
        # a token issued by one member works on another
        with grpc.insecure_channel(cluster.endpoints[0]) as other:
            got = rpc_pb2_grpc.KVStub(other).Range(rpc_pb2.RangeRequest(key=b"app/x"), metadata=md)
            assert got.kvs[0].value == b"1"

        async def with_aetcd():
            async with aclient(cluster, 2, username="alice", password="alicepw") as c:
                await c.put(b"app/y", b"2")
                assert (await c.get(b"app/y")).value == b"2"

        run(with_aetcd())
        root = auth.Authenticate(rpc_pb2.AuthenticateRequest(name="root", password="rootpw")).token
        everything = kv.Range(rpc_pb2.RangeRequest(key=b"\0", range_end=b"\0"),
                              metadata=[("token", root)])
        assert all(not k.key.startswith(b"\xff") for k in everything.kvs)  # auth state hidden
        auth.AuthDisable(rpc_pb2.AuthDisableRequest(), metadata=[("token", root)])
    finally:
        pass
    kv.Put(rpc_pb2.PutRequest(key=b"other", value=b"open again"))
