"""The deterministic world: a virtual clock, an event queue, simulated nodes (each a consensus
core with a disk and a KV state machine), a network, a nemesis and clients.

Everything random comes from one seeded generator and every event is ordered by
(virtual time, sequence number), so a seed replays a run exactly, trace and all."""

from __future__ import annotations

import heapq
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

from ..check.history import Event
from ..consensus.engine import Engine
from ..consensus.messages import (
    NONE,
    ConfState,
    ConsensusError,
    Durable,
    EntryKind,
    Message,
    NodeId,
    NotLeader,
    ProposalDropped,
    Ready,
)
from ..consensus.paxos import MultiPaxos, PaxosConfig
from ..consensus.raft import Raft, RaftConfig
from .disk import Disk
from .invariants import Invariants, Violation
from .kvsm import Command, KVStateMachine
from .network import Network

__all__ = ["SimConfig", "Violation", "World"]

MS = 1000  # virtual time is in microseconds


@dataclass(frozen=True)
class SimConfig:
    nodes: int = 5
    steps: int = 20_000
    engine: str = "raft"
    bugs: frozenset[str] = frozenset()
    clients: int = 8
    keys: int = 3
    faults: bool = True
    tick_us: int = 10 * MS
    election_tick: int = 10
    pre_vote: bool = True
    mean_latency_us: int = 1500
    max_msg_bytes: int = 4096  # entries per append, in bytes (small = many appends)
    client_timeout_us: int = 800 * MS
    snapshot_every: int = 150  # applied entries between snapshots
    snapshot_chunk_bytes: int = 256  # small, so installs take several chunks
    nemesis_mean_us: int = 250 * MS
    settle_us: int = 30_000 * MS  # how long the healed cluster has to converge
    trace_len: int = 60  # events kept for a violation report
    full_trace: bool = False  # record every event (for byte-identical replay checks)

    def replay_command(self, seed: int) -> str:
        bugs = "".join(f" --bug {b}" for b in sorted(self.bugs))
        return (f"shoal sim --engine {self.engine} --nodes {self.nodes} --steps {self.steps} "
                f"--seed {seed}{bugs}")


def make_engine(cfg: SimConfig, id: NodeId, conf: ConfState, rng: random.Random,
                durable: Durable | None) -> Engine:
    if cfg.engine == "raft":
        return Raft(id, conf, rng, durable, RaftConfig(
            election_tick=cfg.election_tick, pre_vote=cfg.pre_vote, bugs=cfg.bugs,
            snapshot_chunk_bytes=cfg.snapshot_chunk_bytes, max_size_per_msg=cfg.max_msg_bytes))
    if cfg.engine == "paxos":
        return MultiPaxos(id, conf, rng, durable, PaxosConfig(election_ticks=cfg.election_tick,
                                                              bugs=cfg.bugs))
    raise ValueError(f"unknown engine {cfg.engine!r}; known: raft, paxos")


@dataclass(eq=False)
class ClientOp:
    process: int
    seq: int
    f: str
    key: str
    value: object


@dataclass(eq=False)
class Host:
    """One simulated node process."""

    id: NodeId
    engine: Engine
    disk: Disk = field(default_factory=Disk)
    sm: KVStateMachine = field(default_factory=KVStateMachine)
    applied: int = 0
    up: bool = True
    paused: bool = False
    busy: bool = False  # waiting for an fsync
    life: int = 0
    drift: float = 1.0
    inbox: deque[Callable[[], None]] = field(default_factory=deque)
    writes: dict[tuple[int, int], tuple[int, ClientOp]] = field(default_factory=dict)
    reads: dict[bytes, tuple[int, ClientOp]] = field(default_factory=dict)
    waiting_reads: list[tuple[int, int, ClientOp]] = field(default_factory=list)

    INBOX_LIMIT = 5000  # a paused process's socket buffers fill up; beyond this, input is lost


