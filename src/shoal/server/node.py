"""The node runtime: one consensus core driven with a real disk, a real network and timers.

All core calls happen on one asyncio task, the Ready loop, never between `ready()` and
`advance()`: everything else (peer messages, ticks, client requests) enqueues an input and
wakes the loop. A Ready's disk writes run on a dedicated thread (one write and at most one fsync
per batch), so the event loop keeps reading the network meanwhile; inputs that arrive during
the fsync are all handled before the next Ready, which is what batches proposals."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import logging
import random
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any

import msgpack

from ..consensus.confchange import ConfChange
from ..consensus.engine import Engine
from ..consensus.messages import (
    ConfState,
    ConsensusError,
    Durable,
    Entry,
    EntryKind,
    HardState,
    NotLeader,
    ProposalDropped,
    Ready,
)
from ..consensus.paxos import MultiPaxos, PaxosConfig
from ..consensus.raft import Raft, RaftConfig
from ..kv import KVStore
from ..kv.errors import KVError
from ..kv.requests import (
    Command,
    CompactionRequest,
    LeaseExpireRequest,
    LeaseGrantRequest,
    LeaseKeepAliveRequest,
    LeaseLeasesRequest,
    LeaseLeasesResponse,
    LeasePromoteRequest,
    LeasePromoteResponse,
    LeaseTimeToLiveRequest,
    RangeRequest,
    Request,
    ResponseHeader,
    decode_command,
    encode_command,
)
from ..kv.watch import WatchHub, WatchResponse
from ..net import (
    FaultPlan,
    TLSConfig,
    Transport,
    paxos_codec,  # noqa: F401 - registers the "paxos" wire codec
)
from ..storage import Storage
from .config import Member, NodeConfig, parse_member

log = logging.getLogger("shoal.node")


class NodeError(Exception):
    """A request failed in a way the client should hear about; `code` is a protocol code."""

    def __init__(self, code: str, message: str, **details: Any):
        super().__init__(message)
        self.code, self.details = code, details


def cluster_number(name: str) -> int:
    """A stable 63-bit cluster id from the cluster's name (etcd derives it from its token)."""
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "big") >> 1


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class _Waiter:
    future: asyncio.Future[Any]


