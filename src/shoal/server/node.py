"""The node runtime: the process that hosts consensus groups over a real disk, network and clock.

Each group is a `Replica` (shoal.replica: engine, state machine, membership, waiters), the very
object the simulator drives. The host adds only I/O: one transport shared by every group, one
disk thread, one ticker, and the futures of the clients waiting on the replicas.

All replica calls happen on one asyncio task, the Ready loop. Everything else (peer messages,
ticks, client requests) enqueues a typed input and wakes the loop; the queue is bounded. One
round of the loop collects a Ready from every group that has one, persists them all in one job
on the disk thread (at most one fsync per group), sends their messages, then advances each
replica and acts on what it reports. Inputs that arrive during the fsync are handled before the
next round, which is what batches proposals.

A Ready the disk refuses (full, or failing: any OSError writing or syncing the WAL or a
snapshot) is held, not advanced: its messages stay unsent, so nothing unpersisted is
acknowledged or voted on. The group stalls until the disk takes it. Meanwhile its pending
requests fail at once with an error naming the cause, new ones are refused the same way,
peer messages to it are dropped (peers resend), it claims no leadership (so followers elect
someone else), serializable reads are served from what it has applied, the member raises a
NOSPACE alarm of its own and /health says why, and the Ready is retried with backoff; once
it is persisted the group resumes where it stopped. One line is logged when persisting
fails and one when it works again."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
import shutil
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

import msgpack

from ..auth import AUTH_KEY, AuthView
from ..consensus.engine import Engine
from ..consensus.messages import (
    ConfState,
    ConsensusError,
    Durable,
    HardState,
    Ready,
    RemoteProtocolError,
    Snapshot,
)
from ..consensus.paxos import MultiPaxos, PaxosConfig
from ..consensus.raft import Raft, RaftConfig
from ..kv import KVStore
from ..kv.errors import KVError
from ..kv.limits import KVLimits
from ..kv.requests import (
    Command,
    Compare,
    CompareResult,
    CompareTarget,
    DeleteRangeRequest,
    LeaseLeasesRequest,
    LeaseLeasesResponse,
    LeaseTimeToLiveRequest,
    LogAppendRequest,
    PutRequest,
    RangeRequest,
    ResponseHeader,
    TxnRequest,
    decode_command,
)
from ..net import (
    FaultPlan,
    Transport,
    paxos_codec,  # noqa: F401 - registers the "paxos" wire codec
)
from ..replica import Applied, Members, NodeError, Replica, ReplicaConfig, bootstrap, directory
from ..replica.directory import GroupEntry
from ..shard.map import MAP_KEY, ShardMap
from ..storage import Storage
from ..storage.errors import StorageError
from ..storage.segment_files import SegmentFiles
from .config import Member, NodeConfig, parse_member
from .event_log_view import event_log
from .group import Group
from .slices import in_slices
from .txn_view import RecentAborts

log = logging.getLogger("shoal.node")

META = 0  # the meta group: the key-value store, the etcd API, the directory of groups
MAX_CLAIMS = 1_000_000  # groups one peer may claim to lead in one heartbeat
RETRY_FIRST_S, RETRY_MAX_S = 0.05, 1.0  # persisting a refused Ready again: backoff bounds


def cluster_number(name: str) -> int:
    """A stable 63-bit cluster id from the cluster's name (etcd derives it from its token)."""
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "big") >> 1


def now_ms() -> int:
    """The clock leases are judged by: monotonic, so a stepped wall clock cannot expire them.
    Only the leader that stamped a lease judges it (see shoal.replica), so the clocks of
    different machines are never compared."""
    return int(time.monotonic() * 1000)


# ---- the Ready loop's inputs: values, so the queue can be bounded, counted and inspected ----
@dataclass(slots=True)
class _Tick:
    pass


@dataclass(slots=True)
class _PeerLost:
    peer: int


@dataclass(slots=True)
class _Step:
    group: int
    msg: Any


@dataclass(slots=True)
class _Request:
    """A client's request to one group; `token` is the replica's name for it once taken."""

    group: int
    future: asyncio.Future[Any]
    token: int = 0


@dataclass(slots=True)
class _Propose(_Request):
    cmd: Command | None = None
    data: bytes | None = None


@dataclass(slots=True)
class _ReadIndex(_Request):
    pass


@dataclass(slots=True)
class _ChangeMembers(_Request):
    op: str = ""
    node_id: int = 0
    spec: str | None = None


@dataclass(slots=True)
class _Transfer(_Request):
    to: int = 0


@dataclass(slots=True)
class _Alarm(_Request):
    action: str = ""
    member: int = 0
    alarm: str = ""


_Input = _Tick | _PeerLost | _Step | _Propose | _ReadIndex | _ChangeMembers | _Transfer | _Alarm


