"""The transactional checker (shoal.check.elle): every anomaly class on a known history, no
anomaly on serializable ones (serial and simulated concurrent), injected anomalies found, the
verdict per consistency model, and speed."""

from __future__ import annotations

import random
import time
from collections.abc import Sequence

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from shoal.check import (
    Anomaly,
    HistoryError,
    TxnCheckResult,
    TxnEvent,
    check_txn_history,
    dump_txn_history,
    load_txn_history,
)
from shoal.check.elle import violates
from shoal.check.txn_graph import RW, WR, WW, TxnGraph, rw_cycles, strongly_connected
from shoal.check.txn_history import transactions

# --- building histories --------------------------------------------------------------------

Ops = list[list[object]]


def invoked(ops: Ops) -> Ops:
    """What the client asked for: the ops with every read's value null."""
    return [[f, k, None] if f == "r" else [f, k, v] for f, k, v in ops]


def history(*txns: tuple, concurrent: bool = False) -> list[TxnEvent]:
    """Events for transactions (process, ops[, status]) whose reads are filled in. One after
    another (each completes before the next is invoked), or, with `concurrent`, all invoked and
    then all completed, so that none precedes another in real time."""
    specs = [(t[0], t[1], t[2] if len(t) > 2 else "ok") for t in txns]
    events: list[TxnEvent] = []

    def complete(process: int, ops: Ops, status: str) -> None:
        value = ops if status == "ok" else invoked(ops)
        events.append(TxnEvent(process, status, value, len(events)))

    for process, ops, status in specs:
        events.append(TxnEvent(process, "invoke", invoked(ops), len(events)))
        if not concurrent:
            complete(process, ops, status)
    if concurrent:
        for process, ops, status in specs:
            complete(process, ops, status)
    return events


def check(events: list[TxnEvent], model: str = "list-append", **kw: object) -> TxnCheckResult:
    return check_txn_history(events, model, **kw)  # type: ignore[arg-type]


def only(result: TxnCheckResult, name: str) -> Anomaly:
    """The one anomaly of type `name`, after checking it is the only type found."""
    assert result.anomaly_types == (name,), [(a.name, a.explanation) for a in result.anomalies]
    [anomaly] = [a for a in result.anomalies if a.name == name]
    return anomaly


def append(key: object, value: object) -> list[object]:
    return ["append", key, value]


def r(key: object, value: object) -> list[object]:
    return ["r", key, value]


def w(key: object, value: object) -> list[object]:
    return ["w", key, value]


# --- list-append: one history per anomaly class ---------------------------------------------


def test_valid_list_append_has_no_anomalies() -> None:
    result = check(history(
        (0, [append("x", 1), r("x", [1])]),
        (1, [r("x", [1]), append("x", 2), append("y", 1)]),
        (0, [r("x", [1, 2]), r("y", [1])]),
    ), consistency="strict-serializable")
    assert result.valid and result.anomalies == () and result.violations == ()
    assert "no anomalies" in result.explanation and result.edges > 0


def test_g0_write_cycle() -> None:
    # T1 and T2 both append to x and y, but in opposite orders: the writes interleave.
    result = check(history(
        (0, [append("x", 1), append("y", 1)]),
        (1, [append("x", 2), append("y", 2)]),
        (2, [r("x", [1, 2]), r("y", [2, 1])]),
        concurrent=True,
    ))
    anomaly = only(result, "G0")
    assert anomaly.cycle_text() == "T1 -ww(x)-> T2 -ww(y)-> T1"
    assert [t.id for t in anomaly.txns] == [1, 2] and not result.valid
    assert all(step.kind == WW for step in anomaly.steps)
    assert not check(history(
        (0, [append("x", 1), append("y", 1)]),
        (1, [append("x", 2), append("y", 2)]),
        (2, [r("x", [1, 2]), r("y", [2, 1])]),
        concurrent=True,
    ), consistency="read-committed").valid  # G0 is proscribed by every model


def test_g1a_aborted_read() -> None:
    result = check(history(
        (0, [append("x", 1)], "fail"),
        (1, [r("x", [1])]),
    ))
    anomaly = only(result, "G1a")
    assert [t.name for t in anomaly.txns] == ["T1", "T2"] and anomaly.key == "x"
    assert "failed" in anomaly.explanation and not anomaly.is_cycle
    assert result.failed == 1 and result.violations == ("G1a",)


