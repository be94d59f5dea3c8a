"""Who may be a peer (issue 10, finding 3): a node id in a handshake is only a claim, backed by
the peer secret (challenge-response) or by a TLS certificate that names the node.

Each refusal is checked the same way: the stranger's connection ends, the log names its
address and the reason, and nothing it sent after its handshake was delivered. The strangers
here speak the protocol themselves, byte by byte, as an attacker would."""

from __future__ import annotations

import asyncio
import logging
import secrets
import ssl
import stat
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from typer.testing import CliRunner

from cluster import LocalCluster
from conftest import Run
from shoal.cli import app
from shoal.consensus.messages import Message, MsgType
from shoal.net import Handshake, NetConfig, PeerSecret, TLSConfig, Transport, frame
from shoal.net.codec import encode_message
from shoal.net.frames import AUTH_HMAC, NONCE_SIZE, PROOF_SIZE, FrameDecoder, message_frame
from shoal.net.peer import read_handshake
from shoal.net.transport import _LogLimit
from test_net import FAST, LOCAL, Inbox, eventually, msg

SECRET = b"correct horse battery staple"


def secret_file(tmp: Path, name: str, data: bytes) -> Path:
    p = tmp / name
    p.write_bytes(data)
    return p


async def node(i: int, inbox: Inbox | None = None, **kw: Any) -> Transport:
    t = Transport(i, LOCAL, {}, "test", inbox or Inbox(), config=kw.pop("config", FAST), **kw)
    await t.start()
    return t


def link(*ts: Transport) -> None:
    for t in ts:
        t.set_peers({u.node_id: u.address for u in ts if u is not t})


def heartbeat(src: int, dst: int, term: int) -> bytes:
    return message_frame(0, encode_message(Message(MsgType.HEARTBEAT, src, dst, term=term)))


async def pose(addr: tuple[str, int], claim: int, after: bytes, *, guess: bytes | None = None,
               ssl_ctx: ssl.SSLContext | None = None, cluster: str = "test",
               ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, int]:
    """Connect as node `claim`. With `guess`, answer the acceptor's challenge with a proof
    made from it. Then send `after` (consensus frames). Returns the stream and our port."""
    reader, writer = await asyncio.open_connection(*addr, ssl=ssl_ctx)
    port = writer.get_extra_info("sockname")[1]
    hello = Handshake(cluster, claim, "raft")
    if guess is not None:
        hello = Handshake(cluster, claim, "raft", auth=AUTH_HMAC,
                          nonce=secrets.token_bytes(NONCE_SIZE))
    writer.write(hello.encode())
    proof = b""
    try:
        theirs = await asyncio.wait_for(read_handshake(reader), 5)
        if guess is not None:
            proof = frame(PeerSecret(guess).proof("dialer", hello, theirs))
    except asyncio.IncompleteReadError:
        pass  # refused before the acceptor said anything; the hang-up is read below
    writer.write(proof + after)
    return reader, writer, port


async def hung_up(reader: asyncio.StreamReader) -> bool:
    async def drain() -> None:
        try:
            while await reader.read(4096):
                pass  # the acceptor's handshake, if it got that far
        except (ConnectionError, ssl.SSLError):
            pass  # a reset is a hang-up too
    await asyncio.wait_for(drain(), 5)
    return True


# ---- the peer secret -------------------------------------------------------------------------


