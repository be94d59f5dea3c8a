"""The sending side toward one peer: a bounded queue, one connection, redials with backoff.

`enqueue` never blocks and never awaits. One task per peer dials, handshakes, then writes
whatever has queued up since its last write in a single batch, so a burst of sends costs one
syscall, not one each. When the queue is full the newest message is dropped and counted:
Raft retransmits, and a dead peer must not grow our memory.

Before it writes a message the dialer makes sure of whom it reached: under TLS, a server
certificate for the node it dialed (tls.py); with a peer secret, the acceptor's proof, to
which it answers with its own (frames.py). It does not wait to hear that its proof passed:
an acceptor that refuses it hangs up, which the dialer notices at once, and Raft resends.
"""

from __future__ import annotations

import asyncio
import logging
import random
import ssl
from collections import deque

from shoal.consensus.messages import NodeId, RemoteProtocolError

from .config import NetConfig
from .frames import HEADER, MAX_HANDSHAKE, PROOF_SIZE, Handshake, PeerSecret, frame
from .stats import PeerStats
from .tls import check_peer_certificate

log = logging.getLogger("shoal.net")

Address = tuple[str, int]

_CONN_ERRORS = (OSError, TimeoutError, asyncio.IncompleteReadError, RemoteProtocolError)


async def read_handshake(reader: asyncio.StreamReader) -> Handshake:
    """The first frame of a connection. Its size is checked before reading the payload."""
    (n,) = HEADER.unpack(await reader.readexactly(HEADER.size))
    if n > MAX_HANDSHAKE:
        raise RemoteProtocolError(
            f"handshake frame of {n} bytes exceeds {MAX_HANDSHAKE}: not a Shoal peer"
        )
    return Handshake.decode(await reader.readexactly(n))


async def read_proof(reader: asyncio.StreamReader) -> bytes:
    """The dialer's proof, the frame after its handshake; refused from the header alone when
    it is not PROOF_SIZE bytes."""
    (n,) = HEADER.unpack(await reader.readexactly(HEADER.size))
    if n != PROOF_SIZE:
        raise RemoteProtocolError(
            f"a frame of {n} bytes where the {PROOF_SIZE}-byte peer-secret proof belongs"
        )
    return await reader.readexactly(n)