def test_g1b_intermediate_read() -> None:
    result = check(history(
        (0, [append("x", 1), append("x", 2)]),
        (1, [r("x", [1])]),
        concurrent=True,
    ))
    anomaly = only(result, "G1b")
    assert [t.name for t in anomaly.txns] == ["T1", "T2"]
    assert "intermediate" in anomaly.explanation and "2" in anomaly.explanation


def test_g1c_circular_information_flow() -> None:
    result = check(history(
        (0, [append("x", 1), r("y", [1])]),
        (1, [append("y", 1), r("x", [1])]),
        concurrent=True,
    ))
    anomaly = only(result, "G1c")
    assert anomaly.cycle_text() == "T1 -wr(x)-> T2 -wr(y)-> T1"
    assert not check(history(
        (0, [append("x", 1), r("y", [1])]),
        (1, [append("y", 1), r("x", [1])]),
        concurrent=True,
    ), consistency="read-committed").valid


def read_skew() -> list[TxnEvent]:
    """T1 sees T2's append to y but not its append to x (T3 shows x's order)."""
    return history(
        (0, [r("x", []), r("y", [1])]),
        (1, [append("x", 1), append("y", 1)]),
        (2, [r("x", [1]), r("y", [1])]),
        concurrent=True,
    )


def test_g_single_read_skew() -> None:
    result = check(read_skew())
    anomaly = only(result, "G-single")
    assert anomaly.cycle_text() == "T1 -rw(x)-> T2 -wr(y)-> T1"
    assert [s.kind for s in anomaly.steps] == [RW, WR]
    assert [t.ops_text() for t in anomaly.txns] == ["r x []; r y [1]", "append x 1; append y 1"]
    assert not check(read_skew(), consistency="snapshot-isolation").valid
    assert check(read_skew(), consistency="read-committed").valid


def write_skew() -> list[TxnEvent]:
    """T1 reads x and appends to y; T2 reads y and appends to x; neither sees the other."""
    return history(
        (0, [r("x", []), append("y", 1)]),
        (1, [r("y", []), append("x", 2)]),
        (2, [r("x", [2]), r("y", [1])]),
        concurrent=True,
    )


def test_g2_write_skew_is_allowed_by_snapshot_isolation() -> None:
    result = check(write_skew())
    anomaly = only(result, "G2")
    assert anomaly.cycle_text() == "T1 -rw(x)-> T2 -rw(y)-> T1"
    assert not result.valid and result.violations == ("G2",)
    si = check(write_skew(), consistency="snapshot-isolation")
    assert si.valid and si.anomaly_types == ("G2",) and "none of which" in si.explanation


def test_internal_inconsistency() -> None:
    result = check(history(
        (0, [append("x", 1), r("x", [])]),  # missed its own append
        (1, [r("y", []), r("y", [5])]),  # a second read disagrees with the first
        (2, [r("z", [1]), append("z", 2), r("z", [1, 2])]),  # fine
        (3, [r("v", [3]), append("v", 3)]),  # saw its own append before making it
    ))
    assert result.anomaly_types == ("internal", "garbage-read")  # nobody appended 5 to y
    internal = [a for a in result.anomalies if a.name == "internal"]
    assert [a.txns[0].name for a in internal] == ["T1", "T2", "T4"]
    assert "should end with [1]" in internal[0].explanation
    assert "should be []" in internal[1].explanation
    assert "cannot hold [3] yet" in internal[2].explanation
    future = check(history((0, [r("x", 1), w("x", 1)])), "rw-register")
    assert "cannot hold that yet" in only(future, "internal").explanation


def test_reads_after_own_appends_are_not_versions() -> None:
    # T2 reads [1], appends 5 and sees [1, 5]: its own append on top of its snapshot, not a
    # state of x. Against T4's [1, 2, 5] that is a lost update (G-single), not two orders.
    result = check(history(
        (0, [append("x", 1)]),
        (1, [r("x", [1]), append("x", 5), r("x", [1, 5])]),
        (2, [append("x", 2)]),
        (3, [r("x", [1, 2, 5])]),
    ))
    assert only(result, "G-single").cycle_text() == "T2 -rw(x)-> T3 -ww(x)-> T2"