def test_the_secret_admits_its_peers_and_refuses_a_stranger_posing_as_one(
    run: Run, tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="shoal.net")
    f1 = secret_file(tmp_path, "s1", SECRET)
    f2 = secret_file(tmp_path, "s2", b"  " + SECRET + b"\n")  # surrounding whitespace: no part

    async def main() -> None:
        inbox_a, inbox_b = Inbox(), Inbox()
        a = await node(1, inbox_a, peer_secret_file=f1)
        b = await node(2, inbox_b, peer_secret_file=f2)
        link(a, b)
        a.send(0, msg(1, 2, 1))
        b.send(0, msg(2, 1, 2))
        assert (await inbox_b.get()).index == 1 and (await inbox_a.get()).index == 2

        # Knows the cluster id and the protocol, claims node 2, guesses the secret wrong.
        reader, writer, port = await pose(a.address, 2, heartbeat(2, 1, 100), guess=b"guess")
        assert await hung_up(reader)
        writer.close()
        assert (f"closing connection from 127.0.0.1:{port}: node 2 did not prove it knows the "
                "peer secret") in caplog.text
        # Offers no proof at all (a node from before peer secrets, or a stranger).
        reader, writer, port = await pose(a.address, 2, heartbeat(2, 1, 100))
        assert await hung_up(reader)
        writer.close()
        assert (f"closing connection from 127.0.0.1:{port}: node 2 offers no peer-secret proof"
                in caplog.text)
        assert a.stats().rejected_connections == 2 and inbox_a.q.empty()

        # The real node 2 was never displaced by the impostors' claims.
        b.send(0, msg(2, 1, 3))
        assert (await inbox_a.get()).index == 3
        assert b.stats().peers[1].connects == 1
        await a.stop()
        await b.stop()

    run(main())


