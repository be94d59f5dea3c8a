"""One etcd port, as etcd serves it (issue 10): gRPC, the JSON gateway, /version, /health and
/metrics on a member's etcd address, told apart by the first bytes of each connection
(shoal.etcdapi.mux). Plain HTTP clients (http.client, urllib), raw sockets, grpc and etcdctl;
the splice's backpressure against a stand-in backend; TLS with client certificates."""

from __future__ import annotations

import asyncio
import base64
import datetime
import http.client
import ipaddress
import json
import os
import socket
import ssl
import stat
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import grpc
import pytest
import uvloop
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from cluster import free_ports
from etcd_cluster import BackgroundCluster
from shoal.etcdapi import TLSFiles
from shoal.etcdapi.api import VERSION
from shoal.etcdapi.mux import PREFACE, PortMux
from shoal.etcdapi.pb import rpc_pb2, rpc_pb2_grpc
from shoal.server.config import Member, NodeConfig
from shoal.server.main import Server
from test_etcd_etcdctl import ensure_etcdctl

SNIFF_TIMEOUT_S = 0.5
SETTINGS = b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"  # an empty HTTP/2 SETTINGS frame
PING = b"\x00\x00\x08\x06\x00\x00\x00\x00\x00" + b"one-port"


class Running:
    """`shoal.server.main.Server`s on a background loop, as `shoal node` runs them: the members'
    specs name an etcd address and no `etcd_gateway` is configured."""

    def __init__(self, root: Path, n: int = 1, start: int = 1):
        ports = free_ports(4 * n)
        self.members = tuple(
            Member(i + 1, ("127.0.0.1", ports[4 * i]), ("127.0.0.1", ports[4 * i + 1]),
                   ("127.0.0.1", ports[4 * i + 2]))
            for i in range(n))
        self.http = {i + 1: ports[4 * i + 3] for i in range(n)}
        self.root, self.start_n = root, start
        self.servers: dict[int, Server] = {}
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self.run(self._start())

    def run(self, coro: Coroutine[Any, Any, Any], timeout: float = 30) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    async def _start(self) -> None:
        for m in self.members[:self.start_n]:
            cfg = NodeConfig(id=m.id, data_dir=self.root / f"n{m.id}", members=self.members,
                             http=("127.0.0.1", self.http[m.id]), tick_ms=20, fsync=False).validate()
            server = Server(cfg)
            assert server.etcd is not None
            server.etcd.sniff_timeout_s = SNIFF_TIMEOUT_S
            await server.start()
            self.servers[m.id] = server

    def port(self, i: int = 1) -> int:
        etcd = self.members[i - 1].etcd
        assert etcd is not None
        return etcd[1]

    def sniffing_or_spliced(self, i: int = 1) -> int:
        async def count() -> int:
            etcd = self.servers[i].etcd
            assert etcd is not None and etcd.mux is not None
            return etcd.mux.connections
        return int(self.run(count()))

    def stop(self) -> None:
        async def _stop() -> None:
            for s in self.servers.values():
                await s.stop()
        try:
            self.run(_stop())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)
            self.loop.close()


def eventually(pred: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.02)


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    r = Running(tmp_path_factory.mktemp("oneport"))
    eventually(lambda: r.servers[1].node.role == "leader", timeout=10)
    yield r
    r.stop()


def read_to_eof(s: socket.socket, timeout: float = 5.0) -> bytes:
    """Everything the server sends until it closes; a hang fails by the socket's timeout."""
    s.settimeout(timeout)
    out = b""
    while chunk := s.recv(65536):
        out += chunk
    return out


def grpc_socket_connections(node: Running) -> int:
    """Connections accepted by the gRPC server's unix socket (its /proc/net/unix lines, less
    the listener's)."""
    path = str(node.root / "n1" / "etcd-grpc" / "grpc.sock")
    with open("/proc/net/unix") as f:
        return sum(1 for line in f if line.rstrip().endswith(path)) - 1


# ---------------------------------------------------------------- HTTP/1.1 on the etcd port


