"""One permission model on every port (issue 10, findings 1 and 5): etcd's users, roles and
key-range permissions bind Shoal's own client port too, no client on any port reaches the
reserved keyspace (the auth state with its signing secret, the group directory), and the client
port bounds idle and per-address connections with etcd's error when it must refuse."""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
import urllib.error
import urllib.request

import grpc
import pytest

from cluster import eventually, holds_for
from etcd_cluster import BackgroundCluster
from shoal.auth import AUTH_KEY, RESERVED_START
from shoal.client import Client, PermissionDenied, Unavailable
from shoal.client.tls import client_context
from shoal.etcdapi import TLSFiles
from shoal.etcdapi.pb import auth_pb2, rpc_pb2, rpc_pb2_grpc
from shoal.kv.requests import (
    Compare,
    CompareResult,
    CompareTarget,
    LeaseExpireRequest,
    PutRequest,
    RangeRequest,
    encode_command,
)
from shoal.replica.directory import PREFIX as DIRECTORY
from shoal.wire.protocol import frame
from test_net import make_pki


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = BackgroundCluster(tmp_path_factory.mktemp("auth"), fsync=False,
                          max_connections_per_address=40)
    c.start()
    yield c
    c.stop()


def shoal_endpoints(cluster) -> list[str]:
    return [f"{m.client[0]}:{m.client[1]}" for m in cluster.members]


def run(cluster, body, **kw):
    async def main():
        async with Client(shoal_endpoints(cluster), timeout=10, **kw) as c:
            return await body(c)
    return asyncio.run(asyncio.wait_for(main(), 60))


def test_the_reserved_keyspace_is_out_of_every_clients_reach(cluster):
    async def body(c: Client):
        await c.create_group(7, replicas=1)  # a directory entry in the reserved keyspace
        await c.put(b"plain", b"1")
        everything = await c.get(b"\0", range_end=b"\0")
        assert [kv.key for kv in everything.kvs] == [b"plain"] and everything.count == 1
        assert (await c.get(RESERVED_START, prefix=True)).count == 0
        limited = await c.get(b"\0", range_end=b"\0", limit=1)
        assert [kv.key for kv in limited.kvs] == [b"plain"] and not limited.more
        with pytest.raises(PermissionDenied, match="permission denied"):
            await c.put(DIRECTORY + b"0000000009", b"forged")
        with pytest.raises(PermissionDenied):
            await c.txn([Compare(AUTH_KEY, CompareTarget.VERSION, CompareResult.EQUAL, 0)],
                        [PutRequest(b"x", b"1")])
        with pytest.raises(PermissionDenied):
            await c.call("watch", {"key": AUTH_KEY})
        # a delete of everything deletes every user key and no reserved one
        assert (await c.delete(b"\0", range_end=b"\0")).deleted == 1
        assert 7 in await c.groups()
        # lease expiry is the leader's to propose, never a client's
        with pytest.raises(PermissionDenied):
            await c.call("kv", {"cmd": encode_command(LeaseExpireRequest(1, 0))})
        await c.remove_group(7)
    run(cluster, body)
    with grpc.insecure_channel(cluster.endpoints[0]) as ch:  # etcd's API hides it too
        got = rpc_pb2_grpc.KVStub(ch).Range(rpc_pb2.RangeRequest(key=b"\0", range_end=b"\0"))
        assert all(not kv.key.startswith(b"\xff\xfe/shoal/") for kv in got.kvs)