def test_incompatible_order() -> None:
    result = check(history(
        (0, [append("x", 1)]),
        (1, [append("x", 2)]),
        (2, [r("x", [1, 2])]),
        (3, [r("x", [2, 1])]),
        concurrent=True,
    ))
    anomaly = only(result, "incompatible-order")
    assert anomaly.key == "x" and {t.name for t in anomaly.txns} == {"T3", "T4"}
    assert "[1, 2]" in anomaly.explanation and "[2, 1]" in anomaly.explanation


def test_duplicate_elements() -> None:
    result = check(history(
        (0, [append("x", 1)]),
        (1, [r("x", [1, 1])]),
    ))
    anomaly = only(result, "duplicate-elements")
    assert anomaly.txns[0].name == "T2" and "twice" in anomaly.explanation


def test_garbage_read() -> None:
    anomaly = only(check(history((0, [r("x", [7])]))), "garbage-read")
    assert "nothing appended [7]" in anomaly.explanation


def test_realtime_variant_needs_strict_serializability() -> None:
    # T2 starts after T1 appended 1 to x, yet reads x empty: a stale read.
    stale = history(
        (0, [append("x", 1)]),
        (1, [r("x", [])]),
        (2, [r("x", [1])]),
    )
    assert check(stale).valid and check(stale).anomalies == ()
    strict = check(stale, consistency="strict-serializable")
    anomaly = only(strict, "G-single-realtime")
    assert anomaly.cycle_text() == "T1 -realtime-> T2 -rw(x)-> T1"
    assert strict.realtime and not strict.valid
    assert violates("G-single-realtime", "strict-serializable")
    assert not violates("G-single-realtime", "serializable")
    assert check(stale, realtime=True).anomaly_types == ("G-single-realtime",)
    assert check(stale, realtime=True).valid  # ...but serializability allows it


def test_process_variant() -> None:
    # Process 0 appends then reads x empty in its next transaction.
    events = history(
        (0, [append("x", 1)]),
        (0, [r("x", [])]),
        (2, [r("x", [1])]),
    )
    result = check(events, process_order=True)
    anomaly = only(result, "G-single-process")
    assert anomaly.cycle_text() == "T1 -process-> T2 -rw(x)-> T1" and not result.valid
    assert check(events).valid


def test_longer_cycle_keeps_its_evidence_in_order() -> None:
    # T1 -wr(a)-> T2 -wr(b)-> T3 -wr(c)-> T4 -wr(d)-> T1
    events = history(
        (0, [append("a", 1), r("d", [1])]),
        (1, [r("a", [1]), append("b", 1)]),
        (2, [r("b", [1]), append("c", 1)]),
        (3, [r("c", [1]), append("d", 1)]),
        concurrent=True,
    )
    anomaly = only(check(events), "G1c")
    assert anomaly.cycle_text() == "T1 -wr(a)-> T2 -wr(b)-> T3 -wr(c)-> T4 -wr(d)-> T1"
    assert "T2 saw T1's write of a" in anomaly.explanation
    data = anomaly.to_json()
    assert data["steps"][0] == {"from": 1, "to": 2, "kind": "wr", "key": "a"}  # type: ignore[index]


# --- indeterminate transactions ------------------------------------------------------------


def test_info_writes_may_be_observed_and_are_never_g1a() -> None:
    seen = history(
        (0, [append("x", 1)], "info"),
        (1, [r("x", [1])]),
    )
    assert check(seen, consistency="strict-serializable").anomalies == ()
    unseen = history(
        (0, [append("x", 1)], "info"),
        (1, [r("x", [])]),
    )
    assert check(unseen, consistency="strict-serializable").anomalies == ()
    # Observed, an info transaction takes part in cycles like any other.
    cycle = history(
        (0, [append("x", 1), append("y", 1)], "info"),
        (1, [r("x", []), r("y", [1])]),
        (2, [r("x", [1])]),
        concurrent=True,
    )
    anomaly = only(check(cycle), "G-single")
    assert anomaly.txns[0].status == "info" and anomaly.txns[0].name == "T1"


def test_history_without_completion_is_info() -> None:
    events = [TxnEvent(0, "invoke", [append("x", 1)], 0),
              TxnEvent(1, "invoke", [r("x", None)], 1),
              TxnEvent(1, "ok", [r("x", [1])], 2)]
    result = check(events)
    assert result.valid and result.indeterminate == 1 and result.committed == 1


