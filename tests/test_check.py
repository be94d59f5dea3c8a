"""The linearizability checker: verdicts, windows, history files and the `shoal check` exit codes."""

from __future__ import annotations

import io
import json
import time
from itertools import combinations, permutations
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console
from typer.testing import CliRunner

from shoal.check import (
    Event,
    HistoryError,
    check_history,
    dump_history,
    load_history,
)
from shoal.check.cli import parse_size, run_check
from shoal.check.generate import random_history
from shoal.check.history import operations
from shoal.check.register import ABSENT, RegOp, Values, compile_ops, step
from shoal.check.search import Budget, linearizable, resident_bytes
from shoal.check.window import find_window
from shoal.cli import app as cli_app
from shoal_bench.checker import bench_checker, with_stale_read

# --- building histories --------------------------------------------------------------------


def history(*ops: tuple) -> list[Event]:
    """Events from ops (process, f, key, arg, result, invoked, completed[, type]); a completion
    time of None leaves the op without a completion. Times must be distinct."""
    located = []
    for op in ops:
        process, f, key, arg, result, invoked, completed, *rest = op
        kind = rest[0] if rest else "ok"
        located.append((invoked, Event(process, "invoke", f, key, arg, invoked)))
        if completed is not None:
            value = result if f == "read" else arg
            located.append((completed, Event(process, kind, f, key, value, completed)))
    return [event for _, event in sorted(located, key=lambda pair: pair[0])]


def verdict(*ops: tuple) -> str:
    return check_history(history(*ops)).verdict


OK, BAD = "linearizable", "not linearizable"


def brute_force(ops: list[RegOp], init: int = ABSENT) -> bool:
    """Try every order of every subset of the unknown-outcome ops with all completed ops."""
    done = [op for op in ops if op.ret is not None]
    maybe = [op for op in ops if op.ret is None]
    for k in range(len(maybe) + 1):
        for chosen in combinations(maybe, k):
            for order in permutations(done + list(chosen)):
                if _respects_real_time(order) and _replays(order, init):
                    return True
    return False


def _respects_real_time(order: tuple[RegOp, ...]) -> bool:
    return not any(
        later.ret is not None and later.ret < earlier.call
        for i, earlier in enumerate(order)
        for later in order[i + 1 :]
    )


def _replays(order: tuple[RegOp, ...], state: int) -> bool:
    for op in order:
        new = step(op, state)
        if new is None:
            return False
        state = new
    return True


@st.composite
def small_histories(draw: st.DrawFn) -> list[Event]:
    """Up to 6 random (mostly not linearizable) operations by 3 processes on keys x and y."""
    events: list[Event] = []
    open_ops: dict[int, Event] = {}
    live, next_process, n_ops = [0, 1, 2], 3, 0
    for t in range(draw(st.integers(0, 12))):
        slot = draw(st.integers(0, 2))
        process = live[slot]
        if process not in open_ops:
            if n_ops == 6:
                continue
            f = draw(st.sampled_from(["read", "write", "cas"]))
            key = draw(st.sampled_from("xy"))
            value = {
                "read": None,
                "write": draw(st.integers(1, 2)),
                "cas": [draw(st.sampled_from([None, 1, 2])), draw(st.integers(1, 2))],
            }[f]
            open_ops[process] = Event(process, "invoke", f, key, value, t)
            events.append(open_ops[process])
            n_ops += 1
        else:
            invoked = open_ops.pop(process)
            kind = draw(st.sampled_from(["ok", "ok", "fail", "info", "info"]))
            read = invoked.f == "read" and kind == "ok"
            value = draw(st.sampled_from([None, 1, 2])) if read else invoked.value
            events.append(Event(process, kind, invoked.f, invoked.key, value, t))
            if kind == "info":
                live[slot], next_process = next_process, next_process + 1
    return events


def key_ops(events: list[Event]) -> dict[str, list[RegOp]]:
    by_key: dict[str, list] = {}
    for op in operations(events):
        by_key.setdefault(op.key, []).append(op)
    return {key: compile_ops(ops, Values()) for key, ops in by_key.items()}


# --- agreement with brute force, and generated histories ------------------------------------


@settings(max_examples=300, deadline=None)
@given(small_histories())
def test_agrees_with_brute_force(events: list[Event]) -> None:
    expected = all(brute_force(ops) for ops in key_ops(events).values())
    result = check_history(events)
    assert result.ok is expected
    if not expected:
        # The window is a history of its own, ending with the completion it cannot explain.
        assert result.window and result.window[-1].type == "ok"
        operations(result.window)


