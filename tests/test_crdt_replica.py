"""shoal.crdt.Replica, the pure anti-entropy driver: deterministic simulations of 3-5 replicas
doing random operations on objects of every CRDT type over a network that loses, duplicates
and reorders messages and partitions and heals, which must converge within a bounded number
of ticks after the last heal; then the protocol's parts one by one: the bound on buffered
deltas and the fall back to full state, forwarding, digests, incarnations, and the checks on
incoming messages."""

from __future__ import annotations

import random
from typing import Any

import msgpack
import pytest

from shoal.crdt import CRDT, HLC, CRDTError, GCounter, MergeError, ORSet, Replica, Send, WireError
from test_crdt import KINDS, World

OBJECTS = sorted(KINDS)  # one object of every type, named after it


class Net:
    """Messages in flight between replicas: each is msgpack-encoded (as a real transport
    would), may be lost or duplicated, and arrives 1..max_delay rounds after it was sent, in
    random order; a partition drops what crosses it, when sent or when due."""

    def __init__(self, rng: random.Random, loss: float, dup: float, max_delay: int) -> None:
        self.rng, self.loss, self.dup, self.max_delay = rng, loss, dup, max_delay
        self.flight: list[tuple[int, str, str, bytes]] = []
        self.groups: list[set[str]] | None = None  # None: no partition

    def cut(self, a: str, b: str) -> bool:
        return self.groups is not None and not any(a in g and b in g for g in self.groups)

    def send(self, now: int, src: str, out: list[Send]) -> None:
        for dst, msg in out:
            if self.cut(src, dst) or self.rng.random() < self.loss:
                continue
            for _ in range(2 if self.rng.random() < self.dup else 1):
                at = now + self.rng.randint(1, self.max_delay)
                self.flight.append((at, src, dst, msgpack.packb(msg)))

    def due(self, now: int) -> list[tuple[str, str, Any]]:
        ready = [m for m in self.flight if m[0] <= now]
        self.flight = [m for m in self.flight if m[0] > now]
        self.rng.shuffle(ready)
        return [(s, d, msgpack.unpackb(b)) for _, s, d, b in ready if not self.cut(s, d)]


def converged(replicas: dict[str, Replica]) -> bool:
    first, *rest = replicas.values()
    return all(r.names == first.names and all(r.get(n) == first.get(n) for n in first.names)
               for r in rest)


MAX_DELAY = 3  # rounds a message may take


def simulate(seed: int, *, digest_every: int | None = 4, max_buffered: int = 6,
             rounds: int = 60, loss_after: float = 0.0) -> tuple[int, dict[str, Replica]]:
    """Random ops and partitions for `rounds` rounds (the last 15 partitioned for sure), then
    heal for good and stop operating; loss drops to `loss_after`, duplication and reordering
    go on. Returns how many rounds after the heal the replicas took to converge, having
    checked that they had diverged and that what they converged to is the join of every
    delta any of them made: nothing lost, nothing invented."""
    rng = random.Random(seed)
    names = [f"n{i}" for i in range(rng.randint(3, 5))]
    replicas = {n: Replica(n, [p for p in names if p != n], max_buffered=max_buffered,
                           digest_every=digest_every) for n in names}
    clocks = {n: HLC(n) for n in names}
    made: dict[str, CRDT] = {}  # per object, the join of every delta
    net = Net(rng, loss=0.2, dup=0.1, max_delay=MAX_DELAY)
    now = 0

    def round_(operate: bool) -> None:
        nonlocal now
        now += 1
        if operate:
            for _ in range(rng.randint(0, 3)):
                at = rng.choice(names)
                kind = rng.choice(OBJECTS)
                new, ops = KINDS[kind]
                op = rng.choice(ops)
                world = World(at, clocks[at], 1000 + 10 * now + rng.randint(0, 20))
                a, b = rng.randint(0, 5), rng.randint(0, 5)
                delta = replicas[at].apply(
                    kind, lambda o, op=op, w=world, a=a, b=b: op(o, w, a, b), new)
                made.setdefault(kind, new()).merge(delta)
        for n in names:
            net.send(now, n, replicas[n].tick())
        for src, dst, msg in net.due(now):
            net.send(now, dst, replicas[dst].on_message(src, msg))

    for r in range(rounds):
        if r % 15 == 0:  # a new partition (or none) every 15 rounds; the last one for sure
            if rng.random() < 0.7 or r + 15 >= rounds:
                cut = set(rng.sample(names, rng.randint(1, len(names) - 1)))
                net.groups = [cut, set(names) - cut]
            else:
                net.groups = None
        round_(operate=True)
    assert not converged(replicas), "the partition should have left them apart"
    net.groups, net.loss = None, loss_after
    for after in range(1, 200):
        round_(operate=False)
        if converged(replicas):
            for r in replicas.values():
                assert r.names == sorted(made)
                assert all(r.get(n) == made[n] for n in made)
            return after, replicas
    raise AssertionError(f"seed {seed}: no convergence 200 rounds after the heal")


