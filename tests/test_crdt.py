"""shoal.crdt's data types: the join laws and convergence under any delivery order, for every
type, on random histories (hypothesis); then each type's own semantics on concurrency, the
hybrid logical clock, and the validation of wire data."""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shoal.crdt import (
    CRDT,
    HLC,
    RGA,
    CausalContext,
    CausalCounter,
    ClockDriftError,
    GCounter,
    LWWRegister,
    MergeError,
    MVRegister,
    ORMap,
    ORSet,
    PNCounter,
    Timestamp,
    WireError,
    from_wire,
    joined,
)

REPLICAS = ("r0", "r1", "r2")
SKEW = (0, 40, -30)  # physical clock offsets of the replicas, ms (well within max_offset)


@dataclass
class World:
    """What an operation may use besides its object: its replica's id, clock and time."""

    replica: str
    clock: HLC
    now: int


Op = Callable[[Any, World, int, int], CRDT]  # (object, world, a, b) -> delta


def _rga_delete(s: RGA, w: World, a: int, b: int) -> CRDT:
    return s.delete_at(a % len(s)) if len(s) else s.append(w.replica, b)


KINDS: dict[str, tuple[Callable[[], CRDT], list[Op]]] = {
    "gcounter": (GCounter, [lambda s, w, a, b: s.increment(w.replica, a)]),
    "pncounter": (PNCounter, [lambda s, w, a, b: s.increment(w.replica, a - 2),
                              lambda s, w, a, b: s.decrement(w.replica, b)]),
    "ccounter": (CausalCounter, [lambda s, w, a, b: s.increment(w.replica, a - 2)]),
    "lww": (LWWRegister, [lambda s, w, a, b: s.write(a * 10 + b, w.clock, w.now)]),
    "mvregister": (MVRegister, [lambda s, w, a, b: s.write(w.replica, [a, b])]),
    "orset": (ORSet, [lambda s, w, a, b: s.add(w.replica, a % 4),
                      lambda s, w, a, b: s.add(w.replica, ("t", b % 2)),
                      lambda s, w, a, b: s.remove(a % 4),
                      lambda s, w, a, b: s.clear() if a == 0 else s.remove(("t", b % 2))]),
    "ormap-orset": (lambda: ORMap(ORSet), [
        lambda m, w, a, b: m.update(a % 3, lambda s: s.add(w.replica, b % 3)),
        lambda m, w, a, b: m.update(a % 3, lambda s: s.remove(b % 3)),
        lambda m, w, a, b: m.remove(a % 3)]),
    "ormap-ormap": (lambda: ORMap(ORMap(ORSet)), [
        lambda m, w, a, b: m.update(a % 2, lambda n: n.update(
            b % 2, lambda s: s.add(w.replica, a + b))),
        lambda m, w, a, b: m.update(a % 2, lambda n: n.remove(b % 2)),
        lambda m, w, a, b: m.remove(a % 2)]),
    "ormap-ccounter": (lambda: ORMap(CausalCounter), [
        lambda m, w, a, b: m.update(a % 3, lambda c: c.increment(w.replica, b - 2)),
        lambda m, w, a, b: m.remove(a % 3)]),
    "ormap-mvregister": (lambda: ORMap(MVRegister), [
        lambda m, w, a, b: m.update(a % 3, lambda r: r.write(w.replica, b)),
        lambda m, w, a, b: m.remove(a % 3)]),
    "rga": (RGA, [lambda s, w, a, b: s.insert(w.replica, a % (len(s) + 1), b),
                  lambda s, w, a, b: s.append(w.replica, -b),
                  _rga_delete]),
}

steps = st.lists(st.one_of(
    st.tuples(st.just("op"), st.integers(0, 2), st.integers(0, 3), st.integers(0, 5),
              st.integers(0, 5)),
    st.tuples(st.just("sync"), st.integers(0, 2), st.integers(0, 2), st.just(0), st.just(0)),
), max_size=24)


def run(kind: str, history: list[tuple[str, int, int, int, int]]
        ) -> tuple[list[CRDT], list[CRDT]]:
    """Play a history on three replicas: each op runs at one replica, each sync merges one
    replica's whole state into another's. Returns the final states and every delta made."""
    new, ops = KINDS[kind]
    states = [new() for _ in REPLICAS]
    clocks = [HLC(r) for r in REPLICAS]
    deltas: list[CRDT] = []
    for t, (what, i, x, a, b) in enumerate(history):
        if what == "op":
            world = World(REPLICAS[i], clocks[i], 1000 + 10 * t + SKEW[i])
            deltas.append(ops[x % len(ops)](states[i], world, a, b))
        else:
            states[i].merge(states[x].copy())
    return states, deltas


