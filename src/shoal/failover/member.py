"""One member of a primary-backup service: the roles, promotion, replication and the port.

Every member process runs the same code. It holds a lease in Shoal's store (kept alive every
ttl/3) with its member key on it, listens on its member port, and polls the service's keys
every `poll_interval`. Then:

- **Backup.** While the primary key exists (token T = its create_revision, read linearizably),
  the backup dials the primary's address, shakes hands, and asks to `follow` from its last
  entry (index, token). The primary streams entries (or a snapshot and then entries) with T on
  every frame; the backup appends, fsyncs, applies, and acknowledges its durable index. It
  refuses anything carrying a token other than the one it verified in the store, and anything
  at or below `retired`.
- **Vacancy.** When the primary key is gone (its lease expired: the primary died, paused or
  lost the store), every member retires the last promoted token T (the term key's
  mod_revision): it sends the old primary a refusal, closes that stream, and from now on
  refuses every frame carrying a token <= T. It then publishes its member key with
  `retired` = T and its final (last_token, applied). Its log cannot grow any more until a new
  primary exists, so what it published is final.
- **Promotion, the rule.** Once every *live* member (one whose member key exists, i.e. whose
  lease is alive) has published `retired` >= T, the eligible members are ranked by
  (last_token, applied, -id): the log with the newest token wins, then the longest, then the
  lowest id. In sync and semi-sync mode only members of the last published sync set are
  eligible (they alone are guaranteed to hold every acknowledged write); in async mode every
  live member is. The best eligible member, and only it, runs one transaction: it succeeds
  only if the primary key is still absent, the term key is unchanged (mod_revision == T), no
  member key under `members/` was written after the read the ranking came from (a range
  compare: mod_revision < read revision + 1), and then creates the primary key on its lease
  and rewrites the term key. Its create_revision is the new fencing token.
- **The races this handles.** A member that republishes (it caught up a little more, or it
  just registered) after the ranking makes the transaction fail, and the ranking is redone
  with its new data. Two members that both think they are best cannot both win: the first
  transaction creates the primary key and the second's `absent` compare fails. A member that
  dies after winning holds the key only until its lease ends, and then the vacancy repeats.
  A member whose lease lapsed (paused, cut off from the store) is not waited for, and it may
  not act on what it had: it drops its stream and re-verifies the primary in the store before
  following again. What the rule does not handle: a member that restarts with an old log
  while every up-to-date member is dead will be promoted in async mode (nothing better is
  alive); sync mode would wait instead (see the sync set).
- **Primary.** It writes its initial sync set {itself} (fenced) before taking writes. A write
  is applied, appended and sent to every backup at once (pipelined, up to `max_inflight`
  unacknowledged entries per backup), fsynced locally in batches, and acknowledged per mode:
  async after the local fsync; semi after that and one backup of the sync set; sync after
  every backup of the sync set. A backup joins the sync set once it has acknowledged
  everything the primary had when it caught up (it is required from that moment on, and only
  then written to the store, so the store's set never names a member missing an acknowledged
  write); one that disconnects or holds a write up for more than `sync_timeout` is removed,
  by a fenced write to the store first, and only then stops being waited for.
- **Fencing.** The lease guard stops a primary acknowledging writes once ttl - margin has
  passed since the last keep-alive it sent that succeeded (the store ends the lease no sooner
  than ttl after it), because an acknowledgement given locally cannot be fenced anywhere else.
  Everything else a primary does leaves the process carrying its token and is refused there:
  backups refuse frames with a retired or unverified token, and its writes to the store (sync
  set, beacon, `fenced_put`) compare the primary key's create_revision. A primary that learns
  of a newer primary (a refused fenced write, a lost lease, another key in the store) demotes
  itself, retires its own token and follows; its divergent suffix is replaced by a snapshot.

Bounds: frames (`max_frame`), entries per append (protocol.APPEND_MAX_ENTRIES), unacknowledged
entries per backup (`max_inflight`), writes waiting for acknowledgement (`max_pending_writes`),
connections (`max_connections`), requests in flight per connection (`MAX_CONN_INFLIGHT`),
snapshot size (`max_snapshot_bytes`), redial backoff (to 1 s)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import msgpack

from ..client import Client, ClientError, Unavailable
from ..kv.errors import ErrLeaseNotFound, KVError
from ..kv.requests import Compare, CompareResult, CompareTarget, PutRequest, RangeResponse
from .fencing import FencedOut, Keys, Token, fenced_put
from .machine import StateMachine
from .protocol import (
    DEFAULT_MAX_FRAME,
    ProtocolError,
    Secret,
    accept_handshake,
    check_append,
    check_int_msg,
    check_refuse,
    check_request,
    check_response,
    check_snap,
    dial_handshake,
    message,
    pack,
    read_frame,
)
from .storage import Entry, Snapshot, Storage, StorageError

log = logging.getLogger("shoal.failover")
T = TypeVar("T")
MODES = ("sync", "semi", "async")
MAX_CONN_INFLIGHT = 256
SNAP_CHUNK = 512 * 1024
STORE_ERRORS = (ClientError, KVError, TimeoutError, OSError)


@dataclass
class MemberConfig:
    service: str
    member_id: int
    mode: str
    data_dir: Path
    listen: tuple[str, int] = ("127.0.0.1", 0)
    advertise: str | None = None  # host:port others dial; default: the bound listen address
    ttl: int = 2  # seconds: the lease, so the time a dead primary keeps the role
    secret: Secret | None = None
    snapshot_every: int = 10_000  # entries past the latest snapshot before the next one
    poll_interval: float = 0.1
    heartbeat_interval: float = 0.1
    beacon_interval: float = 0.5
    sync_timeout: float = 1.0
    write_timeout: float = 5.0
    max_frame: int = DEFAULT_MAX_FRAME
    max_pending_writes: int = 4096
    max_inflight: int = 8192
    max_connections: int = 256
    max_snapshot_bytes: int = 1 << 30
    allow_faults: bool = False  # the `fault` request (isolate the member): for benchmarks

    def check(self) -> None:
        Keys(self.service).prefix  # noqa: B018 - validates the name
        if self.mode not in MODES:
            raise ValueError(f"mode {self.mode!r}: use one of {', '.join(MODES)}")
        if not 0 < self.member_id < 10**8:
            raise ValueError(f"member id {self.member_id}: 1 to 99999999")
        if self.ttl < 1:
            raise ValueError(f"ttl {self.ttl}: at least 1 second")
        if self.snapshot_every < 1:
            raise ValueError("snapshot_every must be at least 1")

    @property
    def margin(self) -> float:
        """How much before ttl the lease guard gives up: drift and a slow keep-alive."""
        return max(0.25, self.ttl * 0.25)


class ServiceError(Exception):
    """A request the member answered with an error `code` (see docs/failover.md)."""

    def __init__(self, code: str, message: str, **details: Any):
        super().__init__(message)
        self.code, self.details = code, details


@dataclass(frozen=True)
class _Info:
    """A member key's value, as published."""

    id: int
    addr: str
    role: str
    token: int
    applied: int
    last_token: int
    retired: int
    mode: str

    @staticmethod
    def parse(value: bytes) -> _Info | None:
        try:
            d = msgpack.unpackb(value, raw=False)
            return _Info(int(d["id"]), str(d["addr"]), str(d["role"]), int(d["token"]),
                         int(d["applied"]), int(d["last_token"]), int(d["retired"]),
                         str(d["mode"]))
        except (ValueError, TypeError, KeyError, msgpack.UnpackException):
            return None


