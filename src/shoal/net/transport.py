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
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from shoal.consensus.messages import LocalProtocolError, NodeId, RemoteProtocolError

from .codec import Codec, get_codec
from .config import NetConfig
from .faults import FaultPlan
from .frames import FrameDecoder, Handshake, frame
from .peer import Address, Outbound, read_handshake
from .stats import NetStats, PeerStats
from .tls import TLSConfig

log = logging.getLogger("shoal.net")


class Transport:
    def __init__(
        self,
        node_id: NodeId,
        listen_addr: Address,
        peers: dict[NodeId, Address],
        cluster_id: str,
        on_message: Callable[[Any], None],
        tls: TLSConfig | None = None,
        codec: Codec | str = "raft",
        *,
        config: NetConfig | None = None,
        faults: FaultPlan | None = None,
        seed: int | None = None,
    ):
        if node_id <= 0:
            raise LocalProtocolError(f"node ids start at 1, got {node_id}")
        self.node_id = node_id
        self.listen_addr = listen_addr
        self.cluster_id = cluster_id
        self.on_message = on_message
        self.codec = get_codec(codec) if isinstance(codec, str) else codec
        self.cfg = config or NetConfig()
        self.faults = faults or FaultPlan()
        self._hello = Handshake(cluster_id, node_id, self.codec.name)
        self._server_ssl = tls.server_context() if tls else None
        self._client_ssl = tls.client_context() if tls else None
        self._rng = random.Random(seed)  # backoff jitter only
        self._stats = NetStats()
        self._peers: dict[NodeId, Outbound] = {}
        self._inbound: dict[NodeId, asyncio.StreamWriter] = {}  # the newest one per peer
        self._handlers: dict[asyncio.Task[Any], asyncio.StreamWriter] = {}  # all accepted
        self._server: asyncio.Server | None = None
        for peer, addr in peers.items():
            self.add_peer(peer, addr)

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
        for writer in self._handlers.values():
            writer.transport.abort()
        if self._handlers:
            await asyncio.wait(list(self._handlers), timeout=self.cfg.handshake_timeout)
        await self._server.wait_closed()
        self._server = None

    # ---- membership --------------------------------------------------------------------------

    def add_peer(self, peer: NodeId, addr: Address) -> None:
        if peer == self.node_id or peer <= 0:
            raise LocalProtocolError(f"cannot add node {peer} as a peer of node {self.node_id}")
        if peer in self._peers:
            raise LocalProtocolError(f"node {peer} is already a peer")
        stats = self._stats.peers.setdefault(peer, PeerStats())
        out = Outbound(peer, addr, self._hello, self.cfg, self._client_ssl, self._rng, stats)
        self._peers[peer] = out
        if self._server is not None:
            out.start()

    async def remove_peer(self, peer: NodeId) -> None:
        """Stop sending to `peer`, discard its queue and close its inbound connection."""
        out = self._peers.pop(peer, None)
        if out is None:
            raise LocalProtocolError(f"node {peer} is not a peer")
        self._stats.peers.pop(peer, None)
        await out.close()
        writer = self._inbound.pop(peer, None)
        if writer is not None:
            writer.close()

    # ---- sending -----------------------------------------------------------------------------

    def send(self, msg: Any) -> None:
        """Queue `msg` for `msg.dst`. Never blocks: a full queue or a fault drops it (counted).
        An unknown destination is counted too: Raft may still address a removed member."""
        if self._server is None:
            raise LocalProtocolError("transport not started")
        out = self._peers.get(msg.dst)
        if out is None:
            self._stats.unroutable += 1
            return
        data = frame(self.codec.encode(msg), self.cfg.max_frame)
        delay = self.faults.outgoing(msg.dst)
        if delay is None:
            out.stats.fault_dropped += 1
            return
        out.enqueue(data, delay)

    def stats(self) -> NetStats:
        """A copy of the counters, safe to hand to a metrics exporter."""
        s = self._stats
        return NetStats(
            {p: replace(ps) for p, ps in s.peers.items()}, s.rejected_connections, s.unroutable
        )

    # ---- receiving ---------------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        host, port = writer.get_extra_info("peername")[:2]
        where = f"{host}:{port}"
        if len(self._handlers) >= self.cfg.max_inbound:
            log.warning("refusing connection from %s: %d connections open", where,
                        len(self._handlers))
            writer.close()
            return
        self._handlers[task] = writer
        peer: NodeId | None = None
        try:
            peer = await self._accept(reader, writer)
            where = f"node {peer} at {where}"
            await self._read_loop(reader, peer)
        except RemoteProtocolError as e:
            self._stats.rejected_connections += 1
            log.warning("closing connection from %s: %s", where, e)
        except (OSError, TimeoutError, asyncio.IncompleteReadError) as e:
            log.info("connection from %s lost: %s", where, e or type(e).__name__)
        finally:
            del self._handlers[task]
            if peer is not None and self._inbound.get(peer) is writer:
                del self._inbound[peer]
            writer.close()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> NodeId:
        async with asyncio.timeout(self.cfg.handshake_timeout):  # not wait_for: see peer.py
            theirs = await read_handshake(reader)
        if theirs.cluster_id != self.cluster_id:
            raise RemoteProtocolError(
                f"node {theirs.node_id} belongs to cluster {theirs.cluster_id!r}, "
                f"not {self.cluster_id!r}"
            )
        if theirs.codec != self.codec.name:
            raise RemoteProtocolError(
                f"node {theirs.node_id} speaks codec {theirs.codec!r}, not {self.codec.name!r}"
            )
        if theirs.node_id not in self._peers:
            # etcd does the same: a node we do not know of yet (or any more) is refused; it
            # redials with backoff and is accepted once membership catches up.
            raise RemoteProtocolError(f"node {theirs.node_id} is not a peer of this node")
        writer.write(self._hello.encode())
        old = self._inbound.get(theirs.node_id)
        if old is not None:
            old.close()  # the peer redialed; its old connection is dead or dying
        self._inbound[theirs.node_id] = writer
        return theirs.node_id

    async def _read_loop(self, reader: asyncio.StreamReader, peer: NodeId) -> None:
        decoder = FrameDecoder(self.cfg.max_frame)
        decode, faults, me = self.codec.decode, self.faults, self.node_id
        stats = self._stats.peers[peer]
        while data := await reader.read(self.cfg.read_chunk):
            for payload in decoder.feed(data):
                msg = decode(payload)
                if msg.src != peer or msg.dst != me:
                    raise RemoteProtocolError(
                        f"message from {msg.src} to {msg.dst} on the connection of node {peer} "
                        f"to node {me}"
                    )
                stats.received_frames += 1
                stats.received_bytes += len(payload) + 4
                if not faults.incoming(peer):
                    stats.fault_dropped += 1
                    continue
                self._deliver(msg)

    def _deliver(self, msg: Any) -> None:
        try:
            self.on_message(msg)
        except RemoteProtocolError:
            raise  # the receiver judged the message malformed: the peer's fault
        except Exception:
            # The receiver's own bug: report it, but do not punish the peer for it.
            log.exception("on_message failed for a message from node %s", msg.src)