@settings(max_examples=150, deadline=None)
@given(small_histories())
def test_window_fails_from_every_state_it_may_start_in(events: list[Event]) -> None:
    for ops in key_ops(events).values():
        if not brute_force(ops):
            window = find_window(ops, Budget(time.monotonic() + 10))
            assert window.culprit in window.ops
            assert not any(brute_force(window.ops, s) for s in window.initial)


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    n_ops=st.integers(0, 300),
    processes=st.integers(1, 8),
    keys=st.integers(1, 3),
    info_rate=st.sampled_from([0.0, 0.1, 0.3]),
)
def test_accepts_generated_histories(
    seed: int, n_ops: int, processes: int, keys: int, info_rate: float
) -> None:
    events = random_history(n_ops, processes, keys, seed, info_rate=info_rate)
    assert sum(event.type == "invoke" for event in events) == n_ops
    assert check_history(events).verdict == OK


def test_decides_ten_thousand_operations() -> None:
    events = random_history(10_000, 10, 5, seed=7, info_rate=0.05)
    assert any(event.type == "info" for event in events)
    start = time.perf_counter()
    result = check_history(events)
    assert result.verdict == OK and result.ops_checked == 10_000
    assert time.perf_counter() - start < 30  # a sanity bound; typically well under a second


def test_bench_checker_reports_ops_and_seconds() -> None:
    report = bench_checker()
    assert report["ops"] == 10_000 and report["verdict"] == OK
    assert isinstance(report["seconds"], float)


# --- anomalies -------------------------------------------------------------------------------


def test_rejects_stale_read() -> None:
    result = check_history(
        history(
            (0, "write", "x", 1, None, 0, 1),
            (0, "write", "x", 2, None, 2, 3),
            (1, "read", "x", None, 1, 4, 5),
        )
    )
    assert result.verdict == BAD and result.ok is False and result.key == "x"
    assert "read of x by process 1 returned 1, but no linearization allows it" in result.explanation
    assert "could only have held 2" in result.explanation


def test_concurrent_read_may_see_old_or_new_value() -> None:
    for seen in (1, 2):
        assert (
            verdict(
                (0, "write", "x", 1, None, 0, 1),
                (0, "write", "x", 2, None, 2, 5),
                (1, "read", "x", None, seen, 3, 4),
            )
            == OK
        )


def test_rejects_lost_write() -> None:
    # An acknowledged write of 2 is never seen: later reads still return 1.
    assert (
        verdict(
            (0, "write", "x", 1, None, 0, 1),
            (1, "write", "x", 2, None, 2, 3),
            (2, "read", "x", None, 1, 4, 5),
            (2, "read", "x", None, 1, 6, 7),
        )
        == BAD
    )


def test_rejects_two_cas_succeeding_from_the_same_value() -> None:
    assert (
        verdict(
            (0, "write", "x", 0, None, 0, 1),
            (1, "cas", "x", [0, 1], None, 2, 5),
            (2, "cas", "x", [0, 2], None, 3, 6),
        )
        == BAD
    )
    # One of them failing is fine.
    assert (
        verdict(
            (0, "write", "x", 0, None, 0, 1),
            (1, "cas", "x", [0, 1], None, 2, 5),
            (2, "cas", "x", [0, 2], None, 3, 6, "fail"),
        )
        == OK
    )


def test_rejects_cas_from_a_value_the_key_never_held() -> None:
    result = check_history(
        history((0, "cas", "x", [None, 1], None, 0, 1), (0, "cas", "x", [5, 2], None, 2, 3))
    )
    assert result.verdict == BAD and "could not have held 5" in result.explanation


def test_rejects_read_of_a_value_never_written() -> None:
    assert verdict((0, "read", "x", None, 7, 0, 1)) == BAD
    assert verdict((0, "read", "x", None, None, 0, 1)) == OK  # keys start absent


def test_info_write_later_observed_is_fine() -> None:
    assert (
        verdict(
            (0, "write", "x", 1, None, 0, 1, "info"),
            (1, "read", "x", None, None, 2, 3),  # not yet applied
            (1, "read", "x", None, 1, 4, 5),  # applied long after its invoke
        )
        == OK
    )


def test_info_write_never_observed_is_fine() -> None:
    assert (
        verdict(
            (0, "write", "x", 1, None, 0, 1, "info"),
            (1, "write", "x", 2, None, 2, 3),
            (1, "read", "x", None, 2, 4, 5),
        )
        == OK
    )