@dataclass
class _View:
    """One linearizable read of the service's keys."""

    revision: int
    primary: Any  # KeyValue | None
    primary_value: dict[str, Any]
    term_rev: int
    syncset: dict[str, Any] | None
    members: dict[int, _Info]

    @staticmethod
    def of(resp: RangeResponse, keys: Keys) -> _View:
        primary, value, term_rev, syncset, members = None, {}, 0, None, {}
        for kv in resp.kvs:
            if kv.key == keys.primary:
                primary = kv
                with contextlib.suppress(ValueError, TypeError, msgpack.UnpackException):
                    value = msgpack.unpackb(kv.value, raw=False)
            elif kv.key == keys.term:
                term_rev = kv.mod_revision
            elif kv.key == keys.syncset:
                with contextlib.suppress(ValueError, TypeError, msgpack.UnpackException):
                    syncset = msgpack.unpackb(kv.value, raw=False)
            elif kv.key.startswith(keys.members) and (info := _Info.parse(kv.value)):
                members[info.id] = info
        return _View(resp.header.revision, primary, value if isinstance(value, dict) else {},
                     term_rev, syncset if isinstance(syncset, dict) else None, members)


class _BackupStream:
    """The primary's end of one backup's connection: a sender and an ack reader."""

    def __init__(self, member: Member, backup: int, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter, start: int | None):
        self.m, self.id, self.reader, self.writer = member, backup, reader, writer
        self.token = member.token
        self.next_index = start if start is not None else 0  # 0: send the snapshot first
        self.acked = 0
        self.alive = True
        self.caught_up = False
        self.wake = asyncio.Event()

    async def run(self) -> None:
        sender = asyncio.create_task(self._send_loop())
        try:
            await self._read_loop()
        except (ProtocolError, OSError, asyncio.IncompleteReadError) as exc:
            log.info("backup %s stream ended: %s", self.id, exc)
        finally:
            self.alive = False
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError, OSError, ProtocolError):
                await sender
            self.writer.close()
            self.m._stream_ended(self)

    def _current(self) -> bool:
        return self.alive and self.m.role == "primary" and self.m.token == self.token

    async def _read_loop(self) -> None:
        while self._current():
            v = await read_frame(self.reader, 4096, f"backup {self.id}")
            if v is None:
                return
            kind, msg = message(v, f"backup {self.id}")
            if kind == "ack":
                index, token = check_int_msg(msg, ("index", "token"), "ack frame")
                # An ack names its entry (index, token): one for an entry we did not send on
                # this stream, or for another log's entry at that index (an fsync the backup
                # began before it switched to us), says nothing about our log.
                if index > self.acked and index < self.next_index and \
                        self.m.log.token_at(index) == token:
                    self.acked = index
                    self.m._on_ack(self)
            elif kind == "refuse":
                token, reason = check_refuse(msg)
                self.m.counters["refusals_received"] += 1
                log.warning("backup %s refuses our replication (token %s): %s", self.id,
                            self.token, reason)
                return
            else:
                raise ProtocolError(f"backup {self.id}: unexpected {kind!r} frame")

    async def _send_loop(self) -> None:
        m, lg = self.m, self.m.log
        while self._current():
            if self.next_index == 0 or self.next_index < lg.first_index:
                await self._send_snapshot()
                continue
            if self.next_index <= lg.last_index and \
                    self.next_index - self.acked <= m.cfg.max_inflight:
                try:
                    batch = lg.read(self.next_index, 512, 1 << 20)
                except StorageError:
                    self.next_index = 0
                    continue
                prev = lg.token_at(self.next_index - 1)
                if prev is None:
                    self.next_index = 0
                    continue
                self.writer.write(pack(["append", self.token, self.next_index, prev,
                                        [[e.token, e.op] for e in batch], lg.last_index],
                                       m.cfg.max_frame))
                self.next_index += len(batch)
                # Sent all there was: under a steady load the sender is never idle, so this
                # (not idleness) is what makes a backup a candidate for the sync set.
                self.caught_up = self.caught_up or self.next_index > lg.last_index
                await self.writer.drain()
                continue
            self.caught_up = True
            self.wake.clear()
            try:
                await asyncio.wait_for(self.wake.wait(), m.cfg.heartbeat_interval)
            except TimeoutError:
                self.writer.write(pack(["beat", self.token, lg.last_index]))
                await self.writer.drain()

    async def _send_snapshot(self) -> None:
        snap = await self.m._snapshot_for_catch_up()
        data, total = snap.data, len(snap.data)
        offset = 0
        while True:
            chunk = data[offset: offset + SNAP_CHUNK]
            self.writer.write(pack(["snap", self.token, snap.index, snap.token, offset, total,
                                    chunk], self.m.cfg.max_frame))
            await self.writer.drain()
            offset += len(chunk)
            if offset >= total:
                break
        self.m.counters["snapshots_sent"] += 1
        log.info("sent backup %s the snapshot at index %s (%s bytes)", self.id, snap.index, total)
        self.next_index = snap.index + 1


