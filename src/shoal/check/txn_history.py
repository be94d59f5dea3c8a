"""Transactional histories: events whose value is a list of micro-operations.

The format (docs/history-format.md, "Transactional histories") keeps the conventions of the
key-value histories in `history.py`: one JSON object per line in real-time order, `process`,
`type` (invoke, ok, fail, info) and `time` in nanoseconds. `f` is always "txn" and `value` is a
list of micro-operations `[f, key, value]`:

- list-append: `["append", key, element]` and `["r", key, list-or-null]`;
- rw-register: `["w", key, value]` and `["r", key, value-or-null]`.

An invoke carries null for every read; its ok completion carries the same micro-operations with
the reads filled in. A fail or info completion may repeat the invoke's value or carry null; its
reads are unknown either way.

`transactions` validates a history and pairs invoke and completion into one `Txn` per
transaction. The checker relies on one convention the history must keep: a value is appended
(or written) to a key at most once in the whole history, so a value read names the transaction
that wrote it. A history that repeats one is refused as malformed, not reported as an anomaly:
the database did nothing wrong, the test did.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .history import HistoryError, decode_json_lines

MODELS = ("list-append", "rw-register")
WRITE_F = {"list-append": "append", "rw-register": "w"}
TYPES = ("invoke", "ok", "fail", "info")
DEFAULT_MAX_EVENTS = 1_000_000
_FIELDS = ("process", "type", "f", "value", "time")

Key = str | int
Value = str | int


@dataclass(frozen=True, slots=True)
class TxnEvent:
    """One line of a transactional history: the invocation or completion of a transaction.
    `value` is the list of micro-operations (each a 3-list), or None on a fail/info completion."""

    process: int
    type: str
    value: object
    time: int
    f: str = "txn"

    def to_json(self) -> dict[str, object]:
        return {
            "process": self.process,
            "type": self.type,
            "f": self.f,
            "value": self.value,
            "time": self.time,
        }

    @classmethod
    def from_json(cls, obj: object) -> TxnEvent:
        """An event from a decoded JSON object; raises HistoryError if a field is missing or of
        the wrong type (the micro-operations are checked by `transactions`)."""
        if not isinstance(obj, dict):
            raise HistoryError(f"expected a JSON object, got {type(obj).__name__}")
        missing = [name for name in _FIELDS if name not in obj]
        if missing:
            raise HistoryError(f"missing field(s) {', '.join(missing)}")
        event = cls(obj["process"], obj["type"], obj["value"], obj["time"], obj["f"])
        event.validate()
        return event

    def validate(self) -> None:
        if not _is_int(self.process):
            raise HistoryError(f"process must be an integer, got {self.process!r}")
        if self.type not in TYPES:
            raise HistoryError(f"unknown type {self.type!r} (expected one of {', '.join(TYPES)})")
        if self.f != "txn":
            raise HistoryError(f"f must be \"txn\" in a transactional history, got {self.f!r}")
        if not _is_int(self.time) or self.time < 0:
            raise HistoryError(f"time must be a non-negative integer, got {self.time!r}")


@dataclass(frozen=True, slots=True)
class MicroOp:
    """One micro-operation. `value` is the element appended or value written, or what a read
    returned: a tuple of elements (list-append), a value (rw-register), or None (nil: the key
    was never written, or the read's result is unknown)."""

    f: str
    key: Key
    value: object

    def to_json(self) -> list[object]:
        value = list(self.value) if isinstance(self.value, tuple) else self.value
        return [self.f, self.key, value]

    def __str__(self) -> str:
        value = list(self.value) if isinstance(self.value, tuple) else self.value
        return f"{self.f} {self.key} {json.dumps(value)}"  # for people: keys unquoted


@dataclass(frozen=True, slots=True)
class Txn:
    """A transaction: its invoke paired with its completion.

    `id` numbers transactions from 1 in invocation order ("T1", "T2", ...). `status` is "ok",
    "fail" or "info" (also when the history ends before a completion). `ops` are the completed
    micro-operations for ok transactions and the invoked ones otherwise (reads then hold None).
    `call` and `ret` are the positions of the invoke and completion events; `line` is the line
    (or event number) of the invoke.
    """

    id: int
    process: int
    status: str
    ops: tuple[MicroOp, ...]
    call: int
    ret: int | None
    invoke_time: int
    complete_time: int | None
    line: int

    @property
    def name(self) -> str:
        return f"T{self.id}"

    def ops_text(self) -> str:
        return "; ".join(str(op) for op in self.ops)

    def to_json(self) -> dict[str, object]:
        return {
            "id": self.id,
            "name": self.name,
            "process": self.process,
            "status": self.status,
            "ops": [op.to_json() for op in self.ops],
            "invoke_time": self.invoke_time,
            "complete_time": self.complete_time,
            "line": self.line,
        }


def transactions(
    events: Sequence[TxnEvent],
    model: str,
    lines: Sequence[int] | None = None,
    max_events: int = DEFAULT_MAX_EVENTS,
) -> list[Txn]:
    """Validate a transactional history of `model` and pair it into transactions, in invocation
    order. Raises HistoryError naming the line (with `lines`) or 1-based event number at fault.
    """
    if model not in MODELS:
        raise ValueError(f"unknown model {model!r} (expected one of {', '.join(MODELS)})")
    if len(events) > max_events:
        raise HistoryError(f"{len(events)} events is over the limit of {max_events}")

    def number(i: int) -> int:
        return lines[i] if lines is not None else i + 1

    unit = "line" if lines is not None else "event"
    open_calls: dict[int, int] = {}  # process -> position of its outstanding invoke
    retired: dict[int, int] = {}  # process -> position of the info that ended it
    invoked_ops: dict[int, tuple[MicroOp, ...]] = {}  # invoke position -> its micro-ops
    completed: dict[int, tuple[int, tuple[MicroOp, ...]]] = {}  # invoke -> (completion, ops)
    writes: dict[tuple[Key, object], int] = {}  # (key, value) -> invoke position writing it
    last_time = 0
    for i, event in enumerate(events):
        try:
            event.validate()
            p = event.process
            if event.time < last_time:
                raise HistoryError(f"time {event.time} goes backwards (previous {last_time})")
            last_time = event.time
            if event.type == "invoke":
                if p in open_calls:
                    raise HistoryError(
                        f"process {p} invokes again while its transaction from {unit} "
                        f"{number(open_calls[p])} is still open"
                    )
                if p in retired:
                    raise HistoryError(
                        f"process {p} invokes again after its info on {unit} "
                        f"{number(retired[p])}; an info ends a process, use a new process id"
                    )
                ops = _micro_ops(event.value, model, invoke=True)
                for op in ops:
                    if op.f == WRITE_F[model]:
                        earlier = writes.setdefault((op.key, op.value), i)
                        if earlier != i:
                            raise HistoryError(
                                f"{op.f} of {json.dumps(op.value)} to {json.dumps(op.key)} "
                                f"repeats the one on {unit} {number(earlier)}; values written "
                                "must be unique per key"
                            )
                        if ops.count(op) > 1:
                            raise HistoryError(
                                f"{op.f} of {json.dumps(op.value)} to {json.dumps(op.key)} "
                                "appears twice; values written must be unique per key"
                            )
                open_calls[p] = i
                invoked_ops[i] = ops
                continue
            if p not in open_calls:
                raise HistoryError(f"{event.type} from process {p} without a preceding invoke")
            call = open_calls.pop(p)
            if event.type == "ok":
                ops = _completion(event.value, invoked_ops[call], model, number(call), unit)
            else:
                if event.value is not None:
                    _completion(event.value, invoked_ops[call], model, number(call), unit)
                ops = invoked_ops[call]
            completed[call] = (i, ops)
            if event.type == "info":
                retired[p] = i
        except HistoryError as e:
            raise HistoryError(e.reason, number(i), unit) from None

    txns: list[Txn] = []
    for call in sorted(invoked_ops):
        invoke = events[call]
        ret, ops = completed.get(call, (None, invoked_ops[call]))
        end = events[ret] if ret is not None else None
        txns.append(
            Txn(
                id=len(txns) + 1,
                process=invoke.process,
                status=end.type if end is not None else "info",
                ops=ops,
                call=call,
                ret=ret,
                invoke_time=invoke.time,
                complete_time=end.time if end is not None else None,
                line=number(call),
            )
        )
    return txns


def _micro_ops(value: object, model: str, invoke: bool) -> tuple[MicroOp, ...]:
    """Parse a list of micro-operations; on invoke every read must be null."""
    if not isinstance(value, list):
        raise HistoryError(f"value must be a list of micro-operations, got {value!r}")
    write_f = WRITE_F[model]
    ops = []
    for n, raw in enumerate(value, start=1):
        where = f"micro-op {n}"
        if not isinstance(raw, list) or len(raw) != 3:
            raise HistoryError(f"{where} must be a 3-list [f, key, value], got {_show(raw)}")
        f, key, v = raw
        if f not in (write_f, "r"):
            raise HistoryError(
                f"{where}: f {_show(f)} is not one of {write_f!r}, 'r' (model {model})"
            )
        if not _is_key(key):
            raise HistoryError(f"{where}: key must be a string or integer, got {_show(key)}")
        if f == write_f:
            if not _is_key(v):
                raise HistoryError(
                    f"{where}: the value of {f} must be a string or integer, got {_show(v)}"
                )
            ops.append(MicroOp(f, key, v))
            continue
        if invoke:
            if v is not None:
                raise HistoryError(f"{where}: a read's value must be null on invoke, got {_show(v)}")
            ops.append(MicroOp(f, key, None))
        elif model == "list-append":
            if v is not None and not (isinstance(v, list) and _all_keys(v)):
                raise HistoryError(
                    f"{where}: a list-append read returns a list of strings or integers, or "
                    f"null, got {_show(v)}"
                )
            ops.append(MicroOp(f, key, tuple(v) if v is not None else None))
        else:
            if v is not None and not _is_key(v):
                raise HistoryError(
                    f"{where}: a rw-register read returns a string or integer, or null, "
                    f"got {_show(v)}"
                )
            ops.append(MicroOp(f, key, v))
    return tuple(ops)


def _completion(
    value: object, invoked: tuple[MicroOp, ...], model: str, line: int, unit: str
) -> tuple[MicroOp, ...]:
    """The completed micro-operations, which must be those invoked with the reads filled in."""
    ops = _micro_ops(value, model, invoke=False)
    if len(ops) != len(invoked):
        raise HistoryError(
            f"completion has {len(ops)} micro-op(s) but the invoke on {unit} {line} "
            f"has {len(invoked)}"
        )
    for n, (done, asked) in enumerate(zip(ops, invoked, strict=True), start=1):
        same = (done.f, done.key) == (asked.f, asked.key)
        if not same or (done.f != "r" and done.value != asked.value):
            raise HistoryError(
                f"micro-op {n} completes as {done} but the invoke on {unit} {line} "
                f"asked for {asked}"
            )
    return ops


def read_txn_file(
    path: str | Path, max_events: int = DEFAULT_MAX_EVENTS
) -> tuple[list[TxnEvent], list[int]]:
    """Decode a JSON Lines history into events and the line each came from, refusing files of
    more than `max_events` events before decoding them. Micro-ops are checked by `transactions`.
    """
    numbered: list[tuple[int, str]] = []
    with Path(path).open(encoding="utf-8") as lines_in:
        for number, line in enumerate(lines_in, start=1):
            if not line.strip():
                continue
            if len(numbered) == max_events:
                raise HistoryError(f"more than {max_events} events (the limit)", number)
            numbered.append((number, line))
    objs = decode_json_lines(numbered)
    events = []
    for (number, _), obj in zip(numbered, objs, strict=True):
        try:
            events.append(TxnEvent.from_json(obj))
        except HistoryError as e:
            raise HistoryError(e.reason, number) from None
    return events, [number for number, _ in numbered]


def load_txn_history(
    path: str | Path, model: str, max_events: int = DEFAULT_MAX_EVENTS
) -> list[TxnEvent]:
    """Read and validate a transactional history of `model` ("list-append" or "rw-register");
    raises HistoryError naming the bad line."""
    events, lines = read_txn_file(path, max_events)
    transactions(events, model, lines, max_events)
    return events


def dump_txn_history(events: Sequence[TxnEvent], path: str | Path) -> None:
    """Write events as JSON Lines, the format `load_txn_history` reads."""
    with Path(path).open("w", encoding="utf-8") as out:
        for event in events:
            out.write(json.dumps(event.to_json()) + "\n")


def _show(x: object) -> str:
    try:
        return json.dumps(x)
    except (TypeError, ValueError):
        return repr(x)


def _is_int(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_key(x: object) -> bool:
    return isinstance(x, str) or _is_int(x)


def _all_keys(xs: list[object]) -> bool:
    # The exact-type test first: reads are most of a history, and most of a read is elements.
    return all(type(x) in _KEY_TYPES for x in xs) or all(_is_key(x) for x in xs)


_KEY_TYPES = frozenset({int, str})