class _Peak:
    """The largest of a series of durations: since start, and recently (over the current and
    the previous window of WINDOW_S), so a probe can read what its own request cost."""

    WINDOW_S = 10.0

    def __init__(self) -> None:
        self.max = self.current = self.previous = 0.0
        self.window_end = 0.0

    def note(self, seconds: float, now: float) -> None:
        if now >= self.window_end:
            self.previous, self.current = self.current, 0.0
            self.window_end = now + self.WINDOW_S
        self.current = max(self.current, seconds)
        self.max = max(self.max, seconds)

    def figures(self, name: str) -> dict[str, float]:
        return {f"max_{name}_ms": round(self.max * 1000, 1),
                f"recent_{name}_ms": round(max(self.current, self.previous) * 1000, 1)}


@dataclass
class _Parsed:
    """Member specs parsed once per membership change, not once per lookup."""

    specs: Members = field(default_factory=dict)
    members: dict[int, Member] = field(default_factory=dict)


class Node:
    def __init__(self, cfg: NodeConfig):
        self.cfg = cfg
        self.id = cfg.id
        self.cluster_id = cluster_number(cfg.cluster_id)
        self.faults = FaultPlan()
        self.recent_aborts = RecentAborts()  # transactions this node saw refused, for /status
        self.groups: dict[int, Group] = {}
        self.started_at = time.monotonic()
        self.failed: BaseException | None = None  # why the Ready loop died, if it did
        self.dead = asyncio.Event()  # set when it does: the process should exit
        # How long the loop was held past a tick's due time (any one callback's work), and the
        # longest time between two rounds of ticks (what a leader's heartbeats wait).
        self.loop_stall, self.tick_gap = _Peak(), _Peak()
        self._last_tick_round = 0.0
        self._rng = random.Random()
        self._inputs: deque[_Input] = deque()
        self._tick_queued = False
        self._wake = asyncio.Event()
        self._disk = ThreadPoolExecutor(1, thread_name_prefix=f"shoal-disk-{cfg.id}")
        self._parsed = _Parsed()
        self._directory_dirty = True  # the meta group's directory may list other groups now
        self._claims: dict[int, tuple[int, dict[int, int]]] = {}  # peer -> (when, what it leads)
        self._tasks: list[asyncio.Task[Any]] = []
        self._stopping = False
        # The disk's refusals: the Ready each stalled group waits to persist, the snapshots
        # not yet saved, why (per group), and when to try again.
        self._held: dict[int, Ready] = {}
        self._unsaved: dict[int, Snapshot] = {}
        self._disk_errors: dict[int, str] = {}
        self._disk_failed_at = 0.0
        self._retry_at, self._retry_s = 0.0, RETRY_FIRST_S
        self.stats = {"fsyncs": 0, "readies": 0, "dropped_inputs": 0, "unroutable": 0,
                      "persist_failures": 0}
        # Who may do what, as this node has applied it: every port checks requests against it.
        self.auth = AuthView(lambda: self.kv.mvcc.get(AUTH_KEY))

    # ================================================================ the meta group, by name
    @property
    def meta(self) -> Replica:
        return self.groups[META].replica

    @property
    def kv(self) -> KVStore:
        return self.meta.kv

    @property
    def core(self) -> Engine:
        return self.meta.engine

    @property
    def role(self) -> str:
        return "follower" if self._stopping else self.meta.role

    @property
    def leader(self) -> int:
        return 0 if self._stopping else self.meta.leader

    @property
    def applied(self) -> int:
        return self.meta.applied

    @property
    def storage(self) -> Storage:
        return self.groups[META].storage

    @property
    def members(self) -> dict[int, Member]:
        specs = self.meta.members
        if specs != self._parsed.specs:
            self._parsed = _Parsed(dict(specs), {n: parse_member(s) for n, s in specs.items()})
        return self._parsed.members

    # ================================================================ lifecycle
    async def start(self) -> None:
        specs = {m.id: m.describe() for m in self.cfg.members}
        self._open_group(META, self.cfg.data_dir, specs, fresh=not self.cfg.join)
        self.transport = Transport(self.id, self.cfg.me.peer, {}, self.cfg.cluster_id,
                                   self._on_peer_message, self.cfg.tls(), codec=self.cfg.engine,
                                   faults=self.faults, on_host=self._on_claims,
                                   peer_secret_file=self.cfg.peer_secret_file,
                                   on_peer_lost=self._on_peer_lost)
        self._sync_peers()
        self._watch_directory()
        await self.transport.start()
        ready = asyncio.create_task(self._ready_loop(), name=f"ready-{self.id}")
        ready.add_done_callback(self._ready_loop_ended)
        self._tasks = [ready, asyncio.create_task(self._ticker(), name=f"tick-{self.id}")]

    def _open_group(self, group_id: int, dir: Path, specs: Members, fresh: bool) -> Group:
        storage, durable = Storage.open(dir, cluster_id=self.cluster_id, node_id=self.id,
                                        repair=self.cfg.repair)
        if _empty(durable) and fresh:
            durable = bootstrap(specs)
            storage.save(Ready(hard_state=durable.hard_state, entries=list(durable.entries),
                               must_sync=True))
        # The quota is the leader's check before proposing (this member's setting), and the
        # NOSPACE alarm it raises is replicated; the store's own per-entry cap would judge by
        # a setting members may not share, so it is off.
        replica = Replica(self.id, self._make_engine(durable, specs), durable, specs,
                          incarnation=self._rng.getrandbits(62) + 1, cfg=ReplicaConfig(
                              snapshot_entries=self.cfg.snapshot_entries,
                              auto_compact_revisions=self.cfg.auto_compact_revisions,
                              max_pending=self.cfg.max_pending_requests,
                              quiesce_after_ticks=self.cfg.election_ticks
                              if self.cfg.engine == "raft" else 0,
                              quota_bytes=self.cfg.quota_backend_bytes,
                              lease_promote_extend_ms=self.cfg.election_ticks * self.cfg.tick_ms,
                              batch_proposals=self.cfg.engine == "paxos"),
                          limits=KVLimits(quota_bytes=0), files=SegmentFiles(dir / "log"))
        group = Group(group_id, replica, storage)
        self.groups[group_id] = group
        log.info("node %d group %d opened: %d entries after index %d, term %d", self.id,
                 group_id, len(durable.entries), replica.applied, durable.hard_state.term)
        return group

    def _make_engine(self, durable: Durable, specs: Members) -> Engine:
        if self.cfg.engine == "paxos":
            # Paxos changes membership `alpha` instances after the change is chosen, so the
            # initial configuration cannot wait for the bootstrap entry: it is given up front.
            conf = ConfState(voters=frozenset(specs))
            return MultiPaxos(self.id, conf, random.Random(), durable, PaxosConfig(
                election_ticks=self.cfg.election_ticks, max_pending_reads=self.cfg.max_pending_requests))
        return Raft(self.id, ConfState(), random.Random(), durable, RaftConfig(
            election_tick=self.cfg.election_ticks, heartbeat_tick=1, forward_proposals=False,
            max_pending_reads=self.cfg.max_pending_requests))

    async def stop(self, transfer: bool = True) -> None:
        """Graceful shutdown: hand leadership to the most caught-up voter first."""
        if transfer and self.role == "leader" and self.failed is None:
            await self._transfer_before_stop()
        self._stopping = True  # answer "no leader" from now on
        self._wake.set()
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.transport.stop()
        for g in self.groups.values():
            g.fail_all(NodeError("unavailable", "node is shutting down"))
        self._disk.shutdown(wait=True)
        for g in self.groups.values():
            g.storage.close()
            g.replica.kv.files.close()

    async def _transfer_before_stop(self) -> None:
        st = self.core.status()
        others = {n: m for n, m in st.progress.items() if n != self.id and n in st.conf.voters}
        if not others:
            return
        target = max(others, key=lambda n: others[n])
        try:
            await self.transfer_leadership(target)
        except NodeError:
            return
        deadline = time.monotonic() + self.cfg.tick_ms * self.cfg.election_ticks / 1000
        while self.role == "leader" and time.monotonic() < deadline:
            await asyncio.sleep(self.cfg.tick_ms / 1000)
        log.info("node %d handed leadership to %d before stopping", self.id, self.leader)

    def _ready_loop_ended(self, task: asyncio.Task[Any]) -> None:
        if task.cancelled() or task.exception() is None:
            return
        # A replica's assertion or a disk failure: this node cannot go on correctly. Say so
        # loudly, stop answering as if healthy, and let the process exit non-zero.
        self.failed = task.exception()
        log.critical("node %d stopped serving: its Ready loop failed", self.id, exc_info=self.failed)
        self._stopping = True
        for g in self.groups.values():
            g.fail_all(NodeError("unavailable", f"node {self.id} failed: {self.failed!r}"))
        self.dead.set()

    # ================================================================ the Ready loop
    def _input(self, item: _Input) -> None:
        if self._stopping:
            raise NodeError("unavailable", "node is shutting down")
        if len(self._inputs) >= self.cfg.max_pending_requests:
            self.stats["dropped_inputs"] += 1
            raise NodeError("too_many_requests", f"{len(self._inputs)} inputs queued; retry later")
        self._inputs.append(item)
        self._wake.set()

    def _on_peer_message(self, group: int, msg: Any) -> None:
        try:
            self._input(_Step(group, msg))
        except NodeError:
            pass  # counted: a peer retransmits what we could not take

    async def _ticker(self) -> None:
        period = self.cfg.tick_ms / 1000
        while True:
            due = time.monotonic() + period
            await asyncio.sleep(period)
            woke = time.monotonic()
            self.loop_stall.note(woke - due, woke)
            if not self._tick_queued:  # a loop that fell behind ticks once, not in a burst
                self._tick_queued = True
                self._inputs.append(_Tick())
                self._wake.set()

    async def _ready_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._stopping:
            if self._held or self._unsaved:  # wake up to retry the disk, too
                delay = max(0.0, self._retry_at - loop.time())
                try:
                    await asyncio.wait_for(self._wake.wait(), delay)
                except TimeoutError:
                    pass
            else:
                await self._wake.wait()
            self._wake.clear()
            self._drain()
            retry = bool(self._held or self._unsaved) and loop.time() >= self._retry_at
            if retry and self._unsaved:
                await self._save_unsaved(loop)
            while batch := self._batch(retry):
                retry = False
                self.stats["readies"] += len(batch)
                refused: dict[int, StorageError] = {}
                if any(rd.snapshot is not None or rd.entries or rd.hard_state is not None
                       for _, rd in batch):
                    refused = await loop.run_in_executor(self._disk, self._persist, batch)
                done = [(g, rd) for g, rd in batch if g.id not in refused]
                for g, rd in done:
                    for m in rd.messages:
                        self.transport.send(g.id, m)
                for g, rd in done:
                    if self._held.pop(g.id, None) is not None and g.id not in self._unsaved:
                        self._disk_ok(g.id)
                    self._after_advance(g, g.replica.advance(rd))
                for g, rd in batch:
                    if g.id in refused:
                        self._hold(g, rd, refused[g.id])
                if self._directory_dirty:
                    self._reconcile_groups()
                self._drain()  # what arrived during the fsync joins the next batch

    def _batch(self, retry: bool) -> list[tuple[Group, Ready]]:
        """A Ready from every group that has one; a held one again only when `retry`."""
        batch = []
        for g in self.groups.values():
            held = self._held.get(g.id)
            if held is not None:
                if retry:
                    batch.append((g, held))
            elif g.replica.has_ready():
                batch.append((g, g.replica.ready()))
        return batch

    def _persist(self, batch: list[tuple[Group, Ready]]) -> dict[int, StorageError]:
        """On the disk thread: every group's Ready, one write and at most one fsync each.
        Returns the groups whose Ready the disk refused, and why."""
        refused = {}
        for g, rd in batch:
            if rd.snapshot is None and not rd.entries and rd.hard_state is None:
                continue
            if rd.must_sync and self.cfg.fsync:
                self.stats["fsyncs"] += 1
            try:
                g.storage.save(rd if self.cfg.fsync else replace(rd, must_sync=False))
            except StorageError as exc:
                refused[g.id] = exc
        return refused

    # ---------------------------------------------------------------- when the disk refuses
    def _hold(self, g: Group, rd: Ready, exc: StorageError) -> None:
        """Keep `rd` to persist later; fail what waits on the group, with the cause."""
        self.stats["persist_failures"] += 1
        self._held[g.id] = rd
        self._disk_failed(g.id, f"cannot persist group {g.id}'s log: {exc}")
        g.fail_all(self._stalled_error(g.id, "its outcome is unknown until the disk takes it"))

    def _disk_failed(self, gid: int, reason: str) -> None:
        loop = asyncio.get_running_loop()
        if not self._disk_errors:
            self._disk_failed_at = loop.time()
            log.error("node %d %s; raising alarm NOSPACE: writes here are refused, serializable "
                      "reads are served, and persisting is retried until the disk takes it",
                      self.id, reason)
        self._disk_errors.setdefault(gid, reason)
        self._retry_at = loop.time() + self._retry_s
        self._retry_s = min(self._retry_s * 2, RETRY_MAX_S)

    def _disk_ok(self, gid: int) -> None:
        if self._disk_errors.pop(gid, None) is not None and not self._disk_errors:
            self._retry_s = RETRY_FIRST_S
            log.warning("node %d persists again after %.1f s; alarm NOSPACE cleared", self.id,
                        asyncio.get_running_loop().time() - self._disk_failed_at)

    def _stalled_error(self, gid: int, outcome: str) -> NodeError:
        return NodeError("unavailable", f"node {self.id} {self._disk_errors[gid]}; {outcome}",
                         cause="storage")

    async def _save_unsaved(self, loop: asyncio.AbstractEventLoop) -> None:
        for gid, snap in list(self._unsaved.items()):
            g = self.groups.get(gid)
            if g is None or snap.meta.index <= g.storage.snapshot_index:
                del self._unsaved[gid]  # its group is gone, or an installed one superseded it
                if gid not in self._held:
                    self._disk_ok(gid)
                continue
            try:
                await loop.run_in_executor(self._disk, g.storage.save_snapshot, snap)
            except StorageError as exc:
                self._disk_failed(gid, f"cannot save group {gid}'s snapshot: {exc}")
                continue
            if self._unsaved.get(gid) is snap:
                del self._unsaved[gid]
            if gid not in self._held:
                self._disk_ok(gid)

    def _after_advance(self, g: Group, out: Applied) -> None:
        g.settle(out)
        if out.became_leader:
            log.info("node %d is leader of group %d in term %d", self.id, g.id, g.replica.engine.term)
        if out.lost_leadership:
            # Answer its writes in flight now, as of unknown outcome (the next leader may cut
            # them or apply them), not at their deadlines: a Kafka producer would wait out its
            # request timeout here, and every request behind it on its connection too. Only
            # those a retry cannot apply twice (a session's, an idempotent producer's; Kafka
            # answers NOT_LEADER_OR_FOLLOWER to the others too); the rest, a create_group
            # say, wait to learn their outcome as before.
            for token in g.fail_writes(NodeError("timeout", "leadership was lost before "
                                                 "the write applied; it may still apply")):
                g.replica.forget(token)
        if out.members is not None:
            self._sync_peers()
        if out.snapshot is not None:
            if g.id in self._unsaved:  # the disk refused the previous one: retry this instead
                self._unsaved[g.id] = out.snapshot
                return
            # Off the loop, on the disk thread, after every save already queued there.
            saved = asyncio.get_running_loop().run_in_executor(self._disk, g.storage.save_snapshot,
                                                               out.snapshot)
            saved.add_done_callback(partial(self._snapshot_saved, g, out.snapshot))

    def _snapshot_saved(self, g: Group, snap: Snapshot, saved: asyncio.Future[None]) -> None:
        exc = saved.exception()
        if isinstance(exc, StorageError) and not self._stopping:
            # The log still covers everything; the snapshot is saved again with the retries.
            self._unsaved.setdefault(g.id, snap)
            self._disk_failed(g.id, f"cannot save group {g.id}'s snapshot: {exc}")
            self._wake.set()
        elif exc is not None:
            log.error("node %d group %d: saving a snapshot failed: %s", self.id, g.id, exc)

    def _tick_all(self) -> None:
        """Tick every replica, and tell every peer process which groups we lead: one small
        message per pair of processes per tick stands for the heartbeats of every quiescent
        group (CockroachDB coalesces heartbeats and quiesces idle ranges the same way)."""
        t = now_ms()
        now = time.monotonic()
        if self._last_tick_round:
            self.tick_gap.note(now - self._last_tick_round, now)
        self._last_tick_round = now
        fresh_ms = self.cfg.election_ticks // 2 * self.cfg.tick_ms
        for g in self.groups.values():
            if g.id in self._held:
                continue  # its engine waits for the Ready the disk refused
            r = g.replica
            when, claims = self._claims.get(r.leader, (-fresh_ms - 1, {}))
            r.tick(t, leader_alive=t - when <= fresh_ms and claims.get(g.id) == r.engine.term)
        # A stalled leader claims nothing: its followers must be free to elect another.
        mine = {gid: g.replica.engine.term for gid, g in self.groups.items()
                if g.replica.role == "leader" and gid not in self._held}
        payload = msgpack.packb(mine)
        for peer in self.transport.peers:
            self.transport.send_host(peer, payload)

    def _on_claims(self, peer: int, payload: bytes) -> None:
        """A peer process's coalesced heartbeat: {group: term} for the groups it leads."""
        try:
            claims = msgpack.unpackb(payload, strict_map_key=False)
            if not isinstance(claims, dict) or len(claims) > MAX_CLAIMS or not all(
                    type(g) is int and type(t) is int for g, t in claims.items()):
                raise ValueError("not a map of group ids to terms")
        except (ValueError, TypeError, msgpack.UnpackException) as exc:
            raise RemoteProtocolError(f"node {peer} sent a malformed heartbeat: {exc}") from None
        self._claims[peer] = (now_ms(), claims)

    def _on_peer_lost(self, peer: int) -> None:
        """`peer` closed its connection to us (its process exited): its claims are void, and
        the groups it led elect another within part of one election timeout."""
        self._claims.pop(peer, None)
        self._inputs.append(_PeerLost(peer))  # engines take input between Readies only
        self._wake.set()

    def _drain(self) -> None:
        while self._inputs:
            item = self._inputs.popleft()
            if isinstance(item, _Tick):
                self._tick_queued = False
                self._tick_all()
                continue
            if isinstance(item, _PeerLost):
                for g in self.groups.values():
                    if g.id not in self._held:
                        g.replica.forget_leader(item.peer)
                continue
            g = self.groups.get(item.group)  # type: ignore[assignment]
            if g is None:
                self._refuse(item, NodeError("unavailable", f"group {item.group} is not here"))
                continue
            if isinstance(item, _Step):
                if g.id in self._held:
                    self.stats["dropped_inputs"] += 1  # its engine takes no input: peers resend
                    continue
                try:
                    g.replica.step(item.msg)
                except ConsensusError as exc:
                    log.warning("node %d group %d dropped a message from %s: %s", self.id, g.id,
                                getattr(item.msg, "src", "?"), exc)
                continue
            try:
                if g.id in self._held:
                    raise self._stalled_error(g.id, "the request was not taken")
                self._take(g, item)
            except NodeError as exc:
                self._refuse(item, self._explain(exc))
            except KVError as exc:  # refused before proposing: no space
                self._refuse(item, exc)

    def _take(self, g: Group, item: _Input) -> None:
        r = g.replica
        match item:
            case _Propose(cmd=cmd, data=data) if cmd is not None:
                item.token = r.propose(cmd, data)
                if cmd.session is not None or isinstance(cmd.request, LogAppendRequest):
                    g.writes.add(item.token)  # a retry is answered once: fail it fast
            case _ReadIndex():
                item.token = r.read_index()
            case _ChangeMembers(op=op, node_id=n, spec=spec):
                item.token = r.change_membership(op, n, spec)
            case _Transfer(to=to):
                r.transfer_leadership(to)
                item.future.set_result(None)
                return
            case _Alarm(action=action, member=member, alarm=alarm):
                item.token = r.alarm(action, member, alarm)
        assert isinstance(item, _Request) and item.token > 0
        g.waiters[item.token] = item.future

    @staticmethod
    def _refuse(item: _Input, exc: Exception) -> None:
        if isinstance(item, _Request) and not item.future.done():
            item.future.set_exception(exc)

    def _explain(self, exc: NodeError) -> NodeError:
        """Add where the leader's clients connect to a not_leader error."""
        leader = self.members.get(exc.details.get("leader", 0))
        if exc.code == "not_leader" and leader is not None:
            exc.details["endpoint"] = f"{leader.client[0]}:{leader.client[1]}"
        return exc

    def _sync_peers(self) -> None:
        if not hasattr(self, "transport"):
            return
        want: dict[int, tuple[str, int]] = {}
        for g in self.groups.values():
            for n, spec in g.replica.addresses.items():
                if n != self.id:
                    want[n] = parse_member(spec).peer
        self.transport.set_peers(want)

    # ================================================================ the directory of groups
    def _watch_directory(self) -> None:
        """Every change to the directory marks it for reconciling after the current batch. A
        snapshot that replaces the meta store ends this watch; it is started again."""
        self.groups[META].watch(self._directory_changed, key=directory.PREFIX,
                                range_end=directory.END)
        self._directory_dirty = True

    def _directory_changed(self, resp: Any) -> None:
        self._directory_dirty = True
        if resp.canceled and not self._stopping:
            asyncio.get_running_loop().call_soon(self._watch_directory)

    def listed_groups(self) -> dict[int, GroupEntry]:
        """The groups the meta group lists, as this node has applied it."""
        rows = self.kv.range(RangeRequest(directory.PREFIX, directory.END)).kvs
        out = {}
        for kv in rows:
            try:
                entry = directory.decode(kv.key, kv.value)
            except directory.DirectoryError as exc:
                log.error("node %d: skipping a directory entry: %s", self.id, exc)
                continue
            out[entry.group] = entry
        return out

    def _reconcile_groups(self) -> None:
        """Open the replicas the directory assigns here; close the ones it no longer does."""
        self._directory_dirty = False
        want = {gid: e for gid, e in self.listed_groups().items() if self.id in e.hosts}
        for gid in sorted(set(want) - set(self.groups)):
            # A joiner opens an empty replica: the group's leader adds it and catches it up.
            e = want[gid]
            self._open_group(gid, self._group_dir(gid), e.members, fresh=self.id in e.members)
        for gid in sorted(set(self.groups) - set(want) - {META}):
            g = self.groups.pop(gid)
            g.fail_all(NodeError("unavailable", f"group {gid} was removed from node {self.id}"))
            g.replica.kv.files.close()  # (its segment files' descriptors)
            self._disk.submit(_discard, g.storage, self._group_dir(gid))
            log.info("node %d group %d closed: the directory no longer lists it here", self.id, gid)
        self._sync_peers()

    def _group_dir(self, group: int) -> Path:
        return self.cfg.data_dir / "groups" / str(group)

    async def create_group(self, group: int, replicas: int, timeout: float) -> GroupEntry:
        """List a new group in the directory, on the `replicas` voters of the meta group that
        host the fewest groups; every one of them opens it when it applies the entry."""
        if not 0 < replicas <= directory.MAX_MEMBERS:
            raise NodeError("bad_request", f"replicas must be 1..{directory.MAX_MEMBERS}, not {replicas}")
        voters = sorted(self.core.status().conf.voters)
        if replicas > len(voters):
            raise NodeError("bad_request", f"{replicas} replicas asked for, but only {len(voters)} "
                            f"voters in the meta group ({voters})")
        load = {n: 0 for n in voters}
        for e in self.listed_groups().values():
            for n in e.hosts:
                if n in load:
                    load[n] += 1
        chosen = sorted(voters, key=lambda n: (load[n], n))[:replicas]
        specs = self.meta.members
        entry = GroupEntry(group, {n: specs[n] for n in chosen})
        try:
            k = directory.key(group)
        except directory.DirectoryError as exc:
            raise NodeError("bad_request", str(exc)) from None
        txn = TxnRequest((Compare(k, CompareTarget.CREATE, CompareResult.EQUAL, 0),),
                         (PutRequest(k, entry.encode()),))
        resp = await self.write(b"", timeout, decoded=Command(txn))
        if not resp.succeeded:
            raise NodeError("bad_request", f"group {group} already exists")
        return entry

    async def move_group_host(self, group: int, node: int, join: bool, timeout: float) -> GroupEntry:
        """List `node` as a joiner of `group` (it opens an empty replica), or as gone from it
        (it closes the replica and deletes its files): a compare-and-put of the entry."""
        try:
            k = directory.key(group)
        except directory.DirectoryError as exc:
            raise NodeError("bad_request", str(exc)) from None
        await self.read_barrier(timeout)
        kv = self.kv.mvcc.get(k)
        if kv is None:
            raise NodeError("bad_request", f"group {group} does not exist")
        entry = directory.decode(k, kv.value)
        try:
            if join:
                if node not in self.meta.members:
                    raise directory.DirectoryError(f"node {node} is not a member of the cluster")
                new = entry.join(node, self.meta.members[node])
            else:
                new = entry.leave(node)
        except directory.DirectoryError as exc:
            raise NodeError("bad_request", str(exc)) from None
        txn = TxnRequest((Compare(k, CompareTarget.MOD, CompareResult.EQUAL, kv.mod_revision),),
                         (PutRequest(k, new.encode()),))
        resp = await self.write(b"", timeout, decoded=Command(txn))
        if not resp.succeeded:
            raise NodeError("unavailable", f"group {group}'s entry changed meanwhile; retry")
        return new

    async def remove_group(self, group: int, timeout: float) -> None:
        try:
            k = directory.key(group)
        except directory.DirectoryError as exc:
            raise NodeError("bad_request", str(exc)) from None
        resp = await self.write(b"", timeout, decoded=Command(DeleteRangeRequest(k)))
        if not resp.deleted:
            raise NodeError("bad_request", f"group {group} does not exist")

    # ================================================================ client-facing operations
    def _group(self, group: int) -> Group:
        g = self.groups.get(group)
        if g is None:
            raise NodeError("unavailable", f"group {group} has no replica on node {self.id}")
        return g

    async def _call(self, g: Group, item: _Propose | _ReadIndex | _ChangeMembers | _Transfer | _Alarm,
                    timeout: float, what: str) -> Any:
        self._input(item)
        # A timer that fails the future itself: wait_for wrapped each request in a second
        # future with its own callbacks.
        timer = asyncio.get_running_loop().call_later(timeout, _expire, item.future, what)
        try:
            return await item.future
        finally:
            timer.cancel()
            if item.token:
                g.waiters.pop(item.token, None)
                g.writes.discard(item.token)
                g.replica.forget(item.token)

    def _future(self) -> asyncio.Future[Any]:
        return asyncio.get_running_loop().create_future()

    async def write(self, command: bytes, timeout: float, decoded: Command | None = None,
                    group: int = META) -> Any:
        """Propose an encoded kv Command and wait until it is applied here. `decoded` saves a
        second decode when the caller has already looked inside."""
        g = self._group(group)
        if self._stopping:
            raise NodeError("unavailable", "node is shutting down")
        if g.replica.role != "leader":
            raise self._explain(g.replica.not_leader())
        cmd = decoded if decoded is not None else decode_command(command, g.replica.kv.limits)
        result = await self._call(g, _Propose(group, self._future(), cmd=cmd,
                                              data=command or None), timeout,
                                  "the write was not applied in time; it may still be")
        self.recent_aborts.note(group, cmd.request, result)
        return result

    async def read(self, request: RangeRequest | LeaseTimeToLiveRequest | LeaseLeasesRequest,
                   serializable: bool, timeout: float, group: int = META) -> Any:
        g = self._group(group)
        if isinstance(request, LeaseTimeToLiveRequest) and g.replica.role != "leader":
            # Remaining time is the leader's to tell: only its clock stamped the lease.
            raise self._explain(g.replica.not_leader())
        if not serializable:
            await self.read_barrier(timeout, group)
        kv = g.replica.kv
        if isinstance(request, RangeRequest):
            return await in_slices(kv.range_steps(request))
        if isinstance(request, LeaseTimeToLiveRequest):
            return kv.time_to_live(replace(request, now_ms=now_ms()))
        return LeaseLeasesResponse(ResponseHeader(kv.revision), tuple(sorted(kv.lessor.ids())))

    async def read_barrier(self, timeout: float, group: int = META) -> None:
        """ReadIndex: wait until this node has applied everything committed when we asked."""
        g = self._group(group)
        await self._call(g, _ReadIndex(group, self._future()), timeout,
                         "could not confirm a linearizable read point in time")

    # ---------------------------------------------------------------- watches
    def watch(self, sink: Any, group: int = META, **kw: Any) -> Any:
        return self._group(group).watch(sink, **kw)

    def cancel_watch(self, watch_id: int) -> None:
        g = self.groups.get(watch_id >> 32)  # (a group's watch ids start at its id << 32)
        if g is not None:
            g.cancel_watch(watch_id)

    def progress_notify(self) -> None:
        for g in list(self.groups.values()):
            g.progress_notify()

    def snapshot_bytes(self) -> bytes:
        """The replicated state as of `applied` (what `shoal snapshot save` writes)."""
        return self.meta.snapshot_data()

    # ---------------------------------------------------------------- membership
    async def change_membership(self, op: str, member: Member | None, node_id: int,
                                timeout: float, group: int = META) -> None:
        g = self._group(group)
        if g.replica.role != "leader":
            raise self._explain(g.replica.not_leader())
        item = _ChangeMembers(group, self._future(), op=op, node_id=node_id,
                              spec=member.describe() if member else None)
        await self._call(g, item, timeout, "the membership change was not applied in time")

    async def transfer_leadership(self, to: int, group: int = META) -> None:
        g = self._group(group)
        await self._call(g, _Transfer(group, self._future(), to=to), 5.0,
                         "the leadership transfer was not started in time")

    # ---------------------------------------------------------------- alarms
    async def alarm(self, action: str, member: int, alarm: str, timeout: float) -> list[list[Any]]:
        """Raise or clear an alarm cluster-wide (through the meta group's log); the pairs of
        [member, alarm] it changed."""
        g = self._group(META)
        if g.replica.role != "leader":
            raise self._explain(g.replica.not_leader())
        item = _Alarm(META, self._future(), action=action, member=member, alarm=alarm)
        result: list[list[Any]] = await self._call(g, item, timeout,
                                                   "the alarm change was not applied in time")
        return result

    def alarms(self) -> list[list[Any]]:
        """[member, alarm] pairs: the replicated ones, and this member's own NOSPACE while its
        disk refuses to persist (that one is not replicated: the disk that would hold it is
        the one refusing; it clears itself once a write goes through)."""
        found = {tuple(a) for a in self.meta.status()["alarms"]}
        if self._disk_errors:
            found.add((self.id, "NOSPACE"))
        return [list(a) for a in sorted(found)]

    def storage_error(self) -> str | None:
        """Why this member cannot persist right now (None: it can)."""
        return next(iter(self._disk_errors.values()), None)

    def status(self) -> dict[str, Any]:
        st = self.meta.status()
        return {
            "id": self.id, "cluster_id": self.cluster_id, **st,
            "role": self.role, "leader": self.leader,
            "alarms": self.alarms(), "storage_error": self.storage_error(),
            "members": {n: m.describe() for n, m in sorted(self.members.items())},
            "wal_bytes": self.storage.size_bytes(),
            "uptime_s": round(time.monotonic() - self.started_at, 1),
            "failed": repr(self.failed) if self.failed is not None else None,
            "fsyncs": self.stats["fsyncs"],
            **self.loop_stall.figures("loop_stall"), **self.tick_gap.figures("tick_gap"),
            "groups": {gid: _group_line(g) for gid, g in sorted(self.groups.items())},
            **self._dashboard_view(),
        }

    def _dashboard_view(self) -> dict[str, Any]:
        """What the dashboard (shoal.web) draws beyond the groups: each link's counters, the
        fault plan cutting them, the meta group's directory and shard map, the event log."""
        net = self.transport.stats() if hasattr(self, "transport") else None
        links = {p: {"sent_frames": s.sent_frames, "received_frames": s.received_frames,
                     "fault_dropped": s.fault_dropped, "dropped_frames": s.dropped_frames,
                     "queue_depth": s.queue_depth, "connected": s.connected}
                 for p, s in sorted(net.peers.items())} if net else {}
        shard_map = self.kv.mvcc.get(MAP_KEY)
        return {"links": links, "allow_faults": self.cfg.allow_faults,
                "faults": self.faults.as_dict(),
                "directory": {gid: sorted(e.hosts) for gid, e in sorted(self.listed_groups().items())},
                "shard_map": [[_text(s.start), _text(s.end), s.group]
                              for s in ShardMap.decode(shard_map.value).shards]
                if shard_map is not None else None, "event_log": event_log(self),
                "txn_aborts": self.recent_aborts.as_list()}

    def group_stats(self) -> dict[int, dict[str, int]]:
        return {gid: dict(g.replica.stats) for gid, g in sorted(self.groups.items())}


def _expire(future: asyncio.Future[Any], what: str) -> None:
    if not future.done():
        future.set_exception(NodeError("timeout", what))


def _group_line(g: Group) -> dict[str, Any]:
    st = g.replica.engine.status()
    kv = g.replica.kv
    return {"role": g.replica.role, "leader": g.replica.leader, "term": st.term,
            "commit": st.commit, "applied": g.replica.applied, "voters": sorted(st.conf.voters),
            "revision": kv.revision, "size_bytes": kv.size_bytes, "last_index": st.last_index,
            "match": dict(sorted(st.progress.items())),  # a leader's: each follower's match index
            "intents": kv.intents.count}  # keys locked by transactions in flight


def _text(key: bytes) -> str:
    return key.decode("utf-8", errors="backslashreplace")


def _discard(storage: Storage, dir: Path) -> None:
    """On the disk thread: a group no longer hosted here leaves no files behind."""
    storage.close()
    shutil.rmtree(dir, ignore_errors=True)


def _empty(d: Durable) -> bool:
    return d.snapshot is None and not d.entries and d.hard_state == HardState()


__all__ = ["META", "Command", "Node", "NodeError", "cluster_number"]