@dataclass(eq=False)
class Client:
    slot: int
    process: int
    target: NodeId
    seq: int = 0
    op: ClientOp | None = None


class World:
    def __init__(self, seed: int, cfg: SimConfig):
        self.seed, self.cfg = seed, cfg
        self.rng = random.Random(seed)
        self.now = 0
        self.steps = 0
        self._queue: list[tuple[int, int, Callable[[], None]]] = []
        self._seq = 0
        ids = list(range(1, cfg.nodes + 1))
        self.conf = ConfState(voters=frozenset(ids))
        self.net = Network(ids, self.rng)
        self.net.faults.mean_latency_us = cfg.mean_latency_us
        self.inv = Invariants(log_shaped=cfg.engine == "raft")
        self.hosts: dict[NodeId, Host] = {}
        for i in ids:
            h = Host(i, self._new_engine(i, None), drift=self.rng.uniform(0.9, 1.1))
            self.hosts[i] = h
            self._schedule_tick(h, self.rng.randrange(cfg.tick_us))
        self.history: list[Event] = []
        self.acked: list[tuple[int, int]] = []
        self.applied_cmds: set[tuple[int, int]] = set()
        self.last_values: dict[str, object] = {}
        self.next_value = 0
        self.next_process = cfg.clients
        self.clients = [Client(s, s, self.rng.choice(ids)) for s in range(cfg.clients)]
        self.clients_on = True
        for c in self.clients:
            self.at(self.rng.randrange(50 * MS), partial(self._client_next, c))
        if cfg.faults:
            self.at(self._nemesis_gap(), self._nemesis)
        self.trace: deque[tuple[int, object]] | list[tuple[int, object]] = (
            [] if cfg.full_trace else deque(maxlen=cfg.trace_len))
        self.stats = {"elections": 0, "crashes": 0, "partitions": 0, "snapshots": 0, "lost_writes": 0,
                      "messages": 0}

    # ------------------------------------------------------------------ clock and events
    def at(self, delay: int, fn: Callable[[], None]) -> None:
        self._seq += 1
        heapq.heappush(self._queue, (self.now + delay, self._seq, fn))

    def _step_once(self) -> None:
        t, _, fn = heapq.heappop(self._queue)
        self.now = t
        self.steps += 1
        fn()

    def log(self, text: str) -> None:
        self.trace.append((self.now, text))

    def trace_text(self) -> str:
        return "\n".join(f"{t / 1e6:12.6f}  {_describe(x)}" for t, x in self.trace)

    # ------------------------------------------------------------------ running
    def run(self) -> None:
        """Run the faulty phase, then heal everything and require the cluster to converge."""
        while self.steps < self.cfg.steps and self._queue:
            self._step_once()
            if self.steps % 1000 == 0:
                self.inv.check_log_matching(self._disks())
        self.finish()

    # ------------------------------------------------------------------ scripting (tests)
    def run_for(self, us: int) -> None:
        """Advance virtual time by `us`, processing every event due."""
        end = self.now + us
        while self._queue and self._queue[0][0] <= end:
            self._step_once()
        self.now = max(self.now, end)

    def run_until(self, done: Callable[[], bool], limit_us: int, check_every: int = 20) -> bool:
        end = self.now + limit_us
        while not done():
            if not self._queue or self._queue[0][0] > end:
                return False
            for _ in range(check_every):
                if self._queue and self._queue[0][0] <= end:
                    self._step_once()
        return True

    def leader(self) -> Host | None:
        return self._leader()

    def call(self, h: Host, fn: Callable[[], None]) -> None:
        """Run `fn` against a node's core as its driver would, ignoring refusals."""
        self._input(h, lambda: _ignore(lambda _: fn(), h.id))

    def propose(self, h: Host, data: bytes) -> None:
        """Hand a raw command to a node's core as its driver would."""
        self._input(h, lambda: h.engine.propose(data))

    def crash(self, node: NodeId) -> None:
        self._crash(self.hosts[node])

    def restart(self, node: NodeId) -> None:
        self._restart(self.hosts[node])

    def finish(self) -> None:
        """Heal, converge, and check the end-of-run properties (as `run` does)."""
        self._heal_all()
        if not self.run_until(self._converged, self.cfg.settle_us, check_every=200):
            raise Violation("liveness", f"cluster did not converge within {self.cfg.settle_us / 1e6:.0f}s after healing: "
                            + ", ".join(f"n{h.id} {h.engine.status().role} commit={h.engine.status().commit} applied={h.applied}"
                                        for h in self.hosts.values()))
        self.inv.check_log_matching(self._disks())
        self._check_final()

    def _disks(self) -> dict[NodeId, Disk]:
        return {i: h.disk for i, h in self.hosts.items()}

    def _converged(self) -> bool:
        if any(c.op is not None for c in self.clients):
            return False
        sts = [h.engine.status() for h in self.hosts.values()]
        leaders = [s for s in sts if s.role == "leader"]
        if len(leaders) != 1:
            return False
        lead = leaders[0]
        return lead.commit == lead.last_index and all(
            h.up and not h.busy and h.applied == lead.commit for h in self.hosts.values())

    def _check_final(self) -> None:
        lost = [a for a in self.acked if a not in self.applied_cmds]
        if lost:
            raise Violation("acknowledged write lost", f"{len(lost)} acknowledged writes never applied, e.g. {lost[:3]}")
        states = {i: h.sm.data for i, h in self.hosts.items()}
        first = states[min(states)]
        for i, data in states.items():
            if data != first:
                raise Violation("state machine safety", f"node {i} ended with {data}, node {min(states)} with {first}")

    def _heal_all(self) -> None:
        self.log("nemesis: heal everything; clients stop")
        self.clients_on = False
        self.net.heal()
        self.net.faults.drop = self.net.faults.duplicate = 0.0
        for h in self.hosts.values():
            h.drift = 1.0
            if h.paused:
                self._resume(h)
            if not h.up:
                self._restart(h)

    # ------------------------------------------------------------------ nodes
    def _new_engine(self, id: NodeId, durable: Durable | None) -> Engine:
        rng = random.Random(self.rng.getrandbits(64))
        return make_engine(self.cfg, id, self.conf, rng, durable)

    def _schedule_tick(self, h: Host, delay: int) -> None:
        life = h.life
        self.at(delay, lambda: self._tick(h, life))

    def _tick(self, h: Host, life: int) -> None:
        if life != h.life or not h.up:
            return
        self._schedule_tick(h, int(self.cfg.tick_us * h.drift))
        if not h.paused:
            self._input(h, h.engine.tick)

    def _input(self, h: Host, fn: Callable[[], None]) -> None:
        if not h.up:
            return
        if h.paused or h.busy:
            if len(h.inbox) < Host.INBOX_LIMIT:
                h.inbox.append(fn)
            return
        fn()
        self._run_host(h)

    def _run_host(self, h: Host) -> None:
        readies = 0
        while h.up and not h.paused and not h.busy:
            if h.engine.has_ready():
                readies += 1
                assert readies < 1000, f"n{h.id} produces Ready batches without end"
                self._start_ready(h)
            elif h.inbox:
                h.inbox.popleft()()
            else:
                return

    def _start_ready(self, h: Host) -> None:
        rd = h.engine.ready()
        self.inv.on_ready(h.id, rd)
        if rd.soft_state:
            self.log(f"n{h.id} is {rd.soft_state.role}, leader {rd.soft_state.leader}, term {h.engine.status().term}")
        h.disk.write(rd)
        if rd.must_sync:
            h.busy = True
            life = h.life
            self.at(self.rng.randint(50, 1500), lambda: self._finish_ready(h, rd, life))
        else:
            self._finish_ready(h, rd, h.life, resume=False)

    def _finish_ready(self, h: Host, rd: Ready, life: int, resume: bool = True) -> None:
        if life != h.life:
            return  # crashed before the sync finished: those writes may be lost
        if rd.must_sync:
            h.disk.sync()
        st = h.engine.status()
        if st.role == "leader" and rd.hard_state is not None:
            self.inv.on_commit(rd.hard_state.commit, st.term)
        if rd.soft_state and rd.soft_state.role == "leader":
            self.stats["elections"] += 1
            self.inv.on_leader(h.id, st.term, h.disk)
        for m in rd.messages:
            self.inv.on_send(h.id, m, h.disk)
            self._send(m)
        if rd.snapshot is not None:
            h.sm = KVStateMachine.restore(rd.snapshot.data)
            h.applied = rd.snapshot.meta.index
            h.waiting_reads.clear()  # answered below against the newer state
            self.log(f"n{h.id} installed snapshot at {rd.snapshot.meta.index}")
        for e in rd.committed:
            assert e.index == h.applied + 1, f"n{h.id} applies {e.index} after {h.applied}"
            self.inv.on_apply(h.id, e)
            h.applied = e.index
            if e.kind is EntryKind.NORMAL and e.data:
                self._apply_command(h, Command.decode(e.data))
        for rs in rd.read_states:
            pending = h.reads.pop(rs.context, None)
            if pending is not None:
                h.waiting_reads.append((rs.index, *pending))
        h.engine.advance(rd)
        self._serve_reads(h)
        if h.applied - h.disk.offset() >= self.cfg.snapshot_every:
            try:
                snap = h.engine.compact(h.applied, h.sm.snapshot())
            except ProposalDropped:
                snap = None  # the engine asks to compact later (Paxos: a change not yet in effect)
            if snap is not None:
                h.disk.save_snapshot(snap)
                self.stats["snapshots"] += 1
        h.busy = False
        if resume:
            self._run_host(h)

    def _apply_command(self, h: Host, cmd: Command) -> None:
        ok = h.sm.apply(cmd)
        self.applied_cmds.add((cmd.client, cmd.seq))
        pending = h.writes.pop((cmd.client, cmd.seq), None)
        if pending is not None:
            opid, op = pending
            self._reply(op, opid, "ok" if ok else "fail", op.value, NONE)

    def _serve_reads(self, h: Host) -> None:
        still = []
        for index, opid, op in h.waiting_reads:
            if h.applied >= index:
                self._reply(op, opid, "ok", h.sm.data.get(op.key), NONE)
            else:
                still.append((index, opid, op))
        h.waiting_reads = still

    def _send(self, m: object) -> None:
        self.stats["messages"] += 1
        src, dst = m.src, m.dst  # type: ignore[attr-defined]
        for lat in self.net.latencies(src, dst):
            self.at(lat, partial(self._deliver, m))

    def _deliver(self, m: object) -> None:
        h = self.hosts[m.dst]  # type: ignore[attr-defined]
        self.trace.append((self.now, m))  # formatted only if someone reads the trace
        self._input(h, lambda: h.engine.step(m))

    def _crash(self, h: Host) -> None:
        lost = h.disk.crash(self.rng)
        self.stats["crashes"] += 1
        self.stats["lost_writes"] += lost
        self.log(f"nemesis: crash n{h.id} (lost {lost} unsynced writes)")
        h.up, h.busy, h.paused = False, False, False
        h.life += 1
        h.inbox.clear()
        h.writes.clear()
        h.reads.clear()
        h.waiting_reads.clear()

    def _restart(self, h: Host) -> None:
        if h.up:
            return
        d = h.disk.durable()
        self.log(f"restart n{h.id} from term {d.hard_state.term} commit {d.hard_state.commit}, {len(d.entries)} entries after {h.disk.offset()}")
        h.engine = self._new_engine(h.id, d)
        h.sm = KVStateMachine.restore(d.snapshot.data if d.snapshot else b"")
        h.applied = h.disk.offset()
        h.up = True
        self.inv.node_restarted(h.id, d.hard_state.commit)
        self._schedule_tick(h, self.rng.randrange(self.cfg.tick_us))
        self._run_host(h)

    def _resume(self, h: Host) -> None:
        if h.paused:
            h.paused = False
            self.log(f"nemesis: resume n{h.id}")
            self._run_host(h)

    # ------------------------------------------------------------------ nemesis
    def _nemesis_gap(self) -> int:
        return int(self.rng.expovariate(1.0 / self.cfg.nemesis_mean_us))

    def _nemesis(self) -> None:
        if not self.clients_on:
            return
        self.at(self._nemesis_gap(), self._nemesis)
        hosts = list(self.hosts.values())
        action = self.rng.choice(["partition", "isolate-leader", "heal", "crash", "pause", "lossy",
                                  "calm", "drift", "transfer"])
        leader = self._leader()
        if action == "isolate-leader" and leader is not None:
            # The leader and at most a minority of others on one side, the rest on the other.
            others = [i for i in self.hosts if i != leader.id]
            self.rng.shuffle(others)
            extra = self.rng.randint(0, max(0, (len(self.hosts) - 1) // 2 - 1))
            minority = {leader.id, *others[:extra]}
            self.net.partition([minority, set(self.hosts) - minority], f"leader side {sorted(minority)}")
            self.stats["partitions"] += 1
            self.log(f"nemesis: partition {self.net.partition_name}")
        elif action == "partition":
            self.net.random_partition()
            self.stats["partitions"] += 1
            self.log(f"nemesis: partition {self.net.partition_name}")
        elif action == "heal":
            self.net.heal()
            self.log("nemesis: heal partition")
        elif action == "crash":
            h = leader if leader is not None and self.rng.random() < 0.5 else self.rng.choice(hosts)
            if h.up:
                self._crash(h)
                self.at(self.rng.choice([self.rng.randint(1 * MS, 50 * MS), self.rng.randint(100 * MS, 2000 * MS)]),
                        lambda: self._restart(h))
        elif action == "pause":
            h = self.rng.choice(hosts)
            if h.up and not h.paused:
                h.paused = True
                self.log(f"nemesis: pause n{h.id}")
                self.at(self.rng.randint(50 * MS, 1500 * MS), lambda: self._resume(h))
        elif action == "lossy":
            f = self.net.faults
            f.drop, f.duplicate = self.rng.uniform(0, 0.2), self.rng.uniform(0, 0.05)
            self.log(f"nemesis: lossy network drop={f.drop:.2f} dup={f.duplicate:.2f}")
        elif action == "calm":
            self.net.faults.drop = self.net.faults.duplicate = 0.0
            self.log("nemesis: calm network")
        elif action == "drift":
            h = self.rng.choice(hosts)
            h.drift = self.rng.uniform(0.7, 1.3)
            self.log(f"nemesis: n{h.id} clock runs at {h.drift:.2f}x")
        elif action == "transfer" and leader is not None:
            to = self.rng.choice([x.id for x in hosts if x.id != leader.id])
            self.log(f"nemesis: ask n{leader.id} to transfer leadership to n{to}")
            self._input(leader, lambda: _ignore(leader.engine.transfer_leadership, to))

    def _leader(self) -> Host | None:
        """The live node that believes it leads in the highest term, if any."""
        best = None
        for h in self.hosts.values():
            if h.up and not h.busy and not h.paused:
                st = h.engine.status()
                if st.role == "leader" and (best is None or st.term > best[0]):
                    best = (st.term, h)
        return best[1] if best else None

    # ------------------------------------------------------------------ clients
    def _client_next(self, c: Client) -> None:
        if not self.clients_on or c.op is not None:
            return
        key = f"k{self.rng.randrange(self.cfg.keys)}"
        roll = self.rng.random()
        c.seq += 1
        value: object
        if roll < 0.5:
            f, value = "read", None
        elif roll < 0.8:
            self.next_value += 1
            f, value = "write", self.next_value
        else:
            self.next_value += 1
            f, value = "cas", [self.last_values.get(key), self.next_value]
        op = ClientOp(c.process, c.seq, f, key, value)
        c.op = op
        self.history.append(Event(c.process, "invoke", f, key, value, self.now * 1000))
        opid = self.steps
        node = self.hosts[c.target]
        self.at(self.rng.randint(100, 1000), lambda: self._input(node, lambda: self._request(node, op, opid)))
        self.at(self.cfg.client_timeout_us, lambda: self._client_timeout(c, op))

    def _request(self, h: Host, op: ClientOp, opid: int) -> None:
        try:
            if op.f == "read":
                ctx = f"{op.process}:{op.seq}".encode()
                h.engine.read_index(ctx)
                h.reads[ctx] = (opid, op)
            else:
                h.engine.propose(Command(op.process, op.seq, op.f, op.key, op.value).encode())
                h.writes[(op.process, op.seq)] = (opid, op)
        except NotLeader as e:
            self._reply(op, opid, "fail", None, e.leader)  # nothing was proposed: a definite failure
        except ConsensusError:
            self._reply(op, opid, "fail", None, NONE)

    def _reply(self, op: ClientOp, opid: int, kind: str, value: object, leader: NodeId) -> None:
        self.at(self.rng.randint(100, 1000), lambda: self._client_done(op, kind, value, leader))

    def _client_done(self, op: ClientOp, kind: str, value: object, leader: NodeId) -> None:
        c = next((c for c in self.clients if c.op is op), None)
        if c is None:
            return  # already timed out
        c.op = None
        if op.f == "read":
            value = value if kind == "ok" else None
        self.history.append(Event(op.process, kind, op.f, op.key, value, self.now * 1000))
        if kind == "ok":
            if op.f != "read":
                self.acked.append((op.process, op.seq))
                self.last_values[op.key] = op.value if op.f == "write" else op.value[1]  # type: ignore[index]
            else:
                self.last_values[op.key] = value
        if leader != NONE:
            c.target = leader
        elif kind == "fail":
            c.target = self.rng.choice(list(self.hosts))
        self.at(self.rng.randint(0, 20 * MS), lambda: self._client_next(c))

    def _client_timeout(self, c: Client, op: ClientOp) -> None:
        if c.op is not op:
            return
        c.op = None
        # A read changes nothing, so a lost read is a definite failure; a write may have landed.
        self.history.append(Event(op.process, "fail" if op.f == "read" else "info", op.f, op.key, None, self.now * 1000))
        self.next_process += 1
        c.process, c.seq = self.next_process, 0  # an unknown outcome stays open: new process id
        c.target = self.rng.choice(list(self.hosts))
        self.at(self.rng.randint(0, 20 * MS), lambda: self._client_next(c))


def _ignore(fn: Callable[[NodeId], None], arg: NodeId) -> None:
    try:
        fn(arg)
    except ConsensusError:
        pass


def _describe(m: object) -> str:
    if not isinstance(m, Message):
        return repr(m)
    parts = [f"n{m.src}->n{m.dst} {m.type.name} term={m.term}"]
    if m.index or m.log_term:
        parts.append(f"index={m.index} log_term={m.log_term}")
    if m.entries:
        parts.append(f"entries={m.entries[0].index}..{m.entries[-1].index}")
    if m.commit:
        parts.append(f"commit={m.commit}")
    if m.reject:
        parts.append(f"REJECT hint={m.reject_hint}")
    if m.snapshot:
        parts.append(f"snap@{m.snapshot.index} off={m.offset}{' done' if m.done else ''}")
    if m.read_round:
        parts.append(f"round={m.read_round}")
    return " ".join(parts)