@pytest.mark.parametrize("seed", range(8))
def test_replicas_converge_within_bounded_ticks_after_the_last_heal(seed: int) -> None:
    after, replicas = simulate(seed)
    # The first tick after the heal sends every peer all it lacks, directly (a full mesh): the
    # unacknowledged delta interval, or the full state to one that fell behind the log. It
    # arrives within MAX_DELAY rounds.
    assert after <= 1 + MAX_DELAY, after
    for r in replicas.values():
        assert r.log_size <= r.max_buffered


@pytest.mark.parametrize("seed", range(100, 104))
def test_deltas_and_acks_alone_converge_without_digests(seed: int) -> None:
    after, _ = simulate(seed, digest_every=None, max_buffered=4)
    assert after <= 1 + MAX_DELAY, after


@pytest.mark.parametrize("seed", range(200, 204))
def test_convergence_while_loss_goes_on_after_the_heal(seed: int) -> None:
    # Each tick resends what is unacknowledged, so every tick is a fresh try: with 20% loss
    # a try gets through (message and ack) 64% of the time, and 20 tries fail together with
    # odds of 1e-9 per link.
    after, _ = simulate(seed, loss_after=0.2)
    assert after <= 20 + MAX_DELAY, after


def pump(replicas: dict[str, Replica], sends: list[tuple[str, Send]],
         cut: frozenset[tuple[str, str]] = frozenset()) -> list[tuple[str, str, dict[str, Any]]]:
    """Deliver messages and every answer to them until none is left (links in `cut` drop
    everything); returns what was delivered, as (src, dst, msg)."""
    seen = []
    while sends:
        src, (dst, msg) = sends.pop(0)
        if (src, dst) in cut or (dst, src) in cut:
            continue
        seen.append((src, dst, msg))
        sends.extend((dst, s) for s in replicas[dst].on_message(src, msg))
    return seen


def tick_all(replicas: dict[str, Replica]) -> list[tuple[str, Send]]:
    return [(n, s) for n, r in replicas.items() for s in r.tick()]


def add(r: Replica, x: int) -> None:
    r.apply("s", lambda s: s.add(r.id, x), ORSet)


def test_a_peer_left_behind_gets_full_state_and_then_deltas_again() -> None:
    rs = {n: Replica(n, ["b" if n == "a" else "a"], max_buffered=5, digest_every=None)
          for n in ("a", "b")}
    pump(rs, tick_all(rs))
    add(rs["a"], 0)
    first = pump(rs, tick_all(rs))
    assert [m["t"] for _, _, m in first] == ["delta", "ack"] and not first[0][2]["full"]
    for x in range(1, 21):  # b is unreachable meanwhile
        add(rs["a"], x)
        assert rs["a"].log_size <= 5
    assert rs["a"].needs_full("b") and rs["a"].buffered("b") == 0
    sent = pump(rs, tick_all(rs))
    assert sent[0][2]["t"] == "delta" and sent[0][2]["full"]
    assert rs["b"].value("s") == set(range(21)) and not rs["a"].needs_full("b")
    add(rs["a"], 99)
    assert rs["a"].buffered("b") == 1
    sent = pump(rs, tick_all(rs))
    delta = sent[0][2]
    assert not delta["full"] and delta["objects"]["s"]["store"] == [[99, [["a", 22]]]]
    assert rs["b"].get("s") == rs["a"].get("s") and rs["a"].buffered("b") == 0


def test_unacked_deltas_are_resent_as_one_growing_interval() -> None:
    rs = {n: Replica(n, ["b" if n == "a" else "a"], digest_every=None) for n in ("a", "b")}
    pump(rs, tick_all(rs))
    add(rs["a"], 1)
    lost = rs["a"].tick()  # lost
    add(rs["a"], 2)
    again = rs["a"].tick()
    assert lost[0][1]["seq"] == 1 and again[0][1]["seq"] == 2
    pump(rs, [("a", s) for s in again])
    assert rs["b"].value("s") == {1, 2} and rs["a"].buffered("b") == 0
    late_ack = rs["b"].on_message("a", lost[0][1])  # the lost one turns up after all
    pump(rs, [("b", s) for s in late_ack])
    assert rs["a"].buffered("b") == 0 and rs["b"].value("s") == {1, 2}