# --- rw-register -------------------------------------------------------------------------


def test_rw_register_anomalies() -> None:
    def rw(*txns: tuple, concurrent: bool = True, **kw: object) -> TxnCheckResult:
        return check(history(*txns, concurrent=concurrent), "rw-register", **kw)

    assert rw((0, [w("x", 1)]), (1, [r("x", 1), w("x", 2)]), (2, [r("x", 2)]),
              concurrent=False, consistency="strict-serializable").anomalies == ()
    g1c = only(rw((0, [w("x", 1), r("y", 1)]), (1, [w("y", 1), r("x", 1)])), "G1c")
    assert g1c.cycle_text() == "T1 -wr(x)-> T2 -wr(y)-> T1"
    # Read skew through the initial nil: T1 read x before T2 wrote it but saw T2's y.
    single = only(rw((0, [r("x", None), r("y", 1)]), (1, [w("x", 1), w("y", 1)])), "G-single")
    assert single.cycle_text() == "T1 -rw(x)-> T2 -wr(y)-> T1"
    skew = rw((0, [r("x", None), w("y", 1)]), (1, [r("y", None), w("x", 1)]))
    assert only(skew, "G2").cycle_text() == "T1 -rw(x)-> T2 -rw(y)-> T1"
    assert rw((0, [r("x", None), w("y", 1)]), (1, [r("y", None), w("x", 1)]),
              consistency="snapshot-isolation").valid
    # ww from read-then-write: each read the other's write and overwrote it.
    g0 = rw((0, [w("x", 1), r("y", 2), w("y", 3)]), (1, [w("y", 2), r("x", 1), w("x", 4)]))
    assert only(g0, "G0").cycle_text() == "T1 -ww(x)-> T2 -ww(y)-> T1"
    assert only(rw((0, [w("x", 1)], "fail"), (1, [r("x", 1)])), "G1a").key == "x"
    assert only(rw((0, [w("x", 1), w("x", 2)]), (1, [r("x", 1)])), "G1b").txns[0].name == "T1"
    assert only(rw((0, [w("x", 1), r("x", 2)]), (1, [w("x", 2)])), "internal").txns[0].id == 1
    assert only(rw((0, [r("x", 9)]),), "garbage-read").key == "x"
    lost = rw((0, [r("x", None), w("x", 1)]), (1, [r("x", None), w("x", 2)]))
    assert lost.anomaly_types == ("lost-update", "G2") and "lost-update" in lost.violations
    assert not rw((0, [r("x", None), w("x", 1)]), (1, [r("x", None), w("x", 2)]),
                  consistency="snapshot-isolation").valid
    assert rw((0, [r("x", None), w("x", 1)]), (1, [r("x", None), w("x", 2)]),
              consistency="read-committed").valid
    # Two blind writes of x, read in either order: nothing says which came first, so no cycle.
    assert rw((0, [w("x", 1)]), (1, [w("x", 2)]), (2, [r("x", 1)]), (3, [r("x", 2)])).valid


def test_rw_register_stale_read_is_a_realtime_anomaly() -> None:
    events = history((0, [w("x", 1)]), (1, [r("x", None)]))
    assert check(events, "rw-register").valid
    strict = check(events, "rw-register", consistency="strict-serializable")
    assert only(strict, "G-single-realtime").cycle_text() == "T1 -realtime-> T2 -rw(x)-> T1"


# --- verdicts ----------------------------------------------------------------------------


def test_consistency_models_proscribe() -> None:
    table = {
        "read-committed": {"G0", "G1a", "G1b", "G1c", "internal", "incompatible-order"},
        "snapshot-isolation": {"G0", "G1c", "G-single", "lost-update"},
        "serializable": {"G0", "G1c", "G-single", "G2"},
        "strict-serializable": {"G2", "G-single-realtime", "G2-realtime", "G0-realtime"},
    }
    for model, proscribed in table.items():
        assert all(violates(name, model) for name in proscribed), model
    assert not violates("G-single", "read-committed")
    assert not violates("G2", "snapshot-isolation") and not violates("G2", "read-committed")
    assert not violates("G1c-process", "serializable")
    assert violates("G1c-process", "read-committed", process_order=True)
    with pytest.raises(ValueError, match="unknown consistency"):
        check(read_skew(), consistency="linearizable")
    with pytest.raises(ValueError, match="unknown model"):
        check(read_skew(), "register")


