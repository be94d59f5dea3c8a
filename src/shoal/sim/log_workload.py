"""The event log in the simulated world: idempotent producers and consumers of one partition.

The world (sim/world.py) is one consensus group of production replicas; with
`SimConfig(workload="log")` that group is a Kafka partition, its state machine the production
kv/partition.py, driven by the LogAppendRequests the Kafka port would propose for a Produce.

Producers. Each has a producer id (handed out here: the port's InitProducerId is a counter in
the meta group, outside this world) and epoch 0, and keeps one batch in flight
(max.in.flight.requests 1) of one to three records, each value naming its producer and
sequence number. A batch that gets no answer, or a refusal from a node that does not lead, is
sent again, the same bytes and so the same sequence, to another node: the producer table must
make the retry take effect once and answer it with the first attempt's offset. A producer that
gives up on a batch (MAX_TRIES) knows nothing of its outcome and starts over under a new
producer id, as a Kafka client does when a delivery times out; so does one that has sent
BATCHES_PER_PRODUCER batches (services restart), which makes first batches, sequence 0, common.

Consumers fetch from their position at a node after a ReadIndex, as the port's Fetch does, and
move on by what they read.

Checked while it runs: a fetch returns batches from the offset asked for, densely; an offset
fetched twice holds the same record (what is committed never changes); a producer's
acknowledgements come in increasing offsets; a producer in good standing is never refused
(its sequence numbers are gapless, its epoch current). At the end, on every replica's log:
offsets are dense from 0; every acknowledged record is present exactly once, at the offset
its acknowledgement named; no record is present twice; each producer's records are in
sequence order; every record is one a producer sent; every record a consumer saw is there, at
the offset it saw it at. Violations name the record, the producer and the replica."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any

from ..check.history import Event
from ..consensus.messages import NodeId
from ..events.protocol.records import NewRecord, RecordBatch, build_batch
from ..kv.errors import KVError
from ..kv.partition import LogState
from ..kv.requests import Command, LogAppendRequest, LogAppendResponse
from ..replica import Done, NodeError
from .host import Ask, Host
from .invariants import Violation
from .workload import reply_later

if TYPE_CHECKING:
    from ..kv.store import KVStore
    from .world import SimConfig, World

MS = 1000
MAX_TRIES = 6  # sends of one batch before its producer gives up on it
BATCHES_PER_PRODUCER = 4  # then the producer starts over under a new id
FETCH_BATCHES = 8  # batches a fetch returns at most
FIRST_PRODUCER_ID = 1000

RecordId = tuple[int, int]  # (producer id, sequence number)


@dataclass(eq=False)
class Producer:
    process: int
    target: NodeId
    pid: int = 0
    seq: int = 0  # the next batch's base sequence
    sent: int = 0  # batches sent under this id
    batch: bytes = b""  # the batch in flight, exactly as retried
    records: list[RecordId] = field(default_factory=list)
    tries: int = 0
    attempt: int = 0  # the attempt whose answer we wait for (0: none)
    last_ack: int = -1  # offset of the last acknowledged batch


@dataclass(eq=False)
class Consumer:
    process: int
    target: NodeId
    offset: int = 0
    attempt: int = 0


class LogWorkload:
    def __init__(self, world: World, cfg: SimConfig):
        self.w, self.cfg = world, cfg
        self.history: list[Event] = []  # (no register history: the campaign's check passes)
        self.attempts = 0
        self.next_pid = FIRST_PRODUCER_ID
        hosts = list(world.hosts)
        n_consumers = max(1, cfg.clients // 4)
        self.producers = [Producer(p, world.rng.choice(hosts))
                          for p in range(cfg.clients - n_consumers)]
        self.consumers = [Consumer(p, world.rng.choice(hosts))
                          for p in range(len(self.producers), cfg.clients)]
        self.sent: set[RecordId] = set()
        self.acked: dict[RecordId, int] = {}  # record -> the offset its acknowledgement named
        self.seen: dict[int, RecordId] = {}  # offset -> the record consumers read there
        self.stats = world.stats  # (reported with the seed's)
        self.stats.update({"batches_acked": 0, "retries": 0, "gave_up": 0, "fetches": 0,
                           "records_fetched": 0})
        for c in self._clients():
            world.at(world.rng.randrange(50 * MS), partial(self._next, c))

    def _clients(self) -> list[Producer | Consumer]:
        return [*self.producers, *self.consumers]

    def idle(self) -> bool:
        return all(c.attempt == 0 for c in self._clients())

    # ------------------------------------------------------------------ producing
    def _next(self, c: Producer | Consumer) -> None:
        if not self.w.clients_on or c.attempt:
            return
        if isinstance(c, Consumer):
            self._ask(c, Ask(self._attempt(c), None))
            return
        if c.pid == 0 or c.sent >= BATCHES_PER_PRODUCER:
            c.pid, c.seq, c.sent, c.last_ack = self.next_pid, 0, 0, -1
            self.next_pid += 1
        n = self.w.rng.randint(1, 3)
        c.records = [(c.pid, c.seq + i) for i in range(n)]
        c.batch = build_batch([NewRecord(b"%d:%d" % r) for r in c.records], producer_id=c.pid,
                              producer_epoch=0, base_sequence=c.seq).encode()
        self.sent.update(c.records)
        c.seq += n
        c.sent += 1
        c.tries = 0
        self._send(c)

    def _attempt(self, c: Producer | Consumer) -> int:
        self.attempts += 1
        c.attempt = self.attempts
        return c.attempt

    def _send(self, c: Producer) -> None:
        c.tries += 1
        self._ask(c, Ask(self._attempt(c), Command(LogAppendRequest(c.batch))))

    def _ask(self, c: Producer | Consumer, ask: Ask) -> None:
        w = self.w
        h = w.hosts[c.target]
        w.at(w.rng.randint(100, 1000), lambda: w.input(h, ask))
        w.at(self.cfg.client_timeout_us, partial(self._timeout, c, ask.attempt))

    def _timeout(self, c: Producer | Consumer, attempt: int) -> None:
        if c.attempt == attempt:
            self._retry(c, None)

    def _retry(self, c: Producer | Consumer, leader: NodeId | None) -> None:
        w = self.w
        c.attempt = 0
        c.target = leader if leader in w.hosts else w.rng.choice(list(w.hosts))
        if isinstance(c, Consumer):
            w.at(w.rng.randint(1 * MS, 20 * MS), partial(self._next, c))
        elif not w.clients_on:
            pass  # the run is ending: the outcome stays unknown
        elif c.tries < MAX_TRIES:
            self.stats["retries"] += 1
            w.at(w.rng.randint(1 * MS, 20 * MS) if leader is None else 0, partial(self._send, c))
        else:
            self.stats["gave_up"] += 1
            c.pid = 0  # its sequence numbers now have a gap of unknown size: a new producer
            w.at(w.rng.randint(0, 20 * MS), partial(self._next, c))

    # ------------------------------------------------------------------ answers
    def refused(self, h: Host, ask: Ask, exc: NodeError) -> None:
        leader = exc.details.get("leader", 0)
        self._reply(ask.attempt, lambda c: self._retry(c, leader or None))

    def answered(self, h: Host, ask: Ask, done: Done) -> None:
        if ask.cmd is None:  # a fetch: its read point is applied here now, so read now
            c = next((c for c in self.consumers if c.attempt == ask.attempt), None)
            batches = (None if done.error or c is None
                       else _read_log(h.replica.kv, c.offset, FETCH_BATCHES))
            self._reply(ask.attempt, lambda c: self._fetched(c, h, done, batches))
        else:
            self._reply(ask.attempt, lambda c: self._appended(c, h, done))

    def _reply(self, attempt: int, then: Callable[[Any], None]) -> None:
        reply_later(self.w, self._clients(), attempt, then)

    def _appended(self, c: Producer, h: Host, done: Done) -> None:
        w = self.w
        if isinstance(done.error, NodeError):  # lost, or not the leader: retry the same bytes
            self._retry(c, None)
            return
        if isinstance(done.error, KVError) or not isinstance(done.result, LogAppendResponse):
            raise Violation("log append", f"producer {c.pid}'s batch {c.records[0][1]}: "
                            f"{done.error or done.result!r}")
        r = done.result
        if r.error:
            raise Violation("idempotence", f"n{h.id} refused producer {c.pid}'s batch at "
                            f"sequence {c.records[0][1]} (try {c.tries}) with Kafka error "
                            f"{r.error}: its sequences are gapless and its epoch current")
        if r.base_offset <= c.last_ack:
            raise Violation("acknowledged offsets", f"producer {c.pid}'s batch at sequence "
                            f"{c.records[0][1]} was acknowledged at offset {r.base_offset}, "
                            f"its previous one at {c.last_ack}")
        c.last_ack = r.base_offset
        for i, rid in enumerate(c.records):
            self.acked[rid] = r.base_offset + i
        self.stats["batches_acked"] += 1
        c.attempt = 0
        w.at(w.rng.randint(0, self.cfg.think_us), partial(self._next, c))

    def _fetched(self, c: Consumer, h: Host, done: Done,
                 batches: list[tuple[int, RecordBatch]] | None) -> None:
        c.attempt = 0
        if done.error is not None or batches is None:
            self._retry(c, None)
            return
        self.stats["fetches"] += 1
        mine = [(base, b) for base, b in batches if base + b.last_offset_delta >= c.offset]
        for base, b in mine:
            if base > c.offset:
                raise Violation("dense offsets", f"a fetch at offset {c.offset} from n{h.id} "
                                f"jumped to a batch at {base}")
            for rec in b.records:
                off = base + rec.offset_delta
                if off < c.offset:
                    continue
                rid = _record_id(rec.value)
                was = self.seen.setdefault(off, rid)
                if was != rid:
                    raise Violation("committed records never change", f"offset {off} was "
                                    f"fetched as {was}, and now from n{h.id} as {rid}")
                self.stats["records_fetched"] += 1
                c.offset = off + 1
        c.target = self.w.rng.choice(list(self.w.hosts))
        self.w.at(self.w.rng.randint(0, self.cfg.think_us), partial(self._next, c))

    # ------------------------------------------------------------------ the world's hooks
    def crashed(self, h: Host) -> None:
        """Requests in flight at `h` get no answer: their clients time out and retry."""

    def after_apply(self, h: Host) -> None:
        pass  # everything is checked on answers and at the end

    def check_final(self) -> None:
        """The cluster has converged: every replica's whole log, against what was sent,
        acknowledged and fetched."""
        for i, h in sorted(self.w.hosts.items()):
            self._check_log(i, h.replica.kv)

    def _check_log(self, node: NodeId, kv: KVStore) -> None:
        at: dict[RecordId, int] = {}
        last_seq: dict[int, int] = {}
        expected = 0
        for base, b in _read_log(kv, 0, None):
            if base != expected:
                raise Violation("dense offsets", f"n{node}'s log has a batch at {base} after "
                                f"one ending at {expected - 1}")
            expected = base + b.last_offset_delta + 1
            for rec in b.records:
                off, rid = base + rec.offset_delta, _record_id(rec.value)
                if rid not in self.sent:
                    raise Violation("no invented records", f"n{node}'s log holds {rid} at "
                                    f"{off}, which no producer sent")
                if rid in at:
                    raise Violation("exactly once", f"n{node}'s log holds producer {rid[0]}'s "
                                    f"record {rid[1]} twice, at {at[rid]} and {off}: a retried "
                                    "batch was written again")
                at[rid] = off
                if rid[1] <= last_seq.get(rid[0], -1):
                    raise Violation("producer order", f"n{node}'s log holds producer {rid[0]}'s "
                                    f"record {rid[1]} at {off}, after its record "
                                    f"{last_seq[rid[0]]}")
                last_seq[rid[0]] = rid[1]
        if LogState.of(kv).next_offset != expected:
            raise Violation("dense offsets", f"n{node}'s next offset is "
                            f"{LogState.of(kv).next_offset}, its batches end at {expected}")
        lost = [(rid, off) for rid, off in sorted(self.acked.items()) if rid not in at]
        if lost:
            (pid, seq), off = lost[0]
            raise Violation("acknowledged records are kept", f"{len(lost)} acknowledged records "
                            f"are missing from n{node}'s log, the first producer {pid}'s record "
                            f"{seq}, acknowledged at offset {off}")
        for rid, off in sorted(self.acked.items()):
            if at[rid] != off:
                raise Violation("acknowledged offsets", f"producer {rid[0]}'s record {rid[1]} "
                                f"was acknowledged at offset {off}; n{node}'s log holds it at "
                                f"{at[rid]}")
        where = {off: rid for rid, off in at.items()}
        for off, rid in sorted(self.seen.items()):
            if where.get(off) != rid:
                raise Violation("fetched records are kept", f"a consumer fetched {rid} at "
                                f"offset {off}; n{node}'s log holds {where.get(off)} there")


def _read_log(kv: KVStore, start: int, limit: int | None) -> list[tuple[int, RecordBatch]]:
    """The partition's batches (base offset, batch) from the one holding offset `start`, at
    most `limit` of them, read from its segments as a fetch reads them."""
    out: list[tuple[int, RecordBatch]] = []
    for raw in kv.segments.batches(start):
        b = RecordBatch.decode(raw)
        if b.base_offset + b.last_offset_delta >= start:
            out.append((b.base_offset, b))
            if limit is not None and len(out) >= limit:
                break
    return out


def _record_id(value: bytes | None) -> RecordId:
    pid, seq = (value or b"-1:-1").split(b":")
    return int(pid), int(seq)
