"""The deterministic world: a virtual clock, an event queue, simulated node processes (each the
production `Replica` over a simulated disk and clock), a network, a nemesis and clients.

What runs here is what runs in production: the consensus engine, the MVCC store with leases
and sessions, membership, snapshots and the waiters, all inside `shoal.replica.Replica`. The
world only supplies time, a disk that loses unsynced writes, a network that loses, duplicates
and delays messages, and faults: partitions, crashes, pauses, skewed clocks, leadership
transfers and disk replacements (remove a member, wipe it, add it back under the same id).

Everything random comes from one seeded generator and every event is ordered by
(virtual time, sequence number), so a seed replays a run exactly, trace and all.

Checked as it runs: the engine invariants (election safety, one vote per term, persist before
send, monotonic commit, leader completeness, state machine safety, log matching), the replica's
member table against the engine's configuration, and lease safety (no lease expires sooner than
its TTL after an acknowledged keep-alive, allowing for the fastest clock). At the end: every
node converges, no acknowledged write is lost, every store agrees, and the clients' history is
linearizable (checked by the campaign)."""

from __future__ import annotations

import heapq
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from ..check.history import Event
from ..consensus.engine import Engine
from ..consensus.messages import (
    ConfState,
    ConsensusError,
    Durable,
    LocalProtocolError,
    Message,
    NodeId,
    Ready,
)
from ..consensus.paxos import MultiPaxos, PaxosConfig
from ..consensus.raft import Raft, RaftConfig
from ..kv.limits import KVLimits
from ..replica import Applied, NodeError, Replica, ReplicaConfig, bootstrap
from .disk import Disk
from .host import INBOX_LIMIT, Ask, Change, Host, Input, PeerLost, Step, Tick
from .invariants import Invariants, Violation
from .log_workload import LogWorkload
from .network import Network
from .workload import MAX_CLOCK_RATE, Workload

__all__ = ["MS", "Host", "SimConfig", "Violation", "World"]

MS = 1000  # virtual time is in microseconds


@dataclass(frozen=True)
class SimConfig:
    nodes: int = 5
    steps: int = 20_000
    engine: str = "raft"
    workload: str = "register"  # or "log": producers and consumers of a partition (sim/log_workload.py)
    bugs: frozenset[str] = frozenset()  # the engine's and the replica's planted bugs
    clients: int = 8
    keys: int = 3
    leases: bool = True  # a client holding a lease with keep-alives (lease safety check)
    faults: bool = True
    churn: bool = True  # membership nemesis: replace a member's disk (Raft only)
    tick_us: int = 10 * MS
    election_tick: int = 10
    pre_vote: bool = True
    mean_latency_us: int = 1500
    max_msg_bytes: int = 4096  # entries per append, in bytes (small = many appends)
    client_timeout_us: int = 800 * MS
    quiesce_after_ticks: int = 10  # idle groups stop ticking (Raft only; 0 = never)
    think_us: int = 20 * MS  # the most a client waits between requests
    snapshot_every: int = 150  # applied entries between snapshots
    snapshot_chunk_bytes: int = 256  # small, so installs take several chunks
    auto_compact_revisions: int = 200  # small, so compaction runs under the watchers
    nemesis_mean_us: int = 250 * MS
    max_clock_skew_ms: int = 5_000  # hosts' monotonic clocks differ by up to this much
    settle_us: int = 30_000 * MS  # how long the healed cluster has to converge
    trace_len: int = 60  # events kept for a violation report
    full_trace: bool = False  # record every event (for byte-identical replay checks)

    def replay_command(self, seed: int) -> str:
        bugs = "".join(f" --bug {b}" for b in sorted(self.bugs))
        workload = f" --workload {self.workload}" if self.workload != "register" else ""
        return (f"shoal sim{workload} --engine {self.engine} --nodes {self.nodes} "
                f"--steps {self.steps} --seed {seed}{bugs}")