# --- malformed histories -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("events", "message"),
    [
        ([TxnEvent(0, "invoke", [["w", "x", 1]], 0)], "not one of 'append', 'r'"),
        ([TxnEvent(0, "invoke", [["r", "x", [1]]], 0)], "must be null on invoke"),
        ([TxnEvent(0, "invoke", [["append", "x"]], 0)], "must be a 3-list"),
        ([TxnEvent(0, "invoke", "append", 0)], "must be a list of micro-operations"),
        ([TxnEvent(0, "invoke", [["append", True, 1]], 0)], "key must be a string or integer"),
        ([TxnEvent(0, "invoke", [["append", "x", 1.5]], 0)], "must be a string or integer"),
        ([TxnEvent(0, "ok", [], 0)], "without a preceding invoke"),
        ([TxnEvent(0, "invoke", [], 5), TxnEvent(0, "ok", [], 4)], "goes backwards"),
        ([TxnEvent(0, "invoke", [], 0), TxnEvent(0, "invoke", [], 1)], "still open"),
        ([TxnEvent(0, "invoke", [], 0), TxnEvent(0, "info", None, 1),
          TxnEvent(0, "invoke", [], 2)], "an info ends a process"),
        ([TxnEvent(0, "invoke", [["append", "x", 1]], 0),
          TxnEvent(0, "ok", [["append", "x", 2]], 1)], "completes as append x 2"),
        ([TxnEvent(0, "invoke", [["append", "x", 1]], 0), TxnEvent(0, "ok", [], 1)],
         "has 0 micro-op"),
        ([TxnEvent(0, "invoke", [["r", "x", None]], 0),
          TxnEvent(0, "ok", [["r", "x", 3]], 1)], "returns a list"),
        ([TxnEvent(0, "invoke", [["append", "x", 1]], 0), TxnEvent(0, "fail", None, 1),
          TxnEvent(1, "invoke", [["append", "x", 1]], 2)], "unique per key"),
        ([TxnEvent(0, "invoke", [["append", "x", 1], ["append", "x", 1]], 0)], "unique"),
        ([TxnEvent(0, "invoke", [], 0, f="read")], 'f must be "txn"'),
    ],
)
def test_malformed(events: list[TxnEvent], message: str) -> None:
    with pytest.raises(HistoryError, match="event [0-9]+: .*" + message.replace("(", r"\(")):
        transactions(events, "list-append")


def test_bounded_and_round_trips(tmp_path: object) -> None:
    events = read_skew()
    with pytest.raises(HistoryError, match="over the limit of 5"):
        check_txn_history(events, max_events=5)
    path = tmp_path / "h.jsonl"  # type: ignore[operator]
    dump_txn_history(events, path)
    assert load_txn_history(path, "list-append") == events
    with pytest.raises(HistoryError, match="line 6: more than 5 events"):
        load_txn_history(path, "list-append", max_events=5)
    with pytest.raises(HistoryError, match="line 2: .*'w', 'r' \\(model rw-register\\)"):
        load_txn_history(path, "rw-register")


# --- simulated serializable histories ----------------------------------------------------