class Member:
    """`await Member(cfg, store, machine).run()`; `stop()` ends it."""

    def __init__(self, cfg: MemberConfig, store: Client, machine: StateMachine):
        cfg.check()
        self.cfg, self.store, self.sm = cfg, store, machine
        self.id = cfg.member_id
        self.keys = Keys(cfg.service)
        self.log = Storage(cfg.data_dir)
        self._recover()
        self.role = "backup"
        self.token = 0  # the primary's we follow, or our own
        self.retired = 0  # every token <= this is refused
        self.lease = 0
        self._lease_ok_at = -math.inf  # when the last keep-alive that succeeded was sent
        self.addr = ""
        self.counters: dict[str, int] = dict.fromkeys(
            ("writes", "refusals_sent", "refusals_received", "fenced_refused",
             "stale_frames_refused", "snapshots_sent", "snapshots_installed", "promotions",
             "demotions"), 0)
        self.durable = self.log.last_index
        self.commit = 0
        # primary
        self._ready = False
        self._streams: dict[int, _BackupStream] = {}
        self._syncset: set[int] = set()
        self._joining: dict[int, int] = {}  # backup -> the index it must acknowledge to join
        self._waiters: deque[tuple[int, float, asyncio.Future[None]]] = deque()
        self._last_beacon = 0.0
        # backup
        self.primary_addr: str | None = None
        self.primary_id: int | None = None
        self.primary_last = 0
        self.heard_at: float | None = None
        self._follow_task: asyncio.Task[None] | None = None
        self._follow_writer: asyncio.StreamWriter | None = None
        self._snap_buf = bytearray()
        # io
        self._io_lock = asyncio.Lock()  # fsync vs. anything that replaces the log file
        self._sync_task: asyncio.Task[None] | None = None
        self._snapshot_task: asyncio.Task[Snapshot] | None = None
        self._published: bytes | None = None
        self._published_at = 0.0
        self._tasks: list[asyncio.Task[Any]] = []
        self._conns: set[asyncio.StreamWriter] = set()
        self._server: asyncio.Server | None = None
        self.isolated = False
        self._isolated_conn: asyncio.StreamWriter | None = None
        self._stopped = asyncio.Event()

    def _recover(self) -> None:
        snap = self.log.snapshot
        if snap.index:
            self.sm.restore(snap.data)
        for e in self.log.since(snap.index):
            self._apply(e.op)

    def _apply(self, op: bytes) -> Any:
        try:
            return self.sm.apply(msgpack.unpackb(op, raw=False))
        except (ValueError, TypeError, KeyError) as exc:  # it passed on the primary: say so
            log.error("a logged operation failed here (the state machine is not "
                      "deterministic?): %s", exc)
            return None

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        host, port = self.cfg.listen
        self._server = await asyncio.start_server(self._serve, host, port,
                                                  limit=self.cfg.max_frame + 1024)
        sock = self._server.sockets[0].getsockname()
        self.addr = self.cfg.advertise or f"{sock[0]}:{sock[1]}"
        self._tasks = [asyncio.create_task(self._lease_loop()),
                       asyncio.create_task(self._control_loop())]
        log.info("member %s of %r (%s mode) serving on %s, log %s..%s", self.id,
                 self.cfg.service, self.cfg.mode, self.addr, self.log.first_index,
                 self.log.last_index)

    async def run(self) -> None:
        await self.start()
        await self._stopped.wait()

    async def stop(self) -> None:
        self._stopped.set()
        for t in self._tasks:
            t.cancel()
        self._stop_following()
        for s in list(self._streams.values()):
            s.writer.close()
        if self._server is not None:
            self._server.close()
        for w in list(self._conns):
            w.close()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        async with self._io_lock:
            self.log.close()

    # ------------------------------------------------------------------ the store
    async def _store(self, call: Callable[[], Awaitable[T]]) -> T:
        if self.isolated:  # fault injection: as if the store were unreachable
            raise Unavailable("isolated by fault injection")
        return await call()

    def lease_valid(self) -> bool:
        return time.monotonic() - self._lease_ok_at < self.cfg.ttl - self.cfg.margin

    async def _lease_loop(self) -> None:
        ttl = self.cfg.ttl
        backoff = 0.1
        while True:
            if not self.lease:
                try:
                    sent = time.monotonic()
                    grant = await self._store(lambda: self.store.lease_grant(ttl, timeout=ttl))
                    self.lease, self._lease_ok_at, self._published = grant.id, sent, None
                    backoff = 0.1
                except STORE_ERRORS as exc:
                    log.debug("lease grant failed: %s", exc)
                    await asyncio.sleep(backoff)
                    backoff = min(1.0, backoff * 2)
                    continue
            await asyncio.sleep(max(0.1, ttl / 3))
            try:
                sent = time.monotonic()
                resp = await self._store(
                    lambda: self.store.lease_keepalive(self.lease, timeout=max(0.2, ttl / 3)))
                if resp.ttl > 0:
                    self._lease_ok_at = sent
                else:
                    self._lease_lost("the store says our lease is gone")
            except ErrLeaseNotFound:
                self._lease_lost("the store says our lease is gone")
            except STORE_ERRORS as exc:
                log.debug("keep-alive failed: %s", exc)
                if not self.lease_valid():
                    self._lease_lost(f"no keep-alive succeeded for {ttl - self.cfg.margin:g} s")

    def _lease_lost(self, why: str) -> None:
        log.warning("member %s lost its lease: %s", self.id, why)
        self.lease = 0
        if self.role == "primary":
            self._demote(f"lease lost: {why}")
        else:
            self._stop_following()  # promotions no longer wait for us: we may not ack

    async def _publish(self, force: bool = False) -> None:
        value = msgpack.packb({
            "id": self.id, "addr": self.addr, "role": self.role, "token": self.token,
            "applied": self.log.last_index, "last_token": self.log.last_token,
            "retired": self.retired, "mode": self.cfg.mode}, use_bin_type=True)
        if value == self._published:
            return
        now = time.monotonic()
        # The applied index alone changes with every write: published at most twice a second.
        if not force and self._published is not None and now - self._published_at < 0.5 and \
                _same_but_applied(value, self._published):
            return
        lease = self.lease
        if not lease:
            return  # never without a lease: the key would outlive this member
        await self._store(lambda: self.store.put(self.keys.member(self.id), value, lease=lease,
                                                 timeout=2.0))
        self._published, self._published_at = value, now

    async def _control_loop(self) -> None:
        while True:
            try:
                await self._control_once()
            except ErrLeaseNotFound:
                self._lease_lost("a write with our lease found it gone")
            except STORE_ERRORS as exc:
                log.debug("control: %s", exc)
            await asyncio.sleep(self.cfg.poll_interval)

    async def _control_once(self) -> None:
        if not self.lease:
            return
        await self._publish()
        resp = await self._store(lambda: self.store.get(self.keys.prefix, prefix=True,
                                                        timeout=2.0))
        view = _View.of(resp, self.keys)
        if self.role == "primary":
            if view.primary is None or view.primary.create_revision != self.token:
                now = view.primary.create_revision if view.primary is not None else 0
                self._demote(f"the store shows primary token {now}, ours is {self.token}")
            return
        if view.primary is not None:
            token = view.primary.create_revision
            addr = view.primary_value.get("addr")
            if token > self.retired and isinstance(addr, str) and (
                    token != self.token or self._follow_task is None or self._follow_task.done()):
                self._start_following(token, addr, view.primary_value.get("id"))
            return
        # Vacancy: nobody holds the primary key.
        last = view.term_rev
        if self.retired < last:
            self._retire(last, "the primary's lease ended (its key is gone)")
            await self._publish(force=True)
            return
        if not self.isolated:
            await self._maybe_promote(view, last)

    def _retire(self, token: int, why: str) -> None:
        log.info("member %s retires token %s: %s", self.id, token, why)
        self.retired = max(self.retired, token)
        if self.token and self.token <= self.retired and self._follow_writer is not None:
            with contextlib.suppress(OSError, ValueError, RuntimeError):
                self._follow_writer.write(pack(["refuse", self.retired,
                                                f"member {self.id} retired token {token}: {why}"]))
                self.counters["refusals_sent"] += 1
        self._stop_following()

    async def _maybe_promote(self, view: _View, last: int) -> None:
        live = view.members
        me = live.get(self.id)
        if me is None or me.applied != self.log.last_index or me.retired < last:
            return  # our own key is not final yet: next round
        if any(info.retired < last for info in live.values()):
            return  # someone may still take entries from the old primary
        eligible = set(live)
        ss = view.syncset
        if ss is not None and ss.get("mode") in ("sync", "semi"):
            eligible &= {int(i) for i in ss.get("members", []) if type(i) is int}
        if not eligible:
            log.info("no live member of the sync set %s: waiting (writes it acknowledged "
                     "may exist nowhere else)", ss.get("members") if ss else [])
            return
        best = max(eligible, key=lambda i: (live[i].last_token, live[i].applied, -i))
        if best != self.id:
            return
        compares = [
            Compare(self.keys.primary, CompareTarget.CREATE, CompareResult.EQUAL, 0),
            Compare(self.keys.term, CompareTarget.MOD, CompareResult.EQUAL, last) if last else
            Compare(self.keys.term, CompareTarget.CREATE, CompareResult.EQUAL, 0),
            Compare(self.keys.members, CompareTarget.MOD, CompareResult.LESS, view.revision + 1,
                    self.keys.members_end),
            Compare(self.keys.member(self.id), CompareTarget.LEASE, CompareResult.EQUAL,
                    self.lease),
        ]
        value = msgpack.packb({"id": self.id, "addr": self.addr, "mode": self.cfg.mode},
                              use_bin_type=True)
        lease = self.lease
        resp = await self._store(lambda: self.store.txn(compares, [
            PutRequest(self.keys.primary, value, lease=lease),
            PutRequest(self.keys.term, msgpack.packb({"id": self.id}))], timeout=2.0))
        if resp.succeeded:
            await self._become_primary(resp.header.revision)

    # ------------------------------------------------------------------ primary
    async def _become_primary(self, token: int) -> None:
        self._stop_following()
        self.role, self.token, self._ready = "primary", token, False
        self.primary_addr, self.primary_id, self.heard_at = self.addr, self.id, None
        self._syncset, self._joining = {self.id}, {}
        self.counters["promotions"] += 1
        log.info("member %s is primary of %r with token %s (log up to %s, token %s)", self.id,
                 self.cfg.service, token, self.log.last_index, self.log.last_token)
        try:
            await self._write_syncset(self._syncset)
        except FencedOut as exc:
            self._demote(str(exc))
            return
        except STORE_ERRORS as exc:
            self._demote(f"could not write the initial sync set: {exc}")
            return
        self._ready = True
        self.durable = max(self.durable, self.log.last_index)
        self.commit = self.log.last_index
        await self._publish(force=True)
        self._tasks = [t for t in self._tasks if not t.done()]
        self._tasks.append(asyncio.create_task(self._primary_tick(token)))

    def _demote(self, why: str) -> None:
        if self.role != "primary":
            return
        log.warning("member %s steps down as primary (token %s): %s", self.id, self.token, why)
        self.counters["demotions"] += 1
        self.role, self._ready = "backup", False
        self.retired = max(self.retired, self.token)  # we never act on it again
        for s in list(self._streams.values()):
            s.alive = False
            s.writer.close()
        self._streams.clear()
        while self._waiters:
            _, _, fut = self._waiters.popleft()
            if not fut.done():
                fut.set_exception(ServiceError(
                    "fenced", f"member {self.id} is no longer primary ({why}): the write was "
                    "not acknowledged and may or may not survive"))
        self._published = None

    def _token(self) -> Token:
        return Token(self.cfg.service, self.token)

    async def _write_syncset(self, members: set[int]) -> None:
        value = msgpack.packb({"token": self.token, "mode": self.cfg.mode,
                               "members": sorted(members)}, use_bin_type=True)
        await self._store(lambda: fenced_put(self.store, self.keys.syncset, value, self._token(),
                                             timeout=2.0))

    async def _primary_tick(self, token: int) -> None:
        """Sync set upkeep and the beacon, while we are primary with `token`."""
        last = time.monotonic()
        while self.role == "primary" and self.token == token:
            wait = self.cfg.heartbeat_interval - (time.monotonic() - last)
            if wait > 0:
                await asyncio.sleep(wait)
            now = time.monotonic()
            # Woken this late (the process was paused, the loop starved): only the token can
            # tell whether we still lead, so the fenced beacon goes first, at once.
            stalled = now - last > self.cfg.ttl - self.cfg.margin
            last = now
            try:
                if stalled or now - self._last_beacon >= self.cfg.beacon_interval:
                    self._last_beacon = now
                    await self._beacon()
                await self._tend_syncset()
            except FencedOut as exc:
                self.counters["fenced_refused"] += 1
                log.warning("member %s: %s", self.id, exc)
                self._demote(str(exc))
            except STORE_ERRORS as exc:
                log.debug("primary tick: %s", exc)

    async def _beacon(self) -> None:
        """A fenced write of who is primary and how far it is: what `status` shows, and the
        example of a write to an external resource carrying the token."""
        value = msgpack.packb({"id": self.id, "token": self.token, "applied": self.log.last_index,
                               "time": time.time()}, use_bin_type=True)
        await self._store(lambda: fenced_put(self.store, self.keys.beacon, value, self._token(),
                                             timeout=2.0))

    async def _tend_syncset(self) -> None:
        if self.role != "primary":
            return
        last = self.log.last_index
        for b, stream in list(self._streams.items()):  # caught up: required from now on
            if stream.alive and stream.caught_up and b not in self._syncset and \
                    b not in self._joining:
                self._joining[b] = last
                log.info("backup %s caught up: joining the sync set at index %s", b, last)
        for b, mark in list(self._joining.items()):
            s = self._streams.get(b)
            if s is not None and s.alive and s.acked >= mark:
                await self._write_syncset(self._syncset | {b})
                self._syncset.add(b)
                del self._joining[b]
                log.info("sync set of token %s: %s", self.token, sorted(self._syncset))
        oldest = self._waiters[0] if self._waiters else None
        now = time.monotonic()
        for b in sorted((self._syncset - {self.id}) | set(self._joining)):
            s = self._streams.get(b)
            slow = oldest is not None and now - oldest[1] > self.cfg.sync_timeout and (
                s is None or s.acked < oldest[0])
            if s is not None and s.alive and not slow:
                continue
            if b in self._joining:
                del self._joining[b]
            else:
                why = "disconnected" if s is None or not s.alive else \
                    f"no acknowledgement for {self.cfg.sync_timeout:g} s"
                await self._write_syncset(self._syncset - {b})
                self._syncset.discard(b)
                log.warning("backup %s left the sync set (%s): %s", b, why, sorted(self._syncset))
            self._check_waiters()

    def _required(self) -> set[int]:
        return (self._syncset | set(self._joining)) - {self.id}

    def _commit_point(self) -> int:
        required = self._required()
        if self.cfg.mode == "async" or not required:
            return self.durable
        acks = [self._streams[b].acked if b in self._streams else 0 for b in required]
        return min(self.durable, min(acks) if self.cfg.mode == "sync" else max(acks))

    def _check_waiters(self) -> None:
        if self.role != "primary":
            return
        self.commit = max(self.commit, self._commit_point())
        while self._waiters and self._waiters[0][0] <= self.commit:
            _, _, fut = self._waiters.popleft()
            if not fut.done():
                fut.set_result(None)

    def _on_ack(self, stream: _BackupStream) -> None:
        stream.wake.set()  # the window may have room again
        self._check_waiters()

    def _stream_ended(self, stream: _BackupStream) -> None:
        if self._streams.get(stream.id) is stream:
            del self._streams[stream.id]

    async def _write(self, op: Any) -> dict[str, Any]:
        if self.role != "primary" or not self._ready:
            raise self._not_primary()
        if len(self._waiters) >= self.cfg.max_pending_writes:
            raise ServiceError("too_many_requests", f"{len(self._waiters)} writes wait for "
                               "acknowledgement, the bound is "
                               f"{self.cfg.max_pending_writes}")
        packed = msgpack.packb(op, use_bin_type=True)
        if len(packed) > self.cfg.max_frame // 4:
            raise ServiceError("bad_request", f"operation of {len(packed)} bytes exceeds "
                               f"{self.cfg.max_frame // 4}")
        try:
            result = self.sm.apply(op)
        except (ValueError, TypeError, KeyError) as exc:
            raise ServiceError("bad_request", f"the state machine refused the operation: "
                               f"{exc}") from None
        entry = Entry(self.log.last_index + 1, self.token, packed)
        self.log.append([entry])
        self.counters["writes"] += 1
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((entry.index, time.monotonic(), fut))
        for s in self._streams.values():
            s.wake.set()
        self._schedule_sync()
        try:
            await asyncio.wait_for(asyncio.shield(fut), self.cfg.write_timeout)
        except TimeoutError:
            raise ServiceError("timeout", f"write {entry.index} not acknowledged within "
                               f"{self.cfg.write_timeout:g} s ({self.cfg.mode} mode): it may or "
                               "may not survive") from None
        # The lease guard, at the one step nothing downstream can fence: everything sent for
        # this write carried the token, but an acknowledgement from a primary whose lease may
        # have ended could promise a write a new primary never had.
        if not self.lease_valid() or self.role != "primary" or self.token != entry.token:
            raise ServiceError("fenced", f"write {entry.index} not acknowledged: member "
                               f"{self.id}'s lease may have ended (no keep-alive succeeded "
                               f"within {self.cfg.ttl - self.cfg.margin:g} s); it may or may "
                               "not survive")
        return {"result": result, "index": entry.index, "token": entry.token}

    def _not_primary(self) -> ServiceError:
        return ServiceError("not_primary", f"member {self.id} is a {self.role}, not the primary",
                            primary=self.primary_addr if self.role != "primary" else None,
                            token=self.token)

    # ------------------------------------------------------------------ durability
    def _schedule_sync(self) -> None:
        if self._sync_task is None or self._sync_task.done():
            self._sync_task = asyncio.create_task(self._sync_loop())

    async def _sync_loop(self) -> None:
        """Group commit: one fsync covers every append made before it started."""
        loop = asyncio.get_running_loop()
        while self.durable < self.log.last_index:
            async with self._io_lock:
                target = self.log.last_index
                self.log._file.flush()
                self.log._dirty = False
                await loop.run_in_executor(None, os.fsync, self.log._file.fileno())
            self.durable = max(self.durable, target)
            if self.role == "primary":
                self._check_waiters()
            elif self._follow_writer is not None:
                index = min(self.durable, self.log.last_index)
                token = self.log.token_at(index)
                if token is not None:
                    with contextlib.suppress(OSError, RuntimeError):
                        self._follow_writer.write(pack(["ack", index, token]))
            self._maybe_snapshot()

    def _maybe_snapshot(self) -> None:
        if self.log.last_index - self.log.snapshot.index >= self.cfg.snapshot_every and (
                self._snapshot_task is None or self._snapshot_task.done()):
            self._snapshot_task = asyncio.create_task(self._take_snapshot())

    async def _take_snapshot(self) -> Snapshot:
        async with self._io_lock:
            # The state machine is at the log's last entry: nothing awaits between these.
            snap = Snapshot(self.log.last_index, self.log.last_token, self.sm.snapshot())
            self.log.save_snapshot(snap, retain=self.cfg.snapshot_every)
        log.info("member %s: snapshot at index %s (%s bytes), log from %s", self.id, snap.index,
                 len(snap.data), self.log.first_index)
        return snap

    async def _snapshot_for_catch_up(self) -> Snapshot:
        if self.log.snapshot.index and self.log.first_index <= self.log.snapshot.index + 1:
            return self.log.snapshot
        return await self._take_snapshot()

    # ------------------------------------------------------------------ backup
    def _start_following(self, token: int, addr: str, primary_id: Any) -> None:
        if self.retired < token - 1:
            # A primary with `token` exists, so every smaller token is over, whether or not
            # we saw its vacancy: refuse them all from now on.
            self._retire(token - 1, f"a newer primary holds token {token}")
        self._stop_following()
        self.token, self.primary_addr = token, addr
        self.primary_id = primary_id if type(primary_id) is int else None
        self._published = None
        self._follow_task = asyncio.create_task(self._follow(token, addr))

    def _stop_following(self) -> None:
        if self._follow_writer is not None:
            self._follow_writer.close()
            self._follow_writer = None
        if self._follow_task is not None and self._follow_task is not asyncio.current_task():
            self._follow_task.cancel()
        self._follow_task = None

    async def _follow(self, token: int, addr: str) -> None:
        backoff = 0.05
        while self.role == "backup" and self.token == token and token > self.retired:
            if self.isolated or not self.lease_valid():
                await asyncio.sleep(self.cfg.poll_interval)
                continue
            writer: asyncio.StreamWriter | None = None
            try:
                host, _, port = addr.rpartition(":")
                async with asyncio.timeout(2.0):
                    reader, writer = await asyncio.open_connection(
                        host, int(port), limit=self.cfg.max_frame + 1024)
                    await dial_handshake(reader, writer, self.cfg.service, self.cfg.secret)
                    writer.write(pack([1, "follow", {
                        "id": self.id, "token": token, "last_index": self.log.last_index,
                        "last_token": self.log.last_token}]))
                    _, code, body = check_response(
                        await read_frame(reader, self.cfg.max_frame, "follow answer"))
                if code != "ok":
                    raise ProtocolError(f"the primary at {addr} refused to be followed: "
                                        f"{body.get('message') if isinstance(body, dict) else body}")
                self._follow_writer = writer
                backoff = 0.05
                log.info("member %s follows %s (token %s) from index %s", self.id, addr, token,
                         self.log.last_index)
                await self._follow_stream(reader, writer, token)
            except (OSError, TimeoutError, ProtocolError, asyncio.IncompleteReadError,
                    ValueError) as exc:
                log.info("member %s: following %s: %s", self.id, addr, exc)
            finally:
                if writer is not None:
                    writer.close()
                if self._follow_writer is writer:
                    self._follow_writer = None
            await asyncio.sleep(backoff)
            backoff = min(1.0, backoff * 2)

    async def _follow_stream(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                             token: int) -> None:
        while True:
            v = await read_frame(reader, self.cfg.max_frame, f"primary {self.primary_addr}")
            if v is None:
                raise ProtocolError("the primary closed the stream")
            kind, msg = message(v, "replication frame")
            if kind == "refuse":
                _, reason = check_refuse(msg)
                raise ProtocolError(f"the primary refuses us: {reason}")
            frame_token = msg[1] if len(msg) > 1 and type(msg[1]) is int else -1
            if frame_token != token or token <= self.retired or not self.lease_valid() \
                    or self.role != "backup" or self.isolated:
                self.counters["stale_frames_refused"] += 1
                why = (f"token {frame_token} is retired (<= {self.retired})"
                       if frame_token <= self.retired else
                       f"token {frame_token} is not the one verified in the store ({token})"
                       if frame_token != token else "this member's own lease lapsed")
                writer.write(pack(["refuse", max(self.retired, token), why]))
                self.counters["refusals_sent"] += 1
                raise ProtocolError(f"refused a {kind} frame: {why}")
            self.heard_at = time.monotonic()
            if kind == "append":
                _, first, prev, entries, last = check_append(msg)
                if first != self.log.last_index + 1 or prev != self.log.last_token:
                    raise ProtocolError(f"append of entry {first} (after token {prev}) does not "
                                        f"follow our log (last {self.log.last_index}, token "
                                        f"{self.log.last_token})")
                batch = [Entry(first + i, t, op) for i, (t, op) in enumerate(entries)]
                for e in batch:
                    self._apply(e.op)
                self.log.append(batch)
                self.primary_last = max(last, self.log.last_index)
                self._schedule_sync()
            elif kind == "snap":
                await self._on_snap(msg, writer)
            elif kind == "beat":
                _, last = check_int_msg(msg, ("token", "primary_last"), "beat frame")
                self.primary_last = last
            else:
                raise ProtocolError(f"unexpected {kind!r} frame from the primary")

    async def _on_snap(self, msg: list[Any], writer: asyncio.StreamWriter) -> None:
        _, index, snap_token, offset, total, chunk = check_snap(msg)
        if total > self.cfg.max_snapshot_bytes:
            raise ProtocolError(f"snapshot of {total} bytes exceeds the bound "
                                f"{self.cfg.max_snapshot_bytes}")
        if offset != len(self._snap_buf) or offset + len(chunk) > total:
            if offset != 0:
                raise ProtocolError(f"snapshot chunk at {offset}, expected {len(self._snap_buf)}")
            self._snap_buf = bytearray()
        self._snap_buf += chunk
        if len(self._snap_buf) < total:
            return
        data, self._snap_buf = bytes(self._snap_buf), bytearray()
        async with self._io_lock:
            try:
                self.sm.restore(data)
            except (ValueError, TypeError, KeyError, msgpack.UnpackException) as exc:
                raise ProtocolError(f"the primary's snapshot does not restore: {exc}") from None
            self.log.install_snapshot(Snapshot(index, snap_token, data))
            self.durable = index
        self.counters["snapshots_installed"] += 1
        log.info("member %s installed the snapshot at index %s (%s bytes)", self.id, index, total)
        writer.write(pack(["ack", index, snap_token]))

    # ------------------------------------------------------------------ the port
    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self._conns) >= self.cfg.max_connections or self.isolated:
            writer.close()
            return
        self._conns.add(writer)
        peer = writer.get_extra_info("peername")
        pending: set[asyncio.Task[None]] = set()
        try:
            async with asyncio.timeout(5.0):
                await accept_handshake(reader, writer, self.cfg.service, self.cfg.secret)
            while True:
                v = await read_frame(reader, self.cfg.max_frame, f"client {peer}")
                if v is None:
                    return
                rid, op, body = check_request(v)
                if self.isolated and writer is not self._isolated_conn:
                    return  # fault injection: everyone but the isolated client is cut off
                if op == "follow":
                    await self._accept_follower(rid, body, reader, writer)
                    return
                if len(pending) >= MAX_CONN_INFLIGHT:
                    writer.write(pack([rid, "too_many_requests", {
                        "message": f"{MAX_CONN_INFLIGHT} requests in flight on this connection"}]))
                    continue
                task = asyncio.create_task(self._answer(rid, op, body, writer))
                pending.add(task)
                task.add_done_callback(pending.discard)
        except (ProtocolError, OSError, TimeoutError, asyncio.IncompleteReadError) as exc:
            log.info("connection from %s closed: %s", peer, exc)
        finally:
            self._conns.discard(writer)
            for t in pending:
                t.cancel()
            writer.close()

    async def _answer(self, rid: int, op: str, body: Any, writer: asyncio.StreamWriter) -> None:
        try:
            code, answer = "ok", await self._handle(op, body, writer)
        except ServiceError as exc:
            code, answer = exc.code, {"message": str(exc), **exc.details}
        if not writer.is_closing():
            writer.write(pack([rid, code, answer], self.cfg.max_frame))

    async def _handle(self, op: str, body: Any, writer: asyncio.StreamWriter) -> Any:
        if op == "write":
            return await self._write(body)
        if op == "read":
            try:
                result = self.sm.query(body)
            except (ValueError, TypeError, KeyError) as exc:
                raise ServiceError("bad_request", f"the state machine refused the read: "
                                   f"{exc}") from None
            return {"result": result, **self._staleness()}
        if op == "status":
            return self.status()
        if op == "fault":
            if not self.cfg.allow_faults:
                raise ServiceError("bad_request", "faults are off on this member "
                                   "(start it with --allow-faults)")
            if not isinstance(body, dict) or type(body.get("isolate")) is not bool:
                raise ServiceError("bad_request", "a fault is {'isolate': true|false}")
            self._isolate(body["isolate"], writer)
            return {"isolated": self.isolated}
        raise ServiceError("bad_request", f"unknown request {op!r}: use write, read, status")

    def _isolate(self, on: bool, writer: asyncio.StreamWriter) -> None:
        """Fault injection: cut this member off from the store, its peers and every client
        but the one that asked (whose connection stays), until asked again."""
        self.isolated = on
        self._isolated_conn = writer if on else None
        log.warning("member %s: %s", self.id, "isolated" if on else "isolation healed")
        if on:
            for s in list(self._streams.values()):
                s.writer.close()
            if self._follow_writer is not None:
                self._follow_writer.close()
            for w in list(self._conns):
                if w is not writer:
                    w.close()

    async def _accept_follower(self, rid: int, body: Any, reader: asyncio.StreamReader,
                               writer: asyncio.StreamWriter) -> None:
        ok = isinstance(body, dict) and all(type(body.get(k)) is int for k in
                                            ("id", "token", "last_index", "last_token"))
        if not ok:
            writer.write(pack([rid, "bad_request", {
                "message": "follow takes {id, token, last_index, last_token} (integers)"}]))
            return
        if self.role != "primary" or not self._ready or body["token"] != self.token:
            writer.write(pack([rid, "not_primary", {
                "message": f"member {self.id} is not primary with token {body['token']}"}]))
            return
        last_index, last_token = body["last_index"], body["last_token"]
        match = last_index <= self.log.last_index and \
            self.log.token_at(last_index) == last_token and last_index >= self.log.first_index - 1
        start = last_index + 1 if match else None
        writer.write(pack([rid, "ok", {"token": self.token, "start": start or 0}]))
        old = self._streams.get(body["id"])
        if old is not None:
            old.alive = False
            old.writer.close()
        stream = _BackupStream(self, body["id"], reader, writer, start)
        stream.acked = last_index if match else 0
        self._streams[body["id"]] = stream
        log.info("backup %s follows from %s", body["id"],
                 start if start is not None else "a snapshot")
        await stream.run()

    # ------------------------------------------------------------------ status
    def _staleness(self) -> dict[str, Any]:
        primary = self.role == "primary"
        heard = None if self.heard_at is None else round(time.monotonic() - self.heard_at, 3)
        top = self.log.last_index if primary else max(self.primary_last, self.log.last_index)
        return {"index": self.log.last_index, "token": self.token, "role": self.role,
                "member": self.id, "heard_s": 0.0 if primary else heard,
                "primary_index": top, "lag": top - self.log.last_index}

    def status(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "service": self.cfg.service, "id": self.id, "addr": self.addr, "role": self.role,
            "mode": self.cfg.mode, "token": self.token, "retired": self.retired,
            "applied": self.log.last_index, "last_token": self.log.last_token,
            "durable": self.durable, "log_first": self.log.first_index,
            "snapshot_index": self.log.snapshot.index, "lease": self.lease,
            "lease_valid": self.lease_valid(), "isolated": self.isolated,
            "primary": self.primary_addr, "counters": dict(self.counters), **self._staleness()}
        if self.role == "primary":
            out.update(commit=self.commit, syncset=sorted(self._syncset),
                       joining=sorted(self._joining), pending_writes=len(self._waiters),
                       backups={str(b): {"acked": s.acked, "next": s.next_index,
                                         "lag": self.log.last_index - s.acked}
                                for b, s in sorted(self._streams.items())})
        return out


def _same_but_applied(a: bytes, b: bytes) -> bool:
    da, db = msgpack.unpackb(a, raw=False), msgpack.unpackb(b, raw=False)
    da.pop("applied", None)
    db.pop("applied", None)
    return bool(da == db)