def test_etcd_users_and_roles_bind_the_shoal_client_port(cluster):
    with grpc.insecure_channel(cluster.endpoints[1]) as ch:
        auth = rpc_pb2_grpc.AuthStub(ch)
        auth.UserAdd(rpc_pb2.AuthUserAddRequest(name="root", password="rootpw"))
        auth.UserGrantRole(rpc_pb2.AuthUserGrantRoleRequest(user="root", role="root"))
        auth.UserAdd(rpc_pb2.AuthUserAddRequest(name="bob", password="bobpw"))
        auth.RoleAdd(rpc_pb2.AuthRoleAddRequest(name="b"))
        auth.RoleGrantPermission(rpc_pb2.AuthRoleGrantPermissionRequest(name="b", perm=auth_pb2.Permission(
            permType=auth_pb2.Permission.READWRITE, key=b"b/", range_end=b"b0")))
        auth.UserGrantRole(rpc_pb2.AuthUserGrantRoleRequest(user="bob", role="b"))
        auth.AuthEnable(rpc_pb2.AuthEnableRequest())
        root = auth.Authenticate(rpc_pb2.AuthenticateRequest(name="root", password="rootpw")).token
        try:
            async def anonymous(c: Client):
                with pytest.raises(PermissionDenied, match="user name is empty"):
                    await c.put(b"b/x", b"1")
                with pytest.raises(PermissionDenied, match="user name is empty"):
                    await c.get(b"b/x")
                with pytest.raises(PermissionDenied, match="invalid auth token"):
                    await c.call("kv", {"cmd": encode_command(RangeRequest(b"b/x"))},
                                 token="Ym9i.9999999999.forged")
            run(cluster, anonymous)

            async def bob(c: Client):
                await c.put(b"b/x", b"1")
                assert (await c.get(b"b/x")).kvs[0].value == b"1"
                with pytest.raises(PermissionDenied, match="permission denied"):
                    await c.put(b"other", b"1")
                with pytest.raises(PermissionDenied, match="permission denied"):
                    await c.get(b"\0", range_end=b"\0")
                with pytest.raises(PermissionDenied):
                    await c.call("watch", {"key": b"other"})
                for admin_only in (c.create_group(8), c.snapshot(), c.member_remove(3)):
                    with pytest.raises(PermissionDenied, match="permission denied"):
                        await admin_only
            run(cluster, bob, user="bob", password="bobpw")

            with pytest.raises(PermissionDenied, match="authentication failed"):
                run(cluster, lambda c: c.get(b"b/x"), user="bob", password="wrong")

            async def as_root(c: Client):
                everything = await c.get(b"\0", range_end=b"\0")
                assert all(not kv.key.startswith(RESERVED_START) for kv in everything.kvs)
                # not even root writes the auth state by hand (that is how auth was turned off)
                with pytest.raises(PermissionDenied):
                    await c.put(AUTH_KEY, json.dumps({"enabled": False}).encode())
                index, data = await c.snapshot()
                assert index > 0 and data
            run(cluster, as_root, user="root", password="rootpw")
        finally:
            auth.AuthDisable(rpc_pb2.AuthDisableRequest(), metadata=[("token", root)])
    run(cluster, lambda c: c.put(b"open", b"again"))


def test_connections_are_bounded_per_address_and_refused_with_etcds_error(cluster):
    leader = cluster.leader()
    follower = next(m.id for m in cluster.members if m.id != leader)
    host, port = next(m.client for m in cluster.members if m.id == leader)
    etcd = cluster.etcd[follower]
    cluster.run(etcd.api.backend.close())  # its next forward needs a new connection
    held = []
    try:
        for _ in range(40):  # every connection 127.0.0.1 may have
            s = socket.create_connection((host, port))
            s.sendall(frame([1, "status", None]))  # past the first-request timeout's reach
            held.append(s)
        extra = socket.create_connection((host, port))
        extra.settimeout(5)
        refusal = extra.recv(4096)
        assert b"too_many_requests" in refusal and b"per address" in refusal
        extra.close()
        # an etcd write through a follower, forwarded to the leader's client port, fails
        # with etcd's error for it, not an internal error
        with grpc.insecure_channel(cluster.endpoints[follower - 1]) as ch:
            with pytest.raises(grpc.RpcError) as info:
                rpc_pb2_grpc.KVStub(ch).Put(rpc_pb2.PutRequest(key=b"f", value=b"1"), timeout=10)
            assert info.value.details() == "etcdserver: too many requests"
    finally:
        for s in held:
            s.close()
    with grpc.insecure_channel(cluster.endpoints[follower - 1]) as ch:
        assert rpc_pb2_grpc.KVStub(ch).Put(rpc_pb2.PutRequest(key=b"f", value=b"1"),
                                           timeout=10).header.revision > 0


@pytest.fixture(scope="module")
def impatient(tmp_path_factory):
    c = BackgroundCluster(tmp_path_factory.mktemp("idle"), n=1, fsync=False,
                          client_idle_timeout_s=0.5)
    c.start()
    yield c
    c.stop()


def test_idle_client_connections_are_closed_and_watching_ones_are_not(impatient):
    host, port = impatient.members[0].client
    silent = socket.create_connection((host, port))
    silent.settimeout(10)
    assert silent.recv(1) == b""  # closed by the node: never sent a request

    async def main():
        async with Client([f"{host}:{port}"], timeout=10) as c:
            stream = c.watch(b"w")
            first = asyncio.ensure_future(stream.__anext__())
            await eventually(lambda: any(conn.streams for conn in c._conns.values()),
                             what="the watch is created")
            conn = next(iter(c._conns.values()))
            # silent three times longer than the idle timeout, but watching: it must stay
            await holds_for(lambda: conn.alive, 1.5, "the watching connection")
            await c.put(b"w", b"seen")
            resp = await asyncio.wait_for(first, 5)
            assert resp.events[0].kv.value == b"seen"
    asyncio.run(main())
    silent.close()


