"""The asyncio TCP transport for peer (consensus) traffic.

Connection model (etcd's "stream" model, simplified): every node dials each of its peers
once and only ever *writes* on that connection; it *reads* only on connections it accepted.
So between two nodes there are two TCP connections, one per direction, each with a single
writer. Nothing has to decide which of two simultaneous dials wins, and a slow reader on one
side never blocks the other side's sends.

Both ends of a connection first exchange a handshake (magic, protocol version, cluster id,
node id, codec). The acceptor refuses unknown nodes, other clusters and other codecs; the
dialer refuses an acceptor that is not the node it meant to reach. Every later frame must
decode, come from the node that shook hands, and be addressed to us; otherwise the connection
is closed with a logged reason. A bad peer costs us a connection, never the process.

A node id in a handshake is only a claim. Two things can back it, and a node should have at
least one (start() warns when it has neither):
- a peer secret (`peer_secret_file`): both ends prove they know it, by challenge-response in
  the handshake (frames.py). It keeps out whoever can reach the port without the secret; it
  does not protect the stream from someone on the path, which only TLS does.
- mutual TLS (`tls`): the peer's certificate must name the node id it claims (tls.py).
A connection is admitted, and may displace that node's older connection, only once every
check has passed; until then not one consensus frame is read from it. The log lines about
refused connections are rate-limited (NetConfig.log_burst), so a flood cannot fill the log.

Many consensus groups share one transport: `send(group, msg)` puts the group id in front of
the codec's bytes (frames.message_frame) and `on_message(group, msg)` hands it back. The
transport only checks the group is a well-formed id; which groups exist is the host's business.

Membership is one synchronous call, `set_peers(peers)`: when it returns, the peer table is
exactly `peers`. It has to be synchronous. A table changed by a task scheduled for later can
be overtaken by the next change: "remove node 2" queued as a task, then "add node 2" done at
once (a replaced disk, re-added under the same id), and the removal, running last, would take
away the peer that was just re-added, so node 2 would be refused for good. So the table
changes at once, and only the closing of dropped connections is left to the background. Each
closing touches the objects it was handed (an Outbound, an accepted connection), never a table
entry by id, so an entry re-added meanwhile is safe from it.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from shoal.consensus.messages import LocalProtocolError, NodeId, RemoteProtocolError

from .codec import Codec, get_codec
from .config import NetConfig
from .faults import FaultPlan
from .frames import MAX_GROUP, FrameDecoder, Handshake, PeerSecret, message_frame, split_group
from .peer import Address, Outbound, read_handshake, read_proof
from .stats import NetStats, PeerStats
from .tls import TLSConfig, check_peer_certificate

log = logging.getLogger("shoal.net")

HOST_GROUP = MAX_GROUP  # reserved: frames between processes, not of any consensus group
MAX_HOST_MESSAGE = 64 * 1024


class _LogLimit:
    """At most `burst` lines per `window` seconds (a fixed window); the lines refused are
    counted and their number added to the next line let through."""

    def __init__(self, burst: int, window: float, clock: Callable[[], float] = time.monotonic):
        self._burst, self._window, self._clock = burst, window, clock
        self._start = float("-inf")
        self._lines = 0
        self.suppressed = 0

    def log(self, level: int, fmt: str, *args: object) -> None:
        now = self._clock()
        if now - self._start >= self._window:
            self._start, self._lines = now, 0
        if self._lines >= self._burst:
            self.suppressed += 1
            return
        self._lines += 1
        if self.suppressed:
            fmt += " (and %d more such lines not logged)"
            args += (self.suppressed,)
            self.suppressed = 0
        log.log(level, fmt, *args)


class _Accepted:
    """One accepted connection: its writer, whose it is once it has shaken hands, and whether
    we still listen to it. Closing clears `live` first, so the frames already read from the
    socket in the same chunk are not delivered after the peer was removed."""

    __slots__ = ("writer", "peer", "stats", "live")

    def __init__(self, writer: asyncio.StreamWriter):
        self.writer = writer
        self.peer: NodeId | None = None
        self.stats = PeerStats()  # the peer's own, once it has shaken hands
        self.live = True

    def close(self) -> None:
        self.live = False
        # abort, not close: nothing of ours is left to flush (we only ever wrote a handshake),
        # and the handler's read ends at once with EOF, even under TLS.
        self.writer.transport.abort()


class Transport:
    def __init__(
        self,
        node_id: NodeId,
        listen_addr: Address,
        peers: dict[NodeId, Address],
        cluster_id: str,
        on_message: Callable[[int, Any], None],
        tls: TLSConfig | None = None,
        codec: Codec | str = "raft",
        *,
        config: NetConfig | None = None,
        faults: FaultPlan | None = None,
        seed: int | None = None,
        on_host: Callable[[NodeId, bytes], None] | None = None,
        peer_secret_file: str | Path | None = None,
        on_peer_lost: Callable[[NodeId], None] | None = None,
    ):
        if node_id <= 0:
            raise LocalProtocolError(f"node ids start at 1, got {node_id}")
        self.node_id = node_id
        self.listen_addr = listen_addr
        self.cluster_id = cluster_id
        self.on_message = on_message
        self.on_host = on_host  # frames of HOST_GROUP: process to process, no engine codec
        # A peer's own connection to us closed from its end (its process exited, or its
        # socket was reset): a sign it is gone, sooner than any timeout (node.py).
        self.on_peer_lost = on_peer_lost
        self.codec = get_codec(codec) if isinstance(codec, str) else codec
        self.cfg = config or NetConfig()
        self.faults = faults or FaultPlan()
        self._hello = Handshake(cluster_id, node_id, self.codec.name)
        # Read once, here: a secret changed on disk later takes a restart, on every node.
        self._secret = PeerSecret.from_file(peer_secret_file) if peer_secret_file else None
        self._refusals = _LogLimit(self.cfg.log_burst, self.cfg.log_window)
        self._server_ssl = tls.server_context() if tls else None
        self._client_ssl = tls.client_context() if tls else None
        self._rng = random.Random(seed)  # backoff jitter only
        self._stats = NetStats()
        self._peers: dict[NodeId, Outbound] = {}
        self._inbound: dict[NodeId, _Accepted] = {}  # the newest one per peer
        self._handlers: dict[asyncio.Task[Any], _Accepted] = {}  # every accepted connection
        self._closing: set[asyncio.Task[Any]] = set()  # dropped connections, still unwinding
        self._server: asyncio.Server | None = None
        self.set_peers(peers)

    # ---- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        if self._server is not None:
            raise LocalProtocolError("transport already started")
        host, port = self.listen_addr
        # TLS is set up by the server, before our handler runs: upgrading an accepted stream
        # with start_tls loses bytes read before the upgrade (uvloop#707, cpython#142352).
        # The price: a refused TLS handshake is logged by the dialer, not by us.
        timeout = self.cfg.connect_timeout if self._server_ssl else None
        self._server = await asyncio.start_server(
            self._serve, host, port, ssl=self._server_ssl, ssl_handshake_timeout=timeout
        )
        if self._secret is None and self._server_ssl is None:
            log.warning(
                "node %d: the peer port %s:%d is unauthenticated: anyone who can reach it can "
                "pose as a member and depose the leader. Give every node the same "
                "--peer-secret-file (peer_secret_file), or TLS certificates with node ids "
                "(--tls-cert/--tls-key/--tls-ca; `shoal certs` makes them)",
                self.node_id, *self.address)
        for out in self._peers.values():
            out.start()

    @property
    def address(self) -> Address:
        """Where we listen; with port 0 this is the port the OS chose."""
        if self._server is None:
            raise LocalProtocolError("transport not started")
        host, port = self._server.sockets[0].getsockname()[:2]
        return host, port

    async def stop(self) -> None:
        if self._server is None:
            return
        self._server.close()
        for out in list(self._peers.values()):
            await out.close()
        # Aborting the sockets ends each handler's read with EOF, so handlers return on their
        # own rather than be cancelled mid-step.
        for conn in self._handlers.values():
            conn.close()
        if self._handlers:
            await asyncio.wait(list(self._handlers), timeout=self.cfg.handshake_timeout)
        if self._closing:  # dialers that set_peers dropped, still unwinding; bounded too
            await asyncio.wait(set(self._closing), timeout=self.cfg.handshake_timeout)
        await self._server.wait_closed()
        self._server = None

    # ---- membership --------------------------------------------------------------------------

    @property
    def peers(self) -> dict[NodeId, Address]:
        """A copy of the peer table: node id -> the address we dial."""
        return {peer: out.addr for peer, out in self._peers.items()}

    def set_peers(self, peers: dict[NodeId, Address]) -> None:
        """Make the peer table exactly `peers`, at once; calling it again with the same table
        changes nothing (no connection is touched).

        New ids are added (and dialed, once started). Missing ids are removed: their queued
        messages are discarded, our connection to them and every connection accepted from
        them are closed, and later connections from them are refused. An id whose address
        changed gets a new dialer (fresh queue and stats) and the old one is closed; the
        connections it made to us stay, since they were vouched for by its handshake, not
        its address, and a redial from it would be accepted anyway. The closing finishes in
        the background (`settle` waits for it) and touches only the objects it was handed,
        never a table entry, so a peer re-added by a later call, however soon, is left alone.
        Validated all or nothing: a bad entry changes nothing. Call it on the event loop's
        thread, the only one the transport runs on.
        """
        want: dict[NodeId, Address] = {}
        for peer, addr in peers.items():
            if type(peer) is not int or peer <= 0 or peer == self.node_id:
                raise LocalProtocolError(f"node {peer!r} cannot be a peer of node {self.node_id}")
            if not (
                isinstance(addr, tuple | list) and len(addr) == 2 and isinstance(addr[0], str)
                and type(addr[1]) is int and 0 <= addr[1] <= 65535
            ):
                raise LocalProtocolError(f"node {peer}: address {addr!r:.60} is not (host, port)")
            want[peer] = (addr[0], addr[1])
        for peer, out in list(self._peers.items()):
            wanted = want.get(peer)
            if wanted == out.addr:
                continue
            del self._peers[peer]  # removed, or moved to another address
            del self._stats.peers[peer]
            self._track(out.retire())
            if wanted is None:
                self._close_accepted(peer)
        for peer, addr in want.items():
            if peer not in self._peers:
                stats = self._stats.peers[peer] = PeerStats()
                out = Outbound(peer, addr, self._hello, self.cfg, self._client_ssl, self._rng,
                               stats, self._secret)
                self._peers[peer] = out
                for conn in self._handlers.values():
                    if conn.peer == peer:  # a moved peer's connections count in its new stats
                        conn.stats = stats
                if self._server is not None:
                    out.start()
        assert self.peers == want

    def _close_accepted(self, peer: NodeId) -> None:
        """Close every connection accepted from `peer` so far: the newest and any older one
        still being read. Connections it makes after this call are not these objects."""
        for task, conn in self._handlers.items():
            if conn.peer == peer and conn.live:
                conn.close()
                self._track(task)

    def _track(self, task: asyncio.Task[Any] | None) -> None:
        if task is not None and not task.done():
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    async def settle(self) -> None:
        """Wait until the connections that set_peers dropped are closed. Not needed for
        correctness (nothing they do can reach the table); tests use it to know that."""
        while self._closing:
            await asyncio.wait(set(self._closing))  # wait, not gather: never cancels them

    # ---- sending -----------------------------------------------------------------------------

    def send(self, group: int, msg: Any) -> None:
        """Queue `msg` of consensus group `group` for `msg.dst`. Never blocks: a full queue or
        a fault drops it (counted). An unknown destination is counted too: Raft may still
        address a removed member. A bad group id is our own bug (LocalProtocolError)."""
        if self._server is None:
            raise LocalProtocolError("transport not started")
        if type(group) is not int or not 0 <= group < HOST_GROUP:
            raise LocalProtocolError(
                f"group id must be an integer in [0, {HOST_GROUP - 1}], got {group!r:.40}"
            )
        out = self._peers.get(msg.dst)
        if out is None:
            self._stats.unroutable += 1
            return
        data = message_frame(group, self.codec.encode(msg), self.cfg.max_frame)
        delay = self.faults.outgoing(msg.dst)
        if delay is None:
            out.stats.fault_dropped += 1
            return
        out.enqueue(data, delay)

    def send_host(self, dst: NodeId, payload: bytes) -> None:
        """Queue a message from this process to process `dst`, outside every group (the
        hosts' coalesced heartbeat). Dropped like any message when there is no room."""
        if self._server is None:
            raise LocalProtocolError("transport not started")
        if len(payload) > MAX_HOST_MESSAGE:
            raise LocalProtocolError(f"host message of {len(payload)} bytes exceeds {MAX_HOST_MESSAGE}")
        out = self._peers.get(dst)
        if out is None:
            self._stats.unroutable += 1
            return
        delay = self.faults.outgoing(dst)
        if delay is None:
            out.stats.fault_dropped += 1
            return
        out.enqueue(message_frame(HOST_GROUP, payload, self.cfg.max_frame), delay)

    def stats(self) -> NetStats:
        """A copy of the counters, safe to hand to a metrics exporter."""
        s = self._stats
        return NetStats(
            {p: replace(ps) for p, ps in s.peers.items()}, s.rejected_connections, s.unroutable,
            {p: replace(ps) for p, ps in s.strangers.items()},
        )

    # ---- receiving ---------------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        host, port = writer.get_extra_info("peername")[:2]
        where = f"{host}:{port}"
        if len(self._handlers) >= self.cfg.max_inbound:
            self._refusals.log(logging.WARNING, "refusing connection from %s: %d connections "
                               "open", where, len(self._handlers))
            writer.close()
            return
        conn = self._handlers[task] = _Accepted(writer)
        try:
            await self._accept(reader, conn)
            where = f"node {conn.peer} at {where}"
            await self._read_loop(reader, conn)
            self._lost(conn)
        except RemoteProtocolError as e:
            self._stats.rejected_connections += 1
            self._refusals.log(logging.WARNING, "closing connection from %s: %s", where, e)
        except TimeoutError:
            self._refusals.log(logging.INFO, "connection from %s lost: handshake timed out",
                               where)
        except (OSError, asyncio.IncompleteReadError) as e:
            self._refusals.log(logging.INFO, "connection from %s lost: %s", where,
                               e or type(e).__name__)
            self._lost(conn)
        finally:
            del self._handlers[task]
            if conn.peer is not None and self._inbound.get(conn.peer) is conn:
                del self._inbound[conn.peer]
            writer.close()

    def _lost(self, conn: _Accepted) -> None:
        """The peer ended its current connection (not one we closed, nor one it replaced)."""
        if (conn.live and conn.peer is not None and self._inbound.get(conn.peer) is conn
                and self.on_peer_lost is not None):
            self.on_peer_lost(conn.peer)

    async def _accept(self, reader: asyncio.StreamReader, conn: _Accepted) -> None:
        async with asyncio.timeout(self.cfg.handshake_timeout):  # not wait_for: see peer.py
            theirs = await read_handshake(reader)
            self._check_hello(theirs)
            if self._server_ssl is not None:
                check_peer_certificate(conn.writer.get_extra_info("peercert"), theirs.node_id,
                                       "claims")
            secret = self._secret
            if secret is None:
                conn.writer.write(self._hello.encode())
            else:
                mine = secret.hello(self._hello)
                proof = secret.proof("acceptor", theirs, mine)
                conn.writer.write(replace(mine, proof=proof).encode())
                if not secret.check(await read_proof(reader), "dialer", theirs, mine):
                    raise RemoteProtocolError(
                        f"node {theirs.node_id} did not prove it knows the peer secret "
                        "(another secret, or a proof replayed from another connection)")
        # A node of this cluster that is not in our table is heard all the same: we only
        # never dial it. It may be a member re-added under its old id whose re-add we have
        # not applied yet because we lag, and that now leads: refusing it, we would never
        # learn of the re-add and it could never reach us (a deadlock the simulator found).
        out = self._peers.get(theirs.node_id)
        stats = out.stats if out is not None else self._stats.strangers.setdefault(
            theirs.node_id, PeerStats())
        # From here to the end, no await: the peer cannot be removed between the lookup above
        # and its registration below, so set_peers always sees this connection if it must.
        conn.peer, conn.stats = theirs.node_id, stats
        old = self._inbound.get(theirs.node_id)
        if old is not None:
            old.close()  # the peer redialed; its old connection is dead or dying
        self._inbound[theirs.node_id] = conn

    def _check_hello(self, theirs: Handshake) -> None:
        if theirs.cluster_id != self.cluster_id:
            raise RemoteProtocolError(
                f"node {theirs.node_id} belongs to cluster {theirs.cluster_id!r}, "
                f"not {self.cluster_id!r}"
            )
        if theirs.codec != self.codec.name:
            raise RemoteProtocolError(
                f"node {theirs.node_id} speaks codec {theirs.codec!r}, not {self.codec.name!r}"
            )
        if theirs.node_id == self.node_id or theirs.node_id <= 0:
            raise RemoteProtocolError(f"a peer cannot be node {theirs.node_id}")
        if self._secret is not None and not theirs.auth:
            raise RemoteProtocolError(
                f"node {theirs.node_id} offers no peer-secret proof and this node requires one "
                "(every node needs the same --peer-secret-file)")
        if self._secret is None and theirs.auth:
            raise RemoteProtocolError(
                f"node {theirs.node_id} authenticates with a peer secret and this node has none "
                "(every node needs the same --peer-secret-file)")

    async def _read_loop(self, reader: asyncio.StreamReader, conn: _Accepted) -> None:
        decoder = FrameDecoder(self.cfg.max_frame)
        decode, faults, me = self.codec.decode, self.faults, self.node_id
        peer = conn.peer
        assert peer is not None
        while data := await reader.read(self.cfg.read_chunk):
            for payload in decoder.feed(data):
                if not conn.live:
                    return  # closed by set_peers or a redial while this chunk was in hand
                group, body = split_group(payload)
                if group == HOST_GROUP:
                    self._host_message(peer, body)
                    continue
                msg = decode(body)
                if msg.src != peer or msg.dst != me:
                    raise RemoteProtocolError(
                        f"message from {msg.src} to {msg.dst} on the connection of node {peer} "
                        f"to node {me}"
                    )
                stats = conn.stats  # set_peers may hand it new stats when the peer moves
                stats.received_frames += 1
                stats.received_bytes += len(payload) + 4
                if not faults.incoming(peer):
                    stats.fault_dropped += 1
                    continue
                self._deliver(group, msg)

    def _host_message(self, peer: NodeId, body: bytes) -> None:
        if len(body) > MAX_HOST_MESSAGE:
            raise RemoteProtocolError(
                f"host message of {len(body)} bytes exceeds {MAX_HOST_MESSAGE}")
        conn_stats = self._stats.peers.get(peer) or self._stats.strangers.get(peer)
        if conn_stats is not None:
            conn_stats.received_frames += 1
        if self.on_host is not None and self.faults.incoming(peer):
            self.on_host(peer, body)

    def _deliver(self, group: int, msg: Any) -> None:
        try:
            self.on_message(group, msg)
        except RemoteProtocolError:
            raise  # the receiver judged the message malformed: the peer's fault
        except Exception:
            # The receiver's own bug: report it, but do not punish the peer for it.
            log.exception("on_message failed for a message of group %d from node %s", group,
                          msg.src)