def simulate(
    n_txns: int,
    processes: int,
    seed: int,
    model: str = "list-append",
    keys: int = 8,
    writes_per_key: int = 30,
    info_rate: float = 0.02,
    fail_rate: float = 0.02,
) -> list[TxnEvent]:
    """A strict-serializable history: each transaction takes effect at one instant between its
    invoke and its completion, against one store. Keys retire after `writes_per_key` writes
    (Elle's trick to keep lists short). An info transaction took effect or not at random, and
    its process retires; a failed one did not take effect."""
    rng = random.Random(seed)
    write_f = "append" if model == "list-append" else "w"
    active = list(range(keys))
    next_key = keys
    writes: dict[int, int] = {}
    counter = 0
    plans = []  # (invoke, apply, complete, process, ops, status)
    clock = dict.fromkeys(range(processes), 0)
    ids = list(range(processes))
    for _ in range(n_txns):
        slot = rng.randrange(processes)
        start = clock[slot] + rng.randrange(1, 50)
        apply = start + rng.randrange(1, 100)
        end = apply + rng.randrange(1, 100)
        clock[slot] = end
        ops: Ops = []
        for _ in range(rng.randrange(1, 5)):
            key = rng.choice(active)
            if rng.random() < 0.5:
                counter += 1
                ops.append([write_f, key, counter])
                writes[key] = writes.get(key, 0) + 1
                if writes[key] >= writes_per_key:
                    active[active.index(key)] = next_key
                    next_key += 1
            else:
                ops.append(["r", key, None])
        roll = rng.random()
        status = "info" if roll < info_rate else "fail" if roll < info_rate + fail_rate else "ok"
        plans.append([start, apply, end, ids[slot], ops, status])
        if status == "info":
            ids[slot] = max(ids) + 1
    store: dict[object, object] = {}
    for plan in sorted(plans, key=lambda p: p[1]):
        status, ops = plan[5], plan[4]
        if status == "fail" or (status == "info" and rng.random() < 0.5):
            continue
        done: Ops = []
        for f, key, value in ops:
            if f == "r":
                current = store.get(key)
                done.append(["r", key, list(current) if isinstance(current, tuple) else current])
            elif f == "append":
                store[key] = (*store.get(key, ()), value)  # type: ignore[misc]
                done.append([f, key, value])
            else:
                store[key] = value
                done.append([f, key, value])
        plan[4] = done
    stamped = []
    for start, _, end, process, ops, status in plans:
        stamped.append((start, 0, TxnEvent(process, "invoke", invoked(ops), start)))
        stamped.append((end, 1, TxnEvent(process, status, ops if status == "ok" else None, end)))
    return [event for _, _, event in sorted(stamped, key=lambda s: (s[0], s[1]))]


@pytest.mark.parametrize("model", ["list-append", "rw-register"])
def test_simulated_histories_are_valid(model: str) -> None:
    for seed in range(5):
        events = simulate(300, 5, seed, model)
        result = check(events, model, consistency="strict-serializable")
        assert result.anomalies == (), [(a.name, a.explanation) for a in result.anomalies][:3]
        assert result.failed > 0 or result.indeterminate > 0 or seed > 0


micro_ops = st.lists(
    st.tuples(st.sampled_from(["append", "r"]), st.sampled_from(["x", "y", "z", 1])),
    min_size=1,
    max_size=4,
)


def run_serially(txns: Sequence[list[tuple[str, object]]]) -> list[Ops]:
    """Execute transactions one at a time on a list store; the completed micro-ops."""
    store: dict[object, list[object]] = {}
    done = []
    counter = 0
    for txn in txns:
        ops: Ops = []
        for f, key in txn:
            if f == "append":
                counter += 1
                store.setdefault(key, []).append(counter)
                ops.append([f, key, counter])
            else:
                ops.append([f, key, list(store.get(key, []))])
        done.append(ops)
    return done


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    txns=st.lists(micro_ops, min_size=1, max_size=12),
    processes=st.lists(st.integers(0, 2), min_size=12, max_size=12),
    injection=st.sampled_from(["none", "stale-read", "future-read", "fail-writer", "duplicate"]),
    pick=st.integers(0, 10**6),
)
def test_serial_histories_are_valid_until_an_anomaly_is_injected(
    txns: list[list[tuple[str, object]]], processes: list[int], injection: str, pick: int
) -> None:
    done = run_serially(txns)
    specs: list[tuple] = [(processes[i], ops) for i, ops in enumerate(done)]
    clean = check(history(*specs), consistency="strict-serializable")
    assert clean.valid and clean.anomalies == ()
    if injection == "none":
        return
    reads = [(i, j) for i, ops in enumerate(done) for j, op in enumerate(ops) if op[0] == "r"]
    writer = {(op[1], op[2]): i for i, ops in enumerate(done) for op in ops if op[0] == "append"}
    if injection == "stale-read":
        # A read misses the last append it saw, made by an earlier transaction; another read
        # saw that append (else nothing shows what it missed), one made before its own
        # transaction appended to the key (a later one is not a state of the database).
        def external(a: int, b: int) -> bool:
            return not any(op[:2] == ["append", done[a][b][1]] for op in done[a][:b])

        candidates = [
            (i, j) for i, j in reads if done[i][j][2]
            and writer[(done[i][j][1], done[i][j][2][-1])] != i  # type: ignore[index]
            and any(done[a][b][1] == done[i][j][1] and (a, b) != (i, j) and external(a, b)
                    and len(done[a][b][2]) >= len(done[i][j][2])  # type: ignore[arg-type]
                    for a, b in reads)
        ]
        assume(candidates)
        i, j = candidates[pick % len(candidates)]
        done[i][j][2] = done[i][j][2][:-1]  # type: ignore[index]
    elif injection == "future-read":
        # A read sees the state just after a later transaction appended to its key.
        candidates = [(i, j, u) for i, j in reads for u in range(i + 1, len(done))
                      if any(op[0] == "append" and op[1] == done[i][j][1] for op in done[u])]
        assume(candidates)
        i, j, u = candidates[pick % len(candidates)]
        key = done[i][j][1]
        state = [op[2] for ops in done[: u + 1] for op in ops if op[:2] == ["append", key]]
        done[i][j][2] = state
    elif injection == "fail-writer":
        observed = [writer[(done[i][j][1], e)] for i, j in reads for e in done[i][j][2]  # type: ignore[attr-defined]
                    if writer[(done[i][j][1], e)] != i]
        assume(observed)
        failed = observed[pick % len(observed)]
        specs[failed] = (*specs[failed], "fail")
    else:
        candidates = [(i, j) for i, j in reads if done[i][j][2]]
        assume(candidates)
        i, j = candidates[pick % len(candidates)]
        done[i][j][2] = [*done[i][j][2], done[i][j][2][0]]  # type: ignore[index,misc]
    specs = [(spec[0], done[n], *spec[2:]) for n, spec in enumerate(specs)]
    dirty = check(history(*specs), consistency="strict-serializable")
    assert not dirty.valid
    expected = {
        "stale-read": {"G-single-realtime", "G2-realtime", "G-single", "G2", "internal"},
        "future-read": {"G1c-realtime", "G0-realtime", "G-single-realtime", "G2-realtime",
                        "G1c", "G0", "G-single", "G2", "internal"},
        "fail-writer": {"G1a"},
        "duplicate": {"duplicate-elements"},
    }[injection]
    assert expected & set(dirty.anomaly_types), dirty.anomaly_types