def test_deltas_are_forwarded_to_peers_the_origin_cannot_reach() -> None:
    names = ("a", "b", "c")
    rs = {n: Replica(n, [p for p in names if p != n], digest_every=None) for n in names}
    cut = frozenset({("a", "c")})
    pump(rs, tick_all(rs), cut)
    add(rs["a"], 1)
    for _ in range(3):  # a to b; b on to c; c's ack-free catch-up with b
        pump(rs, tick_all(rs), cut)
    assert rs["c"].value("s") == {1}
    assert all(r.buffered(p) == 0 for r in rs.values() for p in r.peers if {r.id, p} != {"a", "c"})


def test_digests_heal_what_deltas_cannot() -> None:
    rs = {n: Replica(n, ["b" if n == "a" else "a"], digest_every=1) for n in ("a", "b")}
    add(rs["a"], 1)
    pump(rs, tick_all(rs))
    obj = rs["b"].get("s")
    assert isinstance(obj, ORSet)
    obj.add("b", 2)  # changed behind the driver's back: no delta was logged
    rs["b"]._digests.clear()
    pump(rs, tick_all(rs))
    assert rs["a"].value("s") == {1, 2} and rs["a"].get("s") == rs["b"].get("s")
    quiet = pump(rs, tick_all(rs))
    assert [m["t"] for _, _, m in quiet] == ["digest", "digest"]  # equal: nothing more to say


def test_a_restarted_peer_gets_full_state_and_stale_messages_are_ignored() -> None:
    rs = {n: Replica(n, ["b" if n == "a" else "a"], digest_every=None) for n in ("a", "b")}
    add(rs["a"], 1)
    pump(rs, tick_all(rs))
    old_ack = {"t": "ack", "inc": 0, "seq": 1, "to": 0}
    rs["b"] = Replica("b", ["a"], incarnation=1, digest_every=None)  # lost its memory
    pump(rs, tick_all(rs))  # b's first message tells a it restarted
    assert rs["a"].needs_full("b")
    pump(rs, tick_all(rs))
    assert rs["b"].value("s") == {1}
    assert rs["a"].on_message("b", old_ack) == []  # from b's past life: dropped
    # An ack addressed to a's past life does not count either.
    rs["a"] = Replica("a", ["b"], incarnation=1, digest_every=None)
    add(rs["a"], 5)
    rs["a"].on_message("b", {"t": "ack", "inc": 1, "seq": 1, "to": 0})
    assert rs["a"].buffered("b") == 0 and rs["a"].needs_full("b")


def test_incoming_messages_are_checked_before_anything_changes() -> None:
    a = Replica("a", ["b"])
    a.apply("g", lambda g: g.increment("a"), GCounter)
    good = ORSet()
    good.add("b", 1)
    with pytest.raises(CRDTError, match="not a peer"):
        a.on_message("z", {"t": "ack", "inc": 0, "seq": 0, "to": 0})
    bad: list[tuple[Any, type[Exception], str]] = [
        ([1], WireError, "message: expected a map"),
        ({"t": "hello", "inc": 0}, WireError, "unknown message type 'hello'"),
        ({"t": "ack", "inc": 0, "seq": 0}, WireError, "missing field 'to'"),
        ({"t": "ack", "inc": 0, "seq": 7, "to": 0}, WireError, r"message.seq: expected an int from 0 to 1"),
        ({"t": "delta", "inc": 0, "seq": 1, "full": 1, "objects": {}}, WireError, "expected a bool"),
        ({"t": "delta", "inc": 0, "seq": 1, "full": False,
          "objects": {"s": good.to_wire(), "t": {"type": "orset"}}}, WireError, "missing field"),
        ({"t": "delta", "inc": 0, "seq": 1, "full": False,
          "objects": {"s": good.to_wire(), "g": good.to_wire()}}, MergeError,
         "cannot merge a orset into a gcounter"),
        ({"t": "digest", "inc": 0, "objects": {"g": "x"}}, WireError, "expected bytes"),
    ]
    for msg, exc, text in bad:
        with pytest.raises(exc, match=text):
            a.on_message("b", msg)
        assert a.names == ["g"] and a.value("g") == 1  # nothing merged, nothing made
    with pytest.raises(KeyError, match="pass new="):
        a.apply("nope", lambda g: g.increment("a"))
    with pytest.raises(MergeError):
        a.apply("g", lambda g: ORSet())