def make_engine(cfg: SimConfig, id: NodeId, conf: ConfState, rng: random.Random,
                durable: Durable | None) -> Engine:
    if cfg.engine == "raft":
        return Raft(id, conf, rng, durable, RaftConfig(
            election_tick=cfg.election_tick, pre_vote=cfg.pre_vote, bugs=cfg.bugs & _RAFT_BUGS,
            snapshot_chunk_bytes=cfg.snapshot_chunk_bytes, max_size_per_msg=cfg.max_msg_bytes,
            forward_proposals=False))
    if cfg.engine == "paxos":
        return MultiPaxos(id, conf, rng, durable, PaxosConfig(election_ticks=cfg.election_tick,
                                                              bugs=cfg.bugs & _PAXOS_BUGS))
    raise ValueError(f"unknown engine {cfg.engine!r}; known: raft, paxos")


_RAFT_BUGS = frozenset({"commit-old-terms", "read-without-readindex", "forget-vote", "skip-log-matching"})
_PAXOS_BUGS = frozenset({"skip-phase1", "forget-promise", "mix-ballots"})


@dataclass
class _Replacement:
    """A disk replacement in progress: remove `node`, wipe it, add it back, restart it."""

    node: NodeId
    stage: str = "remove"  # remove, then add (the disk is wiped in between)
    job: int = 0  # the membership change asked for now (0: none)