# --- the graph ---------------------------------------------------------------------------


def test_tarjan_components_and_g_single_search() -> None:
    graph = TxnGraph()
    for u, v, kind in [(1, 2, WW), (2, 3, WR), (3, 1, RW), (3, 4, WW), (4, 5, RW), (5, 4, RW)]:
        graph.add(u, v, kind, "k")
    graph.add(6, 6, WW)  # self-dependencies are dropped
    components = strongly_connected(graph.restricted(WW | WR | RW))
    assert sorted(sorted(c) for c in components if len(c) > 1) == [[1, 2, 3], [4, 5]]
    assert components.index([5, 4] if [5, 4] in components else [4, 5]) < len(components) - 1
    singles, others = rw_cycles(graph)
    assert [[s.source for s in c] for c in singles] == [[1, 2, 3]]
    assert [[s.kind for s in c] for c in others] == [[RW, RW]]


def test_deep_graph_does_not_recurse() -> None:
    graph = TxnGraph()
    n = 50_000
    for u in range(1, n):
        graph.add(u, u + 1, WW, "k")
    graph.add(n, 1, WR, "k")
    [component] = [c for c in strongly_connected(graph.restricted(WW | WR)) if len(c) > 1]
    assert len(component) == n


# --- speed -------------------------------------------------------------------------------


def test_five_thousand_transactions_check_quickly() -> None:
    events = simulate(5_000, 10, seed=1)
    start = time.perf_counter()
    result = check(events, consistency="strict-serializable")
    elapsed = time.perf_counter() - start
    assert result.anomalies == () and result.txns == 5_000
    assert elapsed < 10.0, elapsed
    # Anomalies do not make it slow: a quarter of the reads made stale, with realtime edges.
    rng = random.Random(2)
    stale = []
    for event in events:
        value = event.value
        if event.type == "ok" and isinstance(value, list) and rng.random() < 0.25:
            value = [[f, k, v[:-1]] if f == "r" and v else [f, k, v] for f, k, v in value]
        stale.append(TxnEvent(event.process, event.type, value, event.time))
    start = time.perf_counter()
    result = check(stale, consistency="strict-serializable")
    elapsed = time.perf_counter() - start
    assert not result.valid and elapsed < 10.0, elapsed
