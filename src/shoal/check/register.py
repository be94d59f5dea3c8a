"""The register model: one key's operations, compiled to small integers for the search.

Values are interned per key so that a model state is a plain int (0 = absent), which keeps the
search's cache keys cheap to hash.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any, NamedTuple

from .history import Operation, cas_args

READ, WRITE, CAS = 0, 1, 2
ABSENT = 0
_KINDS = {"read": READ, "write": WRITE, "cas": CAS}


class RegOp(NamedTuple):
    """One register operation. `a` is the read result, written value or cas expected value; `b`
    is the cas new value. `ret` is None when the outcome is unknown (it may take effect at any
    time after `call`, or never)."""

    kind: int
    a: int
    b: int
    call: int
    ret: int | None
    source: Operation


class Values:
    """Interns JSON values to ints; `None` (absent) is 0."""

    def __init__(self) -> None:
        # Ints and strings, the usual values, are looked up as they are, each kind in its own
        # table (JSON keeps 1 and "1" apart); any other value by its canonical JSON.
        self._ints: dict[int, int] = {}
        self._strs: dict[str, int] = {}
        self._others: dict[str, int] = {"null": ABSENT}
        self._values: list[object] = [None]

    def id(self, value: object) -> int:
        kind = type(value)
        table: dict[Any, int]
        canonical: Any
        if kind is int:
            table, canonical = self._ints, value
        elif kind is str:
            table, canonical = self._strs, value
        else:
            table, canonical = self._others, json.dumps(value, sort_keys=True)
        found = table.get(canonical)
        if found is None:
            found = table[canonical] = len(self._values)
            self._values.append(value)
        return found

    def value(self, ident: int) -> object:
        return self._values[ident]


def compile_ops(ops: Iterable[Operation], values: Values) -> list[RegOp]:
    """Compile one key's operations. Failed operations did not happen, and a read whose outcome
    is unknown constrains nothing, so both are dropped."""
    out = []
    intern = values.id
    for op in ops:
        status = op.status
        if status == "fail" or (status == "info" and op.f == "read"):
            continue
        kind = _KINDS[op.f]
        if kind == READ:
            a, b = intern(op.result), ABSENT
        elif kind == WRITE:
            a, b = intern(op.value), ABSENT
        else:
            expected, new = cas_args(op.value)
            a, b = intern(expected), intern(new)
        out.append(RegOp(kind, a, b, op.call, op.ret if status == "ok" else None, op))
    return out


def step(op: RegOp, state: int) -> int | None:
    """The state after `op` from `state`, or None if `op` cannot happen there."""
    if op.kind == READ:
        return state if state == op.a else None
    if op.kind == WRITE:
        return op.a
    return op.b if state == op.a else None


def relevant(ops: list[RegOp]) -> list[RegOp]:
    """Drop unknown-outcome ops that can never help a linearization.

    Such an op only sets the register to its new value. If no read returns that value and no cas
    expects it (directly, or through a chain of other unknown-outcome cas), putting the register
    there can only make later reads and cas fail, so the op may as well never take effect.
    """
    needed = {op.a for op in ops if op.ret is not None and op.kind != WRITE}
    keep = [op.ret is not None for op in ops]
    changed = True
    while changed:
        changed = False
        for i, op in enumerate(ops):
            if keep[i] or op.kind == READ:
                continue
            if (op.a if op.kind == WRITE else op.b) in needed:
                keep[i] = changed = True
                if op.kind == CAS:
                    needed.add(op.a)
    return [op for op, k in zip(ops, keep, strict=True) if k]