def test_http1_client_gets_version_health_and_metrics(node):
    conn = http.client.HTTPConnection("127.0.0.1", node.port(), timeout=10)
    try:  # three requests on one kept-alive connection: it stays with aiohttp once handed over
        conn.request("GET", "/version")
        resp = conn.getresponse()
        assert resp.status == 200
        assert json.loads(resp.read()) == {"etcdserver": VERSION, "etcdcluster": VERSION}
        conn.request("GET", "/health")
        resp = conn.getresponse()
        assert (resp.status, json.loads(resp.read())) == (200, {"health": "true", "reason": ""})
        conn.request("GET", "/metrics")
        resp = conn.getresponse()
        text = resp.read().decode()
        assert resp.status == 200 and resp.getheader("Content-Type").startswith("text/plain")
    finally:
        conn.close()
    lines = text.splitlines()
    assert "etcd_server_has_leader 1.0" in lines and "etcd_server_is_leader 1.0" in lines
    assert f'etcd_server_version{{server_version="{VERSION}"}} 1.0' in lines
    assert any(line.startswith('shoal_kv_revision{node="1"}') for line in lines)


def test_grpc_and_the_json_gateway_share_the_port(node):
    base = f"http://127.0.0.1:{node.port()}"
    b64 = lambda s: base64.b64encode(s).decode()  # noqa: E731

    def post(path: str, body: dict[str, Any]) -> dict[str, Any]:
        req = urllib.request.Request(base + path, json.dumps(body).encode())
        with urllib.request.urlopen(req, timeout=10) as resp:
            return dict(json.loads(resp.read()))

    with grpc.insecure_channel(f"127.0.0.1:{node.port()}") as ch:
        kv = rpc_pb2_grpc.KVStub(ch)
        kv.Put(rpc_pb2.PutRequest(key=b"one/grpc", value=b"from grpc"), timeout=10)
        got = post("/v3/kv/range", {"key": b64(b"one/grpc")})
        assert base64.b64decode(got["kvs"][0]["value"]) == b"from grpc"
        post("/v3/kv/put", {"key": b64(b"one/http"), "value": b64(b"from http")})
        assert kv.Range(rpc_pb2.RangeRequest(key=b"one/http"), timeout=10).kvs[0].value == b"from http"


def test_etcdctl_through_the_one_port(node):
    etcdctl = ensure_etcdctl()
    env = dict(os.environ, ETCDCTL_API="3")
    ep = f"--endpoints=http://127.0.0.1:{node.port()}"

    def ctl(*args: str) -> str:
        p = subprocess.run([etcdctl, ep, "--command-timeout=10s", *args], capture_output=True,
                           text=True, env=env, timeout=30)
        assert p.returncode == 0, p.stderr
        return p.stdout + p.stderr

    assert ctl("put", "one/ctl", "v").strip() == "OK"
    assert ctl("get", "one/ctl").split() == ["one/ctl", "v"]
    assert "is healthy" in ctl("endpoint", "health")
    assert json.loads(ctl("endpoint", "status", "-w", "json"))[0]["Status"]["version"] == VERSION


# ---------------------------------------------------------------- bad, silent and closing clients