class Outbound:
    def __init__(
        self,
        peer: NodeId,
        addr: Address,
        hello: Handshake,
        cfg: NetConfig,
        ssl_ctx: ssl.SSLContext | None,
        rng: random.Random,
        stats: PeerStats,
        secret: PeerSecret | None = None,
    ):
        self.peer = peer
        self.addr = addr
        self._hello = hello
        self._cfg = cfg
        self._ssl = ssl_ctx
        self._secret = secret
        self._rng = rng
        self.stats = stats
        self._queue: deque[bytes] = deque()
        self._ready = asyncio.Event()  # set while the queue is non-empty (or the link broke)
        self._held = 0  # messages waiting out a fault delay, counted against the bound
        self._held_bytes = 0
        self._closed = False
        self._task: asyncio.Task[None] | None = None

    # ---- the producer side: synchronous ------------------------------------------------------

    def enqueue(self, frame: bytes, delay: float = 0.0) -> bool:
        """Queue one framed message, after `delay` seconds. False if dropped for lack of room."""
        st, cfg = self.stats, self._cfg
        depth = len(self._queue) + self._held
        if self._closed or depth >= cfg.max_queue_msgs or (
            st.queue_bytes + self._held_bytes + len(frame) > cfg.max_queue_bytes
        ):
            st.dropped_frames += 1
            st.dropped_bytes += len(frame)
            return False
        if delay > 0:
            self._held += 1
            self._held_bytes += len(frame)
            st.queue_depth += 1
            asyncio.get_running_loop().call_later(delay, self._release, frame)
        else:
            self._push(frame)
        return True

    def _release(self, frame: bytes) -> None:
        self._held -= 1
        self._held_bytes -= len(frame)
        self.stats.queue_depth -= 1
        if not self._closed:
            self._push(frame)

    def _push(self, frame: bytes) -> None:
        self._queue.append(frame)
        self.stats.queue_depth += 1
        self.stats.queue_bytes += len(frame)
        self._ready.set()

    def _take_batch(self) -> list[bytes]:
        """Everything queued, up to max_batch_bytes (at least one frame)."""
        q, limit = self._queue, self._cfg.max_batch_bytes
        batch = [q.popleft()]
        size = len(batch[0])
        while q and size + len(q[0]) <= limit:
            f = q.popleft()
            batch.append(f)
            size += len(f)
        st = self.stats
        st.queue_depth -= len(batch)
        st.queue_bytes -= size
        st.sent_frames += len(batch)
        st.sent_bytes += size
        st.writes += 1
        if not q:
            self._ready.clear()
        return batch

    # ---- the connection task -----------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(
            self._run(), name=f"shoal.net send to {self.peer}"
        )

    def retire(self) -> asyncio.Task[None] | None:
        """Stop now, synchronously: refuse new messages, discard the queue, and cancel the
        connection task, which closes its socket as it unwinds. Returns that task (None if
        never started) for whoever wants to wait for the close. Everything the unwinding task
        touches belongs to this object alone (its queue, its writer, its stats), so a new
        Outbound for the same peer, created meanwhile, is never disturbed by it."""
        self._closed = True
        self._queue.clear()
        self.stats.queue_depth = self._held  # held frames are discarded when they come due
        self.stats.queue_bytes = 0
        if self._task is not None:
            self._task.cancel()
        return self._task

    async def close(self) -> None:
        task = self.retire()
        if task is not None:
            await asyncio.gather(task, return_exceptions=True)

    def _backoff(self, attempt: int) -> float:
        """Exponential, capped, with "equal jitter" so a cluster's redials do not align."""
        d = min(self._cfg.backoff_max, self._cfg.backoff_base * 2 ** min(attempt, 30))
        return d / 2 + self._rng.uniform(0, d / 2)

    async def _run(self) -> None:
        attempt = 0
        while True:
            writer: asyncio.StreamWriter | None = None
            try:
                reader, writer = await self._connect()
                attempt = 0
                await self._pump(reader, writer)
            except _CONN_ERRORS as e:
                # The first failure in a row is news; the retries that follow are not.
                level = logging.WARNING if attempt == 0 else logging.DEBUG
                log.log(level, "node %s at %s:%s: %s", self.peer, *self.addr, _reason(e))
            finally:
                self.stats.connected = False
                if writer is not None:
                    writer.close()
            await asyncio.sleep(self._backoff(attempt))
            attempt += 1

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation that
        # races with completion, and then close() would wait on this task forever.
        host, port = self.addr
        async with asyncio.timeout(self._cfg.connect_timeout):
            reader, writer = await asyncio.open_connection(host, port, ssl=self._ssl)
        try:
            if self._ssl is not None:  # before we say a word: is this the node we dialed?
                check_peer_certificate(writer.get_extra_info("peercert"), self.peer,
                                       "was dialed as")
            secret = self._secret
            hello = self._hello if secret is None else secret.hello(self._hello)
            writer.write(hello.encode())
            async with asyncio.timeout(self._cfg.handshake_timeout):
                theirs = await read_handshake(reader)
            if theirs.cluster_id != self._hello.cluster_id or theirs.node_id != self.peer:
                raise RemoteProtocolError(
                    f"expected node {self.peer} of cluster {self._hello.cluster_id!r}, "
                    f"found node {theirs.node_id} of cluster {theirs.cluster_id!r}"
                )
            if secret is not None:
                if not theirs.proof or not secret.check(theirs.proof, "acceptor", hello, theirs):
                    raise RemoteProtocolError(
                        "did not prove it knows the peer secret (it has none, or another)")
                writer.write(frame(secret.proof("dialer", hello, theirs), MAX_HANDSHAKE))
        except BaseException:
            writer.close()
            raise
        st = self.stats
        st.connects += 1
        st.reconnects += st.connects > 1
        st.connected = True
        return reader, writer

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # The peer never speaks after its handshake, so any read completing means it hung up
        # (or broke protocol); the watcher wakes the pump so it redials at once, rather than
        # learning of the loss from a failed write that would take a batch with it.
        watcher = asyncio.ensure_future(_hangup(reader))
        watcher.add_done_callback(lambda _: self._ready.set())
        try:
            while True:
                await self._ready.wait()
                if watcher.done():
                    raise ConnectionResetError("peer closed the connection")
                if not self._queue:  # woken by an old connection's watcher
                    self._ready.clear()
                    continue
                writer.writelines(self._take_batch())
                await writer.drain()
        finally:
            watcher.cancel()


async def _hangup(reader: asyncio.StreamReader) -> None:
    try:
        await reader.read(1)
    except OSError:
        pass  # a reset is a hangup too


def _reason(e: BaseException) -> str:
    if isinstance(e, TimeoutError):
        return "timed out"
    if isinstance(e, asyncio.IncompleteReadError):
        return "peer closed the connection during the handshake"
    return str(e) or type(e).__name__