def test_info_write_cannot_take_effect_twice() -> None:
    assert (
        verdict(
            (0, "write", "x", 1, None, 0, 1, "info"),
            (1, "read", "x", None, 1, 2, 3),
            (1, "write", "x", 2, None, 4, 5),
            (1, "read", "x", None, 1, 6, 7),
        )
        == BAD
    )


def test_info_cannot_explain_a_read_of_an_unwritten_value() -> None:
    assert verdict((0, "write", "x", 1, None, 0, 1, "info"), (1, "read", "x", None, 2, 2, 3)) == BAD


def test_missing_completion_is_treated_as_info() -> None:
    assert verdict((0, "write", "x", 1, None, 0, None), (1, "read", "x", None, 1, 2, 3)) == OK
    assert verdict((0, "write", "x", 1, None, 0, None), (1, "read", "x", None, 2, 2, 3)) == BAD


def test_info_ops_can_chain() -> None:
    assert (
        verdict(
            (0, "write", "x", 1, None, 0, 1, "info"),
            (1, "cas", "x", [1, 2], None, 2, 3, "info"),
            (2, "read", "x", None, 2, 4, 5),
        )
        == OK
    )


def test_info_cas_may_or_may_not_apply() -> None:
    write0 = (0, "write", "x", 0, None, 0, 1)
    cas = (1, "cas", "x", [0, 1], None, 2, 3, "info")
    assert verdict(write0, cas, (2, "read", "x", None, 1, 4, 5)) == OK
    assert verdict(write0, cas, (2, "read", "x", None, 0, 4, 5)) == OK


def test_fail_ops_are_ignored() -> None:
    failed = (0, "write", "x", 5, None, 0, 1, "fail")
    assert verdict(failed, (1, "read", "x", None, None, 2, 3)) == OK
    assert verdict(failed, (1, "read", "x", None, 5, 2, 3)) == BAD


def test_keys_are_independent() -> None:
    assert verdict((0, "write", "x", 1, None, 0, 1), (1, "read", "y", None, 1, 2, 3)) == BAD
    result = check_history(
        history(
            (0, "write", "x", 1, None, 0, 1),
            (1, "write", "y", 1, None, 2, 3),
            (0, "read", "x", None, 1, 4, 5),
            (1, "read", "y", None, 2, 6, 7),
        )
    )
    assert result.key == "y"
    assert {event.key for event in result.window} == {"y"}


def test_window_is_small_in_a_long_history() -> None:
    events = random_history(2_000, 4, 1, seed=3, info_rate=0.0)
    end = events[-1].time
    # A final write is acknowledged, then a read still returns what the key held before it.
    final = next(e.value for e in reversed(events) if e.f == "write" and e.type == "ok")
    events += history(
        (100, "write", "k0", "new", None, end + 1, end + 2),
        (101, "read", "k0", None, final, end + 3, end + 4),
    )
    result = check_history(events)
    assert result.verdict == BAD and result.key == "k0"
    assert len(operations(result.window)) <= 4
    assert result.window[-1] == events[-1]


# --- limits ----------------------------------------------------------------------------------


def hard_history(writers: int = 24) -> list[Event]:
    """Many concurrent writes, then a read of a value none wrote: refuting it means trying
    every order of the writes."""
    ops = [(p, "write", "x", p, None, p, writers + p) for p in range(writers)]
    return history(*ops, (writers, "read", "x", None, -1, 3 * writers, 3 * writers + 1))


def test_time_limit_gives_undecided() -> None:
    start = time.perf_counter()
    result = check_history(hard_history(), time_limit=0.2)
    assert result.verdict == "undecided" and result.ok is None and result.key == "x"
    assert "time limit" in result.explanation
    assert time.perf_counter() - start < 5


def test_memory_cap_gives_undecided() -> None:
    # The cap is on measured resident memory: 30 MB more than now, which the cache of a
    # search through every order of 24 writes passes within seconds.
    ops = key_ops(hard_history())["x"]
    budget = Budget(time.monotonic() + 60, max_memory=resident_bytes() + (30 << 20))
    start = time.perf_counter()
    assert linearizable(ops, ABSENT, budget) is None
    assert budget.exhausted is not None and "memory passed" in budget.exhausted
    assert time.perf_counter() - start < 50
    assert resident_bytes() < budget.max_memory + (10 << 20)  # stopped close to the cap


# --- files -----------------------------------------------------------------------------------


def test_event_json_round_trip(tmp_path: Path) -> None:
    events = random_history(50, 3, 2, seed=1, info_rate=0.2)
    assert [Event.from_json(event.to_json()) for event in events] == events
    dump_history(events, tmp_path / "h.jsonl")
    assert load_history(tmp_path / "h.jsonl") == events


