"""Histories of key-value operations: events, validation, and pairing into operations.

A history is a list of events in real-time order (see docs/history-format.md). The position of
an event in the list is its place in real time; `time` must agree (never go backwards).
"""

from __future__ import annotations

import gc
import json
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import msgspec

TYPES = ("invoke", "ok", "fail", "info")
FUNCTIONS = ("read", "write", "cas")
_FIELDS = ("process", "type", "f", "key", "value", "time")
_SCALARS = (type(None), bool, int, float, str)


class HistoryError(ValueError):
    """A malformed history. `line` is the 1-based line of a file (or number of an in-memory
    event, when `unit` is "event") at fault, if known."""

    def __init__(self, message: str, line: int | None = None, unit: str = "line") -> None:
        super().__init__(f"{unit} {line}: {message}" if line is not None else message)
        self.line = line
        self.reason = message


class Event(msgspec.Struct, frozen=True, gc=False):
    """One line of a history: an invocation or a completion of an operation. A Struct, so a
    whole file decodes straight into events, typed in C; untracked by the garbage collector,
    as events form no cycles and a history has millions."""

    process: int
    type: str
    f: str
    key: str
    value: Any
    time: Annotated[int, msgspec.Meta(ge=0)]

    def to_json(self) -> dict[str, object]:
        value = list(self.value) if isinstance(self.value, tuple) else self.value
        return {
            "process": self.process,
            "type": self.type,
            "f": self.f,
            "key": self.key,
            "value": value,
            "time": self.time,
        }

    @classmethod
    def from_json(cls, obj: object) -> Event:
        """Build an event from a decoded JSON object, raising HistoryError if it is malformed."""
        if not isinstance(obj, dict):
            raise HistoryError(f"expected a JSON object, got {type(obj).__name__}")
        missing = [name for name in _FIELDS if name not in obj]
        if missing:
            raise HistoryError(f"missing field(s) {', '.join(missing)}")
        event = cls(obj["process"], obj["type"], obj["f"], obj["key"], obj["value"], obj["time"])
        event.validate()
        return event

    def validate(self) -> None:
        """Check this event on its own (pairing is checked by `operations`)."""
        if not _is_int(self.process):
            raise HistoryError(f"process must be an integer, got {self.process!r}")
        if self.type not in TYPES:
            raise HistoryError(f"unknown type {self.type!r} (expected one of {', '.join(TYPES)})")
        if self.f not in FUNCTIONS:
            raise HistoryError(f"unknown f {self.f!r} (expected one of {', '.join(FUNCTIONS)})")
        if not isinstance(self.key, str):
            raise HistoryError(f"key must be a string, got {self.key!r}")
        if not _is_int(self.time) or self.time < 0:
            raise HistoryError(f"time must be a non-negative integer, got {self.time!r}")
        self.check_value()
        value = self.value
        if type(value) in _SCALARS or (
            type(value) is list and all(type(x) in _SCALARS for x in value)
        ):
            return  # serialisable: json.dumps would dominate loading
        try:
            json.dumps(self.value)
        except (TypeError, ValueError):
            raise HistoryError(f"value is not JSON-serialisable: {self.value!r}") from None

    def check_value(self) -> None:
        """Check the shape of an invoke's value for its operation."""
        if self.type == "invoke" and self.f == "read" and self.value is not None:
            raise HistoryError(f"a read's invoke must have value null, got {self.value!r}")
        if self.type == "invoke" and self.f == "cas" and not _is_pair(self.value):
            raise HistoryError(f"cas value must be a 2-list [expected, new], got {self.value!r}")


class Operation(msgspec.Struct, frozen=True, gc=False):
    """An invocation paired with its completion.

    `call` and `ret` are positions of the invoke and completion events; `ret` is None when there
    is no completion. `status` is the completion's type ("ok", "fail" or "info"), and "info" too
    when there is no completion: the outcome is unknown.
    """

    process: int
    f: str
    key: str
    value: object
    result: object
    status: str
    call: int
    ret: int | None
    invoke: Event
    complete: Event | None


def operations(
    events: Sequence[Event], lines: Sequence[int] | None = None, *, validated: bool = False
) -> list[Operation]:
    """Validate a history and pair its events into operations, ordered by invocation.

    `lines` maps each event to the line it came from, for error messages; without it errors name
    the 1-based event number. `validated` says each event has passed `Event.validate` already.
    """

    def number(i: int) -> int:
        return lines[i] if lines is not None else i + 1

    unit = "line" if lines is not None else "event"
    open_calls: dict[int, int] = {}  # process -> position of its outstanding invoke
    retired: dict[int, int] = {}  # process -> position of the info that ended it
    ops: list[Operation | None] = []  # in invocation order, filled in as operations complete
    slot: dict[int, int] = {}  # process -> index in ops of its outstanding invoke
    last_time = 0
    for i, event in enumerate(events):
        p, kind = event.process, event.type
        # The usual event passes two dict lookups; anything else gets the full check, which
        # raises with the reason.
        if not validated or event.time < last_time or (
            (p in open_calls or p in retired) if kind == "invoke"
            else p not in open_calls or _differs(event, events[open_calls[p]])
        ):
            try:
                if not validated:
                    event.validate()
                _check_in_order(event, last_time, open_calls, retired, events, number, unit)
            except HistoryError as e:
                raise HistoryError(e.reason, number(i), unit) from None
        last_time = event.time
        if kind == "invoke":
            open_calls[p] = i
            slot[p] = len(ops)
            ops.append(None)
            continue
        call = open_calls.pop(p)
        invoke = events[call]
        ops[slot.pop(p)] = Operation(p, invoke.f, invoke.key, invoke.value, event.value, kind,
                                     call, i, invoke, event)
        if kind == "info":
            retired[p] = i
    for p, call in open_calls.items():  # no completion: the outcome is unknown
        invoke = events[call]
        ops[slot[p]] = Operation(p, invoke.f, invoke.key, invoke.value, None, "info", call, None,
                                 invoke, None)
    return ops  # type: ignore[return-value]  # every slot is filled