async def _recording_proxy(target: tuple[str, int], record: bytearray) -> asyncio.Server:
    """Forwards one dialer to `target`, keeping a copy of every byte the dialer sends."""
    async def pipe(r: asyncio.StreamReader, w: asyncio.StreamWriter, keep: bool) -> None:
        while data := await r.read(65536):
            if keep:
                record.extend(data)
            w.write(data)
        w.close()

    async def serve(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        tr, tw = await asyncio.open_connection(*target)
        await asyncio.gather(pipe(r, tw, True), pipe(tr, w, False), return_exceptions=True)

    return await asyncio.start_server(serve, *LOCAL)


def test_a_recorded_handshake_replayed_is_refused(
    run: Run, tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="shoal.net")
    f = secret_file(tmp_path, "s", SECRET)

    async def main() -> None:
        inbox_a = Inbox()
        a = await node(1, inbox_a, peer_secret_file=f)
        b = await node(2, peer_secret_file=f)
        record = bytearray()
        proxy = await _recording_proxy(a.address, record)
        b.set_peers({1: proxy.sockets[0].getsockname()[:2]})  # b reaches a through the tap
        b.send(0, msg(2, 1, 7))
        assert (await inbox_a.get()).index == 7
        sent = FrameDecoder().feed(bytes(record))  # as b sent them: hello, proof, message
        assert len(sent) == 3 and len(sent[1]) == PROOF_SIZE

        # Word for word what node 2 sent, on a new connection: a's nonce is new, so the
        # recorded proof no longer matches, and the message behind it is never read.
        reader, writer = await asyncio.open_connection(*a.address)
        writer.write(bytes(record))
        assert await hung_up(reader)
        writer.close()
        assert "node 2 did not prove it knows the peer secret" in caplog.text
        assert inbox_a.q.empty() and a.stats().rejected_connections == 1
        await b.stop()  # the tap's pipes end with b's connection, before the loop does
        await a.stop()
        proxy.close()

    run(main())


def test_nodes_whose_secrets_differ_refuse_each_other_and_say_why(
    run: Run, tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="shoal.net")
    fa = secret_file(tmp_path, "a", SECRET)
    fb = secret_file(tmp_path, "b", b"another secret")

    async def main() -> None:
        inbox_a = Inbox()
        a = await node(1, inbox_a, peer_secret_file=fa)
        b = await node(2, peer_secret_file=fb)
        c = await node(3)  # no secret at all
        a.set_peers({2: b.address, 3: c.address})
        b.set_peers({1: a.address})
        c.set_peers({1: a.address})
        for t, dst in ((a, 2), (a, 3), (b, 1), (c, 1)):
            t.send(0, msg(t.node_id, dst, 1))
        await eventually(lambda: all(s in caplog.text for s in (
            "did not prove it knows the peer secret (it has none, or another)",  # a dialing b
            "node 3 offers no peer-secret proof and this node requires one",  # c dialing a
            "node 1 authenticates with a peer secret and this node has none",  # a dialing c
        )))
        assert inbox_a.q.empty()
        assert [t.stats().peers[1].connects for t in (b, c)] == [0, 0]
        for t in (a, b, c):
            await t.stop()

    run(main())


def test_an_empty_secret_file_is_refused(tmp_path: Path) -> None:
    for data in (b"", b" \n\t\n"):
        with pytest.raises(ValueError, match="is empty"):
            Transport(1, LOCAL, {}, "test", Inbox(),
                      peer_secret_file=secret_file(tmp_path, "empty", data))
    assert "correct" not in repr(PeerSecret(SECRET))  # never printed with the secret in it


def test_an_unauthenticated_peer_port_is_one_warning_at_start(
    run: Run, tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="shoal.net")
    f = secret_file(tmp_path, "s", SECRET)

    async def main() -> None:
        open_port = await node(1)
        secured = await node(2, peer_secret_file=f)
        warnings = [r.getMessage() for r in caplog.records if "unauthenticated" in r.getMessage()]
        assert len(warnings) == 1 and warnings[0].startswith("node 1:")
        assert "--peer-secret-file" in warnings[0] and "shoal certs" in warnings[0]
        await open_port.stop()
        await secured.stop()

    run(main())


def test_refused_connections_are_logged_at_a_bounded_rate(
    run: Run, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="shoal.net")

    async def main() -> None:
        a = await node(1, config=NetConfig(log_burst=3))
        for _ in range(20):
            reader, writer = await asyncio.open_connection(*a.address)
            writer.write(b"GET / HTTP/1.1\r\n\r\n")
            assert await hung_up(reader)
            writer.close()
        await eventually(lambda: a.stats().rejected_connections == 20)
        lines = [r for r in caplog.records if "connection from" in r.getMessage()]
        assert len(lines) == 3
        await a.stop()

    run(main())


def test_the_log_limit_counts_what_it_held_back(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="shoal.net")
    now = [0.0]
    limit = _LogLimit(2, 10.0, clock=lambda: now[0])
    for i in range(5):
        limit.log(logging.WARNING, "refused %d", i)
    now[0] = 10.0  # the next window
    limit.log(logging.WARNING, "refused %d", 5)
    assert [r.getMessage() for r in caplog.records] == [
        "refused 0", "refused 1", "refused 5 (and 3 more such lines not logged)"]


def test_a_stranger_without_the_secret_cannot_depose_the_leader(tmp_path: Path) -> None:
    """The finding as it was found: one heartbeat at term+100, claiming a follower's id, sent
    to a real cluster's leader. An insider holding the secret sends the same and does depose
    it, which shows the heartbeat would have worked had the stranger been let in."""
    f = secret_file(tmp_path, "secret", SECRET)

    async def main() -> None:
        async with LocalCluster(tmp_path, n=3, peer_secret_file=f) as c:
            lead = await c.leader()
            engine = c.servers[lead].node.groups[0].replica.engine
            other = next(i for i in c.servers if i != lead)
            peer_addr = c.servers[lead].node.transport.address
            term = engine.term
            attack = heartbeat(other, lead, term + 100)
            reader, writer, _ = await pose(peer_addr, other, attack, guess=b"shoal",
                                           cluster="shoal")
            assert await hung_up(reader)
            writer.close()
            assert engine.term < term + 100 and c.servers[lead].node.transport.stats(
                ).rejected_connections == 1

            reader, writer, _ = await pose(peer_addr, other, attack, guess=SECRET,
                                           cluster="shoal")
            await eventually(lambda: engine.term >= term + 100, timeout=10)
            writer.close()

    asyncio.run(asyncio.wait_for(main(), 60))


# ---- mutual TLS: certificates bound to node ids ----------------------------------------------


def make_certs(dir: Path) -> dict[str, TLSConfig]:
    """What an operator does: `shoal certs` for nodes 1 to 3 and an etcd client."""
    result = CliRunner().invoke(app, ["certs", str(dir), "--node", "1", "--node", "2",
                                      "--node", "3", "--client", "etcd-user"])
    assert result.exit_code == 0, result.output
    ca = dir / "ca.crt"
    out = {f"n{i}": TLSConfig(dir / f"node-{i}.crt", dir / f"node-{i}.key", ca)
           for i in (1, 2, 3)}
    out["client"] = TLSConfig(dir / "client-etcd-user.crt", dir / "client-etcd-user.key", ca)
    return out


def test_shoal_certs_writes_node_ids_and_hosts_and_never_overwrites(tmp_path: Path) -> None:
    certs = make_certs(tmp_path / "pki")
    node2 = x509.load_pem_x509_certificate(Path(certs["n2"].cert_file).read_bytes())
    sans = node2.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.UniformResourceIdentifier) == ["urn:shoal:node:2"]
    assert sans.get_values_for_type(x509.DNSName) == ["localhost"]
    client = x509.load_pem_x509_certificate(Path(certs["client"].cert_file).read_bytes())
    assert client.subject.rfc4514_string() == "CN=etcd-user"
    with pytest.raises(x509.ExtensionNotFound):
        client.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    for key in (tmp_path / "pki").glob("*.key"):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600, key

    runner = CliRunner()
    again = runner.invoke(app, ["certs", str(tmp_path / "pki"), "--node", "2"])
    assert again.exit_code == 2 and "node-2.crt exists; not overwriting" in again.output
    more = runner.invoke(app, ["certs", str(tmp_path / "pki"), "--node", "4=10.0.0.4,n4.example"])
    assert more.exit_code == 0 and "reusing the CA" in more.output
    node4 = x509.load_pem_x509_certificate((tmp_path / "pki" / "node-4.crt").read_bytes())
    assert node4.issuer == node2.issuer
    sans4 = node4.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans4.get_values_for_type(x509.DNSName) == ["n4.example"]