def test_client_port_speaks_tls_and_a_client_certificate_names_its_user(tmp_path):
    pki = make_pki(tmp_path, "ca", {"node": 1, "carol": None, "admin": None})
    node, ca = pki["node"], pki["node"].ca_file
    c = BackgroundCluster(tmp_path / "d", n=1, fsync=False, tls_cert=node.cert_file,
                          tls_key=node.key_file, tls_ca=ca,
                          tls=TLSFiles(node.cert_file, node.key_file, ca)).start()
    try:
        endpoint = [f"{c.members[0].client[0]}:{c.members[0].client[1]}"]

        async def plaintext():
            async with Client(endpoint, timeout=2) as client:
                await client.get(b"k")
        with pytest.raises(Unavailable):
            asyncio.run(plaintext())

        def as_user(name: str | None, body):
            tls = client_context(ca, pki[name].cert_file, pki[name].key_file) if name \
                else client_context(ca)

            async def main():
                async with Client(endpoint, timeout=10, tls=tls) as client:
                    return await body(client)
            return asyncio.run(main())

        as_user(None, lambda client: client.put(b"c/x", b"0"))  # auth off: TLS alone
        health = f"127.0.0.1:{c.http[1]}/health"  # the HTTP port speaks TLS too
        https = urllib.request.urlopen(f"https://{health}", timeout=10,
                                       context=ssl.create_default_context(cafile=str(ca)))
        assert json.loads(https.read())["health"] is True
        with pytest.raises((urllib.error.URLError, ConnectionError)):
            urllib.request.urlopen(f"http://{health}", timeout=10)

        async def dashboard_view(tls: ssl.SSLContext | None) -> dict:
            # `shoal dashboard` with SHOAL_CACERT polls the nodes over HTTPS
            from shoal.web.aggregator import Aggregator

            agg = Aggregator([f"127.0.0.1:{c.http[1]}"], None,
                             client_options={"tls": tls} if tls else {})
            await agg.start()
            try:
                return next(iter((await agg.view())["nodes"].values()))
            finally:
                await agg.stop()
        seen = asyncio.run(dashboard_view(client_context(ca)))
        assert seen["up"] and seen["status"]["role"] == "leader"
        assert not asyncio.run(dashboard_view(None))["up"]  # plain HTTP: no answer
        admin = pki["admin"]
        creds = grpc.ssl_channel_credentials(ca.read_bytes(), admin.key_file.read_bytes(),
                                             admin.cert_file.read_bytes())
        with grpc.secure_channel(c.endpoints[0], creds) as ch:
            auth = rpc_pb2_grpc.AuthStub(ch)
            auth.UserAdd(rpc_pb2.AuthUserAddRequest(name="root", password="rootpw"))
            auth.UserGrantRole(rpc_pb2.AuthUserGrantRoleRequest(user="root", role="root"))
            auth.UserAdd(rpc_pb2.AuthUserAddRequest(name="carol", password="unused"))
            auth.RoleAdd(rpc_pb2.AuthRoleAddRequest(name="c"))
            auth.RoleGrantPermission(rpc_pb2.AuthRoleGrantPermissionRequest(
                name="c", perm=auth_pb2.Permission(permType=auth_pb2.Permission.READWRITE,
                                                   key=b"c/", range_end=b"c0")))
            auth.UserGrantRole(rpc_pb2.AuthUserGrantRoleRequest(user="carol", role="c"))
            auth.AuthEnable(rpc_pb2.AuthEnableRequest())

        async def carol(client: Client):
            await client.put(b"c/x", b"1")  # no password: the certificate says who she is
            with pytest.raises(PermissionDenied, match="permission denied"):
                await client.put(b"other", b"1")
        as_user("carol", carol)
        with pytest.raises(PermissionDenied, match="permission denied"):  # not a user at all
            as_user("admin", lambda client: client.get(b"c/x"))
        with pytest.raises(PermissionDenied, match="user name is empty"):
            as_user(None, lambda client: client.get(b"c/x"))
    finally:
        c.stop()
