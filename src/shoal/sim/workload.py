"""The simulated clients: real key-value requests with the real client semantics.

Each key-value client opens a session, then reads (ReadIndex), writes (put) and
compare-and-sets (a txn) a few keys, one request at a time, recording a Jepsen-style history.
A write that gets no answer is retried, unchanged, at another node: the session's sequence
number makes the retry take effect once, however many copies land, so a retried write that is
finally answered is simply `ok`. Only a client that gives up records `info` (outcome unknown)
and starts over as a new process with a new session.

One lease client holds a lease with keep-alives, and after every apply on every node the
workload checks lease safety: a lease may vanish only once its TTL has passed since the last
acknowledged keep-alive, measured by the fastest clock a host may have."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

from ..check.history import Event
from ..consensus.messages import NodeId
from ..kv.errors import ErrLeaseExists, KVError
from ..kv.requests import (
    Command,
    Compare,
    CompareResult,
    CompareTarget,
    LeaseGrantRequest,
    LeaseKeepAliveRequest,
    OpenSessionRequest,
    PutRequest,
    RangeRequest,
    Session,
    TxnRequest,
)
from ..replica import Done, NodeError
from .host import Ask, Host
from .invariants import Violation

if TYPE_CHECKING:
    from .world import SimConfig, World

MS = 1000
MAX_CLOCK_RATE = 1 / 0.7  # the fastest a host's clock may run against true time
MAX_TRIES = 4  # attempts of one request before a client gives up on it
LEASE_TTL_S = 1
KEEPALIVE_EVERY_US = 300 * MS


def reply_later(w: World, clients: list[Any], attempt: int, then: Callable[[Any], None]) -> None:
    """The answer to `attempt` reaches the client waiting for it after the network's delay,
    unless that client has timed out and moved on meanwhile."""
    c = next((c for c in clients if c.attempt == attempt), None)
    if c is None:
        return

    def arrive() -> None:
        if c.attempt == attempt:
            then(c)

    w.at(w.rng.randint(100, 1000), arrive)


@dataclass(eq=False)
class Op:
    f: str  # read | write | cas | open | grant | keepalive
    key: str = ""
    value: object = None
    cmd: Command | None = None
    invoked_us: int = 0
    tries: int = 0
    maybe_applied: bool = False


@dataclass(eq=False)
class Client:
    process: int
    target: NodeId
    lease: bool = False
    session: int = 0
    seq: int = 0
    op: Op | None = None
    attempt: int = 0  # the attempt whose answer we wait for


class Workload:
    def __init__(self, world: World, cfg: SimConfig):
        self.w, self.cfg = world, cfg
        self.history: list[Event] = []
        self.last_values: dict[str, object] = {}
        self.next_value = 0
        self.attempts = 0
        self.clients = [Client(p, world.rng.choice(list(world.hosts))) for p in range(cfg.clients)]
        self.next_process = cfg.clients
        if cfg.leases and cfg.clients:
            self.clients.append(Client(-1, world.rng.choice(list(world.hosts)), lease=True))
        self.lease_id = 0  # the lease held now (0: none)
        self.next_lease = 1000
        self.lease_ok_us = 0  # true time of the invocation of its last acknowledged keep-alive
        self.holders: set[NodeId] = set()  # nodes whose store has held the current lease
        for c in self.clients:
            world.at(world.rng.randrange(50 * MS), partial(self._next, c))

    def idle(self) -> bool:
        return all(c.op is None for c in self.clients)

    # ------------------------------------------------------------------ issuing
    def _next(self, c: Client) -> None:
        w = self.w
        if c.op is not None or not w.clients_on:
            return
        if c.lease:
            if self.lease_id == 0:
                # A fresh id for every lease: ids the store picks may be reused once a lease
                # expires, and a catching-up node revoking the old one would look like the new
                # one vanishing.
                self.next_lease += 1
                c.op = Op("grant", cmd=Command(LeaseGrantRequest(LEASE_TTL_S, id=self.next_lease)))
            else:
                c.op = Op("keepalive", cmd=Command(LeaseKeepAliveRequest(self.lease_id)))
        elif c.session == 0:
            c.op = Op("open", cmd=Command(OpenSessionRequest()))
        else:
            c.op = self._kv_op(c)
            self.history.append(Event(c.process, "invoke", c.op.f, c.op.key, c.op.value, w.now * 1000))
        c.op.invoked_us = w.now
        self._send(c)

    def _kv_op(self, c: Client) -> Op:
        w = self.w
        key = f"k{w.rng.randrange(self.cfg.keys)}"
        roll = w.rng.random()
        if roll < 0.5:
            return Op("read", key)
        c.seq += 1
        self.next_value += 1
        session = Session(c.session, c.seq)
        if roll < 0.8:
            v = self.next_value
            return Op("write", key, v, Command(PutRequest(key.encode(), b"%d" % v), session))
        expected = self.last_values.get(key)
        guard = (Compare(key.encode(), CompareTarget.CREATE, CompareResult.EQUAL, 0) if expected is None
                 else Compare(key.encode(), CompareTarget.VALUE, CompareResult.EQUAL, str(expected).encode()))
        txn = TxnRequest((guard,), (PutRequest(key.encode(), b"%d" % self.next_value),))
        return Op("cas", key, [expected, self.next_value], Command(txn, session))

    def _send(self, c: Client) -> None:
        w, op = self.w, c.op
        assert op is not None and op.tries < MAX_TRIES
        op.tries += 1
        self.attempts += 1
        c.attempt = attempt = self.attempts
        h = w.hosts[c.target]
        ask = Ask(attempt, op.cmd, op.key.encode())
        w.at(w.rng.randint(100, 1000), lambda: w.input(h, ask))
        w.at(self.cfg.client_timeout_us, lambda: self._timeout(c, attempt))

    # ------------------------------------------------------------------ answers
    def refused(self, h: Host, ask: Ask, exc: NodeError) -> None:
        """The node refused at once: nothing was proposed, so retrying is always safe."""
        leader = exc.details.get("leader", 0)
        self._reply(ask.attempt, lambda c: self._retry(c, leader or None, definite=True))

    def answered(self, h: Host, ask: Ask, done: Done) -> None:
        value: object = None
        if ask.cmd is None and done.error is None:  # a read: served now that its index applied
            kvs = h.replica.kv.range(RangeRequest(ask.key)).kvs
            value = int(kvs[0].value) if kvs else None
        self._reply(ask.attempt, lambda c: self._complete(c, done, value))

    def _reply(self, attempt: int, then: Callable[[Client], None]) -> None:
        reply_later(self.w, [c for c in self.clients if c.op is not None], attempt, then)

    def crashed(self, h: Host) -> None:
        """Requests in flight at `h` get no answer: their clients time out and retry. Its
        store is rebuilt from disk, so what it held proves nothing any more."""
        self.holders.discard(h.id)

    def _timeout(self, c: Client, attempt: int) -> None:
        if c.attempt == attempt and c.op is not None:
            self._retry(c, None, definite=False)

    def _retry(self, c: Client, leader: NodeId | None, definite: bool) -> None:
        w, op = self.w, c.op
        assert op is not None
        if not definite:
            op.maybe_applied = op.cmd is not None
        c.attempt = 0
        c.target = leader if leader in w.hosts else w.rng.choice(list(w.hosts))
        if op.tries < MAX_TRIES:
            w.at(w.rng.randint(1 * MS, 20 * MS) if leader is None else 0, lambda: self._send(c))
        else:
            self._give_up(c)

    def _give_up(self, c: Client) -> None:
        op = c.op
        assert op is not None
        c.op = None
        if op.f in ("read", "write", "cas"):
            kind = "info" if op.maybe_applied else "fail"
            self.history.append(Event(c.process, kind, op.f, op.key, None, self.w.now * 1000))
            if kind == "info":  # an unknown outcome stays open: go on as a new process
                self.next_process += 1
                c.process, c.session, c.seq = self.next_process, 0, 0
        self.w.at(self.w.rng.randint(0, 20 * MS), lambda: self._next(c))

    def _complete(self, c: Client, done: Done, value: object) -> None:
        w, op = self.w, c.op
        assert op is not None
        c.attempt = 0
        c.op = None
        err = done.error
        if op.f == "open":
            if err is None:
                c.session = done.result.client_id
        elif op.f == "grant":
            assert op.cmd is not None and isinstance(op.cmd.request, LeaseGrantRequest)
            if err is None or (isinstance(err, ErrLeaseExists) and op.tries > 1):
                # Granted (a retry finding it exists was granted by an earlier attempt, after
                # this one was invoked: the TTL runs from no earlier than that).
                self.lease_id, self.lease_ok_us = op.cmd.request.id, op.invoked_us
                self.holders.clear()
        elif op.f == "keepalive":
            if err is None:
                self.lease_ok_us = max(self.lease_ok_us, op.invoked_us)
            elif isinstance(err, KVError):
                self.lease_id = 0  # gone (it may legally expire while keep-alives fail)
                self.holders.clear()
        elif isinstance(err, NodeError) or (isinstance(err, KVError) and op.maybe_applied):
            c.op = op  # not an answer about the request: retry it
            self._retry(c, None, definite=False)
            return
        else:
            kind = "ok"
            if err is not None:
                kind = "fail"
            elif op.f == "cas" and not done.result.succeeded:
                kind = "fail"
            out = value if op.f == "read" else None
            self.history.append(Event(c.process, kind, op.f, op.key, out, w.now * 1000))
            if kind == "ok":
                self.last_values[op.key] = (value if op.f == "read" else op.value if op.f == "write"
                                            else op.value[1])  # type: ignore[index]
            if isinstance(err, KVError) and "session" in str(err).lower():
                c.session, c.seq = 0, 0
        delay = KEEPALIVE_EVERY_US if c.lease and self.lease_id else w.rng.randint(0, self.cfg.think_us)
        w.at(delay, lambda: self._next(c))

    # ------------------------------------------------------------------ checks
    def after_apply(self, h: Host) -> None:
        lease = self.lease_id
        if not lease:
            return
        if lease in h.replica.kv.lessor:
            self.holders.add(h.id)
            return
        if h.id not in self.holders:
            return  # this node has not applied the grant yet
        held_us = self.w.now - self.lease_ok_us
        floor_us = int(LEASE_TTL_S * 1_000_000 / MAX_CLOCK_RATE) - 2 * self.cfg.tick_us
        if held_us < floor_us:
            raise Violation("lease safety", f"lease {lease} vanished on n{h.id} {held_us / 1000:.0f} ms "
                            f"after its last acknowledged keep-alive; its TTL is {LEASE_TTL_S} s, "
                            f"so not before {floor_us / 1000:.0f} ms even on the fastest clock")
        self.lease_id = 0  # expired legitimately; the lease client grants a new one
        self.holders.clear()

    def check_final(self) -> None:
        """The cluster has converged: read every key once more, from the leader's store, so a
        lost acknowledged write shows up in the history as a stale final read."""
        lead = self.w.leader()
        assert lead is not None
        for k in range(self.cfg.keys):
            key = f"k{k}"
            kvs = lead.replica.kv.range(RangeRequest(key.encode())).kvs
            self.next_process += 1
            t = self.w.now * 1000 + 2 * k
            self.history.append(Event(self.next_process, "invoke", "read", key, None, t))
            self.history.append(Event(self.next_process, "ok", "read", key,
                                      int(kvs[0].value) if kvs else None, t + 1))