def _line(process: int, kind: str, f: str = "write", value: object = 1, time: int = 0) -> str:
    event = {"process": process, "type": kind, "f": f, "key": "x", "value": value, "time": time}
    return json.dumps(event)


INVOKE = _line(0, "invoke")


@pytest.mark.parametrize(
    ("lines", "line", "words"),
    [
        ([INVOKE, "{not json"], 2, "bad JSON"),
        (["[1, 2]"], 1, "expected a JSON object"),
        ([_line(0, "started")], 1, "unknown type"),
        ([_line(0, "invoke", f="append")], 1, "unknown f"),
        ([_line(0, "ok")], 1, "without a preceding invoke"),
        ([INVOKE, INVOKE], 2, "invokes again while"),
        ([_line(0, "invoke", f="cas", value=[1])], 1, "2-list"),
        ([_line(0, "invoke", f="read", value=3)], 1, "value null"),
        ([json.dumps({"process": 0, "type": "invoke", "f": "read", "key": "x"})], 1, "time"),
        ([INVOKE, "", _line(0, "ok", f="read")], 3, "invoked write"),
        ([INVOKE, _line(0, "info"), _line(0, "invoke")], 3, "new process id"),
        ([_line(0, "invoke", time=5), _line(0, "ok", time=4)], 2, "backwards"),
        ([_line(True, "invoke")], 1, "process must be an integer"),
    ],
)
def test_malformed_files_name_the_line(tmp_path: Path, lines: list[str], line: int, words: str):
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(HistoryError) as caught:
        load_history(path)
    assert caught.value.line == line
    assert str(caught.value).startswith(f"line {line}: ") and words in str(caught.value)


def test_in_memory_errors_name_the_event() -> None:
    with pytest.raises(HistoryError, match="event 1: .*without a preceding invoke"):
        check_history([Event(0, "ok", "read", "x", None, 0)])


# --- `shoal check` ----------------------------------------------------------------------------


def run(tmp_path: Path, events: list[Event] | str, time_limit: float = 10.0) -> tuple[int, str]:
    path = tmp_path / "history.jsonl"
    if isinstance(events, str):
        path.write_text(events)
    else:
        dump_history(events, path)
    out = io.StringIO()
    code = run_check(path, time_limit, Console(file=out, width=120))
    return code, out.getvalue()


def test_run_check_exit_codes(tmp_path: Path) -> None:
    code, out = run(tmp_path, random_history(200, 4, 2, seed=5))
    assert code == 0 and "LINEARIZABLE" in out

    stale = history(
        (0, "write", "x", [1, 2], None, 0, 1),
        (0, "write", "x", 2, None, 2, 3),
        (1, "read", "x", None, [1, 2], 4, 5),
    )
    code, out = run(tmp_path, stale)
    assert code == 1 and "NOT LINEARIZABLE" in out and "[1, 2]" in out and "process" in out

    code, out = run(tmp_path, hard_history(), time_limit=0.2)
    assert code == 2 and "UNDECIDED" in out

    code, out = run(tmp_path, INVOKE + "\n{oops\n")
    assert code == 3 and "line 2" in out and "bad JSON" in out

    assert run_check(tmp_path / "missing.jsonl", 1.0, Console(file=io.StringIO())) == 3


def test_max_memory_option(tmp_path: Path) -> None:
    assert [parse_size(s) for s in ("512MB", "2G", "1.5GiB", "1000", "64 mib")] == [
        512 * 10**6, 2 * 10**9, 3 << 29, 1000, 64 << 20
    ]
    with pytest.raises(ValueError, match="not a size"):
        parse_size("lots")
    path = tmp_path / "history.jsonl"
    dump_history(hard_history(), path)
    out = io.StringIO()
    cap = resident_bytes() + (30 << 20)
    assert run_check(path, 60.0, Console(file=out, width=120), max_memory=cap) == 2
    assert "UNDECIDED" in out.getvalue() and "memory passed" in out.getvalue()
    result = CliRunner().invoke(cli_app, ["check", str(path), "--max-memory", "lots"])
    assert result.exit_code == 2 and "not a size" in result.output


def test_bench_stale_variant_is_not_linearizable(tmp_path: Path) -> None:
    # The history `python -m shoal_bench.checker` times both checkers on must fail for the
    # read it appends, and pass without it.
    base = random_history(2_000, 10, 5, seed=3)
    dump_history(with_stale_read(base), tmp_path / "stale.jsonl")
    assert run_check(tmp_path / "stale.jsonl", 20.0, Console(file=io.StringIO())) == 1
    assert check_history(base).ok is True