def wire_trip(s: CRDT) -> CRDT:
    return from_wire(msgpack.unpackb(msgpack.packb(s.to_wire())))


@pytest.mark.parametrize("kind", sorted(KINDS))
@settings(max_examples=45, deadline=None)
@given(history=steps)
def test_merge_is_commutative_associative_idempotent(kind: str, history: Any) -> None:
    (a, b, c), deltas = run(kind, history)
    assert joined(a, b) == joined(b, a)
    assert joined(a, b).to_wire() == joined(b, a).to_wire()  # canonical: equal states, equal data
    assert joined(joined(a, b), c) == joined(a, joined(b, c))
    assert joined(a, a) == a
    for s in (a, b, c, *deltas[:3]):
        assert wire_trip(s) == s
        assert wire_trip(s).value() == s.value()  # and so is what is derived (RGA's order)
        assert joined(s, s) == s
        before = a.copy()
        changed = before.merge(s)
        assert changed == (before != a)
    merged = joined(joined(a, b), c)
    for s in (a, b, c):
        assert joined(merged, s) == merged  # the join is an upper bound of each


@pytest.mark.parametrize("kind", sorted(KINDS))
@settings(max_examples=45, deadline=None)
@given(history=steps, seed=st.integers(0, 2**32))
def test_any_delivery_order_converges(kind: str, history: Any, seed: int) -> None:
    """The deltas of a history, delivered in two random orders with duplicates, give the same
    state, which is the join of the replicas' final states."""
    states, deltas = run(kind, history)
    target = joined(joined(states[0], states[1]), states[2])
    rng = random.Random(seed)
    for _ in range(2):
        order = deltas + rng.choices(deltas, k=len(deltas) // 2)
        rng.shuffle(order)
        s = KINDS[kind][0]()
        for d in order:
            s.merge(wire_trip(d) if rng.random() < 0.3 else d)
        assert s == target
        assert s.value() == target.value()


# ---- semantics -------------------------------------------------------------------------


def test_gcounter_and_pncounter_values() -> None:
    a, b = GCounter(), GCounter()
    a.increment("a", 3)
    b.increment("b", 4)
    d = a.increment("a")
    b.merge(d)  # a delta carries a's whole count, so this one alone brings both increments
    assert b.value() == 8 and d.value() == 4
    assert not b.merge(a) and a.value() == 4
    with pytest.raises(ValueError, match="amount"):
        a.increment("a", -1)
    p, q = PNCounter(), PNCounter()
    p.increment("p", 10)
    q.decrement("q", 3)
    q.increment("q", -2)
    p.merge(q)
    q.merge(p)
    assert p.value() == q.value() == 5


def test_causal_counter_value_and_reset_in_a_map() -> None:
    m, n = ORMap(CausalCounter), ORMap(CausalCounter)
    m.update("hits", lambda c: c.increment("m", 5))
    n.merge(m)
    n.remove("hits")  # observed m's 5
    m.merge(n)
    assert "hits" not in m.value()
    m.update("hits", lambda c: c.increment("m", 2))
    assert m.value() == {"hits": 2}  # a re-added key starts from zero


def test_lww_register_later_hlc_wins_and_ties_break_by_replica() -> None:
    a, b = LWWRegister(), LWWRegister()
    ca, cb = HLC("a"), HLC("b")
    a.write("old", ca, 1000)
    b.merge(a)
    b.write("new", cb, 900)  # b's physical clock is behind, but b saw a's write
    a.merge(b)
    assert a.value() == b.value() == "new"
    assert b.timestamp is not None and b.timestamp > Timestamp(1000, 0, "a")
    x, y = LWWRegister(), LWWRegister()
    x.set("x", Timestamp(5, 0, "a"))
    y.set("y", Timestamp(5, 0, "b"))
    assert joined(x, y).value() == joined(y, x).value() == "y"  # same (wall, logical): "b" > "a"
    with pytest.raises(ValueError, match="not after"):
        x.set("again", Timestamp(5, 0, "a"))


def test_mv_register_keeps_concurrent_writes_until_one_sees_them() -> None:
    a, b = MVRegister(), MVRegister()
    a.write("a", 1)
    b.write("b", 2)
    a.merge(b)
    assert sorted(a.value()) == [1, 2]
    c = a.copy()
    c.write("c", 3)  # saw both
    b.write("b", 4)  # concurrent with c's write: saw only its own 2
    c.merge(b)
    assert sorted(c.value()) == [3, 4]
    b.merge(c)
    b.write("b", 5)
    c.merge(b)
    assert c.value() == [5]


def test_or_set_add_wins_over_concurrent_remove() -> None:
    a, b = ORSet(), ORSet()
    a.add("a", "x")
    b.merge(a)
    b.remove("x")
    a.add("a", "x")  # concurrent with b's remove
    a.merge(b)
    b.merge(a)
    assert a.value() == b.value() == {"x"}
    a.remove("x")  # a remove that saw every add wins
    b.merge(a)
    assert "x" not in b
    # The causal context, not tombstones, remembers: all of it compacts to a version vector.
    assert b.context.cloud == frozenset() and b.context.vector == {"a": 2}


def test_or_set_remove_does_not_need_the_add_first() -> None:
    a, b, c = ORSet(), ORSet(), ORSet()
    add = a.add("a", 7)
    b.merge(add)
    rm = b.remove(7)
    c.merge(rm)  # the remove arrives before the add it removes
    c.merge(add)
    assert 7 not in c and c == joined(a, b)


def test_causal_context_compacts() -> None:
    ctx = CausalContext.of([("a", 2), ("a", 3), ("b", 1)])
    assert ctx.vector == {"b": 1} and ctx.cloud == {("a", 2), ("a", 3)}
    ctx = ctx.union(CausalContext.of([("a", 1)]))
    assert ctx.vector == {"a": 3, "b": 1} and not ctx.cloud and ctx.size() == 2
    assert ("a", 3) in ctx and ("a", 4) not in ctx and ctx.next_dot("a") == ("a", 4)
    assert CausalContext.of([("a", 1), ("a", 2)]) == CausalContext({"a": 2})


def test_or_map_nested_remove_and_re_add() -> None:
    a, b = ORMap(ORSet), ORMap(ORSet)
    a.update("k", lambda s: s.add("a", 1))
    a.update("k", lambda s: s.add("a", 2))
    b.merge(a)
    b.remove("k")  # observed {1, 2}
    a.update("k", lambda s: s.add("a", 3))  # concurrent
    a.merge(b)
    b.merge(a)
    assert a.value() == b.value() == {"k": {3}}  # the remove took what it saw, 3 survives
    b.remove("k")
    a.merge(b)
    assert a.value() == {}
    a.update("k", lambda s: s.add("a", 9))  # re-add starts empty
    assert a.value() == {"k": {9}}
    view = a.get("k")
    assert view is not None and 9 in view
    view.add("a", 10)  # a detached view: the map is unchanged
    assert a.value() == {"k": {9}}


def test_or_map_of_maps_remove_inner_and_outer() -> None:
    a, b = ORMap(ORMap(MVRegister)), ORMap(ORMap(MVRegister))
    a.update("user", lambda u: u.update("name", lambda r: r.write("a", "ann")))
    a.update("user", lambda u: u.update("mail", lambda r: r.write("a", "ann@x")))
    b.merge(a)
    b.update("user", lambda u: u.remove("mail"))
    a.update("user", lambda u: u.update("name", lambda r: r.write("a", "anne")))
    a.merge(b)
    assert a.value() == {"user": {"name": ["anne"]}}
    b.remove("user")  # saw name=ann only; a's "anne" is concurrent and survives
    a.merge(b)
    assert a.value() == {"user": {"name": ["anne"]}}
    with pytest.raises(MergeError, match="cannot merge"):
        a.merge(ORMap(ORMap(ORSet)))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="holds"):
        ORMap(RGA)  # type: ignore[type-var]