class World:
    def __init__(self, seed: int, cfg: SimConfig):
        self.seed, self.cfg = seed, cfg
        self.rng = random.Random(seed)
        self.now = 0
        self.steps = 0
        self._queue: list[tuple[int, int, Callable[[], None]]] = []
        self._seq = 0
        ids = list(range(1, cfg.nodes + 1))
        self.specs = {i: f"{i}=sim" for i in ids}
        self.net = Network(ids, self.rng)
        self.net.faults.mean_latency_us = cfg.mean_latency_us
        self.inv = Invariants(log_shaped=cfg.engine == "raft")
        self.trace: deque[tuple[int, object]] | list[tuple[int, object]] = (
            [] if cfg.full_trace else deque(maxlen=cfg.trace_len))
        self.stats = {"elections": 0, "crashes": 0, "partitions": 0, "snapshots": 0,
                      "lost_writes": 0, "messages": 0, "replacements": 0}
        self.hosts: dict[NodeId, Host] = {}
        for i in ids:
            disk = Disk()
            first = bootstrap(self.specs)
            disk.write(Ready(hard_state=first.hard_state, entries=list(first.entries), must_sync=True))
            disk.sync()
            skew = self.rng.randint(-cfg.max_clock_skew_ms, cfg.max_clock_skew_ms)
            h = Host(i, self._new_replica(i, disk), disk=disk,
                     drift=self.rng.uniform(0.9, 1.1), clock_ms=1_000_000 + skew)
            self.hosts[i] = h
            self._schedule_tick(h, self.rng.randrange(cfg.tick_us))
        self.clients_on = True
        self.workload: Workload | LogWorkload = (
            LogWorkload(self, cfg) if cfg.workload == "log" else Workload(self, cfg))
        self._jobs = 0
        self.replacing: _Replacement | None = None
        if cfg.faults:
            self.at(self._nemesis_gap(), self._nemesis)

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

    @property
    def history(self) -> list[Event]:
        return self.workload.history

    # ------------------------------------------------------------------ running
    def run(self) -> None:
        """Run the faulty phase, then heal everything and require the cluster to converge."""
        while self.steps < self.cfg.steps and self._queue:
            self._step_once()
            if self.steps % 1000 == 0:
                self.inv.check_log_matching(self._disks())
        self.finish()

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

    def finish(self) -> None:
        """Heal, converge, and check the end-of-run properties (as `run` does)."""
        self._heal_all()
        if not self.run_until(self._converged, self.cfg.settle_us, check_every=200):
            raise Violation("liveness", f"cluster did not converge within {self.cfg.settle_us / 1e6:.0f}s after healing: "
                            + ", ".join(f"n{h.id} {h.replica.role} commit={h.engine.status().commit} "
                                        f"applied={h.replica.applied} members={sorted(h.replica.members)}"
                                        for h in self.hosts.values())
                            + (f"; replacement of n{self.replacing.node} stuck at {self.replacing.stage}"
                               if self.replacing else ""))
        self.inv.check_log_matching(self._disks())
        self._check_final()

    def _disks(self) -> dict[NodeId, Disk]:
        return {i: h.disk for i, h in self.hosts.items()}

    def _converged(self) -> bool:
        if self.replacing is not None or not self.workload.idle():
            return False
        leaders = [h for h in self.hosts.values() if h.up and h.replica.role == "leader"]
        if len(leaders) != 1:
            return False
        lead = leaders[0].engine.status()
        return lead.commit == lead.last_index and set(lead.conf.voters) == set(self.hosts) and all(
            h.up and not h.busy and h.replica.applied == lead.commit for h in self.hosts.values())

    def _check_final(self) -> None:
        self.workload.check_final()
        hashes = {i: h.replica.kv.hash() for i, h in self.hosts.items()}
        first = min(hashes)
        for i, digest in hashes.items():
            if digest != hashes[first]:
                raise Violation("state machine safety", f"node {i}'s store hashes to {digest}, "
                                f"node {first}'s to {hashes[first]}")

    def _heal_all(self) -> None:
        self.log("nemesis: heal everything; clients stop")
        self.clients_on = False
        self.net.heal()
        self.net.faults.drop = self.net.faults.duplicate = 0.0
        for h in self.hosts.values():
            h.drift = 1.0
            if h.paused:
                self._resume(h)
            if not h.up and not self._held_out(h):
                self._restart(h)
        if self.replacing is not None:
            self._replace_step()

    # ------------------------------------------------------------------ nodes
    def _new_replica(self, id: NodeId, disk: Disk, durable: Durable | None = None) -> Replica:
        durable = durable or disk.durable()
        rng = random.Random(self.rng.getrandbits(64))
        conf = ConfState(voters=frozenset(self.specs)) if self.cfg.engine == "paxos" else ConfState()
        engine = make_engine(self.cfg, id, conf, rng, durable)
        return Replica(id, engine, durable, dict(self.specs), incarnation=self.rng.getrandbits(62) + 1,
                       cfg=ReplicaConfig(snapshot_entries=self.cfg.snapshot_every,
                                         quiesce_after_ticks=self.cfg.quiesce_after_ticks
                                         if self.cfg.engine == "raft" else 0,
                                         auto_compact_revisions=self.cfg.auto_compact_revisions,
                                         lease_promote_extend_ms=self.cfg.election_tick
                                         * self.cfg.tick_us // 1000,
                                         batch_proposals=self.cfg.engine == "paxos",
                                         bugs=self.cfg.bugs - _RAFT_BUGS - _PAXOS_BUGS),
                       limits=KVLimits(), files=disk.segments)

    def _schedule_tick(self, h: Host, delay: int) -> None:
        life = h.life
        self.at(delay, lambda: self._tick(h, life))

    def _tick(self, h: Host, life: int) -> None:
        if life != h.life or not h.up:
            return
        self._schedule_tick(h, int(self.cfg.tick_us * h.drift))
        h.clock_ms += self.cfg.tick_us // MS  # the host's own clock: one tick's worth per tick
        if not h.paused:
            self._keepalive(h)
            self.input(h, Tick())

    def _keepalive(self, h: Host) -> None:
        """The hosts' coalesced heartbeat, one per pair of processes per tick, whatever the
        number of groups: it names the groups the sender leads and their terms. A quiescent
        follower stays quiet only while its leader's process keeps claiming the group in the
        follower's term; a leader that stepped down, restarted or died stops claiming it."""
        e = h.engine
        claims = {0: e.term} if e.role == "leader" else {}
        for p in self.hosts:
            if p != h.id:
                for lat in self.net.latencies(h.id, p):
                    self.at(lat, partial(self._claimed, p, h.id, claims))

    def _claimed(self, dst: NodeId, src: NodeId, claims: dict[int, int]) -> None:
        if self.hosts[dst].up:
            self.hosts[dst].claims[src] = (self.now, claims)

    def _leader_alive(self, h: Host) -> bool:
        when, claims = h.claims.get(h.replica.leader, (-10**12, {}))
        window = self.cfg.election_tick // 2 * self.cfg.tick_us
        return self.now - when <= window and claims.get(0) == h.engine.term

    def input(self, h: Host, item: Input) -> None:
        """Hand `item` to a host as its driver would: at once if it is free, else queued."""
        if not h.up:
            return
        if h.paused or h.busy:
            if len(h.inbox) < INBOX_LIMIT:
                h.inbox.append(item)
            return
        self._take(h, item)
        self._run_host(h)

    def _take(self, h: Host, item: Input) -> None:
        r = h.replica
        try:
            if isinstance(item, Tick):
                r.tick(h.clock_ms, self._leader_alive(h))
            elif isinstance(item, Step):
                r.step(item.msg)
            elif isinstance(item, Ask):
                token = r.propose(item.cmd) if item.cmd is not None else r.read_index()
                h.asks[token] = item
            elif isinstance(item, PeerLost):
                h.claims.pop(item.peer, None)
                r.forget_leader(item.peer)
            else:
                h.changes[r.change_membership(item.op, item.node, item.spec)] = item.job
        except NodeError as exc:
            if isinstance(item, Ask):
                self.workload.refused(h, item, exc)
            elif isinstance(item, Change):
                self.log(f"n{h.id} refused {item.op} n{item.node}: {exc}")
                self.at(0, partial(self._change_done, item.job, exc))
        except LocalProtocolError:
            raise  # the driver's own misuse: a bug to report, never to swallow
        except ConsensusError:
            pass  # a message the engine refuses (stale, from a removed member): dropped

    def _run_host(self, h: Host) -> None:
        readies = 0
        while h.up and not h.paused and not h.busy:
            if h.replica.has_ready():
                readies += 1
                assert readies < 1000, f"n{h.id} produces Ready batches without end"
                self._start_ready(h)
            elif h.inbox:
                self._take(h, h.inbox.popleft())
            else:
                return

    def _start_ready(self, h: Host) -> None:
        rd = h.replica.ready()
        self.inv.on_ready(h.id, rd)
        if rd.soft_state:
            self.log(f"n{h.id} is {rd.soft_state.role}, leader {rd.soft_state.leader}, term {h.engine.term}")
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
        engine = h.engine
        if rd.hard_state is not None and engine.role == "leader":
            self.inv.on_commit(rd.hard_state.commit, engine.term)
        if rd.soft_state and rd.soft_state.role == "leader":
            self.stats["elections"] += 1
            self.inv.on_leader(h.id, engine.term, h.disk)
        for m in rd.messages:
            self.inv.on_send(h.id, m, h.disk)
            self._send(h, m)
        for e in rd.committed:
            self.inv.on_apply(h.id, e)
        if rd.snapshot is not None:
            self.log(f"n{h.id} installs snapshot at {rd.snapshot.meta.index}")
        out = h.replica.advance(rd)
        h.busy = False
        self._after_advance(h, out)
        if resume:
            self._run_host(h)

    def _after_advance(self, h: Host, out: Applied) -> None:
        if out.snapshot is not None:
            h.disk.save_snapshot(out.snapshot)
            self.stats["snapshots"] += 1
        for done in out.done:
            if (ask := h.asks.pop(done.token, None)) is not None:
                self.workload.answered(h, ask, done)
            elif (job := h.changes.pop(done.token, None)) is not None:
                # Later, not now: the next step may hand this very host input, and a Ready
                # started inside this one's finish would be cut short by it.
                self.at(0, partial(self._change_done, job, done.error))
        if out.members is not None:  # the table changes only with a CONFIG entry or snapshot
            self.log(f"n{h.id} members {sorted(out.members)}")
            self._check_members(h)
        self.workload.after_apply(h)

    def _check_members(self, h: Host) -> None:
        """The peers a replica talks to are the members its engine counts (Raft: exactly;
        Paxos: a superset, as its changes take effect `alpha` instances late)."""
        r = h.replica
        if r.applied == 0:
            return  # a joining node knows nothing yet but the addresses it was started with
        conf = h.engine.status().conf.members()
        table = set(r.members)
        if (table != conf) if self.cfg.engine == "raft" else not table >= conf:
            raise Violation("membership", f"n{h.id}'s member table {sorted(table)} disagrees with "
                            f"its engine's configuration {sorted(conf)} at applied {r.applied}")

    def _send(self, h: Host, m: object) -> None:
        self.stats["messages"] += 1
        dst = m.dst  # type: ignore[attr-defined]
        if dst not in h.replica.addresses:
            return  # like the transport: no connection to a node whose address we lack
        for lat in self.net.latencies(h.id, dst):
            self.at(lat, partial(self._deliver, m, h.life))

    def _deliver(self, m: object, life: int) -> None:
        # Accepted from anyone: a node that applied a member's removal must still hear that
        # member once it is re-added and leads, or it never learns of the re-add (see net/).
        if self.hosts[m.src].life != life:  # type: ignore[attr-defined]
            return  # its sender crashed meanwhile: its connection, and what was on it, died
        h = self.hosts[m.dst]  # type: ignore[attr-defined]
        self.trace.append((self.now, m))  # formatted only if someone reads the trace
        self.input(h, Step(m))

    def crash(self, node: NodeId) -> None:
        self._crash(self.hosts[node])

    def restart(self, node: NodeId) -> None:
        self._restart(self.hosts[node])

    def leader(self) -> Host | None:
        """The live node that believes it leads in the highest term, if any."""
        best = None
        for h in self.hosts.values():
            if h.up and not h.busy and not h.paused:
                e = h.engine
                if e.role == "leader" and (best is None or e.term > best[0]):
                    best = (e.term, h)
        return best[1] if best else None

    def _crash(self, h: Host) -> None:
        lost = h.disk.crash(self.rng)
        self.stats["crashes"] += 1
        self.stats["lost_writes"] += lost
        self.log(f"nemesis: crash n{h.id} (lost {lost} unsynced writes)")
        self.workload.crashed(h)
        h.reset()
        if self.rng.random() < 0.5:  # the process died, not its machine: its kernel closes
            for other in self.hosts.values():  # its connections, and those who hear forget it
                if other is not h:
                    for lat in self.net.latencies(h.id, other.id)[:1]:
                        self.at(lat, partial(self.input, other, PeerLost(h.id)))

    def _restart(self, h: Host) -> None:
        if h.up:
            return
        d = h.disk.durable()
        self.log(f"restart n{h.id} from term {d.hard_state.term} commit {d.hard_state.commit}, {len(d.entries)} entries after {h.disk.offset()}")
        h.replica = self._new_replica(h.id, h.disk, d)
        h.up = True
        self.inv.node_restarted(h.id, d.hard_state.commit)
        self._schedule_tick(h, self.rng.randrange(self.cfg.tick_us))
        self._run_host(h)

    def _resume(self, h: Host) -> None:
        if h.paused:
            h.paused = False
            self.log(f"nemesis: resume n{h.id}")
            self._run_host(h)

    def _held_out(self, h: Host) -> bool:
        """A node whose disk was wiped stays down until it is added back."""
        return self.replacing is not None and self.replacing.node == h.id and self.replacing.stage == "add"

    # ------------------------------------------------------------------ membership nemesis
    def replace_disk(self, node: NodeId) -> None:
        """Remove `node`, wipe its disk, add it back under the same id, restart it empty."""
        assert self.replacing is None
        self.replacing = _Replacement(node)
        self.stats["replacements"] += 1
        self.log(f"nemesis: replace the disk of n{node}")
        self._replace_step()

    def _replace_step(self) -> None:
        rep = self.replacing
        if rep is None:
            return
        lead = self.leader()
        if lead is None or (rep.stage == "remove" and lead.id == rep.node):
            if lead is not None:  # the leader is the node to remove: hand leadership away
                to = self.rng.choice([i for i in self.hosts if i != rep.node])
                self._transfer(lead, to)
            self.at(100 * MS, self._replace_step)
            return
        self._jobs += 1
        rep.job = self._jobs
        conf = lead.engine.status().conf
        if rep.stage == "remove" and rep.node not in conf.members():
            # An earlier attempt took effect (the leader applied it); its answer was lost. The
            # converse cannot be judged so: a leader's applied configuration may lag its log,
            # and wiping a disk that is still a member would lose acknowledged writes.
            self._change_done(rep.job, None)
            return
        spec = self.specs[rep.node] if rep.stage == "add" else None
        op = "remove" if rep.stage == "remove" else "add"
        self.input(lead, Change(op, rep.node, spec, rep.job))
        job = rep.job
        self.at(1000 * MS, lambda: self._change_timeout(job))

    def _change_timeout(self, job: int) -> None:
        if self.replacing is not None and self.replacing.job == job:
            self.replacing.job = 0
            self._replace_step()  # no answer: ask the leader of now again (changes are idempotent)

    def _change_done(self, job: int, error: Exception | None) -> None:
        rep = self.replacing
        if rep is None or rep.job != job:
            return
        rep.job = 0
        if error is not None:
            self.log(f"membership change failed: {error}; retrying")
            self.at(50 * MS, self._replace_step)
            return
        h = self.hosts[rep.node]
        if rep.stage == "remove":
            if h.up:
                self._crash(h)
            h.disk = Disk()  # wiped: the node comes back knowing nothing
            rep.stage = "add"
            self.log(f"n{rep.node} removed and wiped")
            self._replace_step()
        else:
            self.replacing = None
            self.log(f"n{rep.node} added back; restarting it empty")
            self.inv.node_restarted(h.id, 0)
            self._restart(h)

    def _transfer(self, lead: Host, to: NodeId) -> None:
        if lead.up and not lead.busy and not lead.paused:
            try:
                lead.replica.transfer_leadership(to)
            except NodeError:
                pass
            self._run_host(lead)

    # ------------------------------------------------------------------ nemesis
    def _nemesis_gap(self) -> int:
        return int(self.rng.expovariate(1.0 / self.cfg.nemesis_mean_us))

    def _nemesis(self) -> None:
        if not self.clients_on:
            return
        self.at(self._nemesis_gap(), self._nemesis)
        hosts = [h for h in self.hosts.values() if not self._held_out(h)]
        actions = ["partition", "isolate-leader", "heal", "crash", "pause", "lossy", "calm",
                   "drift", "transfer"]
        if self.cfg.churn and self.cfg.engine == "raft":
            actions.append("replace")
        action = self.rng.choice(actions)
        leader = self.leader()
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
            if h.up and not self._held_out(h):
                self._crash(h)
                self.at(self.rng.choice([self.rng.randint(1 * MS, 50 * MS), self.rng.randint(100 * MS, 2000 * MS)]),
                        lambda: None if self._held_out(h) else self._restart(h))
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
            h.drift = self.rng.uniform(1 / MAX_CLOCK_RATE, 1.3)
            self.log(f"nemesis: n{h.id} ticks every {h.drift:.2f} ticks")
        elif action == "transfer" and leader is not None:
            to = self.rng.choice([x.id for x in hosts if x.id != leader.id] or [leader.id])
            self.log(f"nemesis: ask n{leader.id} to transfer leadership to n{to}")
            self._transfer(leader, to)
        elif action == "replace" and self.replacing is None and len(self.hosts) >= 3:
            self.replace_disk(self.rng.choice(sorted(self.hosts)))


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

