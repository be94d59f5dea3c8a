"""What the reads of a transactional history say: anomalies seen directly, and graph edges.

For each model, `infer_list_append` and `infer_rw_register` walk the committed transactions'
reads once. Anomalies visible without a cycle are reported on the spot (internal, G1a, G1b,
garbage reads, duplicated elements, incompatible orders, lost updates), and the ww, wr and rw
edges the reads justify are added to the graph; `order_edges` adds the realtime and process
edges. `elle.py` explains the inference; this module is its mechanics.

Only ok and info transactions are nodes of the graph (a failed transaction did nothing, so a
read of its write is G1a, not a dependency), and only ok transactions' reads are known.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise

from .txn_graph import PROCESS, REALTIME, RW, WR, WW, Step, TxnGraph
from .txn_history import Key, Txn


@dataclass(frozen=True)
class Anomaly:
    """One anomaly and its evidence. For a cycle, `steps[i]` is the edge from `txns[i]` to
    `txns[i + 1]` (the last back to `txns[0]`); other anomalies have no steps."""

    name: str
    txns: tuple[Txn, ...]
    explanation: str
    steps: tuple[Step, ...] = ()
    key: Key | None = None

    def __post_init__(self) -> None:
        assert not self.steps or len(self.steps) == len(self.txns), self
        assert all(
            step.source == self.txns[i].id and step.target == self.txns[i - len(self.txns) + 1].id
            for i, step in enumerate(self.steps)
        ), self

    @property
    def is_cycle(self) -> bool:
        return bool(self.steps)

    def cycle_text(self) -> str:
        """`T3 -wr(x)-> T7 -rw(y)-> T3`; empty for an anomaly without a cycle."""
        if not self.steps:
            return ""
        parts = [f"T{self.steps[0].source}"]
        for step in self.steps:
            parts += [step.arrow(), f"T{step.target}"]
        return " ".join(parts)

    def to_json(self) -> dict[str, object]:
        return {
            "type": self.name,
            "key": self.key,
            "cycle": self.cycle_text() or None,
            "steps": [
                {"from": s.source, "to": s.target, "kind": s.kind_name, "key": s.key}
                for s in self.steps
            ],
            "txns": [txn.to_json() for txn in self.txns],
            "explanation": self.explanation,
        }


def _show(value: object) -> str:
    return json.dumps(list(value) if isinstance(value, tuple) else value)


# --- list-append ---------------------------------------------------------------------------


def infer_list_append(txns: Sequence[Txn], graph: TxnGraph) -> list[Anomaly]:
    """Anomalies and ww/wr/rw edges of a list-append history.

    The version order of a key is its longest read, provided every read is a prefix of it
    (external reads: those made before the reader's own appends to the key).
    Then writer(e_i) ww-> writer(e_i+1) for successive elements, writer(last of a read) wr->
    reader, and reader rw-> writer(the element after its read).
    """
    writer: dict[tuple[Key, object], Txn] = {}
    last_append: dict[tuple[int, Key], object] = {}  # (txn, key) -> its final element
    for txn in txns:
        for op in txn.ops:
            if op.f == "append":
                writer[(op.key, op.value)] = txn
                last_append[(txn.id, op.key)] = op.value
    in_graph = {txn.id for txn in txns if txn.status != "fail"}
    anomalies: list[Anomaly] = []
    reads: dict[Key, list[tuple[Txn, tuple[object, ...]]]] = defaultdict(list)
    for txn in txns:
        if txn.status != "ok":
            continue  # an unknown or failed transaction's reads are unknown
        anomalies += _internal_list_append(txn)
        appended: set[Key] = set()
        for op in txn.ops:
            if op.f != "r":
                appended.add(op.key)
                continue
            value: tuple[object, ...] = op.value if isinstance(op.value, tuple) else ()
            anomalies += _read_list(txn, op.key, value, writer, last_append)
            if op.key in appended:
                # A read after the transaction's own appends shows them on top of what it
                # read before, not a state of the database; the internal check covers it.
                continue
            reads[op.key].append((txn, value))
            if value:
                source = writer.get((op.key, value[-1]))
                if source is not None and source.id in in_graph:
                    graph.add(source.id, txn.id, WR, op.key)

    for key in sorted(reads, key=_sort_key):
        observed = reads[key]
        longest = max((value for _, value in observed), key=len)
        clash = next(((t, v) for t, v in observed if longest[: len(v)] != v), None)
        if clash is not None:
            anomalies.append(_incompatible(key, clash, longest, observed))
            continue  # no order to trust: this key gives no ww or rw edges
        if len(set(longest)) != len(longest):
            continue  # duplicated elements (reported): their place in the order is ambiguous
        # Elements a failed transaction or nobody wrote were reported; the order skips them.
        valid = [
            writer[(key, e)].id if (key, e) in writer and writer[(key, e)].id in in_graph else None
            for e in longest
        ]
        order = [w for w in valid if w is not None]
        for a, b in pairwise(order):
            graph.add(a, b, WW, key)
        following: list[int | None] = [None] * (len(longest) + 1)  # next valid writer from i on
        for i in range(len(longest) - 1, -1, -1):
            following[i] = valid[i] if valid[i] is not None else following[i + 1]
        for txn, value in observed:
            successor = following[len(value)]
            if successor is not None:
                graph.add(txn.id, successor, RW, key)
    return anomalies


def _internal_list_append(txn: Txn) -> list[Anomaly]:
    """A read that disagrees with the transaction's earlier reads and appends of its key."""
    found = []
    # key -> (whether the whole list is known, the list or just the elements appended since)
    state: dict[Key, tuple[bool, list[object]]] = {}
    later = _written_at(txn)
    for i, op in enumerate(txn.ops):
        known, elements = state.get(op.key, (False, []))
        if op.f == "append":
            state[op.key] = (known, [*elements, op.value])
            continue
        value = list(op.value) if isinstance(op.value, tuple) else []
        future = [e for e in value if later.get((op.key, e), -1) > i]
        if future:
            found.append(_internal(txn, op.key, value, f"it cannot hold {_show(future)} yet"))
        elif op.key in state:
            if known and value != elements:
                found.append(_internal(txn, op.key, value, f"it should be {_show(elements)}"))
            elif not known and value[len(value) - len(elements):] != elements:
                found.append(
                    _internal(txn, op.key, value, f"it should end with {_show(elements)}")
                )
        state[op.key] = (True, value)
    return found


def _written_at(txn: Txn) -> dict[tuple[Key, object], int]:
    """(key, value) -> the index of the micro-op of `txn` that writes (or appends) it; a read
    before that index cannot have seen it."""
    return {(op.key, op.value): i for i, op in enumerate(txn.ops) if op.f != "r"}


def _internal(txn: Txn, key: Key, value: object, expected: str) -> Anomaly:
    return Anomaly(
        "internal",
        (txn,),
        f"{txn.name} read {key} = {_show(value)}, but its own earlier operations on {key} mean "
        f"{expected}",
        key=key,
    )


def _read_list(
    txn: Txn,
    key: Key,
    value: tuple[object, ...],
    writer: dict[tuple[Key, object], Txn],
    last_append: dict[tuple[int, Key], object],
) -> list[Anomaly]:
    """Duplicates, garbage, aborted and intermediate reads in one list-append read."""
    found = []
    if len(set(value)) != len(value):
        twice = sorted({e for e in value if value.count(e) > 1}, key=_sort_key)
        found.append(Anomaly(
            "duplicate-elements", (txn,),
            f"{txn.name} read {key} = {_show(value)}: {_show(twice)} appear(s) more than once, as if "
            "an append took effect twice", key=key))
    garbage = []
    failed: dict[int, tuple[Txn, list[object]]] = {}
    for e in value:
        w = writer.get((key, e))
        if w is None:
            garbage.append(e)
        elif w.status == "fail":
            failed.setdefault(w.id, (w, []))[1].append(e)
    if garbage:
        found.append(Anomaly(
            "garbage-read", (txn,),
            f"{txn.name} read {key} = {_show(value)}: nothing appended {_show(garbage)}", key=key))
    for w, elements in failed.values():
        found.append(Anomaly(
            "G1a", (w, txn),
            f"{txn.name} read {key} = {_show(value)}, which has {_show(elements)} appended by "
            f"{w.name}, which failed", key=key))
    if value:
        w = writer.get((key, value[-1]))
        if w is not None and w is not txn and w.status != "fail":
            final = last_append[(w.id, key)]
            if final != value[-1]:
                found.append(Anomaly(
                    "G1b", (w, txn),
                    f"{txn.name} read {key} = {_show(value)}, ending in {_show(value[-1])}, an "
                    f"intermediate state of {w.name}, which went on to append {_show(final)}",
                    key=key))
    return found


def _incompatible(
    key: Key,
    clash: tuple[Txn, tuple[object, ...]],
    longest: tuple[object, ...],
    observed: list[tuple[Txn, tuple[object, ...]]],
) -> Anomaly:
    txn, value = clash
    other = next(t for t, v in observed if v == longest)
    return Anomaly(
        "incompatible-order",
        (other, txn),
        f"key {key}: {other.name} read {_show(longest)} and {txn.name} read {_show(value)}; "
        "neither is a prefix of the other, so no one order of appends explains both",
        key=key,
    )


# --- rw-register ---------------------------------------------------------------------------


def infer_rw_register(txns: Sequence[Txn], graph: TxnGraph) -> list[Anomaly]:
    """Anomalies and ww/wr/rw edges of a rw-register history.

    Writes are unique, so a read of v depends (wr) on v's writer. Of the version order only
    what is sure is used: nil comes before every version, and when a transaction read v (or
    nil) and then wrote w to the same key, v comes before w. From each known v < w: writer(v)
    ww-> writer(w) and every reader of v rw-> writer(w).
    """
    writer: dict[tuple[Key, object], Txn] = {}
    final: dict[tuple[int, Key], object] = {}  # (txn, key) -> the last value it wrote
    for txn in txns:
        for op in txn.ops:
            if op.f == "w":
                writer[(op.key, op.value)] = txn
                final[(txn.id, op.key)] = op.value
    in_graph = {txn.id for txn in txns if txn.status != "fail"}
    anomalies: list[Anomaly] = []
    readers: dict[tuple[Key, object], list[Txn]] = defaultdict(list)  # (key, value or None)
    before: dict[Key, set[tuple[object, object]]] = defaultdict(set)  # known v < w
    read_then_wrote: dict[tuple[Key, object], list[Txn]] = defaultdict(list)
    observed: set[tuple[Key, object]] = set()  # versions some committed read returned
    for txn in txns:
        if txn.status != "ok":
            continue
        anomalies += _internal_rw(txn)
        written: set[Key] = set()
        first_read: dict[Key, object] = {}
        for op in txn.ops:
            if op.f == "w":
                written.add(op.key)
                continue
            if op.key not in written:
                first_read.setdefault(op.key, op.value)
                seen = readers[(op.key, op.value)]
                if not seen or seen[-1] is not txn:  # a transaction's reads come together
                    seen.append(txn)
            if op.value is None:
                continue
            observed.add((op.key, op.value))
            anomalies += _read_register(txn, op.key, op.value, writer, final)
            source = writer.get((op.key, op.value))
            if source is not None and source.id in in_graph:
                graph.add(source.id, txn.id, WR, op.key)
        for key, value in first_read.items():
            if (txn.id, key) in final:
                before[key].add((value, final[(txn.id, key)]))
                read_then_wrote[(key, value)].append(txn)

    for (key, value), both in sorted(
        read_then_wrote.items(), key=lambda kv: (_sort_key(kv[0][0]), _sort_key(kv[0][1]))
    ):
        if len(both) > 1:
            names = ", ".join(t.name for t in both)
            anomalies.append(Anomaly(
                "lost-update", tuple(both),
                f"{names} each read {key} = {_show(value)} and then wrote {key}: all but one "
                "of their updates were lost", key=key))

    # Versions that are nodes of the order: final writes of ok transactions, and of info
    # transactions when some read saw them.
    versions: dict[Key, list[object]] = defaultdict(list)
    for (_, key), value in final.items():
        w = writer[(key, value)]
        if w.status == "ok" or (w.status == "info" and (key, value) in observed):
            versions[key].append(value)
    for key in set(versions) | set(before):
        # nil < every version; with v < w known for a written v, nil < v < w already says
        # nil < w, so nil's readers need rw edges only to versions with no such v.
        later = set()
        for older, newer in before[key]:
            known = writer.get((key, older)) if older is not None else None
            if known is not None and known.id in in_graph:
                later.add(newer)
        pairs = set(before[key]) | {(None, v) for v in versions[key] if v not in later}
        for older, newer in sorted(pairs, key=lambda p: (_sort_key(p[0]), _sort_key(p[1]))):
            target = writer.get((key, newer))
            if target is None or target.id not in in_graph:
                continue
            source = writer.get((key, older)) if older is not None else None
            if source is not None and source.id in in_graph:
                graph.add(source.id, target.id, WW, key)
            for reader in readers.get((key, older), ()):
                graph.add(reader.id, target.id, RW, key)
    return anomalies


def _internal_rw(txn: Txn) -> list[Anomaly]:
    """A read that disagrees with the transaction's earlier read or write of its key."""
    found = []
    state: dict[Key, object] = {}
    wrote: set[Key] = set()
    later = _written_at(txn)
    for i, op in enumerate(txn.ops):
        if op.f == "w":
            state[op.key] = op.value
            wrote.add(op.key)
            continue
        if later.get((op.key, op.value), -1) > i:
            found.append(_internal(txn, op.key, op.value, "it cannot hold that yet"))
        elif op.key in state and state[op.key] != op.value:
            how = "wrote" if op.key in wrote else "read"
            found.append(_internal(txn, op.key, op.value,
                                   f"it should be {_show(state[op.key])} (it {how} that before)"))
        state[op.key] = op.value
    return found


def _read_register(
    txn: Txn,
    key: Key,
    value: object,
    writer: dict[tuple[Key, object], Txn],
    final: dict[tuple[int, Key], object],
) -> list[Anomaly]:
    """Garbage, aborted and intermediate reads in one rw-register read (not of nil)."""
    w = writer.get((key, value))
    if w is None:
        return [Anomaly("garbage-read", (txn,),
                        f"{txn.name} read {key} = {_show(value)}, which nothing wrote", key=key)]
    if w is txn:
        return []  # its own write: the internal check's business
    if w.status == "fail":
        return [Anomaly("G1a", (w, txn),
                        f"{txn.name} read {key} = {_show(value)}, written by {w.name}, which "
                        "failed", key=key)]
    if final[(w.id, key)] != value:
        return [Anomaly("G1b", (w, txn),
                        f"{txn.name} read {key} = {_show(value)}, an intermediate write of "
                        f"{w.name}, which went on to write {_show(final[(w.id, key)])}",
                        key=key)]
    return []


# --- realtime and process order ------------------------------------------------------------


def order_edges(txns: Sequence[Txn], graph: TxnGraph, realtime: bool, process: bool) -> None:
    """Realtime edges (u completed before v was invoked) and process edges (u and v are
    successive transactions of one process) between ok and info transactions.

    Realtime edges are kept few: a sweep in event order keeps the frontier of completed
    transactions not yet known to precede a later completed one. An invoke gets an edge from
    each of them; when a transaction completes, the frontier members it came after leave (what
    follows it follows them through it) and it joins.
    """
    live = [txn for txn in txns if txn.status != "fail"]
    if realtime:
        points = [(txn.call, txn.id) for txn in live]
        points += [(txn.ret, -txn.id) for txn in live if txn.status == "ok" and txn.ret is not None]
        frontier: set[int] = set()
        after: dict[int, list[int]] = {}  # txn -> the frontier when it was invoked
        for _, tid in sorted(points):
            if tid > 0:
                after[tid] = sorted(frontier)
                for u in after[tid]:
                    graph.add(u, tid, REALTIME)
            else:
                frontier.difference_update(after.pop(-tid))
                frontier.add(-tid)
    if process:
        last: dict[int, int] = {}
        for txn in live:  # invocation order is each process's order
            if txn.process in last:
                graph.add(last[txn.process], txn.id, PROCESS)
            last[txn.process] = txn.id


def _sort_key(x: object) -> tuple[int, int, str]:
    """Order keys and values of mixed type (None, int, str) deterministically."""
    if x is None:
        return (0, 0, "")
    if isinstance(x, int):
        return (1, x, "")
    return (2, 0, str(x))