def test_rga_concurrent_inserts_are_ordered_the_same_everywhere() -> None:
    base = RGA()
    base.append("a", "m0")
    x, y, z = base.copy(), base.copy(), base.copy()
    anchor = base.ids()[0]
    dx = x.insert_after("x", anchor, "from x")
    dy = y.insert_after("y", anchor, "from y")
    dz = z.insert_after("z", anchor, "from z")
    orders = set()
    for perm in ([dx, dy, dz], [dz, dy, dx], [dy, dx, dz]):
        s = base.copy()
        for d in perm:
            s.merge(d)
        orders.add(tuple(s.value()))
    assert orders == {("m0", "from z", "from y", "from x")}  # equal Lamport: replica id desc


def test_rga_concurrent_runs_do_not_interleave() -> None:
    base = RGA()
    base.append("a", "start")
    x, y = base.copy(), base.copy()
    for i in range(3):
        x.append("x", f"x{i}")
        y.append("y", f"y{i}")
    x.merge(y)
    y.merge(x)
    assert x.value() == y.value()
    assert x.value() in (["start", "x0", "x1", "x2", "y0", "y1", "y2"],
                         ["start", "y0", "y1", "y2", "x0", "x1", "x2"])


def test_rga_deletes_stick_and_inserts_after_deleted_elements_stay_put() -> None:
    a = RGA()
    for v in "abc":
        a.append("a", v)
    b = a.copy()
    old = a.copy()
    mid = a.ids()[1]
    a.delete(mid)
    b.insert_after("b", mid, "after-b")  # concurrent with the delete of its anchor
    a.merge(b)
    b.merge(a)
    assert a.value() == b.value() == ["a", "after-b", "c"]
    a.merge(old)  # a stale state holding "b" cannot bring it back
    assert a.value() == ["a", "after-b", "c"]
    assert a.nodes == 4
    a.insert("a", 0, "head")
    assert a.value()[0] == "head"
    with pytest.raises(ValueError, match="no element"):
        a.insert_after("a", ("zz", 1), "x")