def _differs(complete: Event, invoke: Event) -> bool:
    return complete.f != invoke.f or complete.key != invoke.key


def _check_in_order(
    event: Event,
    last_time: int,
    open_calls: dict[int, int],
    retired: dict[int, int],
    events: Sequence[Event],
    number: Callable[[int], int],
    unit: str,
) -> None:
    """Raise HistoryError (without position) if `event` cannot come next."""
    p = event.process
    if event.time < last_time:
        raise HistoryError(f"time {event.time} goes backwards (previous {last_time})")
    if event.type == "invoke":
        if p in open_calls:
            raise HistoryError(
                f"process {p} invokes again while its operation from {unit} "
                f"{number(open_calls[p])} is still open"
            )
        if p in retired:
            raise HistoryError(
                f"process {p} invokes again after its info on {unit} {number(retired[p])}; "
                "an info ends a process, use a new process id"
            )
        return
    if p not in open_calls:
        raise HistoryError(f"{event.type} from process {p} without a preceding invoke")
    invoked = events[open_calls[p]]
    if (event.f, event.key) != (invoked.f, invoked.key):
        raise HistoryError(
            f"{event.type} is for {event.f} of {event.key!r} but process {p} invoked "
            f"{invoked.f} of {invoked.key!r} on {unit} {number(open_calls[p])}"
        )


def decode_json_lines(numbered: list[tuple[int, str]]) -> list[Any]:
    """The JSON value of each (line number, line); HistoryError names the first bad line."""
    # One decode of the whole file is several times faster than one per line; a line that is
    # not exactly one JSON value is then found by decoding line by line.
    try:
        objs = json.loads("[" + ",".join(line for _, line in numbered) + "]")
    except json.JSONDecodeError:
        objs = []
    if len(objs) != len(numbered):
        objs = []
        for number, line in numbered:
            try:
                objs.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise HistoryError(f"bad JSON: {e.msg} (column {e.colno})", number) from None
    return list(objs)


_DECODE_EVENTS = msgspec.json.Decoder(list[Event]).decode
_KNOWN = {(t, f) for t in TYPES for f in FUNCTIONS}


@contextmanager
def collector_paused() -> Iterator[None]:
    """Hold off the cyclic garbage collector while a history is built or searched: the objects
    made then form no cycles, and each collection would walk the whole history again."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def load_operations(path: str | Path) -> tuple[list[Event], list[Operation]]:
    """Read and validate a JSON Lines history, and pair it into operations; raises
    HistoryError naming the bad line."""
    with collector_paused():
        return _load_operations(path)


def _load_operations(path: str | Path) -> tuple[list[Event], list[Operation]]:
    text = Path(path).read_text(encoding="utf-8")
    numbered = [(n, line) for n, line in enumerate(text.splitlines(), start=1) if line.strip()]
    lines = [n for n, _ in numbered]
    try:
        # The fast path types every field in one C call; what remains to check by hand is a
        # value's shape, in `operations`. Any error is found again, and named, line by line.
        events = _DECODE_EVENTS(("[" + ",".join(line for _, line in numbered) + "]").encode())
        for number, event in zip(lines, events, strict=True):
            try:
                if (event.type, event.f) not in _KNOWN:
                    event.validate()
                if event.type == "invoke":
                    event.check_value()
            except HistoryError as e:
                raise HistoryError(e.reason, number) from None
    except (msgspec.ValidationError, msgspec.DecodeError):
        events = []
        for number, obj in zip(lines, decode_json_lines(numbered), strict=True):
            try:
                events.append(Event.from_json(obj))
            except HistoryError as e:
                raise HistoryError(e.reason, number) from None
    return events, operations(events, lines, validated=True)


def load_history(path: str | Path) -> list[Event]:
    """Read and validate a JSON Lines history; raises HistoryError naming the bad line."""
    return load_operations(path)[0]


def dump_history(events: Sequence[Event], path: str | Path) -> None:
    """Write events as JSON Lines, the format `load_history` reads."""
    with Path(path).open("w", encoding="utf-8") as out:
        for event in events:
            out.write(json.dumps(event.to_json()) + "\n")


def cas_args(value: object) -> tuple[object, object]:
    """The (expected, new) pair of a validated cas value."""
    assert isinstance(value, list | tuple) and len(value) == 2, value
    return value[0], value[1]


def _is_int(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_pair(x: object) -> bool:
    return isinstance(x, list | tuple) and len(x) == 2