def test_a_certificate_admits_only_the_node_it_names(
    run: Run, tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="shoal.net")
    certs = make_certs(tmp_path)

    async def main() -> None:
        inbox_a, inbox_b = Inbox(), Inbox()
        a = await node(1, inbox_a, tls=certs["n1"])
        b = await node(2, inbox_b, tls=certs["n2"])
        link(a, b)
        a.send(0, msg(1, 2, 1))
        b.send(0, msg(2, 1, 2))
        assert (await inbox_b.get()).index == 1 and (await inbox_a.get()).index == 2

        # Node 3's certificate, from the right CA, presented by a connection claiming node 2.
        reader, writer, port = await pose(a.address, 2, heartbeat(2, 1, 100),
                                          ssl_ctx=certs["n3"].client_context())
        assert await hung_up(reader)
        writer.close()
        assert (f"closing connection from 127.0.0.1:{port}: the peer claims node 2, but its "
                "certificate is for node 3") in caplog.text
        # An etcd client's certificate from the same CA: no node at all.
        reader, writer, port = await pose(a.address, 2, heartbeat(2, 1, 100),
                                          ssl_ctx=certs["client"].client_context())
        assert await hung_up(reader)
        writer.close()
        assert (f"closing connection from 127.0.0.1:{port}: the peer claims node 2, but its "
                "certificate names no node") in caplog.text
        assert inbox_a.q.empty() and a.stats().rejected_connections == 2
        b.send(0, msg(2, 1, 3))  # and the real node 2 is still heard
        assert (await inbox_a.get()).index == 3
        await a.stop()
        await b.stop()

    run(main())


def test_the_dialer_refuses_a_server_whose_certificate_is_another_nodes(
    run: Run, tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="shoal.net")
    certs = make_certs(tmp_path)

    async def main() -> None:
        a = await node(1, tls=certs["n1"])
        inbox_x = Inbox()
        impostor = await node(2, inbox_x, tls=certs["n3"])  # says node 2, holds node 3's cert
        a.set_peers({2: impostor.address})
        a.send(0, msg(1, 2, 1))
        await eventually(lambda: "the peer was dialed as node 2, but its certificate is for "
                                 "node 3" in caplog.text)
        assert a.stats().peers[2].connects == 0 and inbox_x.q.empty()
        await a.stop()
        await impostor.stop()

    run(main())