def test_rga_insert_before_its_parent_arrives_is_held_back() -> None:
    a = RGA()
    d1 = a.append("a", 1)
    d2 = a.append("a", 2)
    b = RGA()
    b.merge(d2)
    assert b.value() == []  # its parent is not here yet
    b.merge(d1)
    assert b.value() == [1, 2] and b == a


# ---- the hybrid logical clock ----------------------------------------------------------


def test_hlc_is_monotonic_and_follows_received_timestamps() -> None:
    c = HLC("a", max_offset_ms=100)
    t1 = c.now(1000)
    t2 = c.now(1000)  # the physical clock stood still
    t3 = c.now(990)  # and stepped back
    assert t1 < t2 < t3 and t3.wall == 1000 and t3.logical == 2
    r = c.update(Timestamp(1050, 7, "b"), 1000)  # b is 50 ms ahead, within the offset
    assert r == Timestamp(1050, 8, "a") and r > t3
    assert c.now(1060) == Timestamp(1060, 0, "a")
    assert Timestamp(5, 1, "a") < Timestamp(5, 1, "b") < Timestamp(5, 2, "a") < Timestamp(6, 0, "a")


def test_hlc_refuses_a_timestamp_too_far_ahead() -> None:
    c = HLC("a", max_offset_ms=100)
    before = c.now(1000)
    with pytest.raises(ClockDriftError, match="ahead.*more than the 100 ms allowed"):
        c.update(Timestamp(1101, 0, "b"), 1000)
    assert c.last == before  # unchanged
    reg = LWWRegister()
    reg.set("future", Timestamp(10**9, 0, "b"))
    with pytest.raises(ClockDriftError):
        reg.write("now", c, 1000)
    with pytest.raises(ValueError, match="physical time"):
        c.now(-1)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(0, 50), st.integers(0, 3)), max_size=40))
def test_hlc_timestamps_only_increase(events: list[tuple[bool, int, int]]) -> None:
    c = HLC("a", max_offset_ms=20)
    last = c.last
    for receive, pt, lg in events:
        if receive:
            got = c.update(Timestamp(pt + 10, lg, "b"), pt)
            assert got > Timestamp(pt + 10, lg, "b")
        else:
            got = c.now(pt)
        assert got > last and got.wall >= pt
        last = got


# ---- wire data -------------------------------------------------------------------------


def _wired(kind: str) -> dict[str, Any]:
    new, ops = KINDS[kind]
    s = new()
    world = World("r0", HLC("r0"), 1000)
    op = ops[1] if kind == "rga" else ops[0]  # rga: appends, a chain of parents
    for a in range(3):
        op(s, world, a + 1, a + 2)
    return s.to_wire()