@pytest.mark.parametrize("garbage", [b"\x00\x01\x02garbage\r\n\r\n",
                                     b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n"])
def test_garbage_before_any_preface_gets_an_error_and_a_close(node, garbage):
    with socket.create_connection(("127.0.0.1", node.port())) as s:
        s.sendall(garbage)
        answer = read_to_eof(s)
    assert answer.startswith(b"HTTP/1.") and int(answer.split()[1]) >= 400, answer[:80]


@pytest.mark.parametrize("sent", [b"", PREFACE[:10]])
def test_a_silent_or_stalled_connection_is_closed(node, sent):
    with socket.create_connection(("127.0.0.1", node.port())) as s:
        s.sendall(sent)
        started = time.monotonic()
        assert read_to_eof(s, timeout=10 * SNIFF_TIMEOUT_S) == b""
        assert time.monotonic() - started >= SNIFF_TIMEOUT_S * 0.9
    eventually(lambda: node.sniffing_or_spliced() == 0)


def h2_frames(s: socket.socket, until: Callable[[int, int, bytes], bool]) -> None:
    """Read HTTP/2 frames (type, flags, payload) until `until` accepts one."""
    buf = b""
    s.settimeout(5)
    while True:
        while len(buf) >= 9 and len(buf) >= 9 + int.from_bytes(buf[:3], "big"):
            n = int.from_bytes(buf[:3], "big")
            if until(buf[3], buf[4], buf[9:9 + n]):
                return
            buf = buf[9 + n:]
        chunk = s.recv(65536)
        assert chunk, "closed before the expected frame"
        buf += chunk


def test_a_preface_reaches_the_grpc_server_and_idles_there(node):
    eventually(lambda: grpc_socket_connections(node) == 0)  # earlier tests' channels are gone
    with socket.create_connection(("127.0.0.1", node.port())) as s:
        s.sendall(PREFACE + SETTINGS)
        h2_frames(s, lambda kind, flags, _: kind == 4 and not flags & 1)  # the server's SETTINGS
        assert grpc_socket_connections(node) == 1
        time.sleep(2 * SNIFF_TIMEOUT_S)  # idle past the sniffing deadline: not ours to close now
        s.sendall(PING)
        h2_frames(s, lambda kind, flags, body: kind == 6 and flags & 1 and body == b"one-port")
    eventually(lambda: grpc_socket_connections(node) == 0)


def test_a_half_close_closes_both_sides(node):
    eventually(lambda: grpc_socket_connections(node) == 0)
    with socket.create_connection(("127.0.0.1", node.port())) as s:
        s.sendall(PREFACE + SETTINGS)
        h2_frames(s, lambda kind, flags, _: kind == 4)
        assert grpc_socket_connections(node) == 1 and node.sniffing_or_spliced() == 1
        s.shutdown(socket.SHUT_WR)
        read_to_eof(s)  # the client side is closed...
    eventually(lambda: grpc_socket_connections(node) == 0)  # ...and so is the gRPC side
    assert node.sniffing_or_spliced() == 0


def test_health_names_etcds_reason_when_there_is_no_leader(tmp_path):
    r = Running(tmp_path, n=3, start=1)  # a member alone of three never elects a leader
    try:
        conn = http.client.HTTPConnection("127.0.0.1", r.port(), timeout=10)
        conn.request("GET", "/health")
        resp = conn.getresponse()
        body = json.loads(resp.read())
        conn.close()
        assert resp.status == 503 and body["health"] == "false"
        assert body["reason"].startswith("RAFT NO LEADER"), body  # then Shoal's other reasons
    finally:
        r.stop()


# ---------------------------------------------------------------- the splice's backpressure

CHUNK = 64 * 1024
TOTAL = 64 * 1024 * 1024  # far more than any socket and transport buffers hold


def pattern(n: int) -> bytes:
    return bytes(i % 251 for i in range(n))


async def splice_with(backend: type[asyncio.Protocol], tmp_path: Path,
                      ) -> tuple[PortMux, int, asyncio.Server]:
    loop = asyncio.get_running_loop()
    path = str(tmp_path / "backend.sock")
    server = await loop.create_unix_server(backend, path)
    mux = PortMux(lambda: pytest.fail("not HTTP"), path)  # type: ignore[arg-type, return-value]
    return mux, await mux.start("127.0.0.1", 0), server


def close_all(mux: PortMux, server: asyncio.Server, s: socket.socket) -> None:
    """Before the loop goes: a transport left to the garbage collector would close its fd
    number after the next test's loop has reused it."""
    s.close()
    mux.stop_listening()
    mux.abort_all()
    server.close()


async def small_buffer_client(port: int) -> socket.socket:
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 * 1024)
    s.setblocking(False)
    await asyncio.get_running_loop().sock_connect(s, ("127.0.0.1", port))
    return s


LOOPS = {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}


@pytest.mark.parametrize("loop_name", LOOPS)
def test_a_client_that_does_not_read_stops_the_backend(tmp_path, loop_name):
    async def main() -> None:
        loop = asyncio.get_running_loop()
        data = pattern(CHUNK)
        paused = asyncio.Event()

        class Flood(asyncio.Protocol):  # a backend that writes whenever it may
            sent = 0

            def connection_made(self, transport: Any) -> None:
                self.t, self.stopped = transport, False
                self.fill()

            def fill(self) -> None:
                while not self.stopped and Flood.sent < TOTAL:
                    Flood.sent += CHUNK
                    self.t.write(data)

            def pause_writing(self) -> None:
                self.stopped = True
                paused.set()

            def resume_writing(self) -> None:
                self.stopped = False
                self.fill()

        mux, port, server = await splice_with(Flood, tmp_path)
        s = await small_buffer_client(port)
        await loop.sock_sendall(s, PREFACE)
        await asyncio.wait_for(paused.wait(), 10)
        front = next(iter(mux._fronts))
        assert front.transport is not None
        await asyncio.sleep(0.2)  # the flood had its chance to go on: it must not have
        assert Flood.sent < TOTAL // 4, Flood.sent
        assert front.transport.get_write_buffer_size() <= 1 << 20  # high-water mark + a read
        got = bytearray()
        while len(got) < TOTAL:
            got += await loop.sock_recv(s, 1 << 20)
        assert len(got) == TOTAL and got[:CHUNK] == data and got[-CHUNK:] == data
        close_all(mux, server, s)

    with asyncio.Runner(loop_factory=LOOPS[loop_name]) as runner:
        runner.run(asyncio.wait_for(main(), 30))


@pytest.mark.parametrize("loop_name", LOOPS)
def test_a_backend_that_does_not_read_stops_the_client(tmp_path, loop_name):
    async def main() -> None:
        loop = asyncio.get_running_loop()
        received = bytearray()
        connected = asyncio.Event()

        class Sink(asyncio.Protocol):  # a backend that stops reading after its first bytes
            def connection_made(self, transport: Any) -> None:
                Sink.t = transport

            def data_received(self, chunk: bytes) -> None:
                received.extend(chunk)
                if not connected.is_set():  # (uvloop ignores a pause in connection_made)
                    Sink.t.pause_reading()
                    connected.set()

        mux, port, server = await splice_with(Sink, tmp_path)
        s = await small_buffer_client(port)
        await loop.sock_sendall(s, PREFACE)
        await asyncio.wait_for(connected.wait(), 10)
        block, sent, stalls = pattern(CHUNK), bytearray(), 0
        while len(sent) < TOTAL and stalls < 6:  # until the kernel takes nothing for 0.3 s
            try:
                sent += block[:s.send(block)]
                stalls = 0
            except BlockingIOError:
                stalls += 1
                await asyncio.sleep(0.05)  # the loop runs the front meanwhile
        assert len(sent) < TOTAL // 4, len(sent)
        Sink.t.resume_reading()
        await loop.sock_sendall(s, b"end")
        want = PREFACE + sent + b"end"
        while len(received) < len(want):
            await asyncio.sleep(0.01)
        assert received == want
        close_all(mux, server, s)

    with asyncio.Runner(loop_factory=LOOPS[loop_name]) as runner:
        runner.run(asyncio.wait_for(main(), 30))


# ---------------------------------------------------------------- TLS on the one port


def make_certs(tmp: Path) -> tuple[Path, dict[str, tuple[Path, Path]]]:
    """A CA, and a server certificate for 127.0.0.1 and a client certificate it signed, as
    PEM files: the CA's, and (certificate, key) by name."""
    now = datetime.datetime.now(datetime.UTC)

    def issue(name: str, issuer: tuple[Any, x509.Name] | None, **kw: Any) -> tuple[Any, x509.Certificate]:
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        signer_key, signer_name = issuer or (key, subject)
        b = (x509.CertificateBuilder().subject_name(subject).issuer_name(signer_name)
             .public_key(key.public_key()).serial_number(x509.random_serial_number())
             .not_valid_before(now - datetime.timedelta(minutes=5))
             .not_valid_after(now + datetime.timedelta(days=1)))
        b = b.add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), critical=True)
        if "san" in kw:
            b = b.add_extension(x509.SubjectAlternativeName([kw["san"]]), critical=False)
        return key, b.sign(signer_key, hashes.SHA256())

    ca_key, ca = issue("one-port-ca", None)
    out = {}
    for name, kw in (("server", {"san": x509.IPAddress(ipaddress.ip_address("127.0.0.1"))}),
                     ("client", {})):
        key, cert = issue(name, (ca_key, ca.subject), **kw)
        (tmp / f"{name}.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        (tmp / f"{name}.key").write_bytes(key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
        out[name] = (tmp / f"{name}.crt", tmp / f"{name}.key")
    (tmp / "ca.crt").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    return tmp / "ca.crt", out


def test_tls_one_port_for_grpc_and_https_with_client_certificates(tmp_path):
    ca, certs = make_certs(tmp_path)
    c = BackgroundCluster(tmp_path / "data", n=1, fsync=False,
                          tls=TLSFiles(*certs["server"], ca)).start()
    try:
        port = c.etcd_ports[1]
        creds = grpc.ssl_channel_credentials(ca.read_bytes(), certs["client"][1].read_bytes(),
                                             certs["client"][0].read_bytes())
        with grpc.secure_channel(f"127.0.0.1:{port}", creds) as ch:
            kv = rpc_pb2_grpc.KVStub(ch)
            kv.Put(rpc_pb2.PutRequest(key=b"tls/k", value=b"v"), timeout=10)
            assert kv.Range(rpc_pb2.RangeRequest(key=b"tls/k"), timeout=10).kvs[0].value == b"v"

        ctx = ssl.create_default_context(cafile=str(ca))
        ctx.load_cert_chain(*certs["client"])
        ctx.set_alpn_protocols(["h2", "http/1.1"])  # as curl offers: HTTP/1.1 is chosen
        conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=10)
        conn.request("GET", "/version")
        resp = conn.getresponse()
        assert resp.status == 200 and json.loads(resp.read())["etcdserver"] == VERSION
        assert conn.sock.selected_alpn_protocol() == "http/1.1"
        conn.close()

        anonymous = ssl.create_default_context(cafile=str(ca))  # no client certificate
        with pytest.raises((ssl.SSLError, ConnectionError)):
            conn = http.client.HTTPSConnection("127.0.0.1", port, context=anonymous, timeout=10)
            conn.request("GET", "/version")
            conn.getresponse()
        with pytest.raises(grpc.RpcError) as info, grpc.secure_channel(
                f"127.0.0.1:{port}", grpc.ssl_channel_credentials(ca.read_bytes())) as ch:
            rpc_pb2_grpc.KVStub(ch).Range(rpc_pb2.RangeRequest(key=b"tls/k"), timeout=5)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        with socket.create_connection(("127.0.0.1", port)) as s:  # plaintext on a TLS port
            s.sendall(b"GET /version HTTP/1.1\r\nHost: x\r\n\r\n")
            assert not read_to_eof(s).startswith(b"HTTP/")

        # behind the front, gRPC is plaintext on a unix socket only this user can reach
        sock_dir = c.root / "n1" / "etcd-grpc"
        assert stat.S_IMODE(sock_dir.stat().st_mode) == 0o700
        assert stat.S_IMODE((sock_dir / "grpc.sock").stat().st_mode) == 0o600
    finally:
        c.stop()


def test_connections_past_the_per_address_bound_are_closed_at_once(tmp_path):
    async def main() -> None:
        loop = asyncio.get_running_loop()
        path = str(tmp_path / "backend.sock")
        server = await loop.create_unix_server(asyncio.Protocol, path)
        mux = PortMux(lambda: pytest.fail("not HTTP"), path,  # type: ignore[arg-type, return-value]
                      max_per_address=2)
        port = await mux.start("127.0.0.1", 0)
        held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(2)]
        await asyncio.wait_for(_until(lambda: mux.connections == 2), 5)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        assert await asyncio.wait_for(reader.read(), 2) == b""  # closed, long before sniffing ends
        assert mux.limits.refused == 1 and mux.connections == 2
        writer.close()
        held.pop()[1].close()
        await asyncio.wait_for(_until(lambda: mux.connections == 1), 5)
        again = await asyncio.open_connection("127.0.0.1", port)  # room again
        await asyncio.wait_for(_until(lambda: mux.connections == 2), 5)
        for _, w in [*held, again]:
            w.close()
        mux.stop_listening()
        mux.abort_all()
        server.close()
    asyncio.run(main())


async def _until(pred: Callable[[], bool]) -> None:
    while not pred():
        await asyncio.sleep(0.01)
