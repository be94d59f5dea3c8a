"""The client library as a product (issue 16): endpoints in every form a user writes them, a
dial timeout on every connection attempt, failures that name every endpoint tried and what is
probably listening on a wrong port, a typed API mirrored method for method by SyncClient,
per-call timeouts, blocking Lock and Election, and the transaction builders."""

from __future__ import annotations

import asyncio
import inspect
import socket
import ssl
import threading
import time
import typing
from concurrent import futures

import grpc
import pytest

from cluster import LocalCluster, ep, free_ports, run
from etcd_cluster import BackgroundCluster
from shoal.client import (
    Client,
    ClientError,
    PutResponse,
    RangeResponse,
    SyncClient,
    TxnResponse,
    Unavailable,
    txn,
)
from shoal.client.aio import parse_endpoint, wrong_port_hint
from test_net import make_pki


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = BackgroundCluster(tmp_path_factory.mktemp("api"), fsync=False)
    c.start()
    yield c
    c.stop()


def client_endpoints(cluster) -> list[str]:
    return [f"{m.client[0]}:{m.client[1]}" for m in cluster.members]


def failure(endpoints, **kw) -> tuple[Unavailable, float]:
    """How a get through a client of these endpoints fails, and how long that took."""
    async def main():
        async with Client(endpoints, **kw) as c:
            await c.get(b"k")
    start = time.monotonic()
    with pytest.raises(Unavailable) as info:
        run(main())
    return info.value, time.monotonic() - start


# ---------------------------------------------------------------- endpoints and dialling

def test_endpoints_are_host_port_with_or_without_an_http_scheme():
    assert parse_endpoint("127.0.0.1:23791") == ("127.0.0.1", 23791, False)
    assert parse_endpoint("http://127.0.0.1:23791/") == ("127.0.0.1", 23791, False)
    assert parse_endpoint("https://node1.example:23791") == ("node1.example", 23791, True)
    assert parse_endpoint("[::1]:23791") == ("::1", 23791, False)
    for bad in ("127.0.0.1", "http://127.0.0.1", "127.0.0.1:port", "grpc://h:1", "h:1/path"):
        with pytest.raises(ValueError, match="endpoint"):
            Client([bad])


def test_http_prefixed_endpoints_reach_the_cluster(cluster):
    with SyncClient(["http://" + e for e in client_endpoints(cluster)]) as c:
        c.put(b"scheme", b"ok")
        assert c.get_value(b"scheme") == b"ok"
        assert c.endpoints == client_endpoints(cluster)


def test_a_down_cluster_fails_at_once_naming_every_endpoint():
    eps = [f"127.0.0.1:{p}" for p in free_ports(3)]
    err, took = failure(eps, timeout=30)
    assert took < 2, f"{took:.1f} s for a cluster that refuses every connection"
    assert str(err) == "no node answered: " + ", ".join(f"{e} (connection refused)" for e in eps)
    assert err.tried == {e: "connection refused" for e in eps}


def test_a_port_that_accepts_but_never_answers_costs_the_dial_timeout(cluster):
    stuck = socket.socket()  # listening, never accepting: the kernel completes the handshake
    stuck.bind(("127.0.0.1", 0))
    stuck.listen(8)
    try:
        where = f"127.0.0.1:{stuck.getsockname()[1]}"
        err, took = failure([where], timeout=30, connect_timeout=0.5)
        assert 0.4 < took < 3
        assert err.tried == {where: "connected, but no answer within 0.5 s"}

        async def past_it():  # a stuck member among live ones is passed over, not waited on
            async with Client([where, *client_endpoints(cluster)], timeout=30,
                              connect_timeout=0.5) as c:
                return await c.get(b"k", serializable=True)
        start = time.monotonic()
        assert isinstance(run(past_it()), RangeResponse)
        assert time.monotonic() - start < 5
    finally:
        stuck.close()


def test_the_http_port_is_named_fast(cluster):
    for port in (cluster.http[1], cluster.etcd_ports[1]):  # /health and /metrics, etcd's API
        err, took = failure([f"127.0.0.1:{port}"], timeout=30)
        assert took < 2
        assert "that looks like an HTTP port (a node's /health and /metrics port?); clients use " \
               "the node's client port" in str(err)


def test_a_grpc_port_is_named():
    server = grpc.server(futures.ThreadPoolExecutor(1))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        err, took = failure([f"127.0.0.1:{port}"], timeout=30)
        assert took < 2 and "that looks like etcd's gRPC port" in str(err)
    finally:
        server.stop(0)


def test_a_tls_port_without_a_tls_context_says_so(tmp_path):
    pki = make_pki(tmp_path, "ca", {"node": 1})
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(pki["node"].cert_file, pki["node"].key_file)

    async def main():
        server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0, ssl=ctx)
        where = f"127.0.0.1:{server.sockets[0].getsockname()[1]}"
        async with server, Client([where], timeout=30) as c:
            with pytest.raises(Unavailable) as info:
                await c.get(b"k")
        return str(info.value)
    assert "give the client a TLS context (shoal.client.tls.client_context)" in run(main())


def test_the_first_bytes_of_other_protocols_get_hints():
    assert "HTTP port" in wrong_port_hint(b"HTTP/1.1 400 Bad Request", tls=False)
    assert "gRPC" in wrong_port_hint(b"\x00\x00\x18\x04\x00\x00\x00\x00\x00", tls=False)
    assert "speaks TLS" in wrong_port_hint(b"\x15\x03\x03\x00\x02\x02\x32", tls=False)
    assert wrong_port_hint(b"\x00\x00\x01\x04\x93", tls=False) is None  # a Shoal response