BAD: list[tuple[str, Callable[[dict[str, Any]], Any], str]] = [
    ("gcounter", lambda w: [1, 2], "crdt: expected a map, got a list"),
    ("gcounter", lambda w: {**w, "type": "nope"}, "unknown CRDT type 'nope'"),
    ("gcounter", lambda w: {**w, "counts": {"r0": -1}}, r"gcounter.counts\['r0'\]: expected an int"),
    ("gcounter", lambda w: {**w, "extra": 1}, "gcounter: unexpected field 'extra'"),
    ("pncounter", lambda w: {"type": "pncounter", "p": {}}, "pncounter: missing field 'n'"),
    ("lww", lambda w: {**w, "ts": [1, 2]}, r"lww.ts: expected a list of 3"),
    ("lww", lambda w: {**w, "value": (1, 2)}, "lww.value: a tuple is not plain data"),
    ("orset", lambda w: {**w, "ctx": {"vv": {}, "cloud": []}},
     r"orset.store: dot \('r0', 1\) is not in the causal context"),
    ("orset", lambda w: {**w, "store": [[1, [["r0", 0]]]]},
     r"orset.store\[0\]\[1\]\[0\]\[1\]: expected an int from 1"),
    ("orset", lambda w: {**w, "store": [[1, []]]}, "holds no dots"),
    ("orset", lambda w: {**w, "store": [[1.5, [["r0", 1]]]]}, "a float cannot be a key"),
    ("orset", lambda w: {**w, "store": [[1, [["r0", 1]]], [1, [["r0", 2]]]]}, "appears twice"),
    ("mvregister", lambda w: {**w, "store": [[["", 1], 0]]}, r"expected 1 to 256 characters"),
    ("ormap-orset", lambda w: {**w, "value": "rga"}, "'rga' is not a value type a map holds"),
    ("ormap-orset", lambda w: {**w, "value": ["ormap"]}, r"ormap.value: expected a list of 2"),
    ("rga", lambda w: {**w, "nodes": []}, r"rga.store: element \('r0', 1\) has no node"),
    ("rga", lambda w: {**w, "nodes": [[["r0", 1], ["r0", 1], 1]] + w["nodes"][1:]},
     "is its own parent"),
    ("rga", lambda w: {**w, "nodes": [[n[0], n[1], 1] for n in w["nodes"]]},
     "is not later than its parent"),
]


@pytest.mark.parametrize(("kind", "mutate", "error"), BAD)
def test_malformed_wire_data_names_what_is_wrong(kind: str, mutate: Callable[[Any], Any],
                                                 error: str) -> None:
    good = _wired(kind)
    assert from_wire(good).to_wire() == good
    with pytest.raises(WireError, match=error):
        from_wire(mutate(good))


def test_local_operations_refuse_what_the_wire_could_not_carry() -> None:
    with pytest.raises(WireError, match="value: a tuple"):
        MVRegister().write("a", (1, 2))
    with pytest.raises(WireError, match=r"value\[1\]: NaN is not equal to itself"):
        MVRegister().write("a", [1, float("nan")])
    v = {"tags": ["a"]}
    r = MVRegister()
    r.write("a", v)
    v["tags"].append("b")  # the register took a copy
    assert r.value() == [{"tags": ["a"]}]
    with pytest.raises(WireError, match="element: a float cannot be a key"):
        ORSet().add("a", 1.5)
    with pytest.raises(WireError, match="replica: expected a str"):
        ORSet().add(7, 1)  # type: ignore[arg-type]
    with pytest.raises(MergeError, match="cannot merge a orset into a gcounter"):
        GCounter().merge(ORSet())  # type: ignore[arg-type]


def test_conflicting_states_are_refused_not_merged() -> None:
    a, b = MVRegister(), MVRegister()
    a.write("a", 1)
    b.write("a", 2)  # the same dot ("a", 1) with another value: two replicas named "a"
    before = a.copy()
    with pytest.raises(MergeError, match="carries two values"):
        a.merge(b)
    assert a == before


def test_the_example_in_the_docs_runs() -> None:
    text = (Path(__file__).resolve().parent.parent / "docs" / "crdt.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert blocks
    for block in blocks:
        exec(compile(block, "docs/crdt.md", "exec"), {})