class Node:
    def __init__(self, cfg: NodeConfig):
        self.cfg = cfg
        self.id = cfg.id
        self.cluster_id = cluster_number(cfg.cluster_id)
        # Addresses from the configuration until the replicated membership (log or snapshot)
        # says otherwise; a joining node needs them to answer the leader at all.
        self.members: dict[int, Member] = {m.id: m for m in cfg.members}
        self._peer_set: set[int] = set()
        self.kv = KVStore()
        self.hub = WatchHub(self.kv.mvcc)
        self.faults = FaultPlan()
        self.applied = 0
        self.snapshot_index = 0
        self.role = "follower"
        self.leader = 0
        self.started_at = time.monotonic()
        self._inputs: deque[Callable[[], None]] = deque()
        self._wake = asyncio.Event()
        self._disk = ThreadPoolExecutor(1, thread_name_prefix=f"shoal-disk-{cfg.id}")
        self._proposal_ids = itertools.count(1)
        self._proposals: dict[int, asyncio.Future[Any]] = {}
        self._reads: dict[bytes, asyncio.Future[int]] = {}  # ReadIndex context -> read index
        self._read_waiters: list[tuple[int, asyncio.Future[None]]] = []  # applied >= index
        self._expiring: set[int] = set()  # leases whose revocation we proposed
        self._compacting = -1  # compact revision when we last proposed a compaction
        self._promoted_term = -1  # the term in which our lease promotion was applied
        self._watch_sinks: dict[int, Callable[[Any], None]] = {}
        self._tasks: list[asyncio.Task[Any]] = []
        self._stopping = False
        self.stats = {"proposals": 0, "applied_entries": 0, "fsyncs": 0, "readies": 0,
                      "read_index": 0, "snapshots": 0, "dropped_proposals": 0}

    # ================================================================ lifecycle
    async def start(self) -> None:
        storage, durable = Storage.open(self.cfg.data_dir, cluster_id=self.cluster_id,
                                        node_id=self.id, repair=self.cfg.repair)
        self.storage = storage
        if _empty(durable) and not self.cfg.join:
            durable = self._bootstrap()
        if durable.snapshot is not None:
            self._restore(durable.snapshot.data)
            self.applied = self.snapshot_index = durable.snapshot.meta.index
        self.core = self._make_core(durable)
        tls = (TLSConfig(self.cfg.tls_cert, self.cfg.tls_key, self.cfg.tls_ca)
               if self.cfg.tls_cert and self.cfg.tls_key and self.cfg.tls_ca else None)
        self.transport = Transport(self.id, self.cfg.me.peer, {}, self.cfg.cluster_id,
                                   self._on_peer_message, tls, codec=self.cfg.engine,
                                   faults=self.faults)
        self._sync_peers()
        await self.transport.start()
        self._tasks = [asyncio.create_task(self._ready_loop(), name=f"ready-{self.id}"),
                       asyncio.create_task(self._ticker(), name=f"tick-{self.id}")]
        log.info("node %d started: %d entries after index %d, term %d", self.id,
                 len(durable.entries), self.applied, durable.hard_state.term)

    def _make_core(self, durable: Durable) -> Engine:
        if self.cfg.engine == "paxos":
            # Paxos changes membership `alpha` instances after the change is chosen, so the
            # initial configuration cannot wait for the bootstrap entry: it is given up front.
            conf = ConfState(voters=frozenset(m.id for m in self.cfg.members))
            return MultiPaxos(self.id, conf, random.Random(), durable, PaxosConfig(
                election_ticks=self.cfg.election_ticks, max_pending_reads=self.cfg.max_pending_requests))
        return Raft(self.id, ConfState(), random.Random(), durable, RaftConfig(
            election_tick=self.cfg.election_ticks, heartbeat_tick=1, forward_proposals=False,
            max_pending_reads=self.cfg.max_pending_requests))

    def _term(self) -> int:
        return self.core.status().term

    def _bootstrap(self) -> Durable:
        """A new cluster's first entry, written identically by every initial member: the
        configuration change that adds them all, so a member added later learns the initial
        membership from the log like any other change."""
        cc = ConfChange(tuple(("add", m.id) for m in self.cfg.members),
                        context=_members_context(self.cfg.members))
        entry = Entry(term=1, index=1, kind=EntryKind.CONFIG, data=cc.encode())
        hs = HardState(term=1, vote=0, commit=1)
        self.storage.save(Ready(hard_state=hs, entries=[entry], must_sync=True))
        return Durable(hs, None, (entry,))

    async def stop(self, transfer: bool = True) -> None:
        """Graceful shutdown: hand leadership to the most caught-up voter first."""
        if transfer and self.role == "leader":
            await self._transfer_before_stop()
        self._stopping = True
        self.role, self.leader = "follower", 0  # answer "no leader" from now on
        self._wake.set()
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.transport.stop()
        for fut in list(self._proposals.values()) + list(self._reads.values()):
            if not fut.done():
                fut.set_exception(NodeError("unavailable", "node is shutting down"))
        self._disk.shutdown(wait=True)
        self.storage.close()

    async def _transfer_before_stop(self) -> None:
        st = self.core.status()
        others = {n: m for n, m in st.progress.items() if n != self.id and n in st.conf.voters}
        if not others:
            return
        target = max(others, key=lambda n: others[n])
        self._input(lambda: _quietly(self.core.transfer_leadership, target))
        deadline = time.monotonic() + self.cfg.tick_ms * self.cfg.election_ticks / 1000
        while self.role == "leader" and time.monotonic() < deadline:
            await asyncio.sleep(self.cfg.tick_ms / 1000)
        log.info("node %d handed leadership to %d before stopping", self.id, self.leader)

    # ================================================================ the Ready loop
    def _input(self, fn: Callable[[], None]) -> None:
        self._inputs.append(fn)
        self._wake.set()

    def _on_peer_message(self, msg: Any) -> None:
        self._input(lambda: self._step(msg))

    def _step(self, msg: Any) -> None:
        try:
            self.core.step(msg)
        except ConsensusError as exc:
            log.warning("node %d dropped a message from %s: %s", self.id, getattr(msg, "src", "?"), exc)

    async def _ticker(self) -> None:
        period = self.cfg.tick_ms / 1000
        while True:
            await asyncio.sleep(period)
            self._input(self.core.tick)
            if self.role == "leader":
                self._expire_leases()
                self._auto_compact()

    async def _ready_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._stopping:
            await self._wake.wait()
            self._wake.clear()
            while self._inputs:
                self._inputs.popleft()()
            while self.core.has_ready():
                rd = self.core.ready()
                self.stats["readies"] += 1
                if rd.snapshot is not None or rd.entries or rd.hard_state is not None:
                    if rd.must_sync and self.cfg.fsync:
                        self.stats["fsyncs"] += 1
                    save_rd = rd if self.cfg.fsync else replace(rd, must_sync=False)
                    await loop.run_in_executor(self._disk, self.storage.save, save_rd)
                for m in rd.messages:
                    self.transport.send(m)
                self._apply(rd)
                self.core.advance(rd)
                self._after_advance(rd)
                while self._inputs:  # what arrived during the fsync joins the next batch
                    self._inputs.popleft()()

    def _after_advance(self, rd: Ready) -> None:
        if rd.soft_state is not None:
            was_leader = self.role == "leader"
            self.role, self.leader = rd.soft_state.role, rd.soft_state.leader
            if self.role == "leader" and not was_leader:
                log.info("node %d is leader in term %d", self.id, self._term())
                # A new leader restarts every lease's clock so none expires during failover.
                self._propose_internal(LeasePromoteRequest(now_ms()))
            if self.role != "leader":
                self._expiring.clear()
        for rs in rd.read_states:
            fut = self._reads.pop(rs.context, None)
            if fut is not None and not fut.done():
                fut.set_result(rs.index)
        self._release_read_waiters()
        if self.applied - self.snapshot_index >= self.cfg.snapshot_entries:
            try:
                snap = self.core.compact(self.applied, self._snapshot_data())
            except ProposalDropped:
                return  # the engine asks to compact later (Paxos: a change not yet in effect)
            self.storage.save_snapshot(snap)
            self.snapshot_index = self.applied
            self.stats["snapshots"] += 1

    # ================================================================ applying
    def _apply(self, rd: Ready) -> None:
        if rd.snapshot is not None:
            self._restore(rd.snapshot.data)
            self.applied = self.snapshot_index = rd.snapshot.meta.index
            self._sync_peers()
        for e in rd.committed:
            if e.kind is EntryKind.CONFIG:
                self._apply_membership(e)
            elif e.data:
                self._apply_command(e)
            self.applied = e.index
        self.stats["applied_entries"] += len(rd.committed)
        if rd.committed or rd.snapshot is not None:
            self.hub.advance()
            self._push_watch_events()

    def _apply_command(self, e: Entry) -> None:
        proposer, number, command = msgpack.unpackb(e.data)
        result: Any
        try:
            result = self.kv.apply_entry(command, e.index)
        except KVError as exc:
            result = exc
        if isinstance(result, LeasePromoteResponse) and proposer == self.id:
            self._promoted_term = self._term()
        if proposer == self.id:
            fut = self._proposals.pop(number, None)
            if fut is not None and not fut.done():
                fut.set_result(result)

    def _apply_membership(self, e: Entry) -> None:
        cc = ConfChange.decode(e.data)
        added = _parse_context(cc.context)
        for op, n in cc.changes:
            if op == "remove":
                self.members.pop(n, None)
            elif n in added:
                self.members[n] = added[n]
        self._sync_peers()
        proposer_fut = self._proposals.pop(-e.index, None)  # membership waiters key by -index
        if proposer_fut is not None and not proposer_fut.done():
            proposer_fut.set_result(None)

    def _sync_peers(self) -> None:
        if not hasattr(self, "transport"):
            return
        want = {n: m.peer for n, m in self.members.items() if n != self.id}
        for n in sorted(set(want) - self._peer_set):
            self.transport.add_peer(n, want[n])
        for n in sorted(self._peer_set - set(want)):
            asyncio.get_running_loop().create_task(self.transport.remove_peer(n))
        self._peer_set = set(want)

    def snapshot_bytes(self) -> bytes:
        """The replicated state as of `applied` (what `shoal snapshot save` writes)."""
        return self._snapshot_data()

    def _snapshot_data(self) -> bytes:
        return msgpack.packb([self.kv.snapshot(),
                              {n: m.describe() for n, m in sorted(self.members.items())}])

    def _restore(self, data: bytes) -> None:
        kv_bytes, members = msgpack.unpackb(data, strict_map_key=False)
        self.kv = KVStore.restore(kv_bytes)
        self.hub = WatchHub(self.kv.mvcc)
        # The old hub's watchers cannot follow a store replaced wholesale: end their streams
        # (canceled, no compaction), and clients re-create them from their last revision.
        for watch_id, sink in self._watch_sinks.items():
            sink(WatchResponse(watch_id, 0, canceled=True, cancel_reason="store replaced by a snapshot"))
        self._watch_sinks.clear()
        self.members = {int(n): parse_member(spec) for n, spec in members.items()}
        self.members.setdefault(self.id, self.cfg.me)

    # ================================================================ client-facing operations
    def _check_capacity(self) -> None:
        if self._stopping:
            raise NodeError("unavailable", "node is shutting down")
        if len(self._proposals) + len(self._reads) >= self.cfg.max_pending_requests:
            raise NodeError("too_many_requests", "too many requests in flight; retry later")

    def _not_leader(self) -> NodeError:
        leader = self.members.get(self.leader)
        if leader is None:
            return NodeError("no_leader", "no leader is known right now; retry shortly")
        return NodeError("not_leader", f"not leader, leader is {self.leader}", leader=self.leader,
                         endpoint=f"{leader.client[0]}:{leader.client[1]}")

    async def write(self, command: bytes, timeout: float, decoded: Command | None = None) -> Any:
        """Propose an encoded kv Command and wait until it is applied here. `decoded` saves a
        second decode when the caller has already looked inside."""
        self._check_capacity()
        if self.role != "leader":
            raise self._not_leader()
        cmd = decoded if decoded is not None else decode_command(command, self.kv.limits)
        stamped = _stamp(cmd.request)
        if stamped is not cmd.request:
            command = encode_command(stamped, cmd.session)
        number = next(self._proposal_ids)
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._proposals[number] = fut
        data = msgpack.packb([self.id, number, command])
        self._input(lambda: self._propose(data, fut))
        self.stats["proposals"] += 1
        try:
            result = await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            raise NodeError("timeout", "the write was not applied in time; it may still be") from None
        finally:
            self._proposals.pop(number, None)
        if isinstance(result, KVError):
            raise result
        return result

    def _propose(self, data: bytes, fut: asyncio.Future[Any]) -> None:
        try:
            self.core.propose(data)
        except NotLeader:
            if not fut.done():
                fut.set_exception(self._not_leader())
        except ProposalDropped as exc:
            self.stats["dropped_proposals"] += 1
            if not fut.done():
                fut.set_exception(NodeError("too_many_requests", str(exc)))

    def _propose_internal(self, request: Request) -> None:
        data = msgpack.packb([self.id, 0, encode_command(request)])
        self._input(lambda: _quietly(self.core.propose, data))

    def _expire_leases(self) -> None:
        if self._promoted_term != self._term():
            return  # leases may only expire once this leader's promotion is applied
        t = now_ms()
        for lease_id in self.kv.lessor.expired(t, limit=100):
            if lease_id not in self._expiring:
                self._expiring.add(lease_id)
                self._propose_internal(LeaseExpireRequest(lease_id, t))
        self._expiring &= set(self.kv.lessor.ids())

    def _auto_compact(self) -> None:
        """Keep the last `auto_compact_revisions` revisions of history (etcd's revision mode):
        the store lives in memory, so unbounded history would be unbounded memory. Proposed in
        steps of half the retention, so compaction is rare and cheap per write."""
        keep = self.cfg.auto_compact_revisions
        if keep and self.kv.revision - self.kv.compact_revision >= keep + keep // 2:
            if self._compacting != self.kv.compact_revision:
                self._compacting = self.kv.compact_revision
                self._propose_internal(CompactionRequest(self.kv.revision - keep))

    async def read(self, request: RangeRequest | LeaseTimeToLiveRequest | LeaseLeasesRequest,
                   serializable: bool, timeout: float) -> Any:
        if not serializable:
            await self.read_barrier(timeout)
        if isinstance(request, RangeRequest):
            return self.kv.range(request)
        if isinstance(request, LeaseTimeToLiveRequest):
            return self.kv.time_to_live(replace(request, now_ms=now_ms()))
        return LeaseLeasesResponse(ResponseHeader(self.kv.revision), tuple(sorted(self.kv.lessor.ids())))

    async def read_barrier(self, timeout: float) -> None:
        """ReadIndex: wait until this node has applied everything committed when we asked."""
        self._check_capacity()
        ctx = next(self._proposal_ids).to_bytes(8, "big")
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[int] = loop.create_future()
        self._reads[ctx] = fut

        def ask() -> None:
            try:
                self.core.read_index(ctx)
            except ConsensusError:
                if not fut.done():
                    fut.set_exception(self._not_leader())

        self._input(ask)
        self.stats["read_index"] += 1
        try:
            index = await asyncio.wait_for(fut, timeout)
            if self.applied < index:
                applied: asyncio.Future[None] = loop.create_future()
                self._read_waiters.append((index, applied))
                await asyncio.wait_for(applied, timeout)
        except TimeoutError:
            raise NodeError("timeout", "could not confirm a linearizable read point in time") from None
        finally:
            self._reads.pop(ctx, None)

    def _release_read_waiters(self) -> None:
        still = []
        for index, fut in self._read_waiters:
            if fut.done():
                continue
            if self.applied >= index:
                fut.set_result(None)
            else:
                still.append((index, fut))
        self._read_waiters = still

    # ---------------------------------------------------------------- watches
    def watch(self, sink: Callable[[Any], None], **kw: Any) -> Any:
        created = self.hub.create(**kw)
        if not created.canceled:
            self._watch_sinks[created.watch_id] = sink
            self._push_watch_events()
        return created

    def cancel_watch(self, watch_id: int) -> None:
        if self._watch_sinks.pop(watch_id, None) is not None:
            self.hub.cancel(watch_id)

    def _push_watch_events(self) -> None:
        # A watcher catching up from history gets a bounded batch per poll: keep polling a
        # while, then yield to the loop and carry on, so catch-up never waits for a new write.
        for _ in range(32):
            responses = self.hub.poll_all()
            if not responses:
                return
            for resp in responses:
                sink = self._watch_sinks.get(resp.watch_id)
                if sink is not None:
                    sink(resp)
                    if resp.canceled:
                        self._watch_sinks.pop(resp.watch_id, None)
        asyncio.get_running_loop().call_soon(self._push_watch_events)

    def progress_notify(self) -> None:
        for resp in self.hub.progress():
            sink = self._watch_sinks.get(resp.watch_id)
            if sink is not None:
                sink(resp)

    # ---------------------------------------------------------------- membership
    async def change_membership(self, op: str, member: Member | None, node_id: int,
                                timeout: float) -> None:
        if self.role != "leader":
            raise self._not_leader()
        context = _members_context([member]) if member else ""
        data = ConfChange(((op, node_id),), context=context).encode()
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

        def propose() -> None:
            try:
                self.core.propose_conf_change(data)
                self._proposals[-self.core.status().last_index] = fut
            except ProposalDropped as exc:  # e.g. the previous change is still settling: retry
                if not fut.done():
                    fut.set_exception(NodeError("unavailable", str(exc)))
            except (ConsensusError, ValueError) as exc:
                if not fut.done():
                    fut.set_exception(NodeError("bad_request", str(exc)))

        self._input(propose)
        try:
            await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            raise NodeError("timeout", "the membership change was not applied in time") from None

    async def transfer_leadership(self, to: int) -> None:
        if self.role != "leader":
            raise self._not_leader()
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def go() -> None:
            try:
                self.core.transfer_leadership(to)
                fut.set_result(None)
            except ConsensusError as exc:
                fut.set_exception(NodeError("bad_request", str(exc)))

        self._input(go)
        await fut

    def status(self) -> dict[str, Any]:
        st = self.core.status()
        return {
            "id": self.id, "cluster_id": self.cluster_id, "role": self.role, "term": st.term,
            "leader": self.leader, "commit": st.commit, "applied": self.applied,
            "last_index": st.last_index, "revision": self.kv.revision,
            "voters": sorted(st.conf.voters), "learners": sorted(st.conf.learners),
            "members": {n: m.describe() for n, m in sorted(self.members.items())},
            "peers": {n: {"match": m} for n, m in sorted(st.progress.items())},
            "db_size": self.kv.size_bytes, "wal_bytes": self.storage.size_bytes(),
            "uptime_s": round(time.monotonic() - self.started_at, 1),
        }


def _stamp(request: Request) -> Request:
    """Lease requests carry the proposing node's clock (the state machine never reads one)."""
    if isinstance(request, LeaseGrantRequest | LeaseKeepAliveRequest):
        return replace(request, now_ms=now_ms())
    return request


def _empty(d: Durable) -> bool:
    return d.snapshot is None and not d.entries and d.hard_state == HardState()


def _members_context(members: Any) -> str:
    return ",".join(m.describe() for m in members)


def _parse_context(context: str) -> dict[int, Member]:
    out = {}
    for spec in filter(None, context.split(",")):
        m = parse_member(spec)
        out[m.id] = m
    return out


def _quietly(fn: Callable[..., None], *args: Any) -> None:
    try:
        fn(*args)
    except ConsensusError:
        pass


__all__ = ["Command", "Node", "NodeError", "cluster_number"]
