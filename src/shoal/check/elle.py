"""Isolation anomalies in histories of transactions, found the way Jepsen's Elle finds them.

Kingsbury and Alvaro's Elle ("Elle: Inferring Isolation Anomalies from Experimental
Observations", VLDB 2020) checks a database's transactions without searching through their
possible orders, as a linearizability checker must. The trick is in the workload: if every
value written to a key is unique, a value read names the transaction that wrote it; and if
writes append to lists instead of overwriting, a read returns the whole history of its key
up to that point. From the reads alone we can then rebuild, soundly, most of Adya's direct
serialization graph, and a history is serializable only if that graph has no cycle. Finding
cycles is linear-ish (Tarjan), so histories of tens of thousands of transactions check in
seconds, and every anomaly comes with its evidence: a handful of transactions and the
dependencies between them that no serial order could satisfy.

The input (txn_history.py) is a history in the JSON Lines format of docs/history-format.md:
each transaction is invoked with a list of micro-operations and completes ok (the reads filled
in), fail (it certainly did not take effect) or info (unknown: it may or may not have). Two
models are understood.

List-append. Micro-ops append an element to a key's list, or read the list. Every read of a
key should be a prefix of every longer read of it (they are all prefixes of the key's final
value), so the longest read is the key's version order as far as anyone saw it. (Only external
reads count here, made before the reader's own appends to the key: a read after them shows
them on top of the database's state, which the internal check verifies.) A read that is
not a prefix of it is an "incompatible-order" anomaly, and that key gives no order at all. The
order gives three kinds of edge between transactions (txn_anomalies.infer_list_append):

- ww: the writer of each element -> the writer of the next (it appended after);
- wr: the writer of a read's last element -> the reader (it saw that append);
- rw: the reader -> the writer of the element just after its read (it missed that append).

Rw-register. Micro-ops write a value or read one. A read again names its writer (wr), but a
register keeps no history, so the version order is known only where it is certain: the
initial nil comes before every version, and a transaction that read v and then wrote w to a
key put w after v. The checker uses nothing more (no assumption that keys are linearizable or
that transactions are sequential) so every cycle it reports is real; the price is that it
misses cycles whose order it cannot infer. By convention values written are unique per key,
and a history that repeats one is refused as malformed. Two transactions that both read v of a
key and then wrote it are a "lost-update".

Some anomalies need no cycle and are reported as they are seen:

- internal: a read disagrees with its own transaction's earlier reads or writes of the key;
- G1a (aborted read): a committed read saw a value written by a failed transaction;
- G1b (intermediate read): it saw a value its writer went on to overwrite (or append after);
- garbage-read: it saw a value nobody wrote; duplicate-elements: a list holding an element
  twice, as if an append took effect twice.

Then the cycles (txn_graph.py). Each is found in a pass over the graph restricted to some
kinds of edge, one cycle per strongly connected component, and named by the edges it needs:

- G0 (write cycle): ww edges only;
- G1c (circular information flow): ww and wr edges, at least one wr;
- G-single (read skew, a single anti-dependency): exactly one rw edge;
- G2 (anti-dependency cycle, e.g. write skew): rw edges, in a component with no G-single.

With realtime edges (u completed before v was invoked; on for strict-serializable) and process
edges (successive transactions of one process; on request), a further pass finds cycles that
need one of them, named for the data edges they contain plus "-realtime" or "-process":
"G-single-realtime" is a cycle with one rw edge that is only a cycle given real time.

Indeterminate transactions are taken as Elle takes them. Their reads are unknown, so they give
no wr edge in nor rw edge out; their writes may have happened, so a read of one is no G1a, and
such a write is a node of the version order once someone has read it (or read past it). A
failed transaction is not a node at all: anything that saw it is G1a.

Last, the verdict: each consistency model proscribes some anomalies (Adya; Elle's table).
Read committed (PL-2) proscribes G0 and G1 (G1a, G1b, G1c); snapshot isolation also G-single
and lost updates (it allows write skew, G2); serializable also G2; strict serializable also
the realtime variants. Internal, garbage, duplicate and incompatible-order anomalies violate
all four. Process variants count when process order was asked for, as a session guarantee
on top of the model. A history is valid for a model when none of its anomalies is proscribed.
Snapshot isolation is checked only as far as these anomalies go: without start-dependency
edges, a G2 whose rw edges are never adjacent (which SI forbids) is not told from write skew.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .txn_anomalies import Anomaly, infer_list_append, infer_rw_register, order_edges
from .txn_graph import (
    PROCESS,
    REALTIME,
    RW,
    WR,
    WW,
    Step,
    TxnGraph,
    order_cycles,
    rw_cycles,
    wr_cycles,
    ww_cycles,
)
from .txn_history import DEFAULT_MAX_EVENTS, MODELS, Txn, TxnEvent, transactions

CONSISTENCY_MODELS = ("read-committed", "snapshot-isolation", "serializable", "strict-serializable")
_ALWAYS = frozenset(
    {"internal", "garbage-read", "duplicate-elements", "incompatible-order", "G0", "G1a", "G1b",
     "G1c"}
)
_PROSCRIBED = {
    "read-committed": _ALWAYS,
    "snapshot-isolation": _ALWAYS | {"lost-update", "G-single"},
    "serializable": _ALWAYS | {"lost-update", "G-single", "G2"},
    "strict-serializable": _ALWAYS | {"lost-update", "G-single", "G2"},
}
_TYPE_ORDER = (
    "internal", "garbage-read", "duplicate-elements", "incompatible-order", "G1a", "G1b",
    "lost-update", "G0", "G1c", "G-single", "G2",
)  # and then the realtime and process variants, in the order of their bases
_SUMMARY = {  # what the cycle is, and what it looks like when data edges alone make it
    "G0": ("a cycle of write dependencies (ww)", ": the writes interleave"),
    "G1c": ("circular information flow: a cycle of ww and wr dependencies", ""),
    "G-single": ("a cycle with a single anti-dependency (rw)", ": read skew"),
    "G2": ("a cycle of anti-dependencies (rw)", ", such as write skew"),
}


def violates(name: str, consistency: str, process_order: bool = False) -> bool:
    """Whether an anomaly type is proscribed by a consistency model."""
    assert consistency in _PROSCRIBED, consistency
    proscribed = _PROSCRIBED[consistency]
    if name.endswith("-realtime"):
        return consistency == "strict-serializable" and name.removesuffix("-realtime") in proscribed
    if name.endswith("-process"):
        return process_order and name.removesuffix("-process") in proscribed
    return name in proscribed


@dataclass(frozen=True)
class TxnCheckResult:
    """The anomalies found in a transactional history and the verdict for one model.
    `violations` names the anomaly types found that `consistency` proscribes."""

    model: str
    consistency: str
    valid: bool
    anomalies: tuple[Anomaly, ...]
    violations: tuple[str, ...]
    txns: int
    committed: int
    indeterminate: int
    failed: int
    realtime: bool
    process_order: bool
    edges: int

    @property
    def anomaly_types(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(a.name for a in self.anomalies))

    def violating(self, anomaly: Anomaly) -> bool:
        return anomaly.name in self.violations

    @property
    def explanation(self) -> str:
        if self.valid and not self.anomalies:
            return f"no anomalies found: consistent with {self.consistency}"
        if self.valid:
            return (
                f"anomalies {', '.join(self.anomaly_types)} found, none of which "
                f"{self.consistency} proscribes"
            )
        return f"not {self.consistency}: {', '.join(self.violations)}"

    def to_json(self) -> dict[str, object]:
        return {
            "valid": self.valid,
            "model": self.model,
            "consistency": self.consistency,
            "realtime": self.realtime,
            "process_order": self.process_order,
            "violations": list(self.violations),
            "anomaly_types": list(self.anomaly_types),
            "explanation": self.explanation,
            "txns": {
                "total": self.txns,
                "ok": self.committed,
                "info": self.indeterminate,
                "fail": self.failed,
            },
            "edges": self.edges,
            "anomalies": [
                {**a.to_json(), "violates": self.violating(a)} for a in self.anomalies
            ],
        }


def check_txn_history(
    events: Sequence[TxnEvent],
    model: str = "list-append",
    consistency: str = "serializable",
    *,
    realtime: bool | None = None,
    process_order: bool = False,
    lines: Sequence[int] | None = None,
    max_events: int = DEFAULT_MAX_EVENTS,
) -> TxnCheckResult:
    """Check a transactional history of `model` ("list-append" or "rw-register") against
    `consistency` (one of CONSISTENCY_MODELS). Raises HistoryError if the history is malformed
    (naming the line, given the `lines` events came from) or has more than `max_events` events.

    `realtime` adds realtime edges (default: only for strict-serializable); `process_order`
    adds process edges, and makes cycles that need them count against the model.
    """
    if model not in MODELS:
        raise ValueError(f"unknown model {model!r} (expected one of {', '.join(MODELS)})")
    if consistency not in CONSISTENCY_MODELS:
        raise ValueError(
            f"unknown consistency model {consistency!r} "
            f"(expected one of {', '.join(CONSISTENCY_MODELS)})"
        )
    txns = transactions(events, model, lines, max_events)
    return check_txns(
        txns,
        model,
        consistency,
        realtime=consistency == "strict-serializable" if realtime is None else realtime,
        process_order=process_order,
    )


def check_txns(
    txns: Sequence[Txn], model: str, consistency: str, *, realtime: bool, process_order: bool
) -> TxnCheckResult:
    """`check_txn_history` on validated transactions (from `txn_history.transactions`)."""
    assert all(txn.id == i for i, txn in enumerate(txns, start=1)), "ids are 1, 2, ..."
    graph = TxnGraph()
    infer = infer_list_append if model == "list-append" else infer_rw_register
    anomalies = infer(txns, graph)
    # Realtime order already implies process order (a process's transactions do not overlap).
    process_edges = process_order and not realtime
    order_edges(txns, graph, realtime=realtime, process=process_edges)
    live = {txn.id for txn in txns if txn.status != "fail"}
    assert all(
        u in live and v in live for u, targets in graph.out.items() for v in targets
    ), "a failed transaction is never a node of the graph"

    by_id = {txn.id: txn for txn in txns}
    found = list(ww_cycles(graph)) + wr_cycles(graph)
    singles, others = rw_cycles(graph)
    found += singles + others
    order = (REALTIME if realtime else 0) | (PROCESS if process_edges else 0)
    if order:
        found += order_cycles(graph, order)
    anomalies += [_cycle_anomaly(steps, by_id, model) for steps in found]
    anomalies.sort(key=_type_rank)

    types = dict.fromkeys(a.name for a in anomalies)
    violations = tuple(t for t in types if violates(t, consistency, process_order))
    result = TxnCheckResult(
        model=model,
        consistency=consistency,
        valid=not violations,
        anomalies=tuple(anomalies),
        violations=violations,
        txns=len(txns),
        committed=sum(txn.status == "ok" for txn in txns),
        indeterminate=sum(txn.status == "info" for txn in txns),
        failed=sum(txn.status == "fail" for txn in txns),
        realtime=realtime,
        process_order=process_order,
        edges=graph.edge_count(),
    )
    assert result.committed + result.indeterminate + result.failed == result.txns
    return result


def cycle_name(steps: Sequence[Step]) -> str:
    """The anomaly a cycle shows, by the edges it needs."""
    kinds = [step.kind for step in steps]
    rw = kinds.count(RW)
    if rw == 0:
        base = "G1c" if WR in kinds else "G0"
    else:
        base = "G-single" if rw == 1 else "G2"
    if REALTIME in kinds:
        return base + "-realtime"
    if PROCESS in kinds:
        return base + "-process"
    return base


def _cycle_anomaly(steps: list[Step], by_id: dict[int, Txn], model: str) -> Anomaly:
    name = cycle_name(steps)
    txns = tuple(by_id[step.source] for step in steps)
    base = name.removesuffix("-realtime").removesuffix("-process")
    what, example = _SUMMARY[base]
    if base != name:
        example = f", a cycle only given the {name.removeprefix(base + '-')} order"
    why = "; ".join(_describe(step, by_id, model) for step in steps)
    return Anomaly(name, txns, f"{what}{example}. {why}", tuple(steps))


def _describe(step: Step, by_id: dict[int, Txn], model: str) -> str:
    u, v = by_id[step.source].name, by_id[step.target].name
    key = step.key
    write = "appended to" if model == "list-append" else "wrote"
    if step.kind == WW:
        return f"{v} {write} {key} after {u}"
    if step.kind == WR:
        return f"{v} saw {u}'s write of {key}"
    if step.kind == RW:
        return f"{u} read {key} before {v}'s write of it"
    if step.kind == REALTIME:
        return f"{u} completed before {v} was invoked"
    return f"{u} came before {v} on process {by_id[step.source].process}"


def _type_rank(anomaly: Anomaly) -> tuple[int, int, int]:
    name = anomaly.name
    variant = 1 if name.endswith("-realtime") else 2 if name.endswith("-process") else 0
    base = name.removesuffix("-realtime").removesuffix("-process")
    rank = _TYPE_ORDER.index(base) if base in _TYPE_ORDER else len(_TYPE_ORDER)
    first = anomaly.txns[0].id if anomaly.txns else 0
    return (variant, rank, first)
