"""The space quota (etcd's --quota-backend-bytes) and the etcd Alarm API, on a real 3-member
cluster through raw etcd gRPC stubs.

The measured size is the store's estimated bytes (every version kept; Status.dbSize), which
compaction frees. Past the quota the leader raises NOSPACE through the log, so every member
refuses writes that add data with etcd's error, while reads, deletes and compaction go on;
Alarm DEACTIVATE clears it, and a write still past the quota raises it again."""

from __future__ import annotations

import time
from functools import partial

import grpc
import pytest

from etcd_cluster import BackgroundCluster
from shoal.etcdapi.pb import rpc_pb2, rpc_pb2_grpc
from shoal.server.health import unhealthy_reasons

QUOTA = 64 * 1024
NO_SPACE = "etcdserver: mvcc: database space exceeded"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = BackgroundCluster(tmp_path_factory.mktemp("quota"), fsync=False,
                          quota_backend_bytes=QUOTA).start()
    yield c
    c.stop()


def stubs(cluster, i: int):
    ch = grpc.insecure_channel(cluster.endpoints[i])
    return ch, rpc_pb2_grpc.KVStub(ch), rpc_pb2_grpc.MaintenanceStub(ch), rpc_pb2_grpc.ClusterStub(ch)


def refused(call) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value


def alarms(maint) -> list[tuple[int, int]]:
    return sorted((a.memberID, a.alarm) for a in maint.Alarm(rpc_pb2.AlarmRequest()).alarms)


def raised(maint, want: list[tuple[int, int]]) -> bool:
    """The leader proposes NOSPACE as it refuses the write: wait for the entry to apply."""
    end = time.monotonic() + 5
    while alarms(maint) != want:
        if time.monotonic() > end:
            return False
        time.sleep(0.02)
    return True


def test_past_the_quota_every_member_refuses_writes_until_space_is_freed_and_the_alarm_cleared(
        cluster):
    leader = cluster.leader()
    chans = [stubs(cluster, i) for i in range(3)]
    try:
        kv, maint = chans[1][1], chans[1][2]
        # Status names the leader by the id MemberList gives it, and reports the quota.
        members = {m.ID for m in chans[0][3].MemberList(rpc_pb2.MemberListRequest()).members}
        for _, _, mt, _ in chans:
            st = mt.Status(rpc_pb2.StatusRequest())
            assert st.leader == leader and st.leader in members and st.dbSizeQuota == QUOTA

        kv.Put(rpc_pb2.PutRequest(key=b"tiny0", value=b"0"))
        value = b"v" * 4000
        n = 0
        with pytest.raises(grpc.RpcError) as info:
            while n < 100:
                kv.Put(rpc_pb2.PutRequest(key=b"q/%03d" % n, value=value))
                n += 1
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert info.value.details() == NO_SPACE
        assert 5 < n < 100
        nospace = [(leader, rpc_pb2.NOSPACE)]
        for i, (_, k, mt, _) in enumerate(chans):
            # Raised cluster-wide: every member lists it and refuses even a tiny put.
            assert raised(mt, nospace)
            err = refused(partial(k.Put, rpc_pb2.PutRequest(key=b"tiny", value=b"1")))
            assert (err.code(), err.details()) == (grpc.StatusCode.RESOURCE_EXHAUSTED, NO_SPACE)
            err = refused(partial(rpc_pb2_grpc.LeaseStub(chans[i][0]).LeaseGrant,
                                  rpc_pb2.LeaseGrantRequest(TTL=60)))
            assert err.details() == NO_SPACE
            assert f"memberID:{leader} alarm:NOSPACE " in mt.Status(rpc_pb2.StatusRequest()).errors
            server = cluster.servers[i + 1]
            assert f"alarm NOSPACE raised for member {leader}" in unhealthy_reasons(
                server.node.status())
            # Reads are served.
            assert k.Range(rpc_pb2.RangeRequest(key=b"q/000")).kvs[0].value == value

        # Cleared while still past the quota: the next write that adds data raises it again.
        maint.Alarm(rpc_pb2.AlarmRequest(action=rpc_pb2.AlarmRequest.DEACTIVATE,
                                         memberID=leader, alarm=rpc_pb2.NOSPACE))
        assert alarms(maint) == []
        err = refused(lambda: kv.Put(rpc_pb2.PutRequest(key=b"more", value=value)))
        assert err.details() == NO_SPACE and raised(maint, nospace)

        # Deletes and compaction work under the alarm, and free the measured size.
        on_leader = chans[leader - 1][2]  # (Status is local: the leader has applied both)
        before = on_leader.Status(rpc_pb2.StatusRequest()).dbSize
        assert kv.DeleteRange(rpc_pb2.DeleteRangeRequest(key=b"q/", range_end=b"q0")).deleted == n
        # (Shoal keeps the versions at the compact revision itself, for watches from there:
        # one more revision lets compaction drop those tombstones too.)
        resp = kv.DeleteRange(rpc_pb2.DeleteRangeRequest(key=b"tiny0"))
        kv.Compact(rpc_pb2.CompactionRequest(revision=resp.header.revision, physical=True))
        assert on_leader.Status(rpc_pb2.StatusRequest()).dbSize < before // 4
        assert alarms(maint) == nospace  # freeing space does not clear it: the operator does
        # DEACTIVATE on a member that does not lead: forwarded, and it says what it cleared.
        follower = next(i for i in range(3) if i + 1 != leader)
        cleared = chans[follower][2].Alarm(rpc_pb2.AlarmRequest(
            action=rpc_pb2.AlarmRequest.DEACTIVATE, memberID=leader, alarm=rpc_pb2.NOSPACE))
        assert [(a.memberID, a.alarm) for a in cleared.alarms] == nospace
        for _, k, mt, _ in chans:
            assert alarms(mt) == []
            k.Put(rpc_pb2.PutRequest(key=b"after", value=b"1"))
        assert all(not unhealthy_reasons(s.node.status()) for s in cluster.servers.values())

        # ACTIVATE raises one by hand, for any member; GET filters by type.
        chans[0][2].Alarm(rpc_pb2.AlarmRequest(action=rpc_pb2.AlarmRequest.ACTIVATE,
                                               memberID=2, alarm=rpc_pb2.NOSPACE))
        assert alarms(chans[2][2]) == [(2, rpc_pb2.NOSPACE)]
        assert not chans[2][2].Alarm(rpc_pb2.AlarmRequest(alarm=rpc_pb2.CORRUPT)).alarms
        err = refused(lambda: kv.Put(rpc_pb2.PutRequest(key=b"x", value=b"1")))
        assert err.details() == NO_SPACE
        chans[2][2].Alarm(rpc_pb2.AlarmRequest(action=rpc_pb2.AlarmRequest.DEACTIVATE,
                                               memberID=2, alarm=rpc_pb2.NOSPACE))
        kv.Put(rpc_pb2.PutRequest(key=b"x", value=b"1"))
    finally:
        for ch, *_ in chans:
            ch.close()