def test_a_failure_after_the_deadline_lists_every_endpoint_with_its_reason(tmp_path):
    async def main():
        async with LocalCluster(tmp_path, 3, fsync=False) as c:
            lead = await c.leader()
            down = [lead, next(i for i in c.servers if i != lead)]
            for i in down:
                await c.stop(i)  # no quorum: the one left answers, but cannot serve
            left = next(i for i in c.servers)
            eps = [ep(c, i) for i in (*down, left)]  # the client tries them in this order
            async with Client(eps, timeout=30) as cl:
                start = time.monotonic()
                with pytest.raises(ClientError) as info:
                    await cl.put(b"k", b"v", timeout=3.0)  # the call's own timeout wins
                return info.value, time.monotonic() - start, eps
    err, took, eps = run(main())
    assert took < 6, f"{took:.1f} s for a call with timeout=3"
    assert f"{eps[0]} (connection refused), {eps[1]} (connection refused), {eps[2]} (" in str(err)


# ---------------------------------------------------------------- the typed API

PUBLIC = sorted(name for name, f in inspect.getmembers(Client, inspect.isfunction)
                if not name.startswith("_"))


def test_every_public_client_method_is_typed_and_documented():
    for name in PUBLIC:
        f = getattr(Client, name)
        hints = typing.get_type_hints(f)
        assert "return" in hints and hints["return"] is not typing.Any or name == "call", name
        assert f.__doc__, f"Client.{name} has no docstring"
    assert typing.get_type_hints(Client.put)["return"] is PutResponse
    assert typing.get_type_hints(Client.get)["return"] is RangeResponse
    assert typing.get_type_hints(Client.txn)["return"] is TxnResponse


def test_sync_client_has_every_method_with_the_same_parameters():
    for name in PUBLIC:
        if name in ("lock", "election", "keep_alive"):
            continue  # their blocking versions answer blocking types
        sync = getattr(SyncClient, name, None)
        assert sync is not None and sync.__doc__, f"SyncClient.{name} is missing or undocumented"
        assert list(inspect.signature(sync).parameters) == \
            list(inspect.signature(getattr(Client, name)).parameters), name
        # (the transaction calls make several requests, each within the client's timeout)
        assert "timeout" in inspect.signature(sync).parameters or name in (
            "group", "close", "lock", "election", "sharded", "transaction", "run_transaction")
    assert "put" in SyncClient.__dict__  # a real method, not forwarded at run time
    assert not hasattr(SyncClient, "__getattr__")


# ---------------------------------------------------------------- recipes and builders

def test_a_compare_and_set_counter_with_the_builders(cluster):
    with SyncClient(client_endpoints(cluster)) as c:
        c.delete(b"cas")
        created = c.txn([txn.absent(b"cas")], [txn.put(b"cas", b"0")])
        assert created.succeeded
        assert not c.txn([txn.absent(b"cas")], [txn.put(b"cas", b"9")]).succeeded

        def increment():
            while True:
                now = c.get(b"cas").kvs[0]
                if c.txn([txn.mod_revision_equals(b"cas", now.mod_revision)],
                         [txn.put(b"cas", str(int(now.value) + 1).encode())]).succeeded:
                    return

        threads = [threading.Thread(target=lambda: [increment() for _ in range(10)])
                   for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert c.get_value(b"cas") == b"30"
        lost = c.txn([txn.value_equals(b"cas", b"29")], [txn.put(b"cas", b"x")], [txn.get(b"cas")])
        assert not lost.succeeded and lost.responses[0].kvs[0].value == b"30"
        assert c.txn([txn.version_equals(b"cas", 31)], [txn.delete(b"cas")]).succeeded
        assert c.get(b"cas").count == 0


def test_the_blocking_lock_excludes_and_a_timed_out_waiter_leaves_the_line(cluster):
    with SyncClient(client_endpoints(cluster)) as a, SyncClient(client_endpoints(cluster)) as b:
        a.put(b"locked-counter", b"0")

        def work(c: SyncClient):
            for _ in range(5):
                with c.lock("counter"):
                    n = int(c.get_value(b"locked-counter") or b"0")
                    c.put(b"locked-counter", str(n + 1).encode())

        threads = [threading.Thread(target=work, args=(c,)) for c in (a, b)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert a.get_value(b"locked-counter") == b"10"

        held = a.lock("held")
        token = held.acquire()
        waiter = b.lock("held")
        with pytest.raises(TimeoutError):
            waiter.acquire(timeout=0.5)
        # the waiter's place is gone: only the holder is in line
        assert b.get(b"/shoal/lock/held/", prefix=True).count == 1
        held.release()
        assert waiter.acquire(timeout=5) > token
        waiter.release()


def test_the_blocking_election(cluster):
    with SyncClient(client_endpoints(cluster)) as a, SyncClient(client_endpoints(cluster)) as b:
        ea, eb = a.election("jobs"), b.election("jobs")
        ea.campaign(b"a")
        assert eb.leader() == b"a"
        seen = eb.observe()
        assert next(seen) == b"a"
        ea.proclaim(b"a2")
        assert next(seen) == b"a2"
        with pytest.raises(TimeoutError):
            eb.campaign(b"b", timeout=0.5)
        waiting = threading.Thread(target=eb.campaign, args=(b"b",))
        waiting.start()
        line = b"/shoal/election/jobs/"
        deadline = time.monotonic() + 10  # b in line behind a, or a's resign leaves nobody
        while a.get(line, prefix=True).count < 2:
            assert time.monotonic() < deadline, "b never joined the line"
            time.sleep(0.01)
        ea.resign()
        waiting.join(10)
        assert not waiting.is_alive()
        assert next(seen) == b"b"
        seen.close()
        eb.resign()
        assert a.election("jobs").leader() is None
